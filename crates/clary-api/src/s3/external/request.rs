//! One request to the store on behalf of a client: Clary's bucket named as the store's, the
//! client's headers that carry over, the body (none, a small XML document, or the client's
//! upload streamed through the checks of [`super::body`]), and the answer read back: a success
//! as the response, anything else as the S3 error the client gets.

use super::body::{self, Expected, Verdict};
use super::errors::{About, store_error, store_failure, unreachable};
use clary_client::s3::encode_query_value;
use clary_store::ExternalStore;
use s3s::dto::{ETag, StreamingBlob, Timestamp, TimestampFormat};
use s3s::{S3Error, S3ErrorCode, S3Result};

/// The body hash SigV4 signs for a body streamed through.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

enum Payload {
    Empty,
    Bytes(Vec<u8>),
    Stream(StreamingBlob, Expected),
}

pub(super) struct StoreRequest {
    method: http::Method,
    bucket: Option<String>,
    key: Option<String>,
    query: Vec<String>,
    headers: http::HeaderMap,
    payload: Payload,
    about: About,
}

impl StoreRequest {
    /// A request on Clary's `bucket` (and `key`); a 404 without an S3 error body is
    /// `not_found`.
    pub fn new(
        method: http::Method,
        bucket: Option<&str>,
        key: Option<&str>,
        not_found: S3ErrorCode,
    ) -> Self {
        StoreRequest {
            method,
            bucket: bucket.map(str::to_string),
            key: key.map(str::to_string),
            query: Vec::new(),
            headers: http::HeaderMap::new(),
            payload: Payload::Empty,
            about: About {
                buckets: bucket.into_iter().map(str::to_string).collect(),
                not_found,
            },
        }
    }

    /// Another of Clary's buckets the store's messages may name (a copy's source).
    pub fn also_about(mut self, bucket: &str) -> Self {
        self.about.buckets.push(bucket.to_string());
        self
    }

    /// A query flag without a value (`uploads`, `delete`, `location`).
    pub fn flag(mut self, name: &str) -> Self {
        self.query.push(name.to_string());
        self
    }

