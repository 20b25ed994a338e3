//! Endpoint and model pages.
use super::*;

// ---------------------------------------------------------------- endpoints and models

pub(super) fn hosting_query(page: u64) -> ListHostingResources {
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

pub(super) fn endpoints(state: &ApiState, csrf: &str, q: &Query) -> Result<String, ConsoleError> {
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

pub(super) fn instance_rows(out: &mut String, instances: &[Instance], role: &str) {
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

pub(super) fn endpoint(state: &ApiState, csrf: &str, name: &str) -> Result<String, ConsoleError> {
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

pub(super) fn models(state: &ApiState, csrf: &str, q: &Query) -> Result<String, ConsoleError> {
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
