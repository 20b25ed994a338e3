//! CloudWatch-Logs-shaped log storage: groups, streams and events in SQLite, read back the way
//! `GetLogEvents`, `DescribeLogStreams` and `FilterLogEvents` answer.
//!
//! Events are ordered by `(timestamp, id)`; paging tokens are that pair, so `startTime` is
//! inclusive and events sharing a timestamp keep a stable order (the SDK's log loop relies on both).

use crate::store::Db;
use crate::{ControlError, now_millis};
use rusqlite::params;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub const TRAINING_LOG_GROUP: &str = "/aws/sagemaker/TrainingJobs";
const ACCOUNT_ARN_PREFIX: &str = "arn:aws:logs";

#[derive(Clone)]
pub struct Logs {
    db: Db,
    region: String,
    account: String,
    /// Wakes `--follow` readers when events arrive.
    appended: broadcast::Sender<()>,
}

/// A position in a stream's `(timestamp, id)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    ts: i64,
    id: i64,
}

impl Cursor {
    fn encode(self, dir: char) -> String {
        format!("{dir}/{:020}/{:020}", self.ts, self.id)
    }
    fn decode(token: &str) -> Result<(char, Cursor), ControlError> {
        let bad = || {
            ControlError::InvalidParameter(format!("The specified nextToken is invalid: {token:?}"))
        };
        let mut parts = token.split('/');
        let dir = parts
            .next()
            .and_then(|d| d.chars().next())
            .filter(|d| *d == 'f' || *d == 'b')
            .ok_or_else(bad)?;
        let ts = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        Ok((dir, Cursor { ts, id }))
    }
}

pub struct GetEvents<'a> {
    pub group: &'a str,
    pub stream: &'a str,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub next_token: Option<&'a str>,
    pub limit: Option<i64>,
    pub start_from_head: bool,
}

