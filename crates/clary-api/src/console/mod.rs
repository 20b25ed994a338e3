//! The web console, served under [`BASE`] on the server's own port (bucket names cannot begin
//! with `_`, so no S3 path is taken). Server-rendered HTML with a small script layer
//! (`assets/console.js`) and uPlot for charts, both embedded in the binary; live updates by
//! server-sent events ([`live`]).
//!
//! Everything but the sign-in form and the static assets needs a session ([`auth`]): signed in
//! with the server's own key pair (never a scoped one) or a one-time link `clary console`
//! prints. Every action is a POST carrying the session's CSRF token.

pub mod auth;
mod html;
pub mod latency;
mod live;
mod pages;

use crate::{ApiState, Body, full};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::Arc;

/// Where the console lives on the server's port.
pub const BASE: &str = "/_clary/console/";

/// The largest form a console action posts (a CSRF token and a few fields).
const MAX_FORM: usize = 16 * 1024;

/// Why a console request was not served; said to the browser without server internals.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    BadRequest(String),
    /// The control plane's own failure: logged in full, shown without detail.
    #[error("the server failed to answer; its log says why")]
    Internal(String),
}

impl From<clary_control::ControlError> for ConsoleError {
    fn from(e: clary_control::ControlError) -> Self {
        use clary_control::ControlError as C;
        match e {
            C::Internal(m) => ConsoleError::Internal(m),
            C::NotFound(m) | C::ResourceNotFound(m) | C::Missing(m) => ConsoleError::NotFound(m),
            other => ConsoleError::BadRequest(other.to_string()),
        }
    }
}

/// Whether `path` is the console's.
pub fn owns(path: &str) -> bool {
    path.starts_with(BASE) || path == BASE.trim_end_matches('/')
}

/// A request as the console's pages see it: its path below [`BASE`] split into decoded
/// segments, its query, and its form when posted.
pub struct ConsoleRequest {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: HashMap<String, String>,
    pub headers: http::HeaderMap,
    pub form: HashMap<String, String>,
}

impl ConsoleRequest {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// `a=1&b=x%20y` (and `+` for a space, as browsers post forms).
pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |x: &str| {
                percent_encoding::percent_decode_str(&x.replace('+', " "))
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            };
            Some((dec(k)?, dec(v)?))
        })
        .collect()
}

/// The entry from [`crate::handle`] for every path [`owns`] says is the console's.
pub async fn handle(state: Arc<ApiState>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let form = if parts.method == Method::POST {
        match http_body_util::Limited::new(body, MAX_FORM).collect().await {
            Ok(b) => parse_form(&String::from_utf8_lossy(&b.to_bytes())),
            Err(_) => {
                return error_page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &ConsoleError::BadRequest("the form is too large".into()),
                );
            }
        }
    } else {
        HashMap::new()
    };
    dispatch(state, &parts, form).await
}

