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
    let objects = state.store.list(&out.bucket, &prefix).unwrap_or_default();
    let mut rows = String::new();
    for o in objects.iter().take(SHOWN) {
        let _ = write!(
            rows,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&s3_uri(&out.bucket, &o.key)),
            o.size,
            esc(&o.last_modified.format("%Y-%m-%d %H:%M:%S").to_string()),
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

// ---------------------------------------------------------------- processing jobs

pub fn processing_rows(state: &ApiState, f: &JobFilter) -> Result<String, ConsoleError> {
    let page = state.control.processing.list(&f.query())?;
    let mut rows = String::new();
    for j in &page.items {
        let _ = write!(
            rows,
            "<tr data-job=\"{n}\"><td><a href=\"{BASE}processing-jobs/{u}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            badge(j.state.status.as_str()),
            esc(j.state.secondary.as_str()),
            time(j.state.creation_time),
            html::elapsed(j.state.creation_time, j.state.end_time),
            n = esc(&j.name),
            u = url_part(&j.name),
        );
    }
    if page.items.is_empty() {
        rows.push_str("<tr><td colspan=\"5\" class=\"empty\">No processing jobs match.</td></tr>");
    }
    Ok(format!(
        "<tbody id=\"rows\">{rows}</tbody><tfoot><tr><td colspan=\"5\">{}</td></tr></tfoot>",
        pager(
            "processing-jobs",
            &f.params(),
            f.page,
            page.next_offset.is_some()
        )
    ))
}

fn processing_jobs(state: &ApiState, csrf: &str, f: &JobFilter) -> Result<String, ConsoleError> {
    let body = format!(
        "<h1>Processing jobs</h1>{}\
<table class=\"list\" id=\"jobs\" data-fragment=\"list\"><thead><tr><th>Name</th><th>Status</th><th>Stage</th><th>Created</th><th>Duration</th></tr></thead>{}</table>",
        filters("processing-jobs", f),
        processing_rows(state, f)?,
    );
    Ok(live_page(
        "Processing jobs",
        Section::Processing,
        csrf,
        &format!("processing-jobs/events?{}", f.query_string()),
        &body,
    ))
}

pub fn processing_status(job: &ProcessingJob, csrf: &str) -> String {
    job_status(
        "processing-jobs",
        "processing job",
        &job.name,
        &job.state,
        csrf,
    )
}

fn processing_job(state: &ApiState, csrf: &str, name: &str) -> Result<String, ConsoleError> {
    let job = state.control.processing.get(name)?;
    let spec = &job.spec;
    let mut inputs = String::new();
    for i in &spec.inputs {
        let _ = write!(
            inputs,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&i.name),
            esc(&s3_uri(&i.source.bucket, &i.source.prefix)),
            esc(&i.local_path),
            esc(i.input_mode.as_str()),
            esc(&i.distribution),
        );
    }
    if inputs.is_empty() {
        inputs.push_str("<tr><td colspan=\"5\" class=\"empty\">No inputs.</td></tr>");
    }
    let mut outputs = String::new();
    for o in &spec.outputs {
        let _ = write!(
            outputs,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{:?}</td></tr>",
            esc(&o.name),
            esc(&s3_uri(&o.destination.bucket, &o.destination.prefix)),
            esc(&o.local_path),
            o.upload_mode,
        );
    }
    if outputs.is_empty() {
        outputs.push_str("<tr><td colspan=\"4\" class=\"empty\">No outputs.</td></tr>");
    }
    let command: Vec<&str> = spec
        .entrypoint
        .iter()
        .chain(&spec.arguments)
        .map(String::as_str)
        .collect();
    let setup = facts(&[
        ("ARN", esc(&job.arn)),
        (
            "Instances",
            format!("{} × {}", spec.instance_count, esc(&spec.instance_type)),
        ),
        ("Image", esc(&spec.image)),
        ("Runtime", esc(&spec.runtime)),
        (
            "Command",
            format!("<code>{}</code>", esc(&command.join(" "))),
        ),
        ("Max runtime", html::duration(spec.max_runtime_secs as f64)),
    ]);
    let body = format!(
        "<p class=\"crumbs\"><a href=\"{BASE}processing-jobs\">Processing jobs</a> /</p><h1 id=\"job-name\">{name}</h1>\
<section id=\"status\" data-fragment=\"status\">{status}</section>\
<section><h2>Logs</h2><div id=\"logs\" class=\"logs\"></div></section>\
<section><h2>Setup</h2>{setup}</section>\
<section><h2>Inputs</h2><table class=\"list\" id=\"inputs\"><thead><tr><th>Input</th><th>S3 URI</th><th>Local path</th><th>Mode</th><th>Distribution</th></tr></thead><tbody>{inputs}</tbody></table></section>\
<section><h2>Outputs</h2><table class=\"list\" id=\"outputs\"><thead><tr><th>Output</th><th>S3 URI</th><th>Local path</th><th>Upload</th></tr></thead><tbody>{outputs}</tbody></table></section>",
        name = esc(&job.name),
        status = processing_status(&job, csrf),
    );
    Ok(live_page(
        &job.name,
        Section::Processing,
        csrf,
        &format!("processing-jobs/{}/events", url_part(&job.name)),
        &body,
    ))
}

