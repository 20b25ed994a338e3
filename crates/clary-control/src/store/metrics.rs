//! Metric samples in SQLite (`metric_samples`): per job, metric and host.

use super::Db;
use crate::domain::metrics::{FinalMetric, MetricSample};
use crate::error::ControlError;
use rusqlite::params;

#[derive(Clone)]
pub struct MetricStore {
    db: Db,
}

/// Which samples a query reads.
#[derive(Debug, Clone, Copy)]
pub struct SampleQuery<'a> {
    pub job: &'a str,
    pub metric: &'a str,
    /// One host's samples; every host's when `None`.
    pub host: Option<&'a str>,
    pub start: f64,
    pub end: f64,
}

impl MetricStore {
    pub fn new(db: Db) -> Self {
        MetricStore { db }
    }

    pub fn insert(&self, job: &str, samples: &[MetricSample]) -> Result<(), ControlError> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO metric_samples (job, metric, host, timestamp, value) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for s in samples {
                ins.execute(params![job, s.metric, s.host, s.timestamp, s.value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// `(timestamp, value)` pairs, oldest first.
    pub fn samples(&self, q: SampleQuery<'_>) -> Result<Vec<(f64, f64)>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT timestamp, value FROM metric_samples
             WHERE job = ?1 AND metric = ?2 AND (?3 IS NULL OR host = ?3)
               AND timestamp >= ?4 AND timestamp < ?5
             ORDER BY timestamp, id",
        )?;
        let rows = stmt
            .query_map(params![q.job, q.metric, q.host, q.start, q.end], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The latest value of each of the job's metrics, by metric name.
    pub fn final_values(&self, job: &str) -> Result<Vec<FinalMetric>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT metric, value, timestamp FROM metric_samples s
             WHERE job = ?1 AND id = (SELECT id FROM metric_samples t
                                      WHERE t.job = s.job AND t.metric = s.metric
                                      ORDER BY timestamp DESC, id DESC LIMIT 1)
             ORDER BY metric",
        )?;
        let rows = stmt
            .query_map(params![job], |r| {
                Ok(FinalMetric {
                    metric: r.get(0)?,
                    value: r.get(1)?,
                    timestamp: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// `(job, metric, host)` of every series, for `ListMetrics`; filtered by metric name and job
    /// when given.
    pub fn series(
        &self,
        metric: Option<&str>,
        job: Option<&str>,
    ) -> Result<Vec<(String, String, String)>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT job, metric, host FROM metric_samples
             WHERE (?1 IS NULL OR metric = ?1) AND (?2 IS NULL OR job = ?2)
             ORDER BY job, metric, host",
        )?;
        let rows = stmt
            .query_map(params![metric, job], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