/// Serves a request whose body (a posted form) has been read.
pub async fn dispatch(
    state: Arc<ApiState>,
    parts: &http::request::Parts,
    form: HashMap<String, String>,
) -> Response<Body> {
    let rest = parts.uri.path().strip_prefix(BASE).unwrap_or("");
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let req = ConsoleRequest {
        method: parts.method.clone(),
        segments,
        query: parse_form(parts.uri.query().unwrap_or("")),
        headers: parts.headers.clone(),
        form,
    };
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let post = req.method == Method::POST;
    // What anyone may reach: the assets (public code, no data) and the sign-in form.
    match (get, post, seg.as_slice()) {
        (true, _, ["assets", name]) => return assets(name),
        (true, _, ["sign-in"]) => return auth::sign_in_form(req.param("link"), None),
        (_, true, ["sign-in"]) => {
            let resp = auth::sign_in(&state, &req);
            // A refused sign-in answers slowly, so guessing is slow too.
            if resp.status() == StatusCode::UNAUTHORIZED {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            return resp;
        }
        _ => {}
    }
    let Some(session) = state.console.session_of(&req.headers) else {
        // A page redirects to the sign-in form; anything else gets a bare 401. Neither says
        // anything of what exists.
        return if get && seg.last().is_none_or(|s| *s != "events") {
            redirect(&format!("{BASE}sign-in"))
        } else {
            plain(StatusCode::UNAUTHORIZED, "sign in to the console first")
        };
    };
    if post {
        if let Err(e) = auth::check_action(&session, &req) {
            tracing::info!(path = %parts.uri.path(), "console: refused an action: {e}");
            return error_page(StatusCode::FORBIDDEN, &e);
        }
        if seg.as_slice() == ["sign-out"] {
            return auth::sign_out(&state, &req);
        }
    }
    let result = match (get, post, seg.as_slice()) {
        (true, _, []) => Ok(redirect(&format!("{BASE}training-jobs"))),
        (true, _, [list, "events"]) => return live::list(state, list, &req),
        (true, _, ["training-jobs", name, "events"]) => {
            return live::training_job(state, &session, name.to_string());
        }
        (true, _, ["processing-jobs", name, "events"]) => {
            return live::processing_job(state, &session, name.to_string());
        }
        (true, _, ["transform-jobs", name, "events"]) => {
            return live::transform_job(state, &session, name.to_string());
        }
        (true, _, ["tuning-jobs", name, "events"]) => {
            return live::tuning_job(state, &session, name.to_string());
        }
        (true, _, ["endpoints", name, "events"]) => {
            return live::endpoint(state, &session, name.to_string());
        }
        (true, _, _) => pages::get(state, &session, &req).await,
        (_, true, _) => pages::act(state, &req).await,
        _ => Err(ConsoleError::BadRequest(
            "the console answers GET and POST only".into(),
        )),
    };
    result.unwrap_or_else(|e| {
        let status = match &e {
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Refused(_) => StatusCode::FORBIDDEN,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Internal(m) => {
                tracing::error!("console: {m}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        error_page(status, &e)
    })
}

/// The headers every console answer carries: nothing runs but the console's own scripts,
/// nothing frames it, no address (a one-time link) leaks as a referrer to another site,
/// nothing is cached. (`no-referrer` would make the browser post `Origin: null`, which the
/// CSRF check refuses.)
fn secure(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

pub(crate) fn html_response(status: StatusCode, body: String) -> Response<Body> {
    secure(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(full(body))
            .expect("static response parts are valid"),
    )
}

pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    secure(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full(text))
            .expect("static response parts are valid"),
    )
}

pub(crate) fn redirect(to: &str) -> Response<Body> {
    secure(
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, to)
            .body(full(Bytes::new()))
            .expect("static response parts are valid"),
    )
}

fn error_page(status: StatusCode, e: &ConsoleError) -> Response<Body> {
    let body = html::page(
        "Error",
        None,
        None,
        &format!(
            "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"{BASE}\">Back to the console</a></p>",
            status.as_u16(),
            html::esc(&e.to_string())
        ),
    );
    html_response(status, body)
}

/// The embedded static files: the console's script and styles and the vendored uPlot
/// (`scripts/vendor-uplot.sh`). They hold no data, so they are served without a session.
fn assets(name: &str) -> Response<Body> {
    let (bytes, kind): (&'static [u8], &str) = match name {
        "console.js" => (
            include_bytes!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "console.css" => (
            include_bytes!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "uPlot.iife.min.js" => (
            include_bytes!("assets/vendor/uplot/uPlot.iife.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "uPlot.min.css" => (
            include_bytes!("assets/vendor/uplot/uPlot.min.css"),
            "text/css; charset=utf-8",
        ),
        _ => return plain(StatusCode::NOT_FOUND, "no such asset"),
    };
    secure(
        Response::builder()
            .header(header::CONTENT_TYPE, kind)
            .header(header::CACHE_CONTROL, "private, max-age=300")
            .body(full(Bytes::from_static(bytes)))
            .expect("static response parts are valid"),
    )
}

#[cfg(test)]
mod tests;
