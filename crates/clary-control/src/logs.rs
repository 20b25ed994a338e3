//! CloudWatch-Logs-shaped logs: the jobs' and endpoints' output, appended as events and read
//! back in pages the way `GetLogEvents`, `DescribeLogStreams` and `FilterLogEvents` page (the
//! API shapes the answers). SQL is in `store::logs`; the records in `domain::logs`.

use crate::domain::logs::{Cursor, Direction, EventsPage, LogEvent, LogGroup, LogStream};
use crate::store::logs::{EventRange, LogStore, StreamOrder};
use crate::{ControlError, now_millis};
use tokio::sync::broadcast;

pub const TRAINING_LOG_GROUP: &str = "/aws/sagemaker/TrainingJobs";

#[derive(Clone)]
pub struct Logs {
    store: LogStore,
    /// Wakes `--follow` readers when events arrive.
    appended: broadcast::Sender<()>,
}

/// A `GetLogEvents` request.
pub struct GetEvents<'a> {
    pub group: &'a str,
    pub stream: &'a str,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub next_token: Option<&'a str>,
    pub limit: Option<i64>,
    pub start_from_head: bool,
}

/// A `FilterLogEvents` request.
pub struct FilterEvents<'a> {
    pub group: &'a str,
    pub stream_names: Option<&'a [String]>,
    pub stream_prefix: Option<&'a str>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    /// Plain terms and quoted phrases, all of which must appear.
    pub pattern: Option<&'a str>,
    pub limit: Option<i64>,
    pub next_token: Option<&'a str>,
}

/// A page of a listing and the token of the next one, when more exist.
pub type Listing<T> = (Vec<T>, Option<String>);

fn stream_not_found() -> ControlError {
    ControlError::ResourceNotFound("The specified log stream does not exist.".into())
}

impl Logs {
    pub fn new(store: LogStore) -> Self {
        let (appended, _) = broadcast::channel(16);
        Logs { store, appended }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.appended.subscribe()
    }

    pub fn create_stream(&self, group: &str, stream: &str) -> Result<(), ControlError> {
        self.store.create_stream(group, stream, now_millis())
    }

    /// Appends lines to a stream (creating it); each event keeps the timestamp it was read at.
    pub fn append(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), ControlError> {
        self.store.append(group, stream, events, now_millis())?;
        let _ = self.appended.send(());
        Ok(())
    }