    /// `name=value` in the query, when there is a value.
    pub fn param(mut self, name: &str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.query
                .push(format!("{name}={}", encode_query_value(&v.to_string())));
        }
        self
    }

    /// A header, when there is a value; one that cannot be a header value is the client's
    /// mistake.
    pub fn header(mut self, name: &str, value: Option<impl AsRef<str>>) -> S3Result<Self> {
        let Some(value) = value else {
            return Ok(self);
        };
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("{name:?} cannot be a header name"),
            )
        })?;
        let value = http::HeaderValue::from_str(value.as_ref()).map_err(|_| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("The value of {name} cannot be sent on"),
            )
        })?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// A timestamp header, as an HTTP date.
    pub fn date_header(self, name: &str, value: Option<&Timestamp>) -> S3Result<Self> {
        let value = value.map(|t| {
            let mut buf = Vec::new();
            // Formatting a valid timestamp into a Vec cannot fail.
            let _ = t.format(TimestampFormat::HttpDate, &mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        self.header(name, value)
    }

    /// `x-amz-meta-*` headers from an object's user metadata.
    pub fn metadata(
        mut self,
        metadata: Option<&std::collections::HashMap<String, String>>,
    ) -> S3Result<Self> {
        for (k, v) in metadata.into_iter().flatten() {
            self = self.header(&format!("x-amz-meta-{k}"), Some(v))?;
        }
        Ok(self)
    }

    /// A small body, signed with its hash.
    pub fn bytes(mut self, body: Vec<u8>) -> Self {
        self.payload = Payload::Bytes(body);
        self
    }

    /// The client's upload, streamed through and checked on its way.
    pub fn stream(mut self, body: StreamingBlob, expected: Expected) -> Self {
        self.payload = Payload::Stream(body, expected);
        self
    }

    /// Sends the request; a success comes back as the response, any other answer (or none)
    /// as the client's S3 error.
    pub async fn send(self, store: &ExternalStore) -> S3Result<reqwest::Response> {
        let StoreRequest {
            method,
            bucket,
            key,
            query,
            mut headers,
            payload,
            about,
        } = self;
        let url = store.url(bucket.as_deref(), key.as_deref(), &query.join("&"));
        let verdict = Verdict::default();
        let (body, hash) = match payload {
            Payload::Empty => (
                reqwest::Body::from(Vec::new()),
                clary_client::payload_hash(b""),
            ),
            Payload::Bytes(b) => {
                headers.insert(http::header::CONTENT_LENGTH, b.len().into());
                let hash = clary_client::payload_hash(&b);
                (reqwest::Body::from(b), hash)
            }
            Payload::Stream(blob, expected) => {
                // Without a length the request goes chunked, which not every store takes; the
                // store then says so.
                if let Some(len) = expected.length {
                    headers.insert(http::header::CONTENT_LENGTH, len.into());
                }
                let stream = body::checked(blob, expected, verdict.clone());
                (
                    reqwest::Body::wrap_stream(stream),
                    UNSIGNED_PAYLOAD.to_string(),
                )
            }
        };
        let sent = store.send(method, &url, headers, body, &hash).await;
        // A body cut short by its own check explains a broken request, or a refusal the store
        // gave to the part it got.
        if let Some(e) = verdict.take() {
            if matches!(&sent, Ok(r) if r.status().is_success()) {
                tracing::error!(store = %store.describe(), url, "the store accepted a body Clary cut short");
            }
            return Err(e);
        }
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Err(store_failure(store, e, &about)),
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Err(unreachable(store, &e)),
        };
        Err(store_error(
            store,
            clary_client::s3::s3_error(status, &text),
            &about,
        ))
    }

    /// [`Self::send`] for an answer in XML: its headers and text. A `200` that carries an
    /// `<Error>` (how S3 reports a copy or a completion that failed after it began) is that
    /// error.
    pub async fn send_for_xml(self, store: &ExternalStore) -> S3Result<(http::HeaderMap, String)> {
        let about = self.about.clone();
        let resp = self.send(store).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| unreachable(store, &e))?;
        if super::xml::root(&text).as_deref() == Some("Error") {
            return Err(store_error(
                store,
                clary_client::s3::s3_error(status, &text),
                &about,
            ));
        }
        Ok((headers, text))
    }
}

/// A response header as text, when it is there and is text.
pub(super) fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A response header as a number.
pub(super) fn header_num<T: std::str::FromStr>(headers: &http::HeaderMap, name: &str) -> Option<T> {
    header(headers, name).and_then(|v| v.trim().parse().ok())
}

/// A response header as a timestamp (an HTTP date).
pub(super) fn header_date(headers: &http::HeaderMap, name: &str) -> Option<Timestamp> {
    header(headers, name).and_then(|v| Timestamp::parse(TimestampFormat::HttpDate, v.trim()).ok())
}

/// An ETag as the store wrote it, quoted or not (Ceph RGW leaves a copy's unquoted).
pub(super) fn etag(text: &str) -> Option<ETag> {
    let t = text.trim();
    if t.is_empty() || t == "\"\"" {
        return None;
    }
    if t.starts_with("W/") {
        return ETag::parse_http_header(t.as_bytes()).ok();
    }
    Some(ETag::Strong(t.trim_matches('"').to_string()))
}

/// The user metadata in a response's `x-amz-meta-*` headers.
pub(super) fn metadata(headers: &http::HeaderMap) -> std::collections::HashMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("x-amz-meta-")?;
            Some((
                key.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_read_quoted_or_not() {
        assert_eq!(etag("\"abc-4\""), Some(ETag::Strong("abc-4".into())));
        assert_eq!(etag("abc"), Some(ETag::Strong("abc".into())));
        assert_eq!(etag("  "), None);
        assert_eq!(etag("\"\""), None);
        assert_eq!(etag("W/\"w\""), Some(ETag::Weak("w".into())));
    }
}
