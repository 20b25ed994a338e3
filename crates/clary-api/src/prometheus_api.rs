//! `GET /_clary/metrics`: the server's metrics in the OpenMetrics text format Prometheus
//! scrapes (encoded by the `prometheus-client` crate). Bucket names cannot begin with `_`, so
//! no S3 path is taken. A scraper authenticates with the server's own key pair, as HTTP Basic
//! (`basic_auth` in a Prometheus scrape config: the access key id and the secret); a job's or
//! an instance's scoped key is refused.
//!
//! Invocations are counted as they happen ([`Telemetry`]); jobs, the queue, capacity, model
//! servers and the object store are read at scrape time.

use crate::{ApiState, Body, full};
use base64::Engine;
use clary_control::domain::endpoint_metrics::{Answer, Invocation};
use http::{HeaderMap, Response, StatusCode, header};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const METRICS_PATH: &str = "/_clary/metrics";

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 100 µs to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

fn duration_histogram() -> Histogram {
    // 1 s to about 3 days.
    Histogram::new(exponential_buckets(1.0, 2.0, 18))
}

/// One variant's counters and histograms, taken from the families once: an invocation then
/// costs a map lookup by `&str` and a few atomic adds.
struct VariantHandles {
    invocations: Counter,
    client_errors: Counter,
    server_errors: Counter,
    model_latency: Histogram,
    overhead_latency: Histogram,
}

/// What is counted as it happens.
pub struct Telemetry {
    handles: std::sync::RwLock<HashMap<String, HashMap<String, Arc<VariantHandles>>>>,
    invocations: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    model_latency: Family<Labels, Histogram, fn() -> Histogram>,
    overhead_latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// The object store's size, measured at most once a minute (a walk of its directory).
    store_bytes: Mutex<Option<(Instant, u64)>>,
    /// The last minutes' latencies per second, for the console's p50/p99 charts.
    pub recent: crate::console::latency::RecentLatencies,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            handles: Default::default(),
            invocations: Family::default(),
            errors: Family::default(),
            model_latency: Family::new_with_constructor(latency_histogram),
            overhead_latency: Family::new_with_constructor(latency_histogram),
            store_bytes: Mutex::new(None),
            recent: Default::default(),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Telemetry {
    /// One invocation routed to `variant` of `endpoint`.
    pub fn invocation(&self, endpoint: &str, variant: &str, inv: &Invocation) {
        let h = self.handles_of(endpoint, variant);
        h.invocations.inc();
        match inv.answer {
            Answer::Success => {}
            Answer::ClientError => {
                h.client_errors.inc();
            }
            Answer::ServerError => {
                h.server_errors.inc();
            }
        }
        if let Some(m) = inv.model_micros {
            h.model_latency.observe(m / 1e6);
        }
        h.overhead_latency.observe(inv.overhead_micros / 1e6);
        self.recent.record(
            endpoint,
            variant,
            chrono::Utc::now().timestamp(),
            inv.model_micros.unwrap_or(0.0) + inv.overhead_micros,
        );
    }

    fn handles_of(&self, endpoint: &str, variant: &str) -> Arc<VariantHandles> {
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .and_then(|v| v.get(variant))
        {
            return h.clone();
        }
        let l = labels(&[("endpoint", endpoint), ("variant", variant)]);
        let error = |class: &str| {
            let mut e = l.clone();
            e.push(("class".into(), class.into()));
            self.errors.get_or_create(&e).clone()
        };
        let h = Arc::new(VariantHandles {
            invocations: self.invocations.get_or_create(&l).clone(),
            client_errors: error("4xx"),
            server_errors: error("5xx"),
            model_latency: self.model_latency.get_or_create(&l).clone(),
            overhead_latency: self.overhead_latency.get_or_create(&l).clone(),
        });
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint.to_string())
            .or_default()
            .insert(variant.to_string(), h.clone());
        h
    }

    async fn object_store_bytes(&self, root: PathBuf) -> u64 {
        let cached = *self.store_bytes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = cached
            && at.elapsed() < Duration::from_secs(60)
        {
            return bytes;
        }
        let bytes = tokio::task::spawn_blocking(move || dir_bytes(&root))
            .await
            .unwrap_or(0);
        *self.store_bytes.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), bytes));
        bytes
    }
}

fn dir_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Whether the request carries the server's own key pair as HTTP Basic credentials.
fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some((id, secret)) = std::str::from_utf8(&decoded)
        .ok()
        .and_then(|s| s.split_once(':'))
    else {
        return false;
    };
    let same = |a: &str, b: &str| {
        a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    };
    same(id, &state.keys.access_key) & same(secret, &state.keys.secret_key)
}

fn refused() -> Response<Body> {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, "Basic realm=\"clary metrics\"")
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(
            "The metrics need the server's key pair as HTTP Basic credentials (the access key id and secret `clary env` prints)\n",
        ))
        .expect("static response parts are valid")
}

