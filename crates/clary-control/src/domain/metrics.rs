//! Training metrics from log lines: each `MetricDefinition`'s regex is matched against every
//! line of every host; its first capture group (the whole match when it has none) is the
//! value, as SageMaker extracts them. Samples are kept per job, metric and host.

use serde::{Deserialize, Serialize};

/// `AlgorithmSpecification.MetricDefinitions[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricDefinition {
    pub name: String,
    pub regex: String,
}

/// One value of one metric, read from one host's log line at `timestamp` (epoch seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub metric: String,
    pub host: String,
    pub timestamp: f64,
    pub value: f64,
}

/// A metric's latest value (`FinalMetricDataList`).
#[derive(Debug, Clone, PartialEq)]
pub struct FinalMetric {
    pub metric: String,
    pub value: f64,
    pub timestamp: f64,
}

/// The compiled definitions of one job.
#[derive(Debug)]
pub struct MetricMatcher {
    definitions: Vec<(String, regex_lite::Regex)>,
}

/// What matching a batch of lines found.
#[derive(Debug, Default, PartialEq)]
pub struct Matched {
    pub samples: Vec<MetricSample>,
    /// Metrics whose regex matched a line but captured nothing numeric (named once each).
    pub unreadable: Vec<(String, String)>,
}

impl MetricMatcher {
    /// Compiles the definitions; the first regex that does not compile is named with why.
    pub fn new(definitions: &[MetricDefinition]) -> Result<Self, String> {
        let definitions = definitions
            .iter()
            .map(|d| {
                regex_lite::Regex::new(&d.regex)
                    .map(|r| (d.name.clone(), r))
                    .map_err(|e| {
                        format!(
                            "the regex {:?} of metric {:?} is not valid: {e}",
                            d.regex, d.name
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(MetricMatcher { definitions })
    }

    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }

    /// The samples in `lines` (`(epoch milliseconds, text)`) of `host`.
    pub fn scan(&self, host: &str, lines: &[(i64, String)]) -> Matched {
        let mut out = Matched::default();
        for (ts, text) in lines {
            for (name, regex) in &self.definitions {
                let Some(caps) = regex.captures(text) else {
                    continue;
                };
                let raw = caps
                    .get(1)
                    .or_else(|| caps.get(0))
                    .map_or("", |m| m.as_str());
                match parse_value(raw) {
                    Some(value) => out.samples.push(MetricSample {
                        metric: name.clone(),
                        host: host.to_string(),
                        timestamp: *ts as f64 / 1000.0,
                        value,
                    }),
                    None => out.unreadable.push((name.clone(), raw.to_string())),
                }
            }
        }
        out
    }
}

/// A metric's text as a number, as SageMaker reads it (`1e-3`, `.5`, `nan` is not one).
fn parse_value(raw: &str) -> Option<f64> {
    raw.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The statistics `GetMetricStatistics` and `GetMetricData` compute over one period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Datapoint {
    /// The start of the period (epoch seconds).
    pub timestamp: f64,
    pub sample_count: f64,
    pub sum: f64,
    pub minimum: f64,
    pub maximum: f64,
}

impl Datapoint {
    pub fn average(&self) -> f64 {
        self.sum / self.sample_count
    }
}

/// Samples (`(epoch seconds, value)`) in `[start, end)` grouped into `period`-second buckets
/// aligned to `start`, oldest first; empty buckets are left out, as CloudWatch does.
pub fn datapoints(samples: &[(f64, f64)], start: f64, end: f64, period: f64) -> Vec<Datapoint> {
    let mut buckets: std::collections::BTreeMap<i64, Datapoint> = Default::default();
    for &(t, v) in samples {
        if t < start || t >= end {
            continue;
        }
        let n = ((t - start) / period).floor() as i64;
        let d = buckets.entry(n).or_insert(Datapoint {
            timestamp: start + n as f64 * period,
            sample_count: 0.0,
            sum: 0.0,
            minimum: f64::INFINITY,
            maximum: f64::NEG_INFINITY,
        });
        d.sample_count += 1.0;
        d.sum += v;
        d.minimum = d.minimum.min(v);
        d.maximum = d.maximum.max(v);
    }
    buckets.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, regex: &str) -> MetricDefinition {
        MetricDefinition {
            name: name.into(),
            regex: regex.into(),
        }
    }

    #[test]
    fn the_first_group_is_the_value_on_every_matching_line() {
        let m = MetricMatcher::new(&[
            def("validation:accuracy", r"Validation-accuracy=([0-9\.]+)"),
            def("loss", r"loss: (\S+)"),
        ])
        .unwrap();
        let lines = vec![
            (1_000, "Epoch[0] Validation-accuracy=0.91".to_string()),
            (
                2_000,
                "Epoch[1] Validation-accuracy=0.95 loss: 1e-2".to_string(),
            ),
            (3_000, "nothing here".to_string()),
        ];
        let found = m.scan("algo-1", &lines);
        let got: Vec<(&str, f64, f64)> = found
            .samples
            .iter()
            .map(|s| (s.metric.as_str(), s.timestamp, s.value))
            .collect();
        assert_eq!(
            got,
            [
                ("validation:accuracy", 1.0, 0.91),
                ("validation:accuracy", 2.0, 0.95),
                ("loss", 2.0, 0.01)
            ]
        );
        assert!(found.unreadable.is_empty());
    }

    #[test]
    fn a_match_that_is_not_a_number_is_reported_not_stored() {
        let m = MetricMatcher::new(&[def("acc", r"acc=(\w*)")]).unwrap();
        let found = m.scan("algo-1", &[(0, "acc=".into()), (1, "acc=high".into())]);
        assert!(found.samples.is_empty());
        assert_eq!(found.unreadable.len(), 2);
    }

    #[test]
    fn a_bad_regex_is_named() {
        let err = MetricMatcher::new(&[def("acc", "acc=(")]).unwrap_err();
        assert!(
            err.contains("\"acc=(\"") && err.contains("\"acc\""),
            "{err}"
        );
    }

    #[test]
    fn datapoints_bucket_by_period_from_the_start() {
        let samples = [(0.0, 1.0), (30.0, 3.0), (61.0, 10.0), (200.0, 5.0)];
        let d = datapoints(&samples, 0.0, 180.0, 60.0);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].timestamp, d[0].sample_count, d[0].average()),
            (0.0, 2.0, 2.0)
        );
        assert_eq!((d[0].minimum, d[0].maximum), (1.0, 3.0));
        assert_eq!((d[1].timestamp, d[1].sum), (60.0, 10.0));
    }
}