// ---------------------------------------------------------------- batch transform jobs

pub fn transform_rows(state: &ApiState, f: &JobFilter) -> Result<String, ConsoleError> {
    let page = state.control.transform.list(&f.query())?;
    let mut rows = String::new();
    for j in &page.items {
        let _ = write!(
            rows,
            "<tr data-job=\"{n}\"><td><a href=\"{BASE}transform-jobs/{u}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            badge(j.state.status.as_str()),
            esc(&j.spec.model_name),
            esc(&j.state.status_message),
            time(j.state.creation_time),
            html::elapsed(j.state.creation_time, j.state.end_time),
            n = esc(&j.name),
            u = url_part(&j.name),
        );
    }
    if page.items.is_empty() {
        rows.push_str(
            "<tr><td colspan=\"6\" class=\"empty\">No batch transform jobs match.</td></tr>",
        );
    }
    Ok(format!(
        "<tbody id=\"rows\">{rows}</tbody><tfoot><tr><td colspan=\"6\">{}</td></tr></tfoot>",
        pager(
            "transform-jobs",
            &f.params(),
            f.page,
            page.next_offset.is_some()
        )
    ))
}

fn transform_jobs(state: &ApiState, csrf: &str, f: &JobFilter) -> Result<String, ConsoleError> {
    let body = format!(
        "<h1>Batch transform jobs</h1>{}\
<table class=\"list\" id=\"jobs\" data-fragment=\"list\"><thead><tr><th>Name</th><th>Status</th><th>Model</th><th>Progress</th><th>Created</th><th>Duration</th></tr></thead>{}</table>",
        filters("transform-jobs", f),
        transform_rows(state, f)?,
    );
    Ok(live_page(
        "Batch transform jobs",
        Section::Transform,
        csrf,
        &format!("transform-jobs/events?{}", f.query_string()),
        &body,
    ))
}

pub fn transform_status(job: &TransformJob, csrf: &str) -> String {
    job_status(
        "transform-jobs",
        "transform job",
        &job.name,
        &job.state,
        csrf,
    )
}

fn transform_job(state: &ApiState, csrf: &str, name: &str) -> Result<String, ConsoleError> {
    let job = state.control.transform.get(name)?;
    let spec = &job.spec;
    let optional = |v: Option<String>| v.map_or_else(|| "—".to_string(), |v| esc(&v));
    let setup = facts(&[
        ("ARN", esc(&job.arn)),
        ("Model", esc(&spec.model_name)),
        (
            "Instances",
            format!("{} × {}", spec.instance_count, esc(&spec.instance_type)),
        ),
        (
            "Input",
            format!(
                "<code>{}</code> ({:?}, split {:?}{})",
                esc(&s3_uri(
                    &spec.input.source.bucket,
                    &spec.input.source.prefix
                )),
                spec.input.data_type,
                spec.input.split,
                if spec.input.gzip { ", gzip" } else { "" },
            ),
        ),
        ("Content type", optional(spec.input.content_type.clone())),
        (
            "Output",
            format!(
                "<code>{}</code>",
                esc(&s3_uri(&spec.output.path.bucket, &spec.output.path.prefix))
            ),
        ),
        ("Accept", optional(spec.output.accept.clone())),
        (
            "Batch strategy",
            optional(spec.batch_strategy.map(|b| format!("{b:?}"))),
        ),
        (
            "Max payload",
            optional(spec.max_payload_mb.map(|m| format!("{m} MB"))),
        ),
        (
            "Concurrent transforms",
            optional(spec.max_concurrent_transforms.map(|m| m.to_string())),
        ),
        (
            "Input filter",
            optional(spec.data_processing.input_filter.clone()),
        ),
        (
            "Output filter",
            optional(spec.data_processing.output_filter.clone()),
        ),
        (
            "Join",
            if spec.data_processing.join_input {
                "Input".into()
            } else {
                "None".into()
            },
        ),
    ]);
    let body = format!(
        "<p class=\"crumbs\"><a href=\"{BASE}transform-jobs\">Batch transform jobs</a> /</p><h1 id=\"job-name\">{name}</h1>\
<section id=\"status\" data-fragment=\"status\">{status}</section>\
<section><h2>Logs</h2><div id=\"logs\" class=\"logs\"></div></section>\
<section><h2>Setup</h2>{setup}</section>",
        name = esc(&job.name),
        status = transform_status(&job, csrf),
    );
    Ok(live_page(
        &job.name,
        Section::Transform,
        csrf,
        &format!("transform-jobs/{}/events", url_part(&job.name)),
        &body,
    ))
}

