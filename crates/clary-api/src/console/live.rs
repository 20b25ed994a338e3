//! Server-sent events that keep the console's pages live. Each open page has one stream: a
//! task polls the control plane when logs arrive (the log store's broadcast) or once a second,
//! and sends only what changed: re-rendered fragments (escaped on the server, like the pages),
//! new log lines per stream, new metric points per series. The task ends when the browser goes
//! away (its channel closes) or, for a job, once it has ended and its last lines are sent.
//!
//! Every message is one JSON object (`data:`), read by `console.js`:
//! `{"fragments": {name: html}, "logs": [{"stream", "lines": [[ms, text]]}],
//!   "series": [{"chart", "label", "points": [[secs, value]]}], "tuning": {...}, "gone": true}`;
//! `event: end` says the page will not change again.

use super::auth::Session;
use super::pages::{self, JobFilter};
use super::{ConsoleError, ConsoleRequest, plain};
use crate::{ApiState, Body, BoxError};
use bytes::Bytes;
use clary_control::domain::endpoint::endpoint_log_group;
use clary_control::domain::job::Kind;
use clary_control::logs::GetEvents;
use clary_control::store::logs::StreamOrder;
use clary_control::store::metrics::SampleQuery;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a stream looks again when nothing woke it.
const TICK: Duration = Duration::from_secs(1);
/// After a wake-up, how long to gather what else arrives before looking.
const SETTLE: Duration = Duration::from_millis(150);
/// A comment this often, so a stream whose browser went away is noticed and ended.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Lines of a stream's tail sent when a page opens, and at most per message after that.
const LOG_TAIL: i64 = 1000;
const LOG_BATCH: i64 = 2000;
/// Polls after a job ended, so lines its hosts sent last still arrive.
const AFTER_END: u8 = 2;

/// What one look found.
#[derive(Default)]
struct Look {
    message: Option<Value>,
    /// Nothing more will change.
    done: bool,
    /// More is waiting (a long log): look again at once.
    more: bool,
}

trait Feed: Send + 'static {
    fn look(&mut self, state: &ApiState) -> Result<Look, ConsoleError>;
}

