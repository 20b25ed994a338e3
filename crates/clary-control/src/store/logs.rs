//! Log groups, streams and events in SQLite (`log_streams`, `log_events`).

use super::Db;
use crate::domain::logs::{Cursor, LogEvent, LogGroup, LogStream};
use crate::error::ControlError;
use rusqlite::params;

/// How `DescribeLogStreams` orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOrder {
    pub by_last_event: bool,
    pub descending: bool,
}

/// Which events of a stream a page reads.
#[derive(Debug, Clone, Copy)]
pub struct EventRange {
    pub start: i64,
    pub end: i64,
    pub limit: i64,
}

#[derive(Clone)]
pub struct LogStore {
    db: Db,
}

fn event(r: &rusqlite::Row<'_>, stream: &str) -> rusqlite::Result<LogEvent> {
    Ok(LogEvent {
        id: r.get(0)?,
        timestamp: r.get(1)?,
        ingestion_time: r.get(2)?,
        message: r.get(3)?,
        stream: stream.to_string(),
    })
}

impl LogStore {
    pub fn new(db: Db) -> Self {
        LogStore { db }
    }

    pub fn create_stream(&self, group: &str, stream: &str, now: i64) -> Result<(), ControlError> {
        self.db.lock().execute(
            "INSERT OR IGNORE INTO log_streams (log_group, log_stream, creation_time) VALUES (?1, ?2, ?3)",
            params![group, stream, now],
        )?;
        Ok(())
    }

    /// Appends events to a stream (creating it) in one transaction.
    pub fn append(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
        now: i64,
    ) -> Result<(), ControlError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO log_streams (log_group, log_stream, creation_time) VALUES (?1, ?2, ?3)",
            params![group, stream, now],
        )?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO log_events (log_group, log_stream, timestamp, ingestion_time, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (ts, msg) in events {
                ins.execute(params![group, stream, ts, now, msg])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn group_exists(&self, group: &str) -> Result<bool, ControlError> {
        let n: i64 = self.db.lock().query_row(
            "SELECT COUNT(*) FROM log_streams WHERE log_group = ?1",
            params![group],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    pub fn stream_exists(&self, group: &str, stream: &str) -> Result<bool, ControlError> {
        let n: i64 = self.db.lock().query_row(
            "SELECT COUNT(*) FROM log_streams WHERE log_group = ?1 AND log_stream = ?2",
            params![group, stream],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Up to `limit` groups named with `prefix`, after `after`, by name.
    pub fn groups(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<LogGroup>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare(
            "SELECT log_group, MIN(creation_time) FROM log_streams
             WHERE log_group >= ?1 AND substr(log_group, 1, length(?1)) = ?1 AND log_group > ?2
             GROUP BY log_group ORDER BY log_group LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![prefix, after, limit], |r| {
                Ok(LogGroup {
                    name: r.get(0)?,
                    creation_time: r.get(1)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Up to `limit` streams of `group` named with `prefix`, from `offset`, in `order`.
    pub fn streams(
        &self,
        group: &str,
        prefix: &str,
        order: StreamOrder,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<LogStream>, ControlError> {
        let order = match (order.by_last_event, order.descending) {
            (false, false) => "s.log_stream ASC",
            (false, true) => "s.log_stream DESC",
            (true, false) => "last_ts ASC, s.log_stream ASC",
            (true, true) => "last_ts DESC, s.log_stream DESC",
        };
        let conn = self.db.lock();
        let sql = format!(
            "SELECT s.log_stream, s.creation_time,
                    (SELECT MIN(timestamp) FROM log_events e WHERE e.log_group = s.log_group AND e.log_stream = s.log_stream),
                    (SELECT MAX(timestamp) FROM log_events e WHERE e.log_group = s.log_group AND e.log_stream = s.log_stream) AS last_ts,
                    (SELECT MAX(ingestion_time) FROM log_events e WHERE e.log_group = s.log_group AND e.log_stream = s.log_stream),
                    (SELECT COALESCE(SUM(length(message)), 0) FROM log_events e WHERE e.log_group = s.log_group AND e.log_stream = s.log_stream)
             FROM log_streams s
             WHERE s.log_group = ?1 AND substr(s.log_stream, 1, length(?2)) = ?2
             ORDER BY {order} LIMIT ?3 OFFSET ?4"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map(params![group, prefix, limit, offset], |r| {
                let first: Option<i64> = r.get(2)?;
                let last: Option<i64> = r.get(3)?;
                let ingested: Option<i64> = r.get(4)?;
                Ok(LogStream {
                    name: r.get(0)?,
                    creation_time: r.get(1)?,
                    events: match (first, last, ingested) {
                        (Some(f), Some(l), Some(i)) => Some((f, l, i)),
                        _ => None,
                    },
                    stored_bytes: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Events of one stream in `range` strictly after `after` (oldest first).
    pub fn events_after(
        &self,
        group: &str,
        stream: &str,
        range: EventRange,
        after: Cursor,
    ) -> Result<Vec<LogEvent>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, timestamp, ingestion_time, message FROM log_events
             WHERE log_group = ?1 AND log_stream = ?2 AND timestamp >= ?3 AND timestamp < ?4
               AND (timestamp > ?5 OR (timestamp = ?5 AND id > ?6))
             ORDER BY timestamp, id LIMIT ?7",
        )?;
        let rows = stmt
            .query_map(
                params![
                    group,
                    stream,
                    range.start,
                    range.end,
                    after.ts,
                    after.id,
                    range.limit
                ],
                |r| event(r, stream),
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Events of one stream in `range` strictly before `before`, the latest `limit` of them
    /// (oldest first).
    pub fn events_before(
        &self,
        group: &str,
        stream: &str,
        range: EventRange,
        before: Cursor,
    ) -> Result<Vec<LogEvent>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, timestamp, ingestion_time, message FROM log_events
             WHERE log_group = ?1 AND log_stream = ?2 AND timestamp >= ?3 AND timestamp < ?4
               AND (timestamp < ?5 OR (timestamp = ?5 AND id < ?6))
             ORDER BY timestamp DESC, id DESC LIMIT ?7",
        )?;
        let mut rows: Vec<LogEvent> = stmt
            .query_map(
                params![
                    group,
                    stream,
                    range.start,
                    range.end,
                    before.ts,
                    before.id,
                    range.limit
                ],
                |r| event(r, stream),
            )?
            .collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Events of a group across streams named with `stream_prefix`, in `(timestamp, id)` order
    /// after `after`, each offered to `take` until it says stop (false).
    pub fn scan_group(
        &self,
        group: &str,
        stream_prefix: &str,
        range: (i64, i64),
        after: Cursor,
        mut take: impl FnMut(LogEvent) -> bool,
    ) -> Result<(), ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, timestamp, ingestion_time, message, log_stream FROM log_events
             WHERE log_group = ?1 AND timestamp >= ?2 AND timestamp < ?3
               AND substr(log_stream, 1, length(?4)) = ?4
               AND (timestamp > ?5 OR (timestamp = ?5 AND id > ?6))
             ORDER BY timestamp, id",
        )?;
        let mut rows = stmt.query(params![
            group,
            range.0,
            range.1,
            stream_prefix,
            after.ts,
            after.id
        ])?;
        while let Some(r) = rows.next()? {
            let stream: String = r.get(4)?;
            if !take(event(r, &stream)?) {
                break;
            }
        }
        Ok(())
    }
}
