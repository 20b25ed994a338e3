//! Who may see the console: sessions, signing in and out, and the CSRF check of every action.
//!
//! - Signing in takes the server's own key pair (the one `clary env` prints), compared in
//!   constant time. Scoped keys (a job's, an endpoint instance's) never sign in: they are not
//!   even looked up. Or a one-time link `clary console` prints: an HMAC under the server's
//!   secret of an expiry, a nonce and the server's process id, good once, for
//!   [`LINK_LIFETIME_SECS`], and only for the server process it was made for.
//! - A session is a random id in a cookie that is `HttpOnly`, `SameSite=Strict` and scoped to
//!   the console's path. Sessions live in this process's memory only: a server restart signs
//!   everyone out (nothing to leak from disk, nothing to revoke). Each lasts
//!   [`SESSION_LIFETIME_SECS`] from sign-in; at most [`MAX_SESSIONS`] at once (the oldest go).
//! - Every POST carries the session's CSRF token as a form field; the sign-in form carries a
//!   token of its own, paired with a short-lived cookie, so no other site can sign a browser
//!   in. A posted `Origin`, when the browser sends one, must be this server.
//!
//! No secret ever appears in a page or an address; pages hold only the CSRF token.

use super::{BASE, ConsoleError, ConsoleRequest, html, html_response, redirect};
use crate::{ApiState, Body};
use hmac::{KeyInit, Mac};
use http::{HeaderValue, Response, StatusCode, header};
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "clary_console";
const SIGN_IN_COOKIE: &str = "clary_console_sign_in";
pub const SESSION_LIFETIME_SECS: f64 = 12.0 * 3600.0;
pub const LINK_LIFETIME_SECS: f64 = 600.0;
pub const MAX_SESSIONS: usize = 256;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every action posts.
    pub csrf: String,
    pub created: f64,
}

/// The console's sessions and the one-time links already used.
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    /// Nonces of used links, with their expiry (forgotten once expired).
    used_links: Mutex<HashMap<String, f64>>,
}

/// 256 random bits, hex (two v4 UUIDs' random parts: the OS's generator).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={}; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        BASE.trim_end_matches('/')
    ))
    .expect("cookie values are hex")
}

impl Sessions {
    fn open(&self, now: f64) -> (String, Session) {
        let id = random_token();
        let session = Session {
            csrf: random_token(),
            created: now,
        };
        let mut all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| now - s.created < SESSION_LIFETIME_SECS);
        while all.len() >= MAX_SESSIONS {
            let oldest = all
                .iter()
                .min_by(|a, b| a.1.created.total_cmp(&b.1.created))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => all.remove(&k),
                None => break,
            };
        }
        all.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session a request's cookie names.
    pub fn session_of(&self, headers: &http::HeaderMap) -> Option<Session> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let mut all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let s = all.get(id)?;
        if clary_control::now_secs() - s.created >= SESSION_LIFETIME_SECS {
            all.remove(id);
            return None;
        }
        Some(s.clone())
    }

    fn close(&self, headers: &http::HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
    }

    /// Takes a one-time link's nonce; false when it was used already.
    fn use_link(&self, nonce: &str, expires: f64, now: f64) -> bool {
        let mut used = self.used_links.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, e| *e > now);
        used.insert(nonce.to_string(), expires).is_none()
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn link_mac(secret: &str, pid: u32, expires: u64, nonce: &str) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("clary-console-sign-in\n{pid}\n{expires}\n{nonce}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A one-time sign-in token for the server process `pid` whose secret is `secret`, good
/// until `now + LINK_LIFETIME_SECS` (what `clary console` prints in a link).
pub fn sign_in_link_token(secret: &str, pid: u32, now: f64) -> String {
    let expires = (now + LINK_LIFETIME_SECS) as u64;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mac = link_mac(secret, pid, expires, &nonce);
    format!("{expires}.{nonce}.{mac}")
}

/// Whether `token` is a link this server made that is unexpired and unused (using it).
fn take_link(state: &ApiState, token: &str, now: f64) -> Result<(), ConsoleError> {
    let bad = || ConsoleError::Refused("this sign-in link is not valid".into());
    let mut parts = token.split('.');
    let (Some(expires), Some(nonce), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let expires: u64 = expires.parse().map_err(|_| bad())?;
    let want = link_mac(&state.keys.secret_key, std::process::id(), expires, nonce);
    if !ct_eq(&want, mac) {
        return Err(bad());
    }
    if (expires as f64) < now {
        return Err(ConsoleError::Refused(
            "this sign-in link has expired; run `clary console` for a new one".into(),
        ));
    }
    if !state.console.use_link(nonce, expires as f64, now) {
        return Err(ConsoleError::Refused(
            "this sign-in link was used already; run `clary console` for a new one".into(),
        ));
    }
    Ok(())
}

/// The sign-in form (with a one-time link's token when the address carries one).
pub fn sign_in_form(link: Option<&str>, problem: Option<&str>) -> Response<Body> {
    let form_token = random_token();
    let problem = problem
        .map(|p| {
            format!(
                "<p class=\"error\" id=\"sign-in-error\">{}</p>",
                html::esc(p)
            )
        })
        .unwrap_or_default();
    let fields = match link {
        Some(t) => format!(
            "<p>Sign in with the one-time link <code>clary console</code> printed.</p>\
<input type=\"hidden\" name=\"link\" value=\"{}\">",
            html::esc(t)
        ),
        None => "<label>Access key id <input name=\"access_key\" id=\"access_key\" autocomplete=\"username\" required></label>\
<label>Secret access key <input name=\"secret_key\" id=\"secret_key\" type=\"password\" autocomplete=\"current-password\" required></label>\
<p class=\"hint\">The server's key pair, as <code>clary env</code> prints it (or run <code>clary console</code> for a one-time link).</p>".into(),
    };
    let body = format!(
        "<section class=\"sign-in\"><h1>Sign in to Clary</h1>{problem}\
<form method=\"post\" action=\"{BASE}sign-in\">{fields}\
<input type=\"hidden\" name=\"form\" value=\"{form_token}\">\
<button type=\"submit\" id=\"sign-in\">Sign in</button></form></section>"
    );
    let mut resp = html_response(
        if problem.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        },
        html::page("Sign in", None, None, &body),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, &form_token, 900),
    );
    resp
}

