//! The HTTP front end: `GET /ping`, `POST /invocations` and `GET /execution-parameters`, the
//! routes SageMaker sends a serving container.

use crate::config::ServeConfig;
use crate::pool::{HealthState, Invocation, Pool};
use bytes::Bytes;
use clary_exec::protocol::INSTANCE_TOKEN_HEADER;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";

pub struct Front {
    pub pool: Pool,
    pub config: Arc<ServeConfig>,
    /// Requests being answered, so shutdown can wait for them.
    pub in_flight: AtomicUsize,
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain", message + "\n")
}

/// Equal, compared in time that does not depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Front {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        if let Some(token) = &self.config.token
            && !same_secret(
                req.headers()
                    .get(INSTANCE_TOKEN_HEADER)
                    .map(|v| v.as_bytes())
                    .unwrap_or_default(),
                token.as_bytes(),
            )
        {
            return Ok(text(
                StatusCode::FORBIDDEN,
                "This model server answers only its endpoint's router; call InvokeEndpoint".into(),
            ));
        }
        Ok(match (req.method(), req.uri().path()) {
            (&Method::GET, "/ping") => self.ping(),
            (&Method::POST, "/invocations") => {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                let r = self.invoke(req).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                r
            }
            (&Method::GET, "/execution-parameters") => respond(
                StatusCode::OK,
                "application/json",
                serde_json::json!({
                    "MaxConcurrentTransforms": self.config.workers,
                    "BatchStrategy": "MULTI_RECORD",
                    "MaxPayloadInMB": self.config.max_payload / (1024 * 1024),
                })
                .to_string(),
            ),
            (_, path) => text(
                StatusCode::NOT_FOUND,
                format!("{path} is not a model server route; use GET /ping or POST /invocations"),
            ),
        })
    }

    /// 200 only once a worker has really loaded the model; 500 with the reason when loading
    /// failed; 503 while it is still loading.
    fn ping(&self) -> Response<Full<Bytes>> {
        match self.pool.health.state() {
            HealthState::Healthy(n) => respond(
                StatusCode::OK,
                "application/json",
                serde_json::json!({
                    "status": "Healthy",
                    "workers": n,
                    "queued": self.pool.queued(),
                    "worker_restarts": self.pool.health.restarts(),
                })
                .to_string(),
            ),
            HealthState::Loading => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({"status": "Loading"}).to_string(),
            ),
            HealthState::Failed(reason) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                serde_json::json!({"status": "Unhealthy", "reason": reason}).to_string(),
            ),
        }
    }

    async fn invoke(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let limit = self.config.max_payload;
        let too_large = || {
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the {} MiB limit (SAGEMAKER_MAX_PAYLOAD_IN_MB)",
                    limit / (1024 * 1024)
                ),
            )
        };
        let declared =
            header_str(req.headers(), header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return too_large();
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                );
            }
        };
        match self.pool.health.state() {
            HealthState::Healthy(_) => {}
            // Every worker is being replaced at once (one crashed while the other was still
            // starting): the request waits in the queue for the first to come back.
            HealthState::Loading if self.pool.health.loaded_once() => {}
            HealthState::Failed(_) => {
                // The reason may name files of the server; it is in the endpoint's log.
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the model could not be loaded; the reason is in the endpoint's log".into(),
                );
            }
            HealthState::Loading => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the model is still loading; retry once GET /ping answers 200".into(),
                );
            }
        }
        let inv = Invocation {
            body,
            content_type: header_str(&parts.headers, header::CONTENT_TYPE),
            accept: header_str(&parts.headers, header::ACCEPT),
            custom_attributes: header_str(&parts.headers, CUSTOM_ATTRIBUTES),
        };
        let Ok(rx) = self.pool.submit(inv) else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the model server is busy: {} requests are already waiting; retry later",
                    self.config.queue_size
                ),
            );
        };
        match rx.await {
            Ok(reply) => {
                let status =
                    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut resp = respond(status, &reply.content_type, reply.body);
                if let Some(ca) = reply
                    .custom_attributes
                    .and_then(|v| http::HeaderValue::from_str(&v).ok())
                {
                    resp.headers_mut().insert(CUSTOM_ATTRIBUTES, ca);
                }
                resp
            }
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model server is shutting down".into(),
            ),
        }
    }
}