fn event_stream(state: Arc<ApiState>, feed: impl Feed) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(run(state, feed, tx));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn run<F: Feed>(state: Arc<ApiState>, mut feed: F, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let mut appended = state.control.logs.subscribe();
    let mut last_sent = Instant::now();
    // Tells the browser to wait a little before reconnecting after the server restarts.
    if tx
        .send(Bytes::from_static(b"retry: 2000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let st = state.clone();
        let Ok((f, look)) = tokio::task::spawn_blocking(move || {
            let look = feed.look(&st);
            (feed, look)
        })
        .await
        else {
            return;
        };
        feed = f;
        let look = match look {
            Ok(l) => l,
            Err(e) => {
                if let ConsoleError::Internal(m) = &e {
                    tracing::error!("console: {m}");
                }
                let msg = json!({"error": e.to_string()});
                let _ = tx
                    .send(Bytes::from(format!("event: failed\ndata: {msg}\n\n")))
                    .await;
                return;
            }
        };
        if let Some(m) = look.message {
            if tx
                .send(Bytes::from(format!("data: {m}\n\n")))
                .await
                .is_err()
            {
                return;
            }
            last_sent = Instant::now();
        }
        if look.done {
            let _ = tx
                .send(Bytes::from_static(b"event: end\ndata: {}\n\n"))
                .await;
            return;
        }
        if look.more {
            continue;
        }
        if last_sent.elapsed() >= KEEP_ALIVE {
            if tx.send(Bytes::from_static(b": alive\n\n")).await.is_err() {
                return;
            }
            last_sent = Instant::now();
        }
        tokio::select! {
            _ = appended.recv() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep(TICK) => {}
            _ = tx.closed() => return,
        }
    }
}

fn refused() -> Response<Body> {
    plain(StatusCode::NOT_FOUND, "no such event stream")
}

// ---------------------------------------------------------------- listings

/// Renders a listing's rows.
type Rows = Box<dyn Fn(&ApiState) -> Result<String, ConsoleError> + Send>;

struct ListFeed {
    render: Rows,
    last: String,
}

impl Feed for ListFeed {
    fn look(&mut self, state: &ApiState) -> Result<Look, ConsoleError> {
        let html = (self.render)(state)?;
        if html == self.last {
            return Ok(Look::default());
        }
        let message = json!({"fragments": {"list": html}});
        self.last = html;
        Ok(Look {
            message: Some(message),
            ..Look::default()
        })
    }
}

/// A listing's rows, kept live (the same filters and page as the page it belongs to).
pub fn list(state: Arc<ApiState>, which: &str, req: &ConsoleRequest) -> Response<Body> {
    let page = req
        .param("page")
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(1)
        .clamp(1, 1_000_000);
    let render: Rows = match which {
        "training-jobs" => {
            let f = JobFilter::of(&req.query);
            Box::new(move |s| pages::training_rows(s, &f))
        }
        "processing-jobs" => {
            let f = JobFilter::of(&req.query);
            Box::new(move |s| pages::processing_rows(s, &f))
        }
        "transform-jobs" => {
            let f = JobFilter::of(&req.query);
            Box::new(move |s| pages::transform_rows(s, &f))
        }
        "tuning-jobs" => Box::new(move |s| pages::tuning_rows(s, page)),
        "endpoints" => Box::new(move |s| pages::endpoint_rows(s, page)),
        _ => return refused(),
    };
    // The first look sends the rows again: the page may be older than the stream.
    event_stream(
        state,
        ListFeed {
            render,
            last: String::new(),
        },
    )
}

// ---------------------------------------------------------------- logs and metrics

/// Where each of a log group's streams (under a prefix) was read to.
#[derive(Default)]
struct LogFollower {
    group: String,
    prefix: Option<String>,
    /// Stream → the forward token after its last line sent (`None` until it had lines).
    streams: BTreeMap<String, Option<String>>,
}

impl LogFollower {
    fn new(group: String, prefix: Option<String>) -> Self {
        LogFollower {
            group,
            prefix,
            streams: BTreeMap::new(),
        }
    }

    /// New lines of every stream: `([{"stream", "lines"}], more waiting)`.
    fn look(&mut self, state: &ApiState) -> Result<(Vec<Value>, bool), ConsoleError> {
        let logs = &state.control.logs;
        match logs.describe_log_streams(
            &self.group,
            self.prefix.as_deref(),
            StreamOrder {
                by_last_event: false,
                descending: false,
            },
            Some(50),
            None,
        ) {
            Ok((found, _)) => {
                for s in found {
                    self.streams.entry(s.name).or_insert(None);
                }
            }
            // No stream yet: the group appears with the first one.
            Err(clary_control::ControlError::ResourceNotFound(_)) => return Ok((vec![], false)),
            Err(e) => return Err(e.into()),
        }
        let mut out = Vec::new();
        let mut more = false;
        for (stream, token) in self.streams.iter_mut() {
            // The first look takes the stream's tail; later ones go forward from there.
            let page = match logs.get_log_events(GetEvents {
                group: &self.group,
                stream,
                start_time: None,
                end_time: None,
                next_token: token.as_deref(),
                limit: Some(if token.is_some() { LOG_BATCH } else { LOG_TAIL }),
                start_from_head: false,
            }) {
                Ok(p) => p,
                Err(clary_control::ControlError::ResourceNotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if page.events.is_empty() {
                continue;
            }
            more |= token.is_some() && page.events.len() as i64 >= LOG_BATCH;
            *token = Some(
                page.forward
                    .encode(clary_control::domain::logs::Direction::Forward),
            );
            let label = match &self.prefix {
                Some(p) => stream.strip_prefix(p.as_str()).unwrap_or(stream),
                None => stream.as_str(),
            };
            let lines: Vec<Value> = page
                .events
                .iter()
                .map(|e| json!([e.timestamp, e.message]))
                .collect();
            out.push(json!({"stream": label, "lines": lines}));
        }
        Ok((out, more))
    }
}

/// Where each of a job's metric series (metric, host) was read to: the last timestamp sent
/// and how many points at exactly that timestamp were sent.
#[derive(Default)]
struct MetricFollower {
    job: String,
    sent: HashMap<(String, String), (f64, usize)>,
}

impl MetricFollower {
    fn look(&mut self, state: &ApiState) -> Result<Vec<Value>, ConsoleError> {
        let metrics = &state.control.metrics;
        let mut out = Vec::new();
        for s in metrics.series(None, Some(&self.job))? {
            let key = (s.metric.clone(), s.host.clone());
            let (from, at_from) = self.sent.get(&key).copied().unwrap_or((f64::MIN, 0));
            let points = metrics.samples(SampleQuery {
                job: &self.job,
                metric: &s.metric,
                host: Some(&s.host),
                start: from,
                end: f64::MAX,
            })?;
            let new: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .skip(if from == f64::MIN { 0 } else { at_from })
                .collect();
            if new.is_empty() {
                continue;
            }
            let last = points.last().map_or(from, |p| p.0);
            let at_last = points.iter().filter(|p| p.0 == last).count();
            self.sent.insert(key, (last, at_last));
            let pts: Vec<Value> = new.iter().map(|(t, v)| json!([t, v])).collect();
            out.push(json!({"chart": s.metric, "label": s.host, "points": pts}));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- one job

/// A job of any kind: its status fragment, every host's log, and (training) its metrics.
struct JobFeed {
    kind: Kind,
    name: String,
    csrf: String,
    status: String,
    logs: LogFollower,
    metrics: Option<MetricFollower>,
    after_end: u8,
}

impl Feed for JobFeed {
    fn look(&mut self, state: &ApiState) -> Result<Look, ConsoleError> {
        let (status, ended) = match self.kind {
            Kind::TrainingJob => {
                let job = state.control.training.get(&self.name)?;
                (
                    pages::training_status(state, &job, &self.csrf),
                    job.state.status.is_terminal(),
                )
            }
            Kind::ProcessingJob => {
                let job = state.control.processing.get(&self.name)?;
                (
                    pages::processing_status(&job, &self.csrf),
                    job.state.status.is_terminal(),
                )
            }
            Kind::TransformJob => {
                let job = state.control.transform.get(&self.name)?;
                (
                    pages::transform_status(&job, &self.csrf),
                    job.state.status.is_terminal(),
                )
            }
        };
        let mut message = serde_json::Map::new();
        if status != self.status {
            message.insert("fragments".into(), json!({ "status": status }));
            self.status = status;
        }
        let (lines, more) = self.logs.look(state)?;
        if !lines.is_empty() {
            message.insert("logs".into(), Value::Array(lines));
        }
        if let Some(metrics) = &mut self.metrics {
            let series = metrics.look(state)?;
            if !series.is_empty() {
                message.insert("series".into(), Value::Array(series));
            }
        }
        let done = if ended && !more {
            self.after_end += 1;
            self.after_end > AFTER_END
        } else {
            false
        };
        Ok(Look {
            message: (!message.is_empty()).then_some(Value::Object(message)),
            done,
            more,
        })
    }
}

fn job_feed(kind: Kind, session: &Session, name: String) -> JobFeed {
    JobFeed {
        kind,
        csrf: session.csrf.clone(),
        // Empty, so the first look sends the status with everything else.
        status: String::new(),
        // A job's streams are `<job>/<host>-<epoch>` in its kind's group.
        logs: LogFollower::new(kind.log_group().into(), Some(format!("{name}/"))),
        metrics: (kind == Kind::TrainingJob).then(|| MetricFollower {
            job: name.clone(),
            ..Default::default()
        }),
        name,
        after_end: 0,
    }
}

pub fn training_job(state: Arc<ApiState>, session: &Session, name: String) -> Response<Body> {
    event_stream(state, job_feed(Kind::TrainingJob, session, name))
}

pub fn processing_job(state: Arc<ApiState>, session: &Session, name: String) -> Response<Body> {
    event_stream(state, job_feed(Kind::ProcessingJob, session, name))
}

pub fn transform_job(state: Arc<ApiState>, session: &Session, name: String) -> Response<Body> {
    event_stream(state, job_feed(Kind::TransformJob, session, name))
}

// ---------------------------------------------------------------- one tuning job

struct TuningFeed {
    name: String,
    csrf: String,
    last: String,
    after_end: u8,
}

impl Feed for TuningFeed {
    fn look(&mut self, state: &ApiState) -> Result<Look, ConsoleError> {
        let job = state.control.tuning.get(&self.name)?;
        let views = pages::trial_views(state, &job)?;
        let status = pages::tuning_status(&job, &views, &self.csrf);
        let data = pages::tuning_chart_data(&job, &views);
        let message = json!({"fragments": {"status": status}, "tuning": data});
        let text = message.to_string();
        let done = job.status.is_terminal() && {
            self.after_end += 1;
            self.after_end > AFTER_END
        };
        if text == self.last {
            return Ok(Look {
                done,
                ..Look::default()
            });
        }
        self.last = text;
        Ok(Look {
            message: Some(message),
            done,
            more: false,
        })
    }
}

pub fn tuning_job(state: Arc<ApiState>, session: &Session, name: String) -> Response<Body> {
    event_stream(
        state,
        TuningFeed {
            name,
            csrf: session.csrf.clone(),
            last: String::new(),
            after_end: 0,
        },
    )
}

// ---------------------------------------------------------------- one endpoint

/// History an endpoint's charts open with.
const INVOCATION_HISTORY_SECS: i64 = 600;

/// An endpoint's invocation charts, one point per second and variant: invocations and 4xx/5xx
/// from the stored per-second aggregates (`AWS/SageMaker`'s), latency p50/p99 from the recent
/// histograms. A second is sent once it is over (and one more has passed, so an invocation
/// that ended at its close has been recorded).
struct InvocationFollower {
    endpoint: String,
    /// The first second not yet sent (0 before the first look).
    next: i64,
}

impl InvocationFollower {
    fn look(
        &mut self,
        state: &ApiState,
        variants: &[String],
        since: f64,
    ) -> Result<Vec<Value>, ConsoleError> {
        use clary_control::domain::endpoint_metrics::EndpointMetric;
        let end = chrono::Utc::now().timestamp() - 1;
        let start = if self.next == 0 {
            (end - INVOCATION_HISTORY_SECS).max(since.floor() as i64)
        } else {
            self.next
        };
        if start >= end {
            return Ok(Vec::new());
        }
        self.next = end;
        let metrics = &state.control.endpoint_metrics;
        let mut out = Vec::new();
        for v in variants {
            let per_second = |metric| -> Result<Vec<Value>, ConsoleError> {
                let found: HashMap<i64, f64> = metrics
                    .datapoints(
                        &self.endpoint,
                        Some(v),
                        metric,
                        start as f64,
                        end as f64,
                        1.0,
                    )?
                    .into_iter()
                    .map(|d| (d.timestamp as i64, d.sum))
                    .collect();
                // A second without invocations is a zero, not a gap.
                Ok((start..end)
                    .map(|t| json!([t, found.get(&t).copied().unwrap_or(0.0)]))
                    .collect())
            };
            out.push(json!({"chart": "Invocations per second", "label": v,
                "points": per_second(EndpointMetric::Invocations)?}));
            out.push(
                json!({"chart": "Errors per second", "label": format!("4xx {v}"),
                "points": per_second(EndpointMetric::Invocation4XXErrors)?}),
            );
            out.push(
                json!({"chart": "Errors per second", "label": format!("5xx {v}"),
                "points": per_second(EndpointMetric::Invocation5XXErrors)?}),
            );
            let latency = state
                .telemetry
                .recent
                .percentiles(&self.endpoint, v, start, end);
            if !latency.is_empty() {
                let p50: Vec<Value> = latency.iter().map(|(t, p, _)| json!([t, p])).collect();
                let p99: Vec<Value> = latency.iter().map(|(t, _, p)| json!([t, p])).collect();
                out.push(
                    json!({"chart": "Latency (ms)", "label": format!("p50 {v}"), "points": p50}),
                );
                out.push(
                    json!({"chart": "Latency (ms)", "label": format!("p99 {v}"), "points": p99}),
                );
            }
        }
        Ok(out)
    }
}

struct EndpointFeed {
    name: String,
    csrf: String,
    status: String,
    logs: LogFollower,
    invocations: InvocationFollower,
}

impl Feed for EndpointFeed {
    fn look(&mut self, state: &ApiState) -> Result<Look, ConsoleError> {
        // Deleted: the page says so and stops.
        let Ok(endpoint) = state.control.hosting.endpoint(&self.name) else {
            return Ok(Look {
                message: Some(json!({"gone": true})),
                done: true,
                more: false,
            });
        };
        let mut message = serde_json::Map::new();
        let status = pages::endpoint_status(&endpoint, &self.csrf);
        if status != self.status {
            message.insert("fragments".into(), json!({ "status": status }));
            self.status = status;
        }
        let (lines, more) = self.logs.look(state)?;
        if !lines.is_empty() {
            message.insert("logs".into(), Value::Array(lines));
        }
        let mut variants: Vec<String> = endpoint.live.plan.iter().map(|v| v.name.clone()).collect();
        if let Some(p) = &endpoint.pending {
            variants.extend(p.plan.iter().map(|v| v.name.clone()));
        }
        variants.sort();
        variants.dedup();
        let series = self
            .invocations
            .look(state, &variants, endpoint.creation_time)?;
        if !series.is_empty() {
            message.insert("series".into(), Value::Array(series));
        }
        Ok(Look {
            message: (!message.is_empty()).then_some(Value::Object(message)),
            done: false,
            more,
        })
    }
}

pub fn endpoint(state: Arc<ApiState>, session: &Session, name: String) -> Response<Body> {
    let feed = EndpointFeed {
        logs: LogFollower::new(endpoint_log_group(&name), None),
        invocations: InvocationFollower {
            endpoint: name.clone(),
            next: 0,
        },
        csrf: session.csrf.clone(),
        status: String::new(),
        name,
    };
    event_stream(state, feed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clary_control::domain::metrics::MetricSample;

    fn sample(host: &str, t: f64, v: f64) -> MetricSample {
        MetricSample {
            metric: "loss".into(),
            host: host.into(),
            timestamp: t,
            value: v,
        }
    }

    fn points(found: &[Value]) -> usize {
        found
            .iter()
            .map(|s| s["points"].as_array().map_or(0, Vec::len))
            .sum()
    }

    /// Each point is sent once, even when later ones share the last one's timestamp.
    #[test]
    fn metric_points_go_out_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let st = super::super::tests::state(dir.path());
        let m = &st.control.metrics;
        m.record(
            "j",
            &[sample("algo-1", 1.0, 0.9), sample("algo-1", 2.0, 0.8)],
        )
        .unwrap();
        let mut f = MetricFollower {
            job: "j".into(),
            ..Default::default()
        };
        assert_eq!(points(&f.look(&st).unwrap()), 2);
        assert_eq!(points(&f.look(&st).unwrap()), 0);
        m.record(
            "j",
            &[sample("algo-1", 2.0, 0.7), sample("algo-2", 2.5, 0.6)],
        )
        .unwrap();
        let found = f.look(&st).unwrap();
        assert_eq!(points(&found), 2, "{found:?}");
        assert_eq!(points(&f.look(&st).unwrap()), 0);
    }

    /// A stream's tail first, then only what arrives after it.
    #[test]
    fn log_lines_go_out_once_each_from_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let st = super::super::tests::state(dir.path());
        let logs = &st.control.logs;
        let group = "/aws/sagemaker/TrainingJobs";
        let mut f = LogFollower::new(group.into(), Some("j/".into()));
        assert!(f.look(&st).unwrap().0.is_empty(), "no group yet");
        let many: Vec<(i64, String)> = (0..(LOG_TAIL + 5))
            .map(|i| (1000 + i, format!("line {i}")))
            .collect();
        logs.append(group, "j/algo-1-1", &many).unwrap();
        logs.append(group, "other/algo-1-1", &[(5, "not this job".into())])
            .unwrap();
        let (first, _) = f.look(&st).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["stream"], "algo-1-1");
        let lines = first[0]["lines"].as_array().unwrap();
        assert_eq!(lines.len() as i64, LOG_TAIL);
        assert_eq!(lines.last().unwrap()[1], format!("line {}", LOG_TAIL + 4));
        assert!(f.look(&st).unwrap().0.is_empty());
        logs.append(group, "j/algo-1-1", &[(5000, "later".into())])
            .unwrap();
        let (next, _) = f.look(&st).unwrap();
        assert_eq!(next[0]["lines"].as_array().unwrap().len(), 1);
        assert_eq!(next[0]["lines"][0][1], "later");
    }
}