/// Whether the browser's `Origin` (when it sends one) is this server.
fn same_origin(req: &ConsoleRequest) -> bool {
    let Some(origin) = req
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

/// `POST sign-in`: the server's key pair or a one-time link.
pub fn sign_in(state: &ApiState, req: &ConsoleRequest) -> Response<Body> {
    let form_ok = match (cookie(&req.headers, SIGN_IN_COOKIE), req.form.get("form")) {
        (Some(c), Some(f)) => ct_eq(c, f),
        _ => false,
    };
    if !form_ok || !same_origin(req) {
        return sign_in_form(
            None,
            Some("The sign-in form expired or came from elsewhere; try again."),
        );
    }
    let now = clary_control::now_secs();
    let accepted = match req.form.get("link") {
        Some(token) => take_link(state, token, now).map_err(|e| e.to_string()),
        None => {
            let ak = req.form.get("access_key").map(|s| s.trim()).unwrap_or("");
            let sk = req.form.get("secret_key").map(String::as_str).unwrap_or("");
            // Both compared in full, so the time taken says nothing of which was wrong.
            let ak_ok = ct_eq(ak, &state.keys.access_key);
            let sk_ok = ct_eq(sk, &state.keys.secret_key);
            if ak_ok & sk_ok {
                Ok(())
            } else {
                Err("Those are not the server's credentials. Use the key pair `clary env` prints; a job's or an endpoint instance's keys cannot sign in.".into())
            }
        }
    };
    if let Err(why) = accepted {
        tracing::info!("console: sign-in refused");
        return sign_in_form(None, Some(&why));
    }
    let (id, _) = state.console.open(now);
    tracing::info!("console: signed in");
    let mut resp = redirect(&format!("{BASE}training-jobs"));
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &id, SESSION_LIFETIME_SECS as i64),
    );
    h.append(header::SET_COOKIE, set_cookie(SIGN_IN_COOKIE, "", 0));
    resp
}

pub fn sign_out(state: &ApiState, req: &ConsoleRequest) -> Response<Body> {
    state.console.close(&req.headers);
    let mut resp = redirect(&format!("{BASE}sign-in"));
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    resp
}

/// Every action of a signed-in session: its CSRF token posted, from this server's pages.
pub fn check_action(session: &Session, req: &ConsoleRequest) -> Result<(), ConsoleError> {
    let token_ok = req
        .form
        .get("csrf")
        .is_some_and(|t| ct_eq(t, &session.csrf));
    if !token_ok {
        return Err(ConsoleError::Refused(
            "the form's CSRF token is missing or wrong; reload the page and try again".into(),
        ));
    }
    if !same_origin(req) {
        return Err(ConsoleError::Refused(
            "the form was posted from another site".into(),
        ));
    }
    Ok(())
}
