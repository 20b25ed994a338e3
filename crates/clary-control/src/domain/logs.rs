//! CloudWatch-Logs-shaped log records: groups, streams, events, and the positions pages
//! continue from. Events are ordered by `(timestamp, id)`; a position is that pair, so
//! `startTime` is inclusive and events sharing a timestamp keep a stable order (the SDK's log
//! loop relies on both).

use crate::error::ControlError;

/// A position in a stream's `(timestamp, id)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts: i64,
    pub id: i64,
}

/// Which way a page of events continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

impl Cursor {
    pub const START: Cursor = Cursor {
        ts: i64::MIN,
        id: i64::MIN,
    };
    pub const END: Cursor = Cursor {
        ts: i64::MAX,
        id: i64::MAX,
    };

    /// The opaque token of a position: `f/<ts>/<id>` or `b/<ts>/<id>`.
    pub fn encode(self, dir: Direction) -> String {
        let d = match dir {
            Direction::Forward => 'f',
            Direction::Backward => 'b',
        };
        format!("{d}/{:020}/{:020}", self.ts, self.id)
    }

    pub fn decode(token: &str) -> Result<(Direction, Cursor), ControlError> {
        let bad = || {
            ControlError::InvalidParameter(format!("The specified nextToken is invalid: {token:?}"))
        };
        let mut parts = token.split('/');
        let dir = match parts.next() {
            Some("f") => Direction::Forward,
            Some("b") => Direction::Backward,
            _ => return Err(bad()),
        };
        let ts = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        Ok((dir, Cursor { ts, id }))
    }
}

/// A log group: the streams that share its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroup {
    pub name: String,
    pub creation_time: i64,
}

/// A log stream with what its events say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStream {
    pub name: String,
    pub creation_time: i64,
    /// First and last event timestamps and the last ingestion time, once it has events.
    pub events: Option<(i64, i64, i64)>,
    pub stored_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub id: i64,
    pub stream: String,
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub message: String,
}

/// One page of `GetLogEvents`, with the positions either way from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsPage {
    pub events: Vec<LogEvent>,
    pub forward: Cursor,
    pub backward: Cursor,
}

/// `FilterLogEvents`' plain-term patterns: every term, or quoted phrase, must appear.
pub fn filter_terms(pattern: &str) -> Vec<String> {
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

    #[test]
    fn tokens_round_trip_and_nonsense_is_refused() {
        let c = Cursor { ts: 5, id: -3 };
        assert_eq!(
            Cursor::decode(&c.encode(Direction::Backward)).unwrap(),
            (Direction::Backward, c)
        );
        assert!(Cursor::decode("x/1/2").is_err());
        assert!(Cursor::decode("f/1").is_err());
    }

    #[test]
    fn filter_patterns_split_into_terms_and_phrases() {
        assert_eq!(
            filter_terms(r#"loss "epoch 2"  acc"#),
            ["loss", "epoch 2", "acc"]
        );
        assert!(filter_terms("  ").is_empty());
    }
}
