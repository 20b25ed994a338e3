//! Tuning job pages: the listing, one job with its trials and charts.
use super::*;

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

pub(super) fn tuning_jobs(state: &ApiState, csrf: &str, q: &Query) -> Result<String, ConsoleError> {
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

pub(super) fn objective_word(t: ObjectiveType) -> &'static str {
    match t {
        ObjectiveType::Maximize => "Maximize",
        ObjectiveType::Minimize => "Minimize",
    }
}

/// Every range the job searches: its own, and those of its several definitions (each name
/// once).
pub(super) fn all_ranges(job: &TuningJob) -> Vec<&ParameterRange> {
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

pub(super) fn tuning_job(state: &ApiState, csrf: &str, name: &str) -> Result<String, ConsoleError> {
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
