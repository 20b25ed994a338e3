//! Jobs of the kinds that keep no columns of their own (processing, transform): one table
//! keyed by kind and name, the typed spec and the lifecycle state as JSON, and the columns a
//! listing filters and sorts on.

use super::Db;
use super::job_state::{parse_state, state_json};
use crate::domain::job::{Job, JobStatus, Kind, ListJobs, Page, SortBy};
use crate::error::ControlError;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

pub struct JobStore<S> {
    db: Db,
    kind: Kind,
    spec: PhantomData<fn() -> S>,
}

impl<S> Clone for JobStore<S> {
    fn clone(&self) -> Self {
        JobStore {
            db: self.db.clone(),
            kind: self.kind,
            spec: PhantomData,
        }
    }
}

fn unreadable(kind: Kind, name: &str, e: impl std::fmt::Display) -> ControlError {
    ControlError::Internal(format!(
        "stored {} {name} is unreadable: {e}",
        kind.as_str()
    ))
}

type Row = (String, String, String, String, String);

impl<S: Serialize + DeserializeOwned> JobStore<S> {
    pub fn new(db: Db, kind: Kind) -> Self {
        JobStore {
            db,
            kind,
            spec: PhantomData,
        }
    }

    fn job(&self, (name, arn, echo, spec, state): Row) -> Result<Job<S>, ControlError> {
        Ok(Job {
            spec: serde_json::from_str(&spec).map_err(|e| unreadable(self.kind, &name, e))?,
            state: parse_state(&state).map_err(|e| unreadable(self.kind, &name, e))?,
            name,
            arn,
            echo,
        })
    }

