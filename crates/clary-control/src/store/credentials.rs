//! Scoped key pairs in SQLite, so agents and model servers that outlive a server restart can
//! still sign.

use super::Db;
use crate::domain::credentials::{Holder, ScopedKey, WriteGrant};
use crate::error::ControlError;
use rusqlite::{OptionalExtension, params};

#[derive(Clone)]
pub struct CredentialStore {
    db: Db,
}

impl CredentialStore {
    pub fn new(db: Db) -> Self {
        CredentialStore { db }
    }

    pub fn insert(&self, key: &ScopedKey) -> Result<(), ControlError> {
        self.db.lock().execute(
            "INSERT INTO scoped_keys (access_key, secret_key, holder, writes, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                key.access_key,
                key.secret_key,
                serde_json::to_string(&key.holder).expect("plain data serializes"),
                serde_json::to_string(&key.writes).expect("plain data serializes"),
                key.issued_at
            ],
        )?;
        Ok(())
    }

    pub fn get(&self, access_key: &str) -> Result<Option<ScopedKey>, ControlError> {
        let row = self
            .db
            .lock()
            .query_row(
                "SELECT secret_key, holder, writes, issued_at FROM scoped_keys WHERE access_key = ?1",
                params![access_key],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, f64>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((secret_key, holder, writes, issued_at)) = row else {
            return Ok(None);
        };
        let bad = |e: serde_json::Error| {
            ControlError::Internal(format!("scoped key {access_key} is unreadable: {e}"))
        };
        Ok(Some(ScopedKey {
            access_key: access_key.to_string(),
            secret_key,
            holder: parse_holder(&holder).map_err(bad)?,
            writes: serde_json::from_str::<Vec<WriteGrant>>(&writes).map_err(bad)?,
            issued_at,
        }))
    }

    /// Forgets every key of `holder` (its work is over).
    pub fn delete_holder(&self, holder: &Holder) -> Result<(), ControlError> {
        self.db.lock().execute(
            "DELETE FROM scoped_keys WHERE holder = ?1",
            params![serde_json::to_string(holder).expect("plain data serializes")],
        )?;
        Ok(())
    }
}

/// A stored holder; keys issued before job kinds named a training job alone
/// (`{"TrainingJob":"name"}`), and a job may outlive the upgrade.
fn parse_holder(text: &str) -> Result<Holder, serde_json::Error> {
    #[derive(serde::Deserialize)]
    enum Earlier {
        TrainingJob(String),
    }
    serde_json::from_str::<Holder>(text).or_else(|e| match serde_json::from_str::<Earlier>(text) {
        Ok(Earlier::TrainingJob(name)) => Ok(Holder::Job {
            kind: crate::domain::job::Kind::TrainingJob,
            name,
        }),
        Err(_) => Err(e),
    })
}
