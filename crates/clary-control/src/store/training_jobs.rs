//! Training jobs in SQLite: rows and the domain's `TrainingJob` both ways. The JSON columns
//! (`transitions`, `hosts`) keep the format earlier versions wrote, so a database carries over.

use super::Db;
use super::job_state::{
    StoredHost, StoredTransition, hosts_json, parse_transitions, transitions_json,
};
use crate::domain::job::{JobState, JobStatus, SecondaryStatus};
use crate::domain::training::{
    ListTrainingJobs, Page, SortBy, TrainingJob, TrainingJobSpec, TrainingJobSummary,
};
use crate::error::ControlError;
use rusqlite::{OptionalExtension, params};

const COLUMNS: &str = "name, arn, request, status, secondary_status, status_message, failure_reason, exit_code,
    creation_time, last_modified_time, training_start_time, training_end_time, model_artifacts, transitions, hosts,
    stop_requested, runtime, spec";

fn json_column<T: serde::de::DeserializeOwned>(i: usize, s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn bad_value(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Text,
        format!("unknown {what}").into(),
    )
}

/// A row whose spec is not written yet (created by a Clary before the typed spec) gets a
/// placeholder until the server fills it in at start; see [`TrainingJobStore::without_spec`].
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TrainingJob> {
    let status: String = r.get(3)?;
    let secondary: String = r.get(4)?;
    let transitions: Vec<StoredTransition> = json_column(13, &r.get::<_, String>(13)?)?;
    let hosts: Vec<StoredHost> = json_column(14, &r.get::<_, String>(14)?)?;
    let spec: Option<String> = r.get(17)?;
    let spec: TrainingJobSpec = match spec {
        Some(s) => json_column(17, &s)?,
        None => placeholder_spec(),
    };
    let state = JobState {
        status: JobStatus::parse(&status).ok_or_else(|| bad_value(3, "status"))?,
        secondary: SecondaryStatus::parse(&secondary)
            .ok_or_else(|| bad_value(4, "secondary status"))?,
        status_message: r.get(5)?,
        failure_reason: r.get(6)?,
        exit_code: r.get(7)?,
        creation_time: r.get(8)?,
        last_modified_time: r.get(9)?,
        start_time: r.get(10)?,
        end_time: r.get(11)?,
        artifacts: r.get(12)?,
        transitions: parse_transitions(transitions)
            .ok_or_else(|| bad_value(13, "secondary status"))?,
        hosts: hosts.into_iter().map(StoredHost::into_domain).collect(),
        stop_requested: r.get::<_, i64>(15)? != 0,
    };
    Ok(TrainingJob {
        name: r.get(0)?,
        arn: r.get(1)?,
        echo: r.get(2)?,
        runtime: r.get(16)?,
        spec,
        state,
    })
}

