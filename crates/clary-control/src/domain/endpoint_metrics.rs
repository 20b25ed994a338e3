//! Endpoint invocation metrics as SageMaker publishes them in CloudWatch's `AWS/SageMaker`
//! namespace, by `EndpointName` and `VariantName`: `Invocations`, `Invocation4XXErrors`,
//! `Invocation5XXErrors`, `ModelLatency` and `OverheadLatency` (microseconds). Invocations are
//! kept as one aggregate per second and variant; a metric's datapoints are read from them.

use super::metrics::Datapoint;

/// How an invocation ended, by the status class its caller saw from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Success,
    ClientError,
    ServerError,
}

/// One invocation routed to a variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Invocation {
    pub answer: Answer,
    /// How long the model took, from the request sent to the answer read (none when no
    /// instance answered).
    pub model_micros: Option<f64>,
    /// The rest of the call's time at Clary's front.
    pub overhead_micros: f64,
}

/// Count, sum, minimum and maximum of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    pub count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Aggregate {
    pub fn add(&mut self, v: f64) {
        self.count += 1.0;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Aggregate) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// One second of one variant's invocations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Second {
    pub invocations: f64,
    pub client_errors: f64,
    pub server_errors: f64,
    pub model: Aggregate,
    pub overhead: Aggregate,
}

impl Second {
    pub fn add(&mut self, inv: &Invocation) {
        self.invocations += 1.0;
        match inv.answer {
            Answer::Success => {}
            Answer::ClientError => self.client_errors += 1.0,
            Answer::ServerError => self.server_errors += 1.0,
        }
        if let Some(m) = inv.model_micros {
            self.model.add(m);
        }
        self.overhead.add(inv.overhead_micros);
    }

    pub fn merge(&mut self, o: &Second) {
        self.invocations += o.invocations;
        self.client_errors += o.client_errors;
        self.server_errors += o.server_errors;
        self.model.merge(&o.model);
        self.overhead.merge(&o.overhead);
    }
}

/// The metrics of `AWS/SageMaker` Clary publishes for endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointMetric {
    Invocations,
    Invocation4XXErrors,
    Invocation5XXErrors,
    ModelLatency,
    OverheadLatency,
}

impl EndpointMetric {
    pub const ALL: [EndpointMetric; 5] = [
        EndpointMetric::Invocations,
        EndpointMetric::Invocation4XXErrors,
        EndpointMetric::Invocation5XXErrors,
        EndpointMetric::ModelLatency,
        EndpointMetric::OverheadLatency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EndpointMetric::Invocations => "Invocations",
            EndpointMetric::Invocation4XXErrors => "Invocation4XXErrors",
            EndpointMetric::Invocation5XXErrors => "Invocation5XXErrors",
            EndpointMetric::ModelLatency => "ModelLatency",
            EndpointMetric::OverheadLatency => "OverheadLatency",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// CloudWatch's unit of the metric.
    pub fn unit(self) -> &'static str {
        match self {
            EndpointMetric::ModelLatency | EndpointMetric::OverheadLatency => "Microseconds",
            _ => "None",
        }
    }

    /// The metric's values in one second. Counts are one sample per invocation (1 for an
    /// invocation, 1 or 0 for an error), so `Sum` counts and `Average` is a rate, as SageMaker
    /// documents them.
    fn of(self, s: &Second) -> Aggregate {
        let share = |hits: f64| Aggregate {
            count: s.invocations,
            sum: hits,
            min: if hits >= s.invocations { 1.0 } else { 0.0 },
            max: if hits > 0.0 { 1.0 } else { 0.0 },
        };
        match self {
            EndpointMetric::Invocations => share(s.invocations),
            EndpointMetric::Invocation4XXErrors => share(s.client_errors),
            EndpointMetric::Invocation5XXErrors => share(s.server_errors),
            EndpointMetric::ModelLatency => s.model,
            EndpointMetric::OverheadLatency => s.overhead,
        }
    }
}

/// The datapoints of `metric` over `[start, end)` by `period` from per-second aggregates
/// (`(epoch second, aggregate)`), oldest first; periods without invocations are left out.
pub fn datapoints(
    seconds: &[(i64, Second)],
    metric: EndpointMetric,
    start: f64,
    end: f64,
    period: f64,
) -> Vec<Datapoint> {
    let mut buckets: std::collections::BTreeMap<i64, Aggregate> = Default::default();
    for (t, s) in seconds {
        let t = *t as f64;
        if t < start || t >= end {
            continue;
        }
        let a = metric.of(s);
        if a.count <= 0.0 {
            continue;
        }
        let n = ((t - start) / period).floor() as i64;
        buckets.entry(n).or_default().merge(&a);
    }
    buckets
        .into_iter()
        .map(|(n, a)| Datapoint {
            timestamp: start + n as f64 * period,
            sample_count: a.count,
            sum: a.sum,
            minimum: a.min,
            maximum: a.max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(answer: Answer, model: f64) -> Invocation {
        Invocation {
            answer,
            model_micros: Some(model),
            overhead_micros: 100.0,
        }
    }

    #[test]
    fn counts_sum_and_error_rates_average() {
        let mut a = Second::default();
        a.add(&inv(Answer::Success, 1000.0));
        a.add(&inv(Answer::ClientError, 3000.0));
        let mut b = Second::default();
        b.add(&inv(Answer::Success, 2000.0));
        b.add(&inv(Answer::ServerError, 2000.0));
        let secs = [(100, a), (130, b)];
        let calls = datapoints(&secs, EndpointMetric::Invocations, 60.0, 180.0, 60.0);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].timestamp, 60.0);
        assert_eq!(calls[0].sum + calls[1].sum, 4.0);
        let errors = datapoints(
            &secs,
            EndpointMetric::Invocation4XXErrors,
            0.0,
            200.0,
            200.0,
        );
        assert_eq!(errors[0].sum, 1.0);
        assert_eq!(errors[0].average(), 0.25);
        let latency = datapoints(&secs, EndpointMetric::ModelLatency, 0.0, 200.0, 200.0);
        assert_eq!(latency[0].average(), 2000.0);
        assert_eq!((latency[0].minimum, latency[0].maximum), (1000.0, 3000.0));
        assert!(datapoints(&secs, EndpointMetric::Invocations, 200.0, 300.0, 60.0).is_empty());
    }
}
