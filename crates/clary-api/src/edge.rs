//! The port's edge: which service a request is for (from its shape, before anything is
//! verified), how much request body may be held in memory at once, and the bounded one-line
//! summary a refused request leaves in the log.

use crate::{Body, full, query};
use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest JSON/query request body accepted (SageMaker's own limit is far below this).
pub const MAX_API_BODY: usize = 16 * 1024 * 1024;

/// Request bodies (JSON, query and InvokeEndpoint calls; S3 bodies stream to disk) held in
/// memory at once across all connections. A request reserves its declared length before a
/// byte is read, so many large posts at once wait here instead of growing the process.
pub const MAX_BODY_BYTES_IN_FLIGHT: usize = 128 * 1024 * 1024;

/// How long a request waits for room in the body budget before it is refused as throttled.
const BUDGET_WAIT: Duration = Duration::from_secs(20);

/// Anything a client sent that reaches the log is cut to this many bytes.
pub const LOGGED_INPUT_MAX: usize = 200;

/// The services the port speaks, told apart as docs/sdk-wire.md §1.3 describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    /// The server's metrics for Prometheus (`/_clary/metrics`).
    Metrics,
    /// JSON 1.1 with `X-Amz-Target`: SageMaker, CloudWatch Logs, agent reports.
    Json,
    /// SageMaker Runtime `InvokeEndpoint`.
    Runtime,
    /// The query protocol: STS and IAM.
    Query,
    S3,
}

impl Route {
    /// Decides the service from the request's shape and the scope its credential claims, so
    /// a request whose `Authorization` is mangled still gets its own service's refusal.
    pub fn of<B>(req: &Request<B>) -> Route {
        let path = req.uri().path();
        if path == "/_clary/health" {
            return Route::Health;
        }
        if path == crate::prometheus_api::METRICS_PATH && req.method() == Method::GET {
            return Route::Metrics;
        }
        if req.headers().contains_key("x-amz-target") {
            return Route::Json;
        }
        // Presigned URLs are S3's alone.
        if req
            .uri()
            .query()
            .is_some_and(|q| q.contains("X-Amz-Credential="))
        {
            return Route::S3;
        }
        let claimed = clary_sigv4::scope_service(req.headers());
        let claimed = claimed.as_deref();
        let post = req.method() == Method::POST;
        // S3 has no POST on an object key without a query (`?uploads`, `?delete`, ...), so
        // this path is InvokeEndpoint's unless the credential says S3.
        if post
            && path.starts_with("/endpoints/")
            && path.ends_with("/invocations")
            && req.uri().query().is_none()
            && matches!(claimed, None | Some("sagemaker"))
        {
            return Route::Runtime;
        }
        if matches!(claimed, Some("sts") | Some("iam") | Some("monitoring")) {
            return Route::Query;
        }
        // A form posted to the root is the query protocol; S3's browser uploads post
        // multipart/form-data to a bucket.
        let form = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if claimed.is_none() && post && path == "/" && form {
            return Route::Query;
        }
        Route::S3
    }

    /// An error in this service's wire shape (JSON for JSON and Runtime, XML for query).
    pub fn error(self, status: StatusCode, code: &str, message: &str) -> Response<Body> {
        match self {
            Route::Query => query::error(status, code, message),
            _ => crate::json_error(status, code, message),
        }
    }

    fn body_limit(self) -> usize {
        match self {
            Route::Runtime => crate::runtime::MAX_PAYLOAD,
            _ => MAX_API_BODY,
        }
    }
}

/// Longest validity a presigned URL may claim (S3's: one week).
pub const MAX_PRESIGNED_EXPIRES_SECS: i64 = 604_800;

/// S3's refusal of a presigned URL whose `X-Amz-Expires` is out of range (s3s checks only
/// that the URL has not yet expired) or whose signature cannot be one; with its error code.
pub fn presigned_query_error(uri: &http::Uri) -> Option<(&'static str, Response<Body>)> {
    let query = uri.query()?;
    // A signature that is not 64 hex digits cannot match: S3 says so as a mismatch (403),
    // where s3s would call the URL malformed (400).
    if let Some(signature) = query
        .split('&')
        .find_map(|p| p.strip_prefix("X-Amz-Signature="))
        && (signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Some((
            "SignatureDoesNotMatch",
            s3_refusal(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            ),
        ));
    }
    let expires = query
        .split('&')
        .find_map(|p| p.strip_prefix("X-Amz-Expires="))?;
    let message = match expires.parse::<i64>() {
        Ok(n) if n > MAX_PRESIGNED_EXPIRES_SECS => {
            "X-Amz-Expires must be less than a week (in seconds) that is; 604800"
        }
        Ok(n) if n < 0 => "X-Amz-Expires must be non-negative",
        Ok(_) => return None,
        Err(_) => "X-Amz-Expires should be a number",
    };
    Some((
        "AuthorizationQueryParametersError",
        s3_refusal(
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            message,
        ),
    ))
}

/// An S3 error document, for refusals made before s3s sees the request.
fn s3_refusal(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{}</RequestId></Error>",
        crate::request_id()
    );
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/xml")
        .body(full(body))
        .expect("static response parts are valid")
}