fn placeholder_spec() -> TrainingJobSpec {
    TrainingJobSpec {
        image: String::new(),
        input_mode: crate::domain::training::InputMode::File,
        instance_type: String::new(),
        instance_count: 1,
        channels: Vec::new(),
        output: crate::domain::training::S3Location {
            bucket: String::new(),
            prefix: String::new(),
        },
        hyperparameters: Vec::new(),
        environment: Vec::new(),
        max_runtime_secs: 86_400,
        checkpoints: None,
        max_retries: 0,
        metric_definitions: Vec::new(),
        profiler: Default::default(),
        debug_rules: Vec::new(),
        container: None,
    }
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TrainingJobSummary> {
    let status: String = r.get(2)?;
    let secondary: String = r.get(3)?;
    Ok(TrainingJobSummary {
        name: r.get(0)?,
        arn: r.get(1)?,
        status: JobStatus::parse(&status).ok_or_else(|| bad_value(2, "status"))?,
        secondary: SecondaryStatus::parse(&secondary)
            .ok_or_else(|| bad_value(3, "secondary status"))?,
        creation_time: r.get(4)?,
        last_modified_time: r.get(5)?,
        end_time: r.get(6)?,
    })
}

#[derive(Clone)]
pub struct TrainingJobStore {
    db: Db,
}

impl TrainingJobStore {
    pub fn new(db: Db) -> Self {
        TrainingJobStore { db }
    }

    /// Inserts a new job and its tags in one transaction; false when the name is taken.
    pub fn insert(
        &self,
        job: &TrainingJob,
        tags: &[(String, String)],
    ) -> Result<bool, ControlError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let s = &job.state;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO training_jobs (name, arn, request, status, secondary_status, status_message,
                creation_time, last_modified_time, transitions, runtime, spec)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                job.name,
                job.arn,
                job.echo,
                s.status.as_str(),
                s.secondary.as_str(),
                s.status_message,
                s.creation_time,
                s.last_modified_time,
                transitions_json(s),
                job.runtime,
                serde_json::to_string(&job.spec).map_err(|e| ControlError::Internal(e.to_string()))?,
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        super::tags::insert_tags(&tx, &job.arn, tags)?;
        tx.commit()?;
        Ok(true)
    }

    pub fn get(&self, name: &str) -> Result<Option<TrainingJob>, ControlError> {
        let conn = self.db.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM training_jobs WHERE name = ?1"),
                params![name],
                row,
            )
            .optional()?)
    }

    /// Writes the job's state (its spec and request never change).
    pub fn save_state(&self, job: &TrainingJob) -> Result<(), ControlError> {
        let s = &job.state;
        self.db.lock().execute(
            "UPDATE training_jobs SET status = ?2, secondary_status = ?3, status_message = ?4, failure_reason = ?5,
                exit_code = ?6, last_modified_time = ?7, training_start_time = ?8, training_end_time = ?9,
                model_artifacts = ?10, transitions = ?11, hosts = ?12, stop_requested = ?13
             WHERE name = ?1",
            params![
                job.name,
                s.status.as_str(),
                s.secondary.as_str(),
                s.status_message,
                s.failure_reason,
                s.exit_code,
                s.last_modified_time,
                s.start_time,
                s.end_time,
                s.artifacts,
                transitions_json(s),
                hosts_json(s),
                s.stop_requested as i64,
            ],
        )?;
        Ok(())
    }

    /// Jobs not yet ended, oldest first: the queue and the running ones.
    pub fn active(&self) -> Result<Vec<TrainingJob>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM training_jobs WHERE status IN ('InProgress', 'Stopping') ORDER BY creation_time, name"
        ))?;
        let rows = stmt.query_map([], row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// One page of summaries: only the columns a listing shows are read, so a page costs no
    /// JSON decoding.
    pub fn list(&self, q: &ListTrainingJobs) -> Result<Page<TrainingJobSummary>, ControlError> {
        let order = match q.sort_by {
            SortBy::Name => "name",
            SortBy::Status => "status",
            SortBy::CreationTime => "creation_time",
        };
        let dir = if q.ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT name, arn, status, secondary_status, creation_time, last_modified_time, training_end_time
             FROM training_jobs
             WHERE (?1 IS NULL OR instr(lower(name), lower(?1)) > 0)
               AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR creation_time > ?3) AND (?4 IS NULL OR creation_time < ?4)
               AND (?5 IS NULL OR last_modified_time > ?5) AND (?6 IS NULL OR last_modified_time < ?6)
             ORDER BY {order} {dir}, name {dir} LIMIT ?7 OFFSET ?8"
        );
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let max = i64::from(q.max_results);
        let mut items: Vec<TrainingJobSummary> = stmt
            .query_map(
                params![
                    q.name_contains,
                    q.status_equals.map(JobStatus::as_str),
                    q.creation_time_after,
                    q.creation_time_before,
                    q.last_modified_time_after,
                    q.last_modified_time_before,
                    max + 1,
                    q.offset as i64,
                ],
                summary_row,
            )?
            .collect::<Result<_, _>>()?;
        let more = items.len() as i64 > max;
        items.truncate(q.max_results as usize);
        Ok(Page {
            items,
            next_offset: more.then(|| q.offset + u64::from(q.max_results)),
        })
    }

    /// Names and requests of jobs an earlier Clary stored without a typed spec.
    pub fn without_spec(&self) -> Result<Vec<(String, String)>, ControlError> {
        let conn = self.db.lock();
        let mut stmt =
            conn.prepare("SELECT name, request FROM training_jobs WHERE spec IS NULL")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Writes a changed spec of a job still `InProgress` (`UpdateTrainingJob`); false when the
    /// job has left that status meanwhile.
    pub fn update_running_spec(
        &self,
        name: &str,
        spec: &TrainingJobSpec,
        last_modified_time: f64,
    ) -> Result<bool, ControlError> {
        let text =
            serde_json::to_string(spec).map_err(|e| ControlError::Internal(e.to_string()))?;
        let changed = self.db.lock().execute(
            "UPDATE training_jobs SET spec = ?2, last_modified_time = ?3
             WHERE name = ?1 AND status = 'InProgress'",
            params![name, text, last_modified_time],
        )?;
        Ok(changed == 1)
    }

    pub fn set_spec(&self, name: &str, spec: &TrainingJobSpec) -> Result<(), ControlError> {
        let text =
            serde_json::to_string(spec).map_err(|e| ControlError::Internal(e.to_string()))?;
        self.db.lock().execute(
            "UPDATE training_jobs SET spec = ?2 WHERE name = ?1",
            params![name, text],
        )?;
        Ok(())
    }
}
