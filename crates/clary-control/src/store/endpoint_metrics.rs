//! Endpoint invocation metrics in SQLite: one row per endpoint, variant and second.

use super::Db;
use crate::domain::endpoint_metrics::{Aggregate, Second};
use crate::error::ControlError;
use rusqlite::params;

#[derive(Clone)]
pub struct EndpointMetricStore {
    db: Db,
}

/// One stored second: endpoint, variant, epoch second and its aggregate.
pub type StoredSecond = (String, String, i64, Second);

fn aggregate(count: f64, sum: f64, min: Option<f64>, max: Option<f64>) -> Aggregate {
    Aggregate {
        count,
        sum,
        min: min.unwrap_or(f64::INFINITY),
        max: max.unwrap_or(f64::NEG_INFINITY),
    }
}

/// SQLite has no infinities: an empty aggregate's bounds are stored as NULL.
fn bound(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl EndpointMetricStore {
    pub fn new(db: Db) -> Self {
        EndpointMetricStore { db }
    }

    /// Adds the seconds to what is stored (a second may arrive in several flushes).
    pub fn add(&self, seconds: &[StoredSecond]) -> Result<(), ControlError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO endpoint_metrics (endpoint, variant, second, invocations, client_errors,
                    server_errors, model_count, model_sum, model_min, model_max,
                    overhead_count, overhead_sum, overhead_min, overhead_max)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (endpoint, variant, second) DO UPDATE SET
                    invocations = invocations + excluded.invocations,
                    client_errors = client_errors + excluded.client_errors,
                    server_errors = server_errors + excluded.server_errors,
                    model_count = model_count + excluded.model_count,
                    model_sum = model_sum + excluded.model_sum,
                    model_min = min(coalesce(model_min, excluded.model_min), coalesce(excluded.model_min, model_min)),
                    model_max = max(coalesce(model_max, excluded.model_max), coalesce(excluded.model_max, model_max)),
                    overhead_count = overhead_count + excluded.overhead_count,
                    overhead_sum = overhead_sum + excluded.overhead_sum,
                    overhead_min = min(coalesce(overhead_min, excluded.overhead_min), coalesce(excluded.overhead_min, overhead_min)),
                    overhead_max = max(coalesce(overhead_max, excluded.overhead_max), coalesce(excluded.overhead_max, overhead_max))",
            )?;
            for (endpoint, variant, second, s) in seconds {
                stmt.execute(params![
                    endpoint,
                    variant,
                    second,
                    s.invocations,
                    s.client_errors,
                    s.server_errors,
                    s.model.count,
                    s.model.sum,
                    bound(s.model.min),
                    bound(s.model.max),
                    s.overhead.count,
                    s.overhead.sum,
                    bound(s.overhead.min),
                    bound(s.overhead.max),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The seconds of one endpoint (one variant, or all) in `[start, end)`.
    pub fn seconds(
        &self,
        endpoint: &str,
        variant: Option<&str>,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, Second)>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT second, invocations, client_errors, server_errors, model_count, model_sum,
                model_min, model_max, overhead_count, overhead_sum, overhead_min, overhead_max
             FROM endpoint_metrics
             WHERE endpoint = ?1 AND (?2 IS NULL OR variant = ?2) AND second >= ?3 AND second < ?4
             ORDER BY second",
        )?;
        let rows = stmt
            .query_map(params![endpoint, variant, start, end], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Second {
                        invocations: r.get(1)?,
                        client_errors: r.get(2)?,
                        server_errors: r.get(3)?,
                        model: aggregate(r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?),
                        overhead: aggregate(r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?),
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The (endpoint, variant) pairs with any invocation, optionally of one endpoint.
    pub fn series(&self, endpoint: Option<&str>) -> Result<Vec<(String, String)>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT endpoint, variant FROM endpoint_metrics
             WHERE ?1 IS NULL OR endpoint = ?1 ORDER BY endpoint, variant",
        )?;
        let rows = stmt
            .query_map(params![endpoint], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Forgets seconds older than `before` (CloudWatch keeps 1-second data briefly too).
    pub fn prune(&self, before: i64) -> Result<(), ControlError> {
        self.db.lock().execute(
            "DELETE FROM endpoint_metrics WHERE second < ?1",
            params![before],
        )?;
        Ok(())
    }
}
