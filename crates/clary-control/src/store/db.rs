//! The SQLite database: one connection (SQLite has one writer anyway), WAL mode, and
//! migrations numbered by `PRAGMA user_version`.

use crate::error::ControlError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a released entry; append.
const MIGRATIONS: &[&str] = &[
    // 1: training jobs, logs, tags.
    "CREATE TABLE training_jobs (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL,
        secondary_status TEXT NOT NULL,
        status_message TEXT NOT NULL DEFAULT '',
        failure_reason TEXT,
        exit_code INTEGER,
        creation_time REAL NOT NULL,
        last_modified_time REAL NOT NULL,
        training_start_time REAL,
        training_end_time REAL,
        model_artifacts TEXT,
        transitions TEXT NOT NULL DEFAULT '[]',
        hosts TEXT NOT NULL DEFAULT '[]',
        runtime TEXT NOT NULL,
        stop_requested INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX training_jobs_by_creation ON training_jobs(creation_time);
     CREATE TABLE log_streams (
        log_group TEXT NOT NULL,
        log_stream TEXT NOT NULL,
        creation_time INTEGER NOT NULL,
        PRIMARY KEY (log_group, log_stream)
     );
     CREATE TABLE log_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        log_group TEXT NOT NULL,
        log_stream TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        ingestion_time INTEGER NOT NULL,
        message TEXT NOT NULL
     );
     CREATE INDEX log_events_by_stream ON log_events(log_group, log_stream, timestamp, id);
     CREATE TABLE tags (
        resource_arn TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (resource_arn, key)
     );",
    // 2: hosting: models, endpoint configs, endpoints (their instances kept as JSON).
    "CREATE TABLE models (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        request TEXT NOT NULL,
        creation_time REAL NOT NULL
     );
     CREATE TABLE endpoint_configs (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        request TEXT NOT NULL,
        creation_time REAL NOT NULL
     );
     CREATE TABLE endpoints (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        state TEXT NOT NULL,
        creation_time REAL NOT NULL
     );",
    // 3: a training job's typed spec (the domain's own format), beside the request the API echoes.
    "ALTER TABLE training_jobs ADD COLUMN spec TEXT;",
    // 4: the typed specs of models (their container) and endpoint configs (their variants).
    "ALTER TABLE models ADD COLUMN spec TEXT;
     ALTER TABLE endpoint_configs ADD COLUMN spec TEXT;",
    // 5: key pairs scoped to one training job or endpoint instance.
    "CREATE TABLE scoped_keys (
        access_key TEXT PRIMARY KEY,
        secret_key TEXT NOT NULL,
        holder TEXT NOT NULL,
        writes TEXT NOT NULL,
        issued_at REAL NOT NULL
     );
     CREATE INDEX scoped_keys_by_holder ON scoped_keys(holder);",
    // 6: metric samples read from training logs.
    "CREATE TABLE metric_samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL,
        metric TEXT NOT NULL,
        host TEXT NOT NULL,
        timestamp REAL NOT NULL,
        value REAL NOT NULL
     );
     CREATE INDEX metric_samples_by_series ON metric_samples(job, metric, timestamp);",
    // 7: hyperparameter tuning jobs and their trials.
    "CREATE TABLE tuning_jobs (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        request TEXT NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        failure_reason TEXT,
        creation_time REAL NOT NULL,
        last_modified_time REAL NOT NULL,
        end_time REAL
     );
     CREATE TABLE tuning_trials (
        tuning_job TEXT NOT NULL,
        idx INTEGER NOT NULL,
        name TEXT NOT NULL UNIQUE,
        hyperparameters TEXT NOT NULL,
        early_stopped INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tuning_job, idx)
     );",
    // 8: the training job definition a trial runs, when a tuning job has several.
    "ALTER TABLE tuning_trials ADD COLUMN definition TEXT;",
    // 9: jobs of the kinds without a table of their own (processing, transform).
    "CREATE TABLE jobs (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        arn TEXT NOT NULL,
        request TEXT NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        creation_time REAL NOT NULL,
        last_modified_time REAL NOT NULL,
        end_time REAL,
        state TEXT NOT NULL,
        PRIMARY KEY (kind, name)
     );
     CREATE INDEX jobs_by_creation ON jobs(kind, creation_time);",
    // 10: endpoint invocation metrics, one row per endpoint, variant and second.
    "CREATE TABLE endpoint_metrics (
        endpoint TEXT NOT NULL,
        variant TEXT NOT NULL,
        second INTEGER NOT NULL,
        invocations REAL NOT NULL,
        client_errors REAL NOT NULL,
        server_errors REAL NOT NULL,
        model_count REAL NOT NULL,
        model_sum REAL NOT NULL,
        model_min REAL,
        model_max REAL,
        overhead_count REAL NOT NULL,
        overhead_sum REAL NOT NULL,
        overhead_min REAL,
        overhead_max REAL,
        PRIMARY KEY (endpoint, variant, second)
     );
     CREATE INDEX endpoint_metrics_by_second ON endpoint_metrics(second);",
];

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, ControlError> {
        let conn = Connection::open(path).map_err(|e| {
            ControlError::Internal(format!("opening the database {}: {e}", path.display()))
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let db = Db {
            conn: Arc::new(Mutex::new(conn)),
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&self) -> Result<(), ControlError> {
        let mut conn = self.lock();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            return Err(ControlError::Internal(format!(
                "the database is at schema version {version}, newer than this clary ({}); use a newer clary",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The connection. Statements are short; callers hold the guard only for one operation.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl From<rusqlite::Error> for ControlError {
    fn from(e: rusqlite::Error) -> Self {
        ControlError::Internal(format!("database: {e}"))
    }
}
