//! Counts across every kind of job, for the server's own metrics.

use super::Db;
use crate::error::ControlError;

/// One kind's jobs in one status.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCount {
    pub kind: String,
    pub status: String,
    pub count: u64,
    /// Of those, how many wait in the queue (no host launched).
    pub queued: u64,
}

#[derive(Clone)]
pub struct StatsStore {
    db: Db,
}

impl StatsStore {
    pub fn new(db: Db) -> Self {
        StatsStore { db }
    }

    /// Jobs by kind and status, training, processing, transform and tuning alike.
    pub fn job_counts(&self) -> Result<Vec<JobCount>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT 'TrainingJob', status, count(*), sum(hosts = '[]') FROM training_jobs GROUP BY status
             UNION ALL
             SELECT kind, status, count(*), sum(json_extract(state, '$.Hosts') = '[]') FROM jobs GROUP BY kind, status
             UNION ALL
             SELECT 'HyperParameterTuningJob', status, count(*), 0 FROM tuning_jobs GROUP BY status",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(JobCount {
                    kind: r.get(0)?,
                    status: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                    queued: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// How long ended jobs ran (start to end, seconds), by kind and status.
    pub fn job_durations(&self) -> Result<Vec<(String, String, f64)>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT 'TrainingJob', status, training_end_time - training_start_time FROM training_jobs
               WHERE training_end_time IS NOT NULL AND training_start_time IS NOT NULL
             UNION ALL
             SELECT kind, status, json_extract(state, '$.EndTime') - json_extract(state, '$.StartTime') FROM jobs
               WHERE json_extract(state, '$.EndTime') IS NOT NULL AND json_extract(state, '$.StartTime') IS NOT NULL",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