    fn require_group(&self, group: &str) -> Result<(), ControlError> {
        if self.store.group_exists(group)? {
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
    ) -> Result<Listing<LogGroup>, ControlError> {
        let limit = limit.unwrap_or(50).clamp(1, 50);
        let mut groups = self
            .store
            .groups(prefix, next_token.unwrap_or(""), limit + 1)?;
        let more = groups.len() as i64 > limit;
        groups.truncate(limit as usize);
        let next = more
            .then(|| groups.last().map(|g| g.name.clone()))
            .flatten();
        Ok((groups, next))
    }

    pub fn describe_log_streams(
        &self,
        group: &str,
        prefix: Option<&str>,
        order: StreamOrder,
        limit: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Listing<LogStream>, ControlError> {
        if order.by_last_event && prefix.is_some() {
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
        let mut streams =
            self.store
                .streams(group, prefix.unwrap_or(""), order, limit + 1, offset)?;
        // Only when more streams really exist: the SDK's loop re-asks forever otherwise.
        let more = streams.len() as i64 > limit;
        streams.truncate(limit as usize);
        Ok((streams, more.then(|| (offset + limit).to_string())))
    }

    pub fn get_log_events(&self, q: GetEvents<'_>) -> Result<EventsPage, ControlError> {
        if !self.store.stream_exists(q.group, q.stream)? {
            self.require_group(q.group)?;
            return Err(stream_not_found());
        }
        let range = EventRange {
            start: q.start_time.unwrap_or(i64::MIN),
            end: q.end_time.unwrap_or(i64::MAX),
            limit: q.limit.unwrap_or(10_000).clamp(1, 10_000),
        };
        let (direction, cursor) = match q.next_token {
            Some(t) => {
                let (d, c) = Cursor::decode(t)?;
                (d, Some(c))
            }
            None if q.start_from_head => (Direction::Forward, None),
            None => (Direction::Backward, None),
        };
        let events = match direction {
            Direction::Forward => self.store.events_after(
                q.group,
                q.stream,
                range,
                cursor.unwrap_or(Cursor::START),
            )?,
            Direction::Backward => {
                self.store
                    .events_before(q.group, q.stream, range, cursor.unwrap_or(Cursor::END))?
            }
        };
        // An empty page keeps the caller's position, so polling with the returned token
        // picks up exactly the events that arrive later.
        let (forward, backward) = match (events.first(), events.last()) {
            (Some(first), Some(last)) => (
                Cursor {
                    ts: last.timestamp,
                    id: last.id,
                },
                Cursor {
                    ts: first.timestamp,
                    id: first.id,
                },
            ),
            _ => {
                let here = cursor.unwrap_or(match direction {
                    Direction::Forward => Cursor {
                        ts: range.start.max(0),
                        id: 0,
                    },
                    Direction::Backward => Cursor {
                        ts: range.end.min(i64::MAX / 2),
                        id: i64::MAX / 2,
                    },
                });
                (here, here)
            }
        };
        Ok(EventsPage {
            events,
            forward,
            backward,
        })
    }

    /// `FilterLogEvents`: events across streams, merged by time; the position after the last
    /// one when more match.
    pub fn filter_log_events(
        &self,
        q: FilterEvents<'_>,
    ) -> Result<(Vec<LogEvent>, Option<Cursor>), ControlError> {
        self.require_group(q.group)?;
        let limit = q.limit.unwrap_or(10_000).clamp(1, 10_000) as usize;
        let after = match q.next_token {
            Some(t) => Cursor::decode(t)?.1,
            None => Cursor::START,
        };
        let terms = crate::domain::logs::filter_terms(q.pattern.unwrap_or(""));
        let mut events = Vec::new();
        let mut more = false;
        self.store.scan_group(
            q.group,
            q.stream_prefix.unwrap_or(""),
            (
                q.start_time.unwrap_or(i64::MIN),
                q.end_time.unwrap_or(i64::MAX),
            ),
            after,
            |e| {
                if q.stream_names
                    .is_some_and(|names| !names.iter().any(|n| n == &e.stream))
                    || !terms.iter().all(|t| e.message.contains(t.as_str()))
                {
                    return true;
                }
                if events.len() == limit {
                    more = true;
                    return false;
                }
                events.push(e);
                true
            },
        )?;
        let next = more
            .then(|| {
                events.last().map(|e| Cursor {
                    ts: e.timestamp,
                    id: e.id,
                })
            })
            .flatten();
        Ok((events, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn logs() -> (tempfile::TempDir, Logs) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        (dir, Logs::new(LogStore::new(db)))
    }

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

    fn messages(page: &EventsPage) -> Vec<&str> {
        page.events.iter().map(|e| e.message.as_str()).collect()
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
        let p1 = logs.get_log_events(q(Some(0), None, Some(2))).unwrap();
        assert_eq!(p1.events.len(), 2);
        let t1 = p1.forward.encode(Direction::Forward);
        let p2 = logs.get_log_events(q(Some(0), Some(&t1), Some(2))).unwrap();
        assert_eq!(messages(&p2), ["c"]);
        let t2 = p2.forward.encode(Direction::Forward);
        let p3 = logs.get_log_events(q(Some(0), Some(&t2), None)).unwrap();
        assert!(p3.events.is_empty());
        assert_eq!(p3.forward.encode(Direction::Forward), t2);
        // startTime is inclusive, and events at one timestamp keep their order.
        let p = logs.get_log_events(q(Some(20), None, None)).unwrap();
        assert_eq!(messages(&p), ["b", "c"]);
        // New events after an empty page are found with the same token.
        logs.append("g", "s", &[(30, "d".into())]).unwrap();
        let p4 = logs.get_log_events(q(Some(0), Some(&t2), None)).unwrap();
        assert_eq!(messages(&p4), ["d"]);
    }

    #[test]
    fn describe_log_streams_gives_next_token_only_when_more_exist() {
        let (_d, logs) = logs();
        let by_name = StreamOrder {
            by_last_event: false,
            descending: false,
        };
        assert!(matches!(
            logs.describe_log_streams("g", None, by_name, None, None),
            Err(ControlError::ResourceNotFound(_))
        ));
        for s in ["job/algo-1-1", "job/algo-2-1", "other/algo-1-1"] {
            logs.create_stream("g", s).unwrap();
        }
        let (all, next) = logs
            .describe_log_streams("g", Some("job/"), by_name, Some(2), None)
            .unwrap();
        assert_eq!(all.len(), 2);
        assert!(next.is_none());
        let (_, next) = logs
            .describe_log_streams("g", None, by_name, Some(2), None)
            .unwrap();
        assert_eq!(next.as_deref(), Some("2"));
        let (rest, next) = logs
            .describe_log_streams("g", None, by_name, Some(2), Some("2"))
            .unwrap();
        assert_eq!(rest[0].name, "other/algo-1-1");
        assert!(next.is_none());
    }

    #[test]
    fn filter_matches_terms_across_streams() {
        let (_d, logs) = logs();
        logs.append("g", "a", &[(1, "epoch 1 loss 0.5".into())])
            .unwrap();
        logs.append("g", "b", &[(2, "epoch 2 accuracy 0.9".into())])
            .unwrap();
        let (events, next) = logs
            .filter_log_events(FilterEvents {
                group: "g",
                stream_names: None,
                stream_prefix: None,
                start_time: None,
                end_time: None,
                pattern: Some("\"epoch 2\""),
                limit: None,
                next_token: None,
            })
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].stream, "b");
        assert!(next.is_none());
    }
}
