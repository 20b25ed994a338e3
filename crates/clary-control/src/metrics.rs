//! Training metrics: the agents' log lines of a job with `MetricDefinitions` are matched as
//! they arrive and the samples stored; CloudWatch's reads and `FinalMetricDataList` come from
//! here.

use crate::domain::metrics::{FinalMetric, MetricDefinition, MetricMatcher, MetricSample};
use crate::error::ControlError;
use crate::store::metrics::{MetricStore, SampleQuery};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub const TRAINING_NAMESPACE: &str = "/aws/sagemaker/TrainingJobs";

pub struct Metrics {
    store: MetricStore,
    /// Each job's compiled definitions (a job's definitions never change).
    matchers: Mutex<HashMap<String, Arc<MetricMatcher>>>,
    /// Metrics already said to have matched something that is not a number, per job.
    said: Mutex<HashSet<(String, String)>>,
}

/// A series of `ListMetrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub job: String,
    pub metric: String,
    pub host: String,
}

impl Metrics {
    pub(crate) fn new(store: MetricStore) -> Self {
        Metrics {
            store,
            matchers: Mutex::new(HashMap::new()),
            said: Mutex::new(HashSet::new()),
        }
    }

    fn matcher(&self, job: &str, definitions: &[MetricDefinition]) -> Option<Arc<MetricMatcher>> {
        if definitions.is_empty() {
            return None;
        }
        let mut m = self.matchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = m.get(job) {
            return Some(found.clone());
        }
        // The API refused definitions that do not compile; one from an older database that
        // does not is skipped rather than failing the job's logging.
        let compiled = Arc::new(MetricMatcher::new(definitions).ok()?);
        m.insert(job.to_string(), compiled.clone());
        Some(compiled)
    }

    /// Matches a batch of one host's lines; returns lines for the job's log about metrics whose
    /// regex matched something that is not a number (each said once).
    pub fn ingest(
        &self,
        job: &str,
        definitions: &[MetricDefinition],
        host: &str,
        lines: &[(i64, String)],
    ) -> Result<Vec<String>, ControlError> {
        let Some(matcher) = self.matcher(job, definitions) else {
            return Ok(Vec::new());
        };
        let found = matcher.scan(host, lines);
        self.store.insert(job, &found.samples)?;
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        Ok(found
            .unreadable
            .into_iter()
            .filter(|(metric, _)| said.insert((job.to_string(), metric.clone())))
            .map(|(metric, raw)| {
                let regex = definitions
                    .iter()
                    .find(|d| d.name == metric)
                    .map_or("", |d| d.regex.as_str());
                format!(
                    "[clary] metric {metric}: the regex {regex:?} matched {raw:?}, which is not a number; its first capture group must capture the value"
                )
            })
            .collect())
    }

    /// Lines for the job's log naming each metric that never matched (said when it ends).
    pub fn never_matched(
        &self,
        job: &str,
        definitions: &[MetricDefinition],
    ) -> Result<Vec<String>, ControlError> {
        let mut seen: HashSet<String> = self
            .store
            .final_values(job)?
            .into_iter()
            .map(|f| f.metric)
            .collect();
        // A metric already said to match something that is not a number did match.
        self.said
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(j, metric)| {
                if j == job {
                    seen.insert(metric.clone());
                }
                j != job
            });
        self.matchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job);
        Ok(definitions
            .iter()
            .filter(|d| !seen.contains(&d.name))
            .map(|d| {
                format!(
                    "[clary] metric {}: no line of the job's log matched the regex {:?}",
                    d.name, d.regex
                )
            })
            .collect())
    }

    /// Samples measured rather than read from the log (the system monitor's), kept as they are.
    pub fn record(&self, job: &str, samples: &[MetricSample]) -> Result<(), ControlError> {
        self.store.insert(job, samples)
    }

    pub fn final_values(&self, job: &str) -> Result<Vec<FinalMetric>, ControlError> {
        self.store.final_values(job)
    }

    pub fn samples(&self, q: SampleQuery<'_>) -> Result<Vec<(f64, f64)>, ControlError> {
        self.store.samples(q)
    }

    pub fn series(
        &self,
        metric: Option<&str>,
        job: Option<&str>,
    ) -> Result<Vec<Series>, ControlError> {
        Ok(self
            .store
            .series(metric, job)?
            .into_iter()
            .map(|(job, metric, host)| Series { job, metric, host })
            .collect())
    }
}
