//! The console's pages, rendered on the server from the control plane's facades. Listings are
//! paged in SQL (training jobs) or by the facade; each page names the event stream that keeps
//! it live (`data-feed` on `<main>`, see `console.js`).

use super::auth::Session;
use super::html::{self, Section, badge, esc, facts, opt_time, time, url_part};
use super::{BASE, ConsoleError, ConsoleRequest, html_response, redirect};
use crate::{ApiState, Body};
use clary_control::domain::endpoint::{Endpoint, EndpointStatus, Instance};
use clary_control::domain::hosting::ListHostingResources;
use clary_control::domain::job::{JobStatus, ListJobs, SortBy};
use clary_control::domain::processing::ProcessingJob;
use clary_control::domain::training::TrainingJob;
use clary_control::domain::transform::TransformJob;
use clary_control::domain::tuning::{ObjectiveType, ParameterRange, Scaling};
use clary_control::domain::tuning_job::{Trial, TuningJob, TuningStatus};
use http::{Response, StatusCode};
use std::fmt::Write;
use std::sync::Arc;

/// Rows on one page of a listing.
pub const PAGE_SIZE: u32 = 50;

type Page = Result<Response<Body>, ConsoleError>;

mod hosting;
mod kinds;
mod tuning;
pub use hosting::*;
pub use kinds::*;
pub use tuning::*;

/// A GET of a page (run off the async threads: the control plane's reads block).
pub async fn get(state: Arc<ApiState>, session: &Session, req: &ConsoleRequest) -> Page {
    let csrf = session.csrf.clone();
    let segments = req.segments.clone();
    let query = req.query.clone();
    tokio::task::spawn_blocking(move || {
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let q = &query;
        let body = match seg.as_slice() {
            ["training-jobs"] => training_jobs(&state, &csrf, &JobFilter::of(q))?,
            ["training-jobs", name] => training_job(&state, &csrf, name)?,
            ["processing-jobs"] => processing_jobs(&state, &csrf, &JobFilter::of(q))?,
            ["processing-jobs", name] => processing_job(&state, &csrf, name)?,
            ["transform-jobs"] => transform_jobs(&state, &csrf, &JobFilter::of(q))?,
            ["transform-jobs", name] => transform_job(&state, &csrf, name)?,
            ["tuning-jobs"] => tuning_jobs(&state, &csrf, q)?,
            ["tuning-jobs", name] => tuning_job(&state, &csrf, name)?,
            ["endpoints"] => endpoints(&state, &csrf, q)?,
            ["endpoints", name] => endpoint(&state, &csrf, name)?,
            ["models"] => models(&state, &csrf, q)?,
            _ => return Err(ConsoleError::NotFound("no such page".into())),
        };
        Ok(html_response(StatusCode::OK, body))
    })
    .await
    .map_err(|e| ConsoleError::Internal(e.to_string()))?
}

/// A POST of an action (its CSRF token already checked).
pub async fn act(state: Arc<ApiState>, req: &ConsoleRequest) -> Page {
    let segments = req.segments.clone();
    tokio::task::spawn_blocking(move || {
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        match seg.as_slice() {
            ["processing-jobs", name, "stop"] => {
                state.control.processing.stop(name)?;
                tracing::info!(job = %name, "console: stop processing job");
                Ok(redirect(&format!(
                    "{BASE}processing-jobs/{}",
                    url_part(name)
                )))
            }
            ["transform-jobs", name, "stop"] => {
                state.control.transform.stop(name)?;
                tracing::info!(job = %name, "console: stop transform job");
                Ok(redirect(&format!(
                    "{BASE}transform-jobs/{}",
                    url_part(name)
                )))
            }
            ["training-jobs", name, "stop"] => {
                state.control.training.stop(name)?;
                tracing::info!(job = %name, "console: stop training job");
                Ok(redirect(&format!("{BASE}training-jobs/{}", url_part(name))))
            }
            ["tuning-jobs", name, "stop"] => {
                state.control.tuning.stop(name)?;
                tracing::info!(job = %name, "console: stop tuning job");
                Ok(redirect(&format!("{BASE}tuning-jobs/{}", url_part(name))))
            }
            ["endpoints", name, "delete"] => {
                state.control.hosting.delete_endpoint(name)?;
                tracing::info!(endpoint = %name, "console: delete endpoint");
                Ok(redirect(&format!("{BASE}endpoints/{}", url_part(name))))
            }
            _ => Err(ConsoleError::NotFound("no such action".into())),
        }
    })
    .await
    .map_err(|e| ConsoleError::Internal(e.to_string()))?
}