// ---------------------------------------------------------------- tuning jobs

pub fn tuning_rows(state: &ApiState, page: u64) -> Result<String, ConsoleError> {
    let all = state.control.tuning.all()?;
    let size = PAGE_SIZE as usize;
    let start = (page as usize - 1) * size;
    let mut rows = String::new();
    for j in all.iter().skip(start).take(size) {
        let _ = write!(
            rows,
            "<tr><td><a href=\"{BASE}tuning-jobs/{u}\">{n}</a></td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            badge(j.status.as_str()),
            objective_word(j.spec.objective_type),
            esc(&j.spec.objective_metric),
            j.spec.max_trials,
            time(j.creation_time),
            n = esc(&j.name),
            u = url_part(&j.name),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"5\" class=\"empty\">No tuning jobs yet.</td></tr>");
    }
    Ok(format!(
        "<tbody id=\"rows\">{rows}</tbody><tfoot><tr><td colspan=\"5\">{}</td></tr></tfoot>",
        pager("tuning-jobs", &[], page, all.len() > start + size)
    ))
}

fn tuning_jobs(state: &ApiState, csrf: &str, q: &Query) -> Result<String, ConsoleError> {
    let page = page_number(q);
    let body = format!(
        "<h1>Tuning jobs</h1><table class=\"list\" id=\"tuning-jobs\" data-fragment=\"list\"><thead><tr><th>Name</th><th>Status</th><th>Objective</th><th>Max trials</th><th>Created</th></tr></thead>{}</table>",
        tuning_rows(state, page)?
    );
    Ok(live_page(
        "Tuning jobs",
        Section::Tuning,
        csrf,
        &format!("tuning-jobs/events?page={page}"),
        &body,
    ))
}

fn objective_word(t: ObjectiveType) -> &'static str {
    match t {
        ObjectiveType::Maximize => "Maximize",
        ObjectiveType::Minimize => "Minimize",
    }
}

/// Every range the job searches: its own, and those of its several definitions (each name
/// once).
fn all_ranges(job: &TuningJob) -> Vec<&ParameterRange> {
    let mut out: Vec<&ParameterRange> = Vec::new();
    let defined = job.spec.definitions.iter().flat_map(|d| d.ranges.iter());
    for r in job.spec.ranges.iter().chain(defined) {
        if !out.iter().any(|o| o.name() == r.name()) {
            out.push(r);
        }
    }
    out
}

/// A trial with what the console shows of it.
pub struct TrialView {
    pub trial: Trial,
    pub objective: Option<f64>,
    pub end_time: Option<f64>,
}

/// The tuning job's trials, best objective first (trials without one after, newest first).
pub fn trial_views(state: &ApiState, job: &TuningJob) -> Result<Vec<TrialView>, ConsoleError> {
    let mut views: Vec<TrialView> = state
        .control
        .tuning
        .trials(job)?
        .into_iter()
        .map(|t| {
            let end_time = state
                .control
                .training
                .get(&t.name)
                .ok()
                .and_then(|j| j.state.end_time);
            TrialView {
                objective: t.objective(),
                end_time,
                trial: t,
            }
        })
        .collect();
    let kind = job.spec.objective_type;
    views.sort_by(|a, b| match (a.objective, b.objective) {
        (Some(x), Some(y)) if kind.better(x, y) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) if kind.better(y, x) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => b.trial.index.cmp(&a.trial.index),
    });
    Ok(views)
}