/// The shared allowance of request-body bytes in memory.
#[derive(Clone)]
pub struct BodyBudget(Arc<Semaphore>);

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget::new(MAX_BODY_BYTES_IN_FLIGHT)
    }
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        BodyBudget(Arc::new(Semaphore::new(bytes.div_ceil(1024))))
    }

    /// Bytes of the budget still free.
    pub fn available(&self) -> usize {
        self.0.available_permits() * 1024
    }

    /// Reads a body of at most the route's limit, holding its share of the budget for as long
    /// as the returned permit lives. A declared length over the limit is refused unread.
    pub async fn read(
        &self,
        route: Route,
        parts: &Parts,
        body: hyper::body::Incoming,
    ) -> Result<(Bytes, OwnedSemaphorePermit), Response<Body>> {
        let limit = route.body_limit();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(n) = declared
            && n > limit
        {
            return Err(too_large(route, n, limit));
        }
        // Without a declared length the body may be as large as the limit.
        let reserve = declared.unwrap_or(limit).div_ceil(1024);
        let permits = u32::try_from(reserve).unwrap_or(u32::MAX);
        let permit =
            match tokio::time::timeout(BUDGET_WAIT, self.0.clone().acquire_many_owned(permits))
                .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(route.error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ThrottlingException",
                        "Too many request bodies are in flight on this server; retry shortly",
                    ));
                }
            };
        match http_body_util::Limited::new(body, limit).collect().await {
            Ok(b) => Ok((b.to_bytes(), permit)),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(too_large(route, limit + 1, limit))
            }
            Err(e) => Err(route.error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("the request body could not be read: {e}"),
            )),
        }
    }
}

fn too_large(route: Route, len: usize, limit: usize) -> Response<Body> {
    match route {
        Route::Runtime => crate::json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationError",
            &format!(
                "Request payload of {len} bytes is larger than InvokeEndpoint's limit of 6 MB; send smaller requests or use batch transform"
            ),
        ),
        _ => route.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationException",
            &format!(
                "the request body of {len} bytes is larger than this API's limit of {limit} bytes"
            ),
        ),
    }
}

/// `s` cut to [`LOGGED_INPUT_MAX`] bytes (on a character boundary), with control characters
/// escaped so a client cannot write lines of its own into the log.
pub fn bounded(s: &str) -> String {
    let cut = s.floor_char_boundary(LOGGED_INPUT_MAX.min(s.len()));
    let mut out: String = s[..cut].escape_debug().collect();
    if cut < s.len() {
        out.push_str(&format!("... ({} bytes)", s.len()));
    }
    out
}

/// A 200 for the health check.
pub fn health() -> Response<Body> {
    Response::new(full("ok"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const STS: &str = "AWS4-HMAC-SHA256 Credential=AK/20261124/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00";

    #[test]
    fn a_mangled_authorization_still_reaches_its_service() {
        let form = (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        for (r, want) in [
            (
                req(
                    "POST",
                    "/endpoints/e/invocations",
                    &[("authorization", "AWS4-HMAC-SHA256 garbage")],
                ),
                Route::Runtime,
            ),
            (req("POST", "/endpoints/e/invocations", &[]), Route::Runtime),
            (
                req(
                    "POST",
                    "/",
                    &[("authorization", "AWS4-HMAC-SHA256 garbage"), form],
                ),
                Route::Query,
            ),
            (
                req(
                    "POST",
                    "/",
                    &[(
                        "authorization",
                        "AWS4-HMAC-SHA256 Credential=AK/20261124/us-east-1/sts/aws4_request",
                    )],
                ),
                Route::Query,
            ),
            (req("POST", "/", &[("authorization", STS)]), Route::Query),
            (
                req("POST", "/", &[("x-amz-target", "SageMaker.ListModels")]),
                Route::Json,
            ),
            (req("GET", "/_clary/health", &[]), Route::Health),
            // S3 keeps what is S3's.
            (
                req(
                    "POST",
                    "/endpoints/e/invocations",
                    &[(
                        "authorization",
                        "AWS4-HMAC-SHA256 Credential=AK/20261124/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
                    )],
                ),
                Route::S3,
            ),
            (
                req("POST", "/endpoints/e/invocations?uploads", &[]),
                Route::S3,
            ),
            (
                req(
                    "GET",
                    "/bucket/key?X-Amz-Credential=AK%2F20261124%2Fus-east-1%2Fs3%2Faws4_request",
                    &[],
                ),
                Route::S3,
            ),
            (
                req(
                    "PUT",
                    "/bucket/key",
                    &[("authorization", "AWS4-HMAC-SHA256 garbage")],
                ),
                Route::S3,
            ),
            (req("POST", "/bucket?delete", &[form]), Route::S3),
        ] {
            assert_eq!(Route::of(&r), want, "{} {}", r.method(), r.uri());
        }
    }

    #[test]
    fn presigned_urls_may_claim_a_week_at_most() {
        let status = |q: &str| {
            presigned_query_error(&format!("/b/k?X-Amz-Credential=x&{q}").parse().unwrap())
                .map(|(_, r)| r.status())
        };
        assert_eq!(status("X-Amz-Expires=604800"), None);
        assert_eq!(
            status("X-Amz-Expires=604801"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status("X-Amz-Expires=-1"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status("X-Amz-Expires=soon"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status("partNumber=1"), None);
        let good = "a".repeat(64);
        assert_eq!(status(&format!("X-Amz-Signature={good}")), None);
        for bad in [format!("{good}00"), "zz".repeat(32), "abc".into()] {
            assert_eq!(
                status(&format!("X-Amz-Signature={bad}")),
                Some(StatusCode::FORBIDDEN),
                "{bad}"
            );
        }
    }

    #[test]
    fn logged_input_is_bounded_and_cannot_forge_lines() {
        assert_eq!(bounded("GET /x"), "GET /x");
        let long = "é".repeat(3_000_000);
        let b = bounded(&long);
        assert!(b.len() < LOGGED_INPUT_MAX + 40, "{}", b.len());
        assert!(b.ends_with("... (6000000 bytes)"));
        assert_eq!(bounded("a\nERROR forged"), "a\\nERROR forged");
    }
}
