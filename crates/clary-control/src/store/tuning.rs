//! Tuning jobs and their trials in SQLite. A trial's row is written before its training job is
//! created, so a server killed in between creates it on restart instead of losing or doubling it.

use super::Db;
use crate::domain::tuning_job::{TuningJob, TuningJobSpec, TuningStatus};
use crate::error::ControlError;
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;

const COLUMNS: &str =
    "name, arn, request, spec, status, failure_reason, creation_time, last_modified_time, end_time";

/// A trial's row.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    pub name: String,
    pub index: u32,
    pub definition: Option<String>,
    pub values: BTreeMap<String, String>,
    pub early_stopped: bool,
}

#[derive(Clone)]
pub struct TuningStore {
    db: Db,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TuningJob> {
    let spec: String = r.get(3)?;
    let status: String = r.get(4)?;
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unreadable {what}").into(),
        )
    };
    Ok(TuningJob {
        name: r.get(0)?,
        arn: r.get(1)?,
        echo: r.get(2)?,
        spec: serde_json::from_str::<TuningJobSpec>(&spec).map_err(|_| bad(3, "spec"))?,
        status: TuningStatus::parse(&status).ok_or_else(|| bad(4, "status"))?,
        failure_reason: r.get(5)?,
        creation_time: r.get(6)?,
        last_modified_time: r.get(7)?,
        end_time: r.get(8)?,
    })
}

impl TuningStore {
    pub fn new(db: Db) -> Self {
        TuningStore { db }
    }

    /// Inserts the job and its tags; false when a job of that name exists.
    pub fn insert(&self, job: &TuningJob, tags: &[(String, String)]) -> Result<bool, ControlError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            &format!(
                "INSERT INTO tuning_jobs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(name) DO NOTHING"
            ),
            params![
                job.name,
                job.arn,
                job.echo,
                serde_json::to_string(&job.spec).expect("plain data serializes"),
                job.status.as_str(),
                job.failure_reason,
                job.creation_time,
                job.last_modified_time,
                job.end_time
            ],
        )?;
        if n == 0 {
            return Ok(false);
        }
        super::tags::insert_tags(&tx, &job.arn, tags)?;
        tx.commit()?;
        Ok(true)
    }

    pub fn get(&self, name: &str) -> Result<Option<TuningJob>, ControlError> {
        Ok(self
            .db
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM tuning_jobs WHERE name = ?1"),
                params![name],
                row,
            )
            .optional()?)
    }

    /// Jobs still in progress or stopping.
    pub fn active(&self) -> Result<Vec<TuningJob>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tuning_jobs WHERE status IN ('InProgress', 'Stopping') ORDER BY creation_time"
        ))?;
        let rows = stmt.query_map([], row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every job, newest first (listings filter and page them).
    pub fn all(&self) -> Result<Vec<TuningJob>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tuning_jobs ORDER BY creation_time DESC, name DESC"
        ))?;
        let rows = stmt.query_map([], row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn save_state(&self, job: &TuningJob) -> Result<(), ControlError> {
        self.db.lock().execute(
            "UPDATE tuning_jobs SET status = ?2, failure_reason = ?3, last_modified_time = ?4, end_time = ?5
             WHERE name = ?1",
            params![
                job.name,
                job.status.as_str(),
                job.failure_reason,
                job.last_modified_time,
                job.end_time
            ],
        )?;
        Ok(())
    }

    pub fn insert_trial(&self, tuning_job: &str, trial: &TrialRow) -> Result<(), ControlError> {
        self.db.lock().execute(
            "INSERT OR IGNORE INTO tuning_trials (tuning_job, idx, name, hyperparameters, early_stopped, definition)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                tuning_job,
                trial.index,
                trial.name,
                serde_json::to_string(&trial.values).expect("plain data serializes"),
                trial.early_stopped,
                trial.definition
            ],
        )?;
        Ok(())
    }

    pub fn mark_early_stopped(&self, trial: &str) -> Result<(), ControlError> {
        self.db.lock().execute(
            "UPDATE tuning_trials SET early_stopped = 1 WHERE name = ?1",
            params![trial],
        )?;
        Ok(())
    }

    /// The job's trials in launch order.
    pub fn trials(&self, tuning_job: &str) -> Result<Vec<TrialRow>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, idx, hyperparameters, early_stopped, definition FROM tuning_trials
             WHERE tuning_job = ?1 ORDER BY idx",
        )?;
        let rows = stmt
            .query_map(params![tuning_job], |r| {
                let values: String = r.get(2)?;
                Ok(TrialRow {
                    name: r.get(0)?,
                    index: r.get(1)?,
                    values: serde_json::from_str(&values).unwrap_or_default(),
                    early_stopped: r.get(3)?,
                    definition: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