    /// Inserts a new job with its tags; false when the name is taken for this kind.
    pub fn insert(&self, job: &Job<S>, tags: &[(String, String)]) -> Result<bool, ControlError> {
        let spec =
            serde_json::to_string(&job.spec).map_err(|e| ControlError::Internal(e.to_string()))?;
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let s = &job.state;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO jobs (kind, name, arn, request, spec, status, creation_time,
                last_modified_time, end_time, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                self.kind.as_str(),
                job.name,
                job.arn,
                job.echo,
                spec,
                s.status.as_str(),
                s.creation_time,
                s.last_modified_time,
                s.end_time,
                state_json(s),
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        super::tags::insert_tags(&tx, &job.arn, tags)?;
        tx.commit()?;
        Ok(true)
    }

    pub fn get(&self, name: &str) -> Result<Option<Job<S>>, ControlError> {
        let row: Option<Row> = self
            .db
            .lock()
            .query_row(
                "SELECT name, arn, request, spec, state FROM jobs WHERE kind = ?1 AND name = ?2",
                params![self.kind.as_str(), name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        row.map(|r| self.job(r)).transpose()
    }

    /// Writes the job's state (its spec and request never change).
    pub fn save_state(&self, job: &Job<S>) -> Result<(), ControlError> {
        let s = &job.state;
        self.db.lock().execute(
            "UPDATE jobs SET status = ?3, last_modified_time = ?4, end_time = ?5, state = ?6
             WHERE kind = ?1 AND name = ?2",
            params![
                self.kind.as_str(),
                job.name,
                s.status.as_str(),
                s.last_modified_time,
                s.end_time,
                state_json(s),
            ],
        )?;
        Ok(())
    }

    /// Jobs not yet ended, oldest first: the queue and the running ones.
    pub fn active(&self) -> Result<Vec<Job<S>>, ControlError> {
        let rows: Vec<Row> = {
            let conn = self.db.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT name, arn, request, spec, state FROM jobs
                 WHERE kind = ?1 AND status IN ('InProgress', 'Stopping')
                 ORDER BY creation_time, name",
            )?;
            stmt.query_map(params![self.kind.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?
        };
        rows.into_iter().map(|r| self.job(r)).collect()
    }

    /// One page of a listing, filtered and ordered in SQL.
    pub fn list(&self, q: &ListJobs) -> Result<Page<Job<S>>, ControlError> {
        let order = match q.sort_by {
            SortBy::Name => "name",
            SortBy::Status => "status",
            SortBy::CreationTime => "creation_time",
        };
        let dir = if q.ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT name, arn, request, spec, state FROM jobs
             WHERE kind = ?9
               AND (?1 IS NULL OR instr(lower(name), lower(?1)) > 0)
               AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR creation_time > ?3) AND (?4 IS NULL OR creation_time < ?4)
               AND (?5 IS NULL OR last_modified_time > ?5) AND (?6 IS NULL OR last_modified_time < ?6)
             ORDER BY {order} {dir}, name {dir} LIMIT ?7 OFFSET ?8"
        );
        let max = i64::from(q.max_results);
        let rows: Vec<Row> = {
            let conn = self.db.lock();
            let mut stmt = conn.prepare_cached(&sql)?;
            stmt.query_map(
                params![
                    q.name_contains,
                    q.status_equals.map(JobStatus::as_str),
                    q.creation_time_after,
                    q.creation_time_before,
                    q.last_modified_time_after,
                    q.last_modified_time_before,
                    max + 1,
                    q.offset as i64,
                    self.kind.as_str(),
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?
            .collect::<Result<_, _>>()?
        };
        let more = rows.len() as i64 > max;
        let items = rows
            .into_iter()
            .take(q.max_results as usize)
            .map(|r| self.job(r))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next_offset: more.then(|| q.offset + u64::from(q.max_results)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{Host, HostResult, JobState, Outcome};
    use clary_exec::{ExecHandle, HostProcess};

    fn job(name: &str, now: f64) -> Job<Vec<String>> {
        Job {
            name: name.into(),
            arn: format!("arn:aws:sagemaker:r:1:processing-job/{name}"),
            spec: vec!["a".into(), "b".into()],
            echo: "{}".into(),
            state: JobState::queued(now),
        }
    }

    #[test]
    fn jobs_keep_their_spec_and_state_apart_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("clary.db")).unwrap();
        let store: JobStore<Vec<String>> = JobStore::new(db.clone(), Kind::TrainingJob);
        let mut j = job("j1", 10.0);
        assert!(store.insert(&j, &[("k".into(), "v".into())]).unwrap());
        assert!(!store.insert(&j, &[]).unwrap(), "a name is taken once");
        j.state.start_attempt(
            Kind::TrainingJob.words(),
            vec![Host {
                name: "algo-1".into(),
                log_stream: "j1/algo-1-1".into(),
                address: "127.3.4.1".into(),
                handle: Some(ExecHandle::Process(HostProcess {
                    pid: 42,
                    start_ticks: 7,
                })),
                result: Some(HostResult {
                    outcome: Outcome::Completed,
                    failure_reason: None,
                    exit_code: Some(0),
                    artifacts: None,
                    transient: false,
                }),
            }],
            11.0,
        );
        store.save_state(&j).unwrap();
        assert_eq!(store.get("j1").unwrap().unwrap(), j);
        assert_eq!(store.active().unwrap().len(), 1);
        j.state.finish(
            Kind::TrainingJob.words(),
            Outcome::Completed,
            None,
            Some(0),
            None,
            12.0,
        );
        store.save_state(&j).unwrap();
        assert!(store.active().unwrap().is_empty());
        assert_eq!(store.get("j1").unwrap().unwrap().state, j.state);
    }

    #[test]
    fn listings_filter_sort_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("clary.db")).unwrap();
        let store: JobStore<Vec<String>> = JobStore::new(db, Kind::TrainingJob);
        for (i, name) in ["alpha", "beta", "alphabet"].iter().enumerate() {
            store.insert(&job(name, i as f64), &[]).unwrap();
        }
        let q = ListJobs {
            name_contains: Some("ALPHA".into()),
            max_results: 1,
            ascending: true,
            ..Default::default()
        };
        let first = store.list(&q).unwrap();
        assert_eq!(first.items[0].name, "alpha");
        assert_eq!(first.next_offset, Some(1));
        let second = store
            .list(&ListJobs {
                offset: 1,
                ..q.clone()
            })
            .unwrap();
        assert_eq!(second.items[0].name, "alphabet");
        assert_eq!(second.next_offset, None);
    }
}