/// The changing part of a tuning job's page: status, best trial, the trials table.
pub fn tuning_status(job: &TuningJob, views: &[TrialView], csrf: &str) -> String {
    let mut out = format!("<div class=\"status-line\">{}", badge(job.status.as_str()));
    if job.status == TuningStatus::InProgress {
        out.push_str(&action_form(
            &format!("tuning-jobs/{}/stop", url_part(&job.name)),
            csrf,
            "stop",
            "Stop",
            &format!("Stop tuning job {} and its running trials?", job.name),
        ));
    }
    out.push_str("</div>");
    if let Some(r) = &job.failure_reason {
        let _ = write!(out, "<p class=\"error\">{}</p>", esc(r));
    }
    let running = views.iter().filter(|v| v.trial.running()).count();
    let done = views.len() - running;
    let best = views.first().filter(|v| v.objective.is_some());
    out.push_str(&facts(&[
        (
            "Trials",
            format!(
                "{} of {} ({running} running, {done} ended)",
                views.len(),
                job.spec.max_trials
            ),
        ),
        (
            "Best trial",
            best.map(|b| {
                format!(
                    "<a id=\"best-trial\" href=\"{BASE}training-jobs/{}\">{}</a> ({} = {})",
                    url_part(&b.trial.name),
                    esc(&b.trial.name),
                    esc(&job.spec.objective_metric),
                    b.objective.map(|o| o.to_string()).unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "—".into()),
        ),
    ]));
    let names: Vec<&str> = all_ranges(job)
        .into_iter()
        .map(ParameterRange::name)
        .collect();
    out.push_str("<table class=\"list\" id=\"trials\"><thead><tr><th>#</th><th>Trial</th><th>Status</th><th>Objective</th>");
    for n in &names {
        let _ = write!(out, "<th>{}</th>", esc(n));
    }
    out.push_str("</tr></thead><tbody>");
    for (i, v) in views.iter().enumerate() {
        let status = v.trial.status.map(JobStatus::as_str).unwrap_or("Starting");
        let class = if i == 0 && v.objective.is_some() {
            " class=\"best\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr{class}><td>{}</td><td><a href=\"{BASE}training-jobs/{}\">{}</a>{}</td><td>{}</td><td>{}</td>",
            v.trial.index + 1,
            url_part(&v.trial.name),
            esc(&v.trial.name),
            if v.trial.early_stopped {
                " <small>(stopped early)</small>"
            } else {
                ""
            },
            badge(status),
            v.objective
                .map(|o| o.to_string())
                .unwrap_or_else(|| "—".into()),
        );
        for n in &names {
            let _ = write!(
                out,
                "<td>{}</td>",
                esc(v.trial.values.get(*n).map(String::as_str).unwrap_or(""))
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The tuning job's chart data: the objective over time, and each hyperparameter against it
/// (categorical values as their index, named in `categories`).
pub fn tuning_chart_data(job: &TuningJob, views: &[TrialView]) -> serde_json::Value {
    let mut ended: Vec<&TrialView> = views
        .iter()
        .filter(|v| v.objective.is_some() && v.end_time.is_some())
        .collect();
    ended.sort_by(|a, b| {
        a.end_time
            .unwrap_or(0.0)
            .total_cmp(&b.end_time.unwrap_or(0.0))
    });
    let over_time: Vec<[f64; 2]> = ended
        .iter()
        .filter_map(|v| Some([v.end_time?, v.objective?]))
        .collect();
    let params: Vec<serde_json::Value> = all_ranges(job)
        .into_iter()
        .map(|r| {
            let categories: Vec<String> = match r {
                ParameterRange::Categorical { values, .. } => values.clone(),
                _ => Vec::new(),
            };
            let points: Vec<[f64; 2]> = views
                .iter()
                .filter_map(|v| {
                    let raw = v.trial.values.get(r.name())?;
                    let x = if categories.is_empty() {
                        raw.parse::<f64>().ok()?
                    } else {
                        categories.iter().position(|c| c == raw)? as f64
                    };
                    Some([x, v.objective?])
                })
                .collect();
            // A logarithmic range is searched (and best read) on a log axis.
            let log = matches!(
                r,
                ParameterRange::Continuous {
                    scaling: Scaling::Logarithmic,
                    ..
                } | ParameterRange::Integer {
                    scaling: Scaling::Logarithmic,
                    ..
                }
            );
            serde_json::json!({"name": r.name(), "categories": categories, "points": points, "log": log})
        })
        .collect();
    serde_json::json!({
        "objective": job.spec.objective_metric,
        "overTime": over_time,
        "params": params,
    })
}

fn tuning_job(state: &ApiState, csrf: &str, name: &str) -> Result<String, ConsoleError> {
    let job = state.control.tuning.get(name)?;
    let views = trial_views(state, &job)?;
    let mut ranges = String::new();
    for r in all_ranges(&job) {
        let what = match r {
            ParameterRange::Continuous { min, max, .. } => format!("continuous {min} – {max}"),
            ParameterRange::Integer { min, max, .. } => format!("integer {min} – {max}"),
            ParameterRange::Categorical { values, .. } => {
                format!("one of {}", values.join(", "))
            }
        };
        let _ = write!(
            ranges,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(r.name()),
            esc(&what)
        );
    }
    let body = format!(
        "<p class=\"crumbs\"><a href=\"{BASE}tuning-jobs\">Tuning jobs</a> /</p><h1>{}</h1>\
<section id=\"status\" data-fragment=\"status\">{}</section>\
<section><h2>Objective</h2><div id=\"tuning-charts\" class=\"charts\"></div></section>\
<div class=\"columns\"><section><h2>Search</h2>{}</section><section><h2>Ranges</h2><table class=\"facts\">{ranges}</table></section></div>",
        esc(&job.name),
        tuning_status(&job, &views, csrf),
        facts(&[
            ("ARN", esc(&job.arn)),
            ("Strategy", esc(&format!("{:?}", job.spec.strategy))),
            (
                "Objective",
                esc(&format!(
                    "{} {}",
                    objective_word(job.spec.objective_type),
                    job.spec.objective_metric
                ))
            ),
            ("Max trials", job.spec.max_trials.to_string()),
            ("Max parallel", job.spec.max_parallel.to_string()),
            ("Created", time(job.creation_time)),
            ("Ended", opt_time(job.end_time)),
        ]),
    );
    Ok(live_page(
        &job.name,
        Section::Tuning,
        csrf,
        &format!("tuning-jobs/{}/events", url_part(&job.name)),
        &body,
    ))
}

// ---------------------------------------------------------------- endpoints and models

fn hosting_query(page: u64) -> ListHostingResources {
    ListHostingResources {
        name_contains: None,
        creation_time_after: None,
        creation_time_before: None,
        sort_by_name: false,
        ascending: false,
        max_results: PAGE_SIZE,
        offset: (page - 1) * u64::from(PAGE_SIZE),
    }
}

pub fn endpoint_rows(state: &ApiState, page: u64) -> Result<String, ConsoleError> {
    let found = state
        .control
        .hosting
        .list_endpoints(&hosting_query(page), None)?;
    let mut rows = String::new();
    for e in &found.items {
        let _ = write!(
            rows,
            "<tr><td><a href=\"{BASE}endpoints/{u}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            badge(e.status.as_str()),
            esc(&e.live.config_name),
            e.live.instances.len(),
            time(e.creation_time),
            n = esc(&e.name),
            u = url_part(&e.name),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"5\" class=\"empty\">No endpoints.</td></tr>");
    }
    Ok(format!(
        "<tbody id=\"rows\">{rows}</tbody><tfoot><tr><td colspan=\"5\">{}</td></tr></tfoot>",
        pager("endpoints", &[], page, found.next_offset.is_some())
    ))
}

fn endpoints(state: &ApiState, csrf: &str, q: &Query) -> Result<String, ConsoleError> {
    let page = page_number(q);
    let body = format!(
        "<h1>Endpoints</h1><table class=\"list\" id=\"endpoints\" data-fragment=\"list\"><thead><tr><th>Name</th><th>Status</th><th>Configuration</th><th>Instances</th><th>Created</th></tr></thead>{}</table>",
        endpoint_rows(state, page)?
    );
    Ok(live_page(
        "Endpoints",
        Section::Endpoints,
        csrf,
        &format!("endpoints/events?page={page}"),
        &body,
    ))
}

fn instance_rows(out: &mut String, instances: &[Instance], role: &str) {
    for i in instances {
        let health = if i.healthy {
            "<span class=\"badge ok\">Healthy</span>"
        } else if i.stopping_since.is_some() {
            "<span class=\"badge warn\">Stopping</span>"
        } else if i.launched() {
            "<span class=\"badge run\">Starting</span>"
        } else {
            "<span class=\"badge run\">Pending</span>"
        };
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{health}</td><td>{}</td></tr>",
            esc(&i.id),
            esc(&i.variant),
            role,
            if i.launched_at > 0.0 {
                time(i.launched_at)
            } else {
                "—".into()
            }
        );
    }
}

/// The changing part of an endpoint's page: status, variants, instances and their health.
pub fn endpoint_status(e: &Endpoint, csrf: &str) -> String {
    let mut out = format!("<div class=\"status-line\">{}", badge(e.status.as_str()));
    if e.status != EndpointStatus::Deleting {
        out.push_str(&action_form(
            &format!("endpoints/{}/delete", url_part(&e.name)),
            csrf,
            "delete",
            "Delete",
            &format!("Delete endpoint {}? Its instances stop.", e.name),
        ));
    }
    out.push_str("</div>");
    if let Some(r) = &e.failure_reason {
        let _ = write!(out, "<p class=\"error\">{}</p>", esc(r));
    }
    out.push_str(&facts(&[
        ("ARN", esc(&e.arn)),
        ("Configuration", esc(&e.live.config_name)),
        (
            "Updating to",
            e.pending
                .as_ref()
                .map(|p| esc(&p.config_name))
                .unwrap_or_else(|| "—".into()),
        ),
        ("Created", time(e.creation_time)),
        ("Last modified", time(e.last_modified_time)),
    ]));
    out.push_str("<h2>Variants</h2><table class=\"list\" id=\"variants\"><thead><tr><th>Variant</th><th>Model</th><th>Instances</th><th>Weight</th><th>Image</th><th>Model data</th></tr></thead><tbody>");
    for v in &e.live.plan {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} × {}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&v.name),
            esc(&v.model_name),
            v.count,
            esc(&v.instance_type),
            v.weight,
            esc(&v.image),
            esc(v.model_data_url.as_deref().unwrap_or("—")),
        );
    }
    out.push_str("</tbody></table><h2>Instances</h2><table class=\"list\" id=\"instances\"><thead><tr><th>Instance</th><th>Variant</th><th>Role</th><th>Health</th><th>Launched</th></tr></thead><tbody>");
    instance_rows(&mut out, &e.live.instances, "live");
    if let Some(p) = &e.pending {
        instance_rows(&mut out, &p.instances, "incoming");
    }
    instance_rows(&mut out, &e.retiring, "retiring");
    out.push_str("</tbody></table>");
    out
}

fn endpoint(state: &ApiState, csrf: &str, name: &str) -> Result<String, ConsoleError> {
    let e = state
        .control
        .hosting
        .endpoint(name)
        .map_err(|_| ConsoleError::NotFound(format!("there is no endpoint {name}")))?;
    let body = format!(
        "<p class=\"crumbs\"><a href=\"{BASE}endpoints\">Endpoints</a> /</p><h1>{}</h1>\
<section id=\"status\" data-fragment=\"status\">{}</section>\
<section><h2>Invocations</h2><div id=\"charts\" class=\"charts\"></div></section>\
<section><h2>Logs</h2><div id=\"logs\" class=\"logs\"></div></section>",
        esc(&e.name),
        endpoint_status(&e, csrf),
    );
    Ok(live_page(
        &e.name,
        Section::Endpoints,
        csrf,
        &format!("endpoints/{}/events", url_part(&e.name)),
        &body,
    ))
}

fn models(state: &ApiState, csrf: &str, q: &Query) -> Result<String, ConsoleError> {
    let page = page_number(q);
    let found = state.control.hosting.list_models(&hosting_query(page))?;
    let mut rows = String::new();
    for m in &found.items {
        // A model deleted between the listing and this read is left out.
        let Ok(model) = state.control.hosting.model(&m.name) else {
            continue;
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&model.name),
            time(model.creation_time),
            esc(&model.container.image),
            esc(model.container.model_data_url.as_deref().unwrap_or("—")),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"4\" class=\"empty\">No models.</td></tr>");
    }
    Ok(html::page(
        "Models",
        Some(Section::Models),
        Some(csrf),
        &format!(
            "<h1>Models</h1><table class=\"list\" id=\"models\"><thead><tr><th>Name</th><th>Created</th><th>Image</th><th>Model data</th></tr></thead><tbody>{rows}</tbody><tfoot><tr><td colspan=\"4\">{}</td></tr></tfoot></table>",
            pager("models", &[], page, found.next_offset.is_some())
        ),
    ))
}
