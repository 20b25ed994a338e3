//! Processing and batch transform job pages: listings and one job.
use super::*;

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

pub(super) fn processing_jobs(
    state: &ApiState,
    csrf: &str,
    f: &JobFilter,
) -> Result<String, ConsoleError> {
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

pub(super) fn processing_job(
    state: &ApiState,
    csrf: &str,
    name: &str,
) -> Result<String, ConsoleError> {
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

pub(super) fn transform_jobs(
    state: &ApiState,
    csrf: &str,
    f: &JobFilter,
) -> Result<String, ConsoleError> {
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

pub(super) fn transform_job(
    state: &ApiState,
    csrf: &str,
    name: &str,
) -> Result<String, ConsoleError> {
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
