//! The canonical request of SigV4: URI, query string and headers in their signed forms.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// RFC 3986 unreserved characters stay as they are; everything else is `%XX`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

pub fn uri_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The canonical URI. S3 signs the path as sent; every other service encodes the already
/// encoded path once more (botocore quotes the request path with `safe='/~'`).
pub fn canonical_uri(raw_path: &str, s3: bool) -> String {
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    if s3 {
        path.to_string()
    } else {
        utf8_percent_encode(path, PATH).to_string()
    }
}

/// The canonical query string: each name and value decoded, re-encoded strictly, sorted.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let Some(q) = raw_query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', "%20"))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (uri_encode(&dec(k)), uri_encode(&dec(v)))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(values: Vec<&[u8]>) -> String {
    values
        .into_iter()
        .map(|v| {
            String::from_utf8_lossy(v)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn canonical_request(
    method: &str,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
    s3: bool,
) -> Result<String, String> {
    let mut out = String::with_capacity(512);
    out.push_str(method);
    out.push('\n');
    out.push_str(&canonical_uri(uri.path(), s3));
    out.push('\n');
    out.push_str(&canonical_query(uri.query()));
    out.push('\n');
    let mut names: Vec<&String> = signed_headers.iter().collect();
    names.sort();
    for name in &names {
        let values: Vec<&[u8]> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if values.is_empty() {
            return Err(format!("signed header {name:?} is not in the request"));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&canonical_header_value(values));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(
        &names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(";"),
    );
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}
