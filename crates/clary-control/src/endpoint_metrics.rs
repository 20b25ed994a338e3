//! Recording endpoint invocations for CloudWatch's `AWS/SageMaker` metrics. The router
//! records each invocation in memory (a lock and a map update, no I/O on the serving path);
//! a task writes the seconds to the store every second, and a read writes what is pending
//! first, so a client reading right after a burst sees all of it.

use crate::domain::endpoint_metrics::{EndpointMetric, Invocation, Second, datapoints};
use crate::domain::metrics::Datapoint;
use crate::error::ControlError;
use crate::store::endpoint_metrics::{EndpointMetricStore, StoredSecond};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long per-second data is kept (CloudWatch keeps minute data for 15 days).
const KEEP_SECS: i64 = 15 * 24 * 3600;

/// endpoint → variant → second → its aggregate; looked up by `&str`, so recording allocates
/// only for a variant's first invocation.
type Pending = HashMap<String, HashMap<String, HashMap<i64, Second>>>;

pub struct EndpointMetrics {
    store: EndpointMetricStore,
    pending: Mutex<Pending>,
}

impl EndpointMetrics {
    pub(crate) fn new(store: EndpointMetricStore) -> Self {
        EndpointMetrics {
            store,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// One invocation of `variant` of `endpoint` that ended now.
    pub fn record(&self, endpoint: &str, variant: &str, invocation: &Invocation) {
        let second = chrono::Utc::now().timestamp();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending
            .get(endpoint)
            .is_some_and(|v| v.contains_key(variant))
        {
            pending
                .entry(endpoint.to_string())
                .or_default()
                .insert(variant.to_string(), HashMap::new());
        }
        if let Some(seconds) = pending.get_mut(endpoint).and_then(|v| v.get_mut(variant)) {
            seconds.entry(second).or_default().add(invocation);
        }
    }

    /// Writes what is pending to the store.
    pub fn flush(&self) -> Result<(), ControlError> {
        let taken: Vec<StoredSecond> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for (e, variants) in pending.drain() {
                for (v, seconds) in variants {
                    out.extend(
                        seconds
                            .into_iter()
                            .map(|(t, s)| (e.clone(), v.clone(), t, s)),
                    );
                }
            }
            out
        };
        if taken.is_empty() {
            return Ok(());
        }
        self.store.add(&taken)
    }

    /// Writes pending seconds every second and forgets old ones hourly; runs for the
    /// server's lifetime.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut ticks = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let me = self.clone();
            let prune = ticks.is_multiple_of(3600);
            ticks += 1;
            let done = tokio::task::spawn_blocking(move || {
                me.flush()?;
                if prune {
                    me.store.prune(chrono::Utc::now().timestamp() - KEEP_SECS)?;
                }
                Ok::<_, ControlError>(())
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::error!("endpoint metrics: {e}");
            }
        }
    }

    /// The datapoints of `metric` of `endpoint` (one variant, or all) over `[start, end)`.
    pub fn datapoints(
        &self,
        endpoint: &str,
        variant: Option<&str>,
        metric: EndpointMetric,
        start: f64,
        end: f64,
        period: f64,
    ) -> Result<Vec<Datapoint>, ControlError> {
        self.flush()?;
        let seconds =
            self.store
                .seconds(endpoint, variant, start.floor() as i64, end.ceil() as i64)?;
        Ok(datapoints(&seconds, metric, start, end, period))
    }

    /// The (endpoint, variant) pairs that have metrics.
    pub fn series(&self, endpoint: Option<&str>) -> Result<Vec<(String, String)>, ControlError> {
        self.flush()?;
        self.store.series(endpoint)
    }
}
