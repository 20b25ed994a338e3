//! Tags of any resource, by ARN.

use super::Db;
use crate::error::ControlError;
use rusqlite::params;

#[derive(Clone)]
pub struct TagStore {
    db: Db,
}

impl TagStore {
    pub fn new(db: Db) -> Self {
        TagStore { db }
    }

    pub fn list(&self, arn: &str) -> Result<Vec<(String, String)>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached("SELECT key, value FROM tags WHERE resource_arn = ?1 ORDER BY key")?;
        let tags = stmt
            .query_map(params![arn], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(tags)
    }

    pub fn add(&self, arn: &str, tags: &[(String, String)]) -> Result<(), ControlError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        insert_tags(&tx, arn, tags)?;
        tx.commit()?;
        Ok(())
    }

    pub fn delete(&self, arn: &str, keys: &[String]) -> Result<(), ControlError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        for k in keys {
            tx.execute(
                "DELETE FROM tags WHERE resource_arn = ?1 AND key = ?2",
                params![arn, k],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether a job (of any kind), model, endpoint configuration or endpoint has this ARN.
    pub fn resource_exists(&self, arn: &str) -> Result<bool, ControlError> {
        let n: i64 = self.db.lock().query_row(
            "SELECT (SELECT COUNT(*) FROM training_jobs WHERE arn = ?1) + (SELECT COUNT(*) FROM models WHERE arn = ?1)
                + (SELECT COUNT(*) FROM endpoint_configs WHERE arn = ?1) + (SELECT COUNT(*) FROM endpoints WHERE arn = ?1)
                + (SELECT COUNT(*) FROM jobs WHERE arn = ?1)",
            params![arn],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

/// Sets `tags` on `arn` within `tx`: a resource and its tags are stored together.
pub(super) fn insert_tags(
    tx: &rusqlite::Transaction<'_>,
    arn: &str,
    tags: &[(String, String)],
) -> rusqlite::Result<()> {
    for (k, v) in tags {
        tx.execute(
            "INSERT OR REPLACE INTO tags (resource_arn, key, value) VALUES (?1, ?2, ?3)",
            params![arn, k, v],
        )?;
    }
    Ok(())
}