/// A form that POSTs `action` with the session's CSRF token, after the browser confirms
/// `confirm` (console.js asks).
fn action_form(action: &str, csrf: &str, id: &str, label: &str, confirm: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{BASE}{action}\" class=\"action\" data-confirm=\"{}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"{id}\" class=\"danger\">{}</button></form>",
        esc(confirm),
        esc(csrf),
        esc(label)
    )
}

fn pager(base: &str, params: &[(&str, Option<&str>)], page: u64, more: bool) -> String {
    let link = |p: u64| {
        let mut href = format!("{BASE}{base}?page={p}");
        for (k, v) in params {
            if let Some(v) = v {
                let _ = write!(href, "&{k}={}", url_part(v));
            }
        }
        href
    };
    let mut out = String::from("<nav class=\"pager\" id=\"pager\">");
    if page > 1 {
        let _ = write!(
            out,
            "<a href=\"{}\" rel=\"prev\">← Previous</a>",
            esc(&link(page - 1))
        );
    }
    let _ = write!(out, "<span>Page {page}</span>");
    if more {
        let _ = write!(
            out,
            "<a href=\"{}\" rel=\"next\" id=\"next-page\">Next →</a>",
            esc(&link(page + 1))
        );
    }
    out.push_str("</nav>");
    out
}

/// A query string's parameters.
pub type Query = std::collections::HashMap<String, String>;

fn param<'q>(q: &'q Query, k: &str) -> Option<&'q str> {
    q.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

fn page_number(q: &Query) -> u64 {
    param(q, "page")
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(1)
        .clamp(1, 1_000_000)
}

// ---------------------------------------------------------------- training jobs

/// The training-jobs listing's filters, from its query string.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub search: Option<String>,
    pub status: Option<JobStatus>,
    pub sort: &'static str,
    pub page: u64,
}

impl JobFilter {
    pub fn of(q: &Query) -> Self {
        JobFilter {
            search: param(q, "q").map(|s| s.chars().take(63).collect()),
            status: param(q, "status").and_then(JobStatus::parse),
            sort: match param(q, "sort") {
                Some("name") => "name",
                Some("status") => "status",
                _ => "created",
            },
            page: page_number(q),
        }
    }

    fn query(&self) -> ListJobs {
        ListJobs {
            name_contains: self.search.clone(),
            status_equals: self.status,
            sort_by: match self.sort {
                "name" => SortBy::Name,
                "status" => SortBy::Status,
                _ => SortBy::CreationTime,
            },
            ascending: self.sort == "name",
            max_results: PAGE_SIZE,
            offset: (self.page - 1) * u64::from(PAGE_SIZE),
            ..Default::default()
        }
    }

    fn params(&self) -> Vec<(&'static str, Option<&str>)> {
        vec![
            ("q", self.search.as_deref()),
            ("status", self.status.map(JobStatus::as_str)),
            ("sort", Some(self.sort)),
        ]
    }

    /// The query string that reproduces this listing (for its event stream).
    pub fn query_string(&self) -> String {
        let mut s = format!("page={}", self.page);
        for (k, v) in self.params() {
            if let Some(v) = v {
                let _ = write!(s, "&{k}={}", url_part(v));
            }
        }
        s
    }
}

/// One page of the training-jobs table body and its pager: what the page shows and what its
/// event stream sends when it changes. One SQL query, `PAGE_SIZE` rows.
pub fn training_rows(state: &ApiState, f: &JobFilter) -> Result<String, ConsoleError> {
    let page = state.control.training.list(&f.query())?;
    let mut rows = String::new();
    for j in &page.items {
        let _ = write!(
            rows,
            "<tr data-job=\"{n}\"><td><a href=\"{BASE}training-jobs/{u}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            badge(j.status.as_str()),
            esc(j.secondary.as_str()),
            time(j.creation_time),
            html::elapsed(j.creation_time, j.end_time),
            n = esc(&j.name),
            u = url_part(&j.name),
        );
    }
    if page.items.is_empty() {
        rows.push_str("<tr><td colspan=\"5\" class=\"empty\">No training jobs match.</td></tr>");
    }
    Ok(format!(
        "<tbody id=\"rows\">{rows}</tbody><tfoot><tr><td colspan=\"5\">{}</td></tr></tfoot>",
        pager(
            "training-jobs",
            &f.params(),
            f.page,
            page.next_offset.is_some()
        )
    ))
}