impl Logs {
    pub fn new(db: Db, region: &str, account: &str) -> Self {
        let (appended, _) = broadcast::channel(16);
        Logs {
            db,
            region: region.to_string(),
            account: account.to_string(),
            appended,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.appended.subscribe()
    }

    fn group_arn(&self, group: &str) -> String {
        format!(
            "{ACCOUNT_ARN_PREFIX}:{}:{}:log-group:{group}",
            self.region, self.account
        )
    }

    pub fn create_stream(&self, group: &str, stream: &str) -> Result<(), ControlError> {
        self.db.lock().execute(
            "INSERT OR IGNORE INTO log_streams (log_group, log_stream, creation_time) VALUES (?1, ?2, ?3)",
            params![group, stream, now_millis()],
        )?;
        Ok(())
    }

    /// Appends lines to a stream (creating it); each event keeps the timestamp it was read at.
    pub fn append(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), ControlError> {
        let now = now_millis();
        {
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
        }
        let _ = self.appended.send(());
        Ok(())
    }

    fn group_exists(&self, group: &str) -> Result<bool, ControlError> {
        let n: i64 = self.db.lock().query_row(
            "SELECT COUNT(*) FROM log_streams WHERE log_group = ?1",
            params![group],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn require_group(&self, group: &str) -> Result<(), ControlError> {
        if self.group_exists(group)? {
            Ok(())
        } else {
            Err(ControlError::ResourceNotFound(
                "The specified log group does not exist.".into(),
            ))
        }
    }

    pub fn describe_log_groups(
        &self,
        prefix: &str,
        limit: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Value, ControlError> {
        let limit = limit.unwrap_or(50).clamp(1, 50);
        let after = next_token.unwrap_or("");
        let conn = self.db.lock();
        let mut stmt = conn.prepare(
            "SELECT log_group, MIN(creation_time), COUNT(*) FROM log_streams
             WHERE log_group >= ?1 AND substr(log_group, 1, length(?1)) = ?1 AND log_group > ?2
             GROUP BY log_group ORDER BY log_group LIMIT ?3",
        )?;
        let rows: Vec<(String, i64)> = stmt
            .query_map(params![prefix, after, limit + 1], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let more = rows.len() as i64 > limit;
        let groups: Vec<Value> = rows
            .iter()
            .take(limit as usize)
            .map(|(g, created)| {
                json!({"logGroupName": g, "creationTime": created, "arn": format!("{}:*", self.group_arn(g)),
                       "logGroupArn": self.group_arn(g), "storedBytes": 0, "metricFilterCount": 0})
            })
            .collect();
        let mut out = json!({"logGroups": groups});
        if more && let Some((last, _)) = rows.get(limit as usize - 1) {
            out["nextToken"] = json!(last);
        }
        Ok(out)
    }

    pub fn describe_log_streams(
        &self,
        group: &str,
        prefix: Option<&str>,
        order_by_last_event: bool,
        descending: bool,
        limit: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Value, ControlError> {
        if order_by_last_event && prefix.is_some() {
            return Err(ControlError::InvalidParameter(
                "Cannot order by LastEventTime with a logStreamNamePrefix.".into(),
            ));
        }
        self.require_group(group)?;
        let limit = limit.unwrap_or(50).clamp(1, 50);
        let offset: i64 = match next_token {
            Some(t) => t.parse().map_err(|_| {
                ControlError::InvalidParameter(format!("The specified nextToken is invalid: {t:?}"))
            })?,
            None => 0,
        };
        let prefix = prefix.unwrap_or("");
        let order = match (order_by_last_event, descending) {
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
        let rows: Vec<Value> = stmt
            .query_map(params![group, prefix, limit + 1, offset], |r| {
                let name: String = r.get(0)?;
                let mut v = json!({
                    "logStreamName": name,
                    "creationTime": r.get::<_, i64>(1)?,
                    "arn": format!("{}:log-stream:{name}", self.group_arn(group)),
                    "storedBytes": r.get::<_, i64>(5)?,
                });
                if let Some(first) = r.get::<_, Option<i64>>(2)? {
                    v["firstEventTimestamp"] = json!(first);
                    v["lastEventTimestamp"] = json!(r.get::<_, Option<i64>>(3)?);
                    v["lastIngestionTime"] = json!(r.get::<_, Option<i64>>(4)?);
                }
                Ok(v)
            })?
            .collect::<Result<_, _>>()?;
        let more = rows.len() as i64 > limit;
        let mut out =
            json!({"logStreams": rows.into_iter().take(limit as usize).collect::<Vec<_>>()});
        // Only when more streams really exist: the SDK's loop re-asks forever otherwise.
        if more {
            out["nextToken"] = json!((offset + limit).to_string());
        }
        Ok(out)
    }

    pub fn get_log_events(&self, q: GetEvents<'_>) -> Result<Value, ControlError> {
        let exists: i64 = self.db.lock().query_row(
            "SELECT COUNT(*) FROM log_streams WHERE log_group = ?1 AND log_stream = ?2",
            params![q.group, q.stream],
            |r| r.get(0),
        )?;
        if exists == 0 {
            self.require_group(q.group)?;
            return Err(ControlError::ResourceNotFound(
                "The specified log stream does not exist.".into(),
            ));
        }
        let limit = q.limit.unwrap_or(10_000).clamp(1, 10_000);
        let start = q.start_time.unwrap_or(i64::MIN);
        let end = q.end_time.unwrap_or(i64::MAX);
        let (forward, cursor) = match q.next_token {
            Some(t) => {
                let (dir, c) = Cursor::decode(t)?;
                (dir == 'f', Some(c))
            }
            None => (q.start_from_head, None),
        };
        let conn = self.db.lock();
        let mut rows: Vec<(i64, i64, i64, String)> = if forward {
            let c = cursor.unwrap_or(Cursor {
                ts: i64::MIN,
                id: i64::MIN,
            });
            let mut stmt = conn.prepare_cached(
                "SELECT id, timestamp, ingestion_time, message FROM log_events
                 WHERE log_group = ?1 AND log_stream = ?2 AND timestamp >= ?3 AND timestamp < ?4
                   AND (timestamp > ?5 OR (timestamp = ?5 AND id > ?6))
                 ORDER BY timestamp, id LIMIT ?7",
            )?;
            stmt.query_map(
                params![q.group, q.stream, start, end, c.ts, c.id, limit],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?
            .collect::<Result<_, _>>()?
        } else {
            let c = cursor.unwrap_or(Cursor {
                ts: i64::MAX,
                id: i64::MAX,
            });
            let mut stmt = conn.prepare_cached(
                "SELECT id, timestamp, ingestion_time, message FROM log_events
                 WHERE log_group = ?1 AND log_stream = ?2 AND timestamp >= ?3 AND timestamp < ?4
                   AND (timestamp < ?5 OR (timestamp = ?5 AND id < ?6))
                 ORDER BY timestamp DESC, id DESC LIMIT ?7",
            )?;
            let mut v: Vec<_> = stmt
                .query_map(
                    params![q.group, q.stream, start, end, c.ts, c.id, limit],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?
                .collect::<Result<_, _>>()?;
            v.reverse();
            v
        };
        rows.truncate(limit as usize);
        let events: Vec<Value> = rows
            .iter()
            .map(|(_, ts, ing, msg)| json!({"timestamp": ts, "message": msg, "ingestionTime": ing}))
            .collect();
        // An empty page keeps the caller's position, so polling with the returned token
        // picks up exactly the events that arrive later.
        let (fwd, back) = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => (
                Cursor {
                    ts: last.1,
                    id: last.0,
                },
                Cursor {
                    ts: first.1,
                    id: first.0,
                },
            ),
            _ => {
                let here = cursor.unwrap_or(if forward {
                    Cursor {
                        ts: start.max(0),
                        id: 0,
                    }
                } else {
                    Cursor {
                        ts: end.min(i64::MAX / 2),
                        id: i64::MAX / 2,
                    }
                });
                (here, here)
            }
        };
        Ok(json!({
            "events": events,
            "nextForwardToken": fwd.encode('f'),
            "nextBackwardToken": back.encode('b'),
        }))
    }

    /// `FilterLogEvents`: events across streams, merged by time. `filter_pattern` supports the
    /// plain-term form (every term, or quoted phrase, must appear).
    #[allow(clippy::too_many_arguments)]
    pub fn filter_log_events(
        &self,
        group: &str,
        stream_names: Option<&[String]>,
        stream_prefix: Option<&str>,
        start_time: Option<i64>,
        end_time: Option<i64>,
        filter_pattern: Option<&str>,
        limit: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Value, ControlError> {
        self.require_group(group)?;
        let limit = limit.unwrap_or(10_000).clamp(1, 10_000);
        let after = match next_token {
            Some(t) => Cursor::decode(t)?.1,
            None => Cursor {
                ts: i64::MIN,
                id: i64::MIN,
            },
        };
        let terms = parse_filter_terms(filter_pattern.unwrap_or(""));
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, log_stream, timestamp, ingestion_time, message FROM log_events
             WHERE log_group = ?1 AND timestamp >= ?2 AND timestamp < ?3
               AND substr(log_stream, 1, length(?4)) = ?4
               AND (timestamp > ?5 OR (timestamp = ?5 AND id > ?6))
             ORDER BY timestamp, id",
        )?;
        let mut rows = stmt.query(params![
            group,
            start_time.unwrap_or(i64::MIN),
            end_time.unwrap_or(i64::MAX),
            stream_prefix.unwrap_or(""),
            after.ts,
            after.id
        ])?;
        let mut events = Vec::new();
        let mut last = None;
        let mut more = false;
        while let Some(r) = rows.next()? {
            let (id, stream, ts, ing, msg): (i64, String, i64, i64, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            if stream_names.is_some_and(|names| !names.iter().any(|n| n == &stream)) {
                continue;
            }
            if !terms.iter().all(|t| msg.contains(t.as_str())) {
                continue;
            }
            if events.len() as i64 == limit {
                more = true;
                break;
            }
            events.push(
                json!({"logStreamName": stream, "timestamp": ts, "message": msg,
                               "ingestionTime": ing, "eventId": id.to_string()}),
            );
            last = Some(Cursor { ts, id });
        }
        let mut out = json!({"events": events, "searchedLogStreams": []});
        if more && let Some(c) = last {
            out["nextToken"] = json!(c.encode('f'));
        }
        Ok(out)
    }
}

fn parse_filter_terms(pattern: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut rest = pattern.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            terms.push(r[..end].to_string());
            rest = r.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            terms.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    terms.retain(|t| !t.is_empty());
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs() -> (tempfile::TempDir, Logs) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        (dir, Logs::new(db, "us-east-1", "123456789012"))
    }

    #[test]
    fn get_log_events_pages_forward_inclusively_and_ends_with_an_empty_page() {
        let (_d, logs) = logs();
        logs.append(
            "g",
            "s",
            &[(10, "a".into()), (20, "b".into()), (20, "c".into())],
        )
        .unwrap();
        fn q(start: Option<i64>, token: Option<&str>, limit: Option<i64>) -> GetEvents<'_> {
            GetEvents {
                group: "g",
                stream: "s",
                start_time: start,
                end_time: None,
                next_token: token,
                limit,
                start_from_head: true,
            }
        }
        let p1 = logs.get_log_events(q(Some(0), None, Some(2))).unwrap();
        assert_eq!(p1["events"].as_array().unwrap().len(), 2);
        let t1 = p1["nextForwardToken"].as_str().unwrap().to_string();
        let p2 = logs.get_log_events(q(Some(0), Some(&t1), Some(2))).unwrap();
        assert_eq!(p2["events"][0]["message"], "c");
        let t2 = p2["nextForwardToken"].as_str().unwrap().to_string();
        let p3 = logs.get_log_events(q(Some(0), Some(&t2), None)).unwrap();
        assert_eq!(p3["events"].as_array().unwrap().len(), 0);
        assert_eq!(p3["nextForwardToken"], t2.as_str());
        // startTime is inclusive, and events at one timestamp keep their order.
        let p = logs.get_log_events(q(Some(20), None, None)).unwrap();
        let msgs: Vec<&str> = p["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        assert_eq!(msgs, ["b", "c"]);
        // New events after an empty page are found with the same token.
        logs.append("g", "s", &[(30, "d".into())]).unwrap();
        let p4 = logs.get_log_events(q(Some(0), Some(&t2), None)).unwrap();
        assert_eq!(p4["events"][0]["message"], "d");
    }

    #[test]
    fn describe_log_streams_gives_next_token_only_when_more_exist() {
        let (_d, logs) = logs();
        assert!(matches!(
            logs.describe_log_streams("g", None, false, false, None, None),
            Err(ControlError::ResourceNotFound(_))
        ));
        for s in ["job/algo-1-1", "job/algo-2-1", "other/algo-1-1"] {
            logs.create_stream("g", s).unwrap();
        }
        let all = logs
            .describe_log_streams("g", Some("job/"), false, false, Some(2), None)
            .unwrap();
        assert_eq!(all["logStreams"].as_array().unwrap().len(), 2);
        assert!(all.get("nextToken").is_none());
        let page = logs
            .describe_log_streams("g", None, false, false, Some(2), None)
            .unwrap();
        assert_eq!(page["nextToken"], "2");
        let rest = logs
            .describe_log_streams("g", None, false, false, Some(2), Some("2"))
            .unwrap();
        assert_eq!(rest["logStreams"][0]["logStreamName"], "other/algo-1-1");
        assert!(rest.get("nextToken").is_none());
    }

    #[test]
    fn filter_matches_terms_across_streams() {
        let (_d, logs) = logs();
        logs.append("g", "a", &[(1, "epoch 1 loss 0.5".into())])
            .unwrap();
        logs.append("g", "b", &[(2, "epoch 2 accuracy 0.9".into())])
            .unwrap();
        let out = logs
            .filter_log_events("g", None, None, None, None, Some("\"epoch 2\""), None, None)
            .unwrap();
        assert_eq!(out["events"].as_array().unwrap().len(), 1);
        assert_eq!(out["events"][0]["logStreamName"], "b");
    }
}