/// Answers a scrape.
pub async fn scrape(state: &ApiState, headers: &HeaderMap) -> Response<Body> {
    if !authorized(state, headers) {
        return refused();
    }
    match render(state).await {
        Ok(text) => Response::builder()
            .status(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(full(text))
            .expect("static response parts are valid"),
        Err(e) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full(format!("the metrics could not be read: {e}\n")))
            .expect("static response parts are valid"),
    }
}

async fn render(state: &ApiState) -> Result<String, String> {
    let control = &state.control;
    let telemetry = &state.telemetry;
    let mut registry = Registry::with_prefix("clary");

    let jobs = Family::<Labels, Gauge>::default();
    let queued = Family::<Labels, Gauge>::default();
    let durations =
        Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
    let (counts, finished) = {
        let stats = control.stats.clone();
        let read = move || -> Result<_, clary_control::ControlError> {
            Ok((stats.job_counts()?, stats.job_durations()?))
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    // Every kind and status appears, at zero when empty, so series do not come and go.
    let kinds = clary_control::domain::job::Kind::ALL
        .into_iter()
        .map(|k| k.as_str())
        .chain(["HyperParameterTuningJob"]);
    for kind in kinds {
        for status in clary_control::domain::job::JobStatus::ALL {
            jobs.get_or_create(&labels(&[("kind", kind), ("status", status.as_str())]))
                .set(0);
        }
        queued.get_or_create(&labels(&[("kind", kind)])).set(0);
    }
    for c in &counts {
        jobs.get_or_create(&labels(&[("kind", &c.kind), ("status", &c.status)]))
            .set(c.count as i64);
        if c.status == "InProgress" {
            queued
                .get_or_create(&labels(&[("kind", &c.kind)]))
                .set(c.queued as i64);
        }
    }
    for (kind, status, secs) in &finished {
        durations
            .get_or_create(&labels(&[("kind", kind), ("status", status)]))
            .observe(secs.max(0.0));
    }
    registry.register("jobs", "Jobs by kind and status", jobs);
    registry.register(
        "queue_depth",
        "Jobs waiting in the queue for capacity, by kind",
        queued,
    );
    registry.register(
        "job_duration_seconds",
        "How long ended jobs ran, by kind and status",
        durations,
    );

    let ((used_cpus, used_mem), (cpus, mem)) = control.ledger.in_use();
    let capacity = Family::<Labels, FloatGauge>::default();
    for (resource, state_, v) in [
        ("vcpus", "in_use", f64::from(used_cpus)),
        ("vcpus", "total", f64::from(cpus)),
        ("memory_gib", "in_use", used_mem),
        ("memory_gib", "total", mem),
    ] {
        capacity
            .get_or_create(&labels(&[("resource", resource), ("state", state_)]))
            .set(v);
    }
    registry.register(
        "capacity",
        "This machine's capacity for jobs, and what running jobs hold of it",
        capacity,
    );

    registry.register(
        "endpoint_invocations",
        "InvokeEndpoint calls routed to a variant",
        telemetry.invocations.clone(),
    );
    registry.register(
        "endpoint_invocation_errors",
        "Invocations the model answered with a 4xx or 5xx (or no instance answered: 5xx)",
        telemetry.errors.clone(),
    );
    registry.register(
        "endpoint_model_latency_seconds",
        "How long the model took to answer an invocation",
        telemetry.model_latency.clone(),
    );
    registry.register(
        "endpoint_overhead_latency_seconds",
        "An invocation's time at Clary's front, beside the model's",
        telemetry.overhead_latency.clone(),
    );

    let in_flight = Family::<Labels, Gauge>::default();
    let queue = Family::<Labels, Gauge>::default();
    let restarts = Family::<Labels, Counter>::default();
    for route in control.routes.all() {
        for variant in &route.variants {
            for instance in &variant.instances {
                let l = labels(&[
                    ("endpoint", &route.name),
                    ("variant", &variant.name),
                    ("instance", &instance.id),
                ]);
                in_flight.get_or_create(&l).set(
                    instance
                        .in_flight
                        .load(std::sync::atomic::Ordering::Relaxed) as i64,
                );
                if let Some(stats) =
                    clary_control::hosting::probe(&instance.authority, &instance.token).await
                {
                    queue.get_or_create(&l).set(stats.queued as i64);
                    restarts.get_or_create(&l).inc_by(stats.worker_restarts);
                }
            }
        }
    }
    registry.register(
        "model_server_in_flight",
        "Invocations the router has sent to a model server and not yet had answered",
        in_flight,
    );
    registry.register(
        "model_server_queue_depth",
        "Invocations waiting in a model server for a worker",
        queue,
    );
    registry.register(
        "model_server_worker_restarts",
        "Workers a model server replaced after they crashed or hung",
        restarts,
    );

    // An external store's size is the store's own business (its metrics, its bill); summing
    // it would mean listing every bucket on each scrape.
    if matches!(state.store, crate::Backing::Local(_)) {
        let bytes = telemetry
            .object_store_bytes(control.config.data_dir.join("objects"))
            .await;
        let store = Gauge::<i64>::default();
        store.set(bytes as i64);
        registry.register(
            "object_store_bytes",
            "Bytes of the objects in the store",
            store,
        );
    }

    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| e.to_string())?;
    Ok(text)
}