/// A job listing's search, status filter and order.
fn filters(list: &str, f: &JobFilter) -> String {
    let mut status_options = String::from("<option value=\"\">Any status</option>");
    for s in JobStatus::ALL {
        let sel = if f.status == Some(s) { " selected" } else { "" };
        let _ = write!(status_options, "<option{sel}>{}</option>", esc(s.as_str()));
    }
    let mut sort_options = String::new();
    for (v, label) in [
        ("created", "Newest first"),
        ("name", "Name"),
        ("status", "Status"),
    ] {
        let sel = if f.sort == v { " selected" } else { "" };
        let _ = write!(sort_options, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    format!(
        "<form method=\"get\" class=\"filters\" action=\"{BASE}{list}\">\
<input type=\"search\" name=\"q\" id=\"search\" placeholder=\"Name contains\" value=\"{}\">\
<select name=\"status\" id=\"status-filter\">{status_options}</select>\
<select name=\"sort\">{sort_options}</select><button type=\"submit\">Filter</button></form>",
        esc(f.search.as_deref().unwrap_or("")),
    )
}

pub fn training_jobs(state: &ApiState, csrf: &str, f: &JobFilter) -> Result<String, ConsoleError> {
    let body = format!(
        "<h1>Training jobs</h1>{}\
<table class=\"list\" id=\"jobs\" data-fragment=\"list\"><thead><tr><th>Name</th><th>Status</th><th>Stage</th><th>Created</th><th>Duration</th></tr></thead>{}</table>",
        filters("training-jobs", f),
        training_rows(state, f)?,
    );
    Ok(live_page(
        "Training jobs",
        Section::Training,
        csrf,
        &format!("training-jobs/events?{}", f.query_string()),
        &body,
    ))
}

/// A page whose `<main>` content is kept live by the event stream at `feed`.
fn live_page(title: &str, section: Section, csrf: &str, feed: &str, body: &str) -> String {
    html::page(
        title,
        Some(section),
        Some(csrf),
        &format!(
            "<div id=\"live\" data-feed=\"{BASE}{}\">{body}</div>",
            esc(feed)
        ),
    )
}

/// The part of a training job's page that changes while it runs: status, timeline,
/// artifacts, the stop button.
pub fn training_status(state: &ApiState, job: &TrainingJob, csrf: &str) -> String {
    let mut out = job_status("training-jobs", "training job", &job.name, &job.state, csrf);
    // Once it ended, what it left under its output path (model, output data, profiler).
    if job.state.status.is_terminal() {
        out.push_str(&output_objects(state, job));
    }
    out
}

/// `prefix/` for a non-empty prefix not ending in `/`.
fn dir_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// The objects under a training job's output path, with their S3 URIs and sizes.
fn output_objects(state: &ApiState, job: &TrainingJob) -> String {
    const SHOWN: usize = 100;
    let out = &job.spec.output;
    let prefix = format!("{}{}/", dir_prefix(&out.prefix), job.name);
    // A bucket deleted since, or one the job never wrote to: nothing to show.
    let objects = state
        .store
        .objects()
        .list(&out.bucket, &prefix)
        .unwrap_or_default();
    let mut rows = String::new();
    for o in objects.iter().take(SHOWN) {
        let _ = write!(
            rows,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&s3_uri(&out.bucket, &o.key)),
            o.size,
            esc(&o
                .last_modified
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default()),
        );
    }
    if objects.len() > SHOWN {
        let _ = write!(
            rows,
            "<tr><td colspan=\"3\" class=\"empty\">… and {} more</td></tr>",
            objects.len() - SHOWN
        );
    }
    if rows.is_empty() {
        rows.push_str(
            "<tr><td colspan=\"3\" class=\"empty\">No objects under the output path.</td></tr>",
        );
    }
    format!(
        "<h2>Output objects</h2><table class=\"list\" id=\"output-objects\"><thead><tr><th>S3 URI</th><th>Bytes</th><th>Written</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

/// The changing part of any job's page (`kind_path` is its listing's path, `noun` its name).
pub fn job_status(
    kind_path: &str,
    noun: &str,
    name: &str,
    s: &clary_control::domain::job::JobState,
    csrf: &str,
) -> String {
    let mut out = String::from("<div class=\"status-line\">");
    let _ = write!(
        out,
        "{} <span class=\"secondary\" id=\"secondary\">{}</span> <span class=\"message\">{}</span>",
        badge(s.status.as_str()),
        esc(s.secondary.as_str()),
        esc(&s.status_message)
    );
    if s.status == JobStatus::InProgress {
        out.push_str(&action_form(
            &format!("{kind_path}/{}/stop", url_part(name)),
            csrf,
            "stop",
            "Stop",
            &format!("Stop {noun} {name}?"),
        ));
    }
    out.push_str("</div>");
    if let Some(r) = &s.failure_reason {
        let _ = write!(out, "<p class=\"error\" id=\"failure\">{}</p>", esc(r));
    }
    // The timeline: one segment per secondary-status transition, sized by its duration.
    out.push_str("<div class=\"timeline\" id=\"timeline\">");
    // The open stage's width grows in the browser (from its start), so this fragment stays the
    // same, and is not sent again, while nothing changes.
    for t in &s.transitions {
        let size = match t.end_time {
            Some(end) => format!("data-secs=\"{:.3}\"", (end - t.start_time).max(0.5)),
            None => format!("data-start=\"{:.3}\"", t.start_time),
        };
        let _ = write!(
            out,
            "<span class=\"seg s-{st}\" {size} title=\"{st}: {}\">{st}</span>",
            esc(&t.status_message),
            st = esc(t.status.as_str()),
        );
    }
    out.push_str("</div><table class=\"list transitions\"><thead><tr><th>Stage</th><th>Started</th><th>Ended</th><th>Took</th><th>Message</th></tr></thead><tbody>");
    for t in &s.transitions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(t.status.as_str()),
            time(t.start_time),
            opt_time(t.end_time),
            html::elapsed(t.start_time, t.end_time),
            esc(&t.status_message)
        );
    }
    out.push_str("</tbody></table>");
    let artifacts = s
        .artifacts
        .as_deref()
        .map(|a| format!("<code id=\"artifacts\">{}</code>", esc(a)))
        .unwrap_or_else(|| "—".into());
    out.push_str(&facts(&[
        ("Created", time(s.creation_time)),
        ("Started", opt_time(s.start_time)),
        ("Ended", opt_time(s.end_time)),
        (
            "Duration",
            html::elapsed(s.start_time.unwrap_or(s.creation_time), s.end_time),
        ),
        ("Artifacts", artifacts),
        (
            "Hosts",
            s.hosts
                .iter()
                .map(|h| esc(&h.name))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ]));
    out
}

fn s3_uri(bucket: &str, prefix: &str) -> String {
    format!("s3://{bucket}/{prefix}")
}

pub fn training_job(state: &ApiState, csrf: &str, name: &str) -> Result<String, ConsoleError> {
    let job = state.control.training.get(name)?;
    let spec = &job.spec;
    let mut hps = String::new();
    for (k, v) in &spec.hyperparameters {
        let _ = write!(hps, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    let mut channels = String::new();
    for c in &spec.channels {
        let _ = write!(
            channels,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.name),
            esc(&s3_uri(&c.source.bucket, &c.source.prefix)),
            esc(&c.data_type),
            esc(&c.distribution),
            esc(c.input_mode.unwrap_or(spec.input_mode).as_str()),
        );
    }
    if channels.is_empty() {
        channels.push_str("<tr><td colspan=\"5\" class=\"empty\">No input channels.</td></tr>");
    }
    let output = s3_uri(
        &spec.output.bucket,
        &format!("{}{}/output/", dir_prefix(&spec.output.prefix), job.name),
    );
    let mut setup = vec![
        ("ARN", esc(&job.arn)),
        (
            "Instances",
            format!("{} × {}", spec.instance_count, esc(&spec.instance_type)),
        ),
        ("Image", esc(&spec.image)),
        ("Runtime", esc(&job.runtime)),
        ("Input mode", esc(spec.input_mode.as_str())),
        ("Max runtime", html::duration(spec.max_runtime_secs as f64)),
        ("Output", format!("<code>{}</code>", esc(&output))),
    ];
    if let Some(c) = &spec.checkpoints {
        setup.push((
            "Checkpoints",
            format!(
                "<code>{}</code>",
                esc(&s3_uri(&c.destination.bucket, &c.destination.prefix))
            ),
        ));
    }
    let metric_names: Vec<&str> = spec
        .metric_definitions
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let charts = if metric_names.is_empty() {
        "<p class=\"empty\">This job defines no metrics (MetricDefinitions).</p>".to_string()
    } else {
        String::new()
    };
    let body = format!(
        "<p class=\"crumbs\"><a href=\"{BASE}training-jobs\">Training jobs</a> /</p><h1 id=\"job-name\">{name}</h1>\
<section id=\"status\" data-fragment=\"status\">{status}</section>\
<section><h2>Metrics</h2>{charts}<div id=\"charts\" class=\"charts\"></div></section>\
<section><h2>Logs</h2><div id=\"logs\" class=\"logs\"></div></section>\
<div class=\"columns\"><section><h2>Setup</h2>{setup}</section>\
<section><h2>Hyperparameters</h2><table class=\"facts\" id=\"hyperparameters\">{hps}</table></section></div>\
<section><h2>Input channels</h2><table class=\"list\" id=\"channels\"><thead><tr><th>Channel</th><th>S3 URI</th><th>Data type</th><th>Distribution</th><th>Mode</th></tr></thead><tbody>{channels}</tbody></table></section>",
        name = esc(&job.name),
        status = training_status(state, &job, csrf),
        setup = facts(&setup),
    );
    Ok(live_page(
        &job.name,
        Section::Training,
        csrf,
        &format!("training-jobs/{}/events", url_part(&job.name)),
        &body,
    ))
}
