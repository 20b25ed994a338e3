//! Hand-written HTML: one escaping helper every piece of user data goes through (names, log
//! lines, hyperparameters, failure reasons), the page frame, and small formatting helpers.

use std::fmt::Write;

/// `s` safe inside element text and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment or query value (names may hold characters a URL treats
/// specially).
pub fn url_part(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A UTC time from epoch seconds, as the console shows times.
pub fn time(secs: f64) -> String {
    chrono::DateTime::from_timestamp_micros((secs * 1e6) as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub fn opt_time(secs: Option<f64>) -> String {
    secs.map(time).unwrap_or_else(|| "—".into())
}

/// `1h 02m 03s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec:02}s"),
        (h, m, sec) => format!("{h}h {m:02}m {sec:02}s"),
    }
}

/// How long something took; while it runs, a span the browser counts up from `start` (so the
/// fragment holding it does not change every second).
pub fn elapsed(start: f64, end: Option<f64>) -> String {
    match end {
        Some(end) => duration(end - start),
        None => format!("<span data-since=\"{start:.3}\">…</span>"),
    }
}

/// A status as a badge; the class is derived from a fixed set of status words.
pub fn badge(status: &str) -> String {
    let class = match status {
        "Completed" | "InService" => "ok",
        "Failed" | "MaxRuntimeExceeded" => "bad",
        "Stopped" | "Stopping" | "Deleting" | "RollingBack" => "warn",
        _ => "run",
    };
    format!(
        "<span class=\"badge {class}\" data-status>{}</span>",
        esc(status)
    )
}

/// Which section of the console a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Training,
    Processing,
    Transform,
    Tuning,
    Endpoints,
    Models,
}

/// A whole page: the frame with navigation, sign-out (a POST carrying the session's CSRF
/// token) and the console's script and styles, around `body`.
pub fn page(title: &str, section: Option<Section>, csrf: Option<&str>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(token) = csrf {
        nav.push_str("<nav>");
        for (s, href, label) in [
            (Section::Training, "training-jobs", "Training jobs"),
            (Section::Tuning, "tuning-jobs", "Tuning jobs"),
            (Section::Processing, "processing-jobs", "Processing jobs"),
            (Section::Transform, "transform-jobs", "Batch transform jobs"),
            (Section::Endpoints, "endpoints", "Endpoints"),
            (Section::Models, "models", "Models"),
        ] {
            let current = if section == Some(s) {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(
                nav,
                "<a href=\"{}{href}\"{current}>{label}</a>",
                super::BASE
            );
        }
        let _ = write!(
            nav,
            "<form method=\"post\" action=\"{}sign-out\" class=\"signout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form></nav>",
            super::BASE,
            esc(token)
        );
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Clary</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><link rel=\"icon\" href=\"data:,\">\
<link rel=\"stylesheet\" href=\"{base}assets/uPlot.min.css\"><link rel=\"stylesheet\" href=\"{base}assets/console.css\">\
<script src=\"{base}assets/uPlot.iife.min.js\" defer></script><script src=\"{base}assets/console.js\" defer></script></head>\
<body><header><a class=\"brand\" href=\"{base}\">Clary</a>{nav}</header><main>{body}</main></body></html>",
        esc(title),
        base = super::BASE,
    )
}

/// A two-column table of `(label, value-html)` rows; values are already escaped.
pub fn facts(rows: &[(&str, String)]) -> String {
    let mut out = String::from("<table class=\"facts\">");
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
    out.push_str("</table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_cannot_open_markup() {
        assert_eq!(
            esc("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(url_part("a b/c?d"), "a%20b%2Fc%3Fd");
        assert!(badge("<b>").contains("&lt;b&gt;"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5.2), "5s");
        assert_eq!(duration(65.0), "1m 05s");
        assert_eq!(duration(3723.0), "1h 02m 03s");
    }
}
