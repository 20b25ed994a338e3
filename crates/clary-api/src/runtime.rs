//! SageMaker Runtime `InvokeEndpoint`: `POST /endpoints/{name}/invocations`, routed to an
//! instance of the endpoint (variant by weight or `X-Amzn-SageMaker-Target-Variant`, then the
//! instance with the fewest requests in flight) over kept-alive HTTP/1 connections. A non-2xx
//! answer from the model becomes `ModelError` (424), as on SageMaker.

use crate::{Body, full, json_error, request_id};
use bytes::Bytes;
use clary_control::ControlPlane;
use clary_control::domain::endpoint::endpoint_log_group;
use clary_control::domain::endpoint_metrics::{Answer, Invocation};
use clary_control::routes::InstanceRoute;
use clary_exec::protocol::INSTANCE_TOKEN_HEADER;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// InvokeEndpoint's payload limit.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";
const TARGET_VARIANT: &str = "x-amzn-sagemaker-target-variant";
const INVOKED_VARIANT: &str = "x-amzn-invoked-production-variant";

/// Idle kept-alive connections to model servers, per `host:port`.
#[derive(Default)]
pub struct Connections {
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
}

impl Connections {
    async fn checkout(&self, authority: &str) -> std::io::Result<SendRequest<Full<Bytes>>> {
        loop {
            let reused = self
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(authority)
                .and_then(Vec::pop);
            match reused {
                Some(s) if !s.is_closed() => return Ok(s),
                Some(_) => continue,
                None => break,
            }
        }
        let stream = tokio::net::TcpStream::connect(authority).await?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn checkin(&self, authority: &str, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(authority.to_string()).or_default();
        if list.len() < 256 {
            list.push(sender);
        }
    }

    /// One request to one instance: status, headers, whole body.
    async fn call(
        &self,
        instance: &InstanceRoute,
        headers: &HeaderMap,
        body: Bytes,
    ) -> std::io::Result<(StatusCode, HeaderMap, Bytes)> {
        let mut sender = self.checkout(&instance.authority).await?;
        sender.ready().await.map_err(std::io::Error::other)?;
        let mut req = Request::post("/invocations")
            .header(header::HOST, &instance.authority)
            .body(Full::new(body))
            .map_err(std::io::Error::other)?;
        for name in [header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(v) = headers.get(&name) {
                req.headers_mut().insert(name, v.clone());
            }
        }
        if let Some(v) = headers.get(CUSTOM_ATTRIBUTES) {
            req.headers_mut().insert(CUSTOM_ATTRIBUTES, v.clone());
        }
        if let Ok(token) = http::HeaderValue::from_str(&instance.token) {
            req.headers_mut().insert(INSTANCE_TOKEN_HEADER, token);
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        self.checkin(&instance.authority, sender);
        Ok((parts.status, parts.headers, body))
    }
}

fn model_error(
    control: &ControlPlane,
    endpoint: &str,
    variant: &str,
    status: StatusCode,
    body: &Bytes,
) -> Response<Body> {
    let original = String::from_utf8_lossy(body).into_owned();
    let group = endpoint_log_group(endpoint);
    let log_arn = format!(
        "arn:aws:logs:{}:{}:log-group:{group}",
        control.config.region, control.config.account
    );
    let message = format!(
        "Received client error ({}) from primary with message \"{}\". See {log_arn} in account {} for more information.",
        status.as_u16(),
        original.trim_end(),
        control.config.account
    );
    let payload = serde_json::json!({
        "__type": "ModelError", "message": message, "Message": message,
        "OriginalStatusCode": status.as_u16(), "OriginalMessage": original,
        "LogStreamArn": log_arn,
    });
    Response::builder()
        .status(StatusCode::FAILED_DEPENDENCY)
        .header("content-type", "application/json")
        .header("x-amzn-errortype", "ModelError")
        .header("x-amzn-requestid", request_id())
        .header(INVOKED_VARIANT, variant)
        .body(full(payload.to_string()))
        .expect("static response parts are valid")
}

/// Handles a verified InvokeEndpoint call.
pub async fn invoke(
    control: &ControlPlane,
    telemetry: Option<&crate::prometheus_api::Telemetry>,
    connections: &Connections,
    account: &str,
    endpoint: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if body.len() > MAX_PAYLOAD {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationError",
            &format!(
                "Request payload of {} bytes is larger than InvokeEndpoint's limit of 6 MB; send smaller requests or use batch transform",
                body.len()
            ),
        );
    }
    let Some(route) = control.routes.get(endpoint) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            &format!("Endpoint {endpoint} of account {account} not found."),
        );
    };
    let target = headers.get(TARGET_VARIANT).and_then(|v| v.to_str().ok());
    let known = |name: &str| route.variants.iter().any(|v| v.name == name);
    if target.is_none_or(known) && route.variants.iter().all(|v| v.instances.is_empty()) {
        // Every instance is being replaced: a retryable 503, as SageMaker answers while an
        // endpoint cannot serve, not a 400 the SDK would not retry.
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &format!(
                "Endpoint {endpoint} has no instance in service right now (one is being replaced); retry shortly"
            ),
        );
    }
    let Some(variant) = route.pick_variant(target, control.routes.draw()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            &format!(
                "The variant {:?} was not found for endpoint {endpoint}; use one of {}",
                target.unwrap_or_default(),
                route
                    .variants
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    let started = std::time::Instant::now();
    let record = |answer: Answer, model: Option<std::time::Duration>| {
        let total = started.elapsed().as_secs_f64() * 1e6;
        let model_micros = model.map(|m| m.as_secs_f64() * 1e6);
        let invocation = Invocation {
            answer,
            model_micros,
            overhead_micros: (total - model_micros.unwrap_or(0.0)).max(0.0),
        };
        control
            .endpoint_metrics
            .record(endpoint, &variant.name, &invocation);
        if let Some(telemetry) = telemetry {
            telemetry.invocation(endpoint, &variant.name, &invocation);
        }
    };
    // The least busy instance; the others only if it cannot be reached.
    let first = variant.least_busy();
    let rest = variant
        .instances
        .iter()
        .filter(|i| first.is_some_and(|f| !Arc::ptr_eq(f, i)));
    let mut last_error = String::from("no instance of this variant is running");
    for instance in first.into_iter().chain(rest) {
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent = std::time::Instant::now();
        let result = connections.call(instance, headers, body.clone()).await;
        let model = sent.elapsed();
        instance.in_flight.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok((status, h, out)) if status.is_success() => {
                record(Answer::Success, Some(model));
                let mut resp = Response::builder()
                    .status(StatusCode::OK)
                    .header(INVOKED_VARIANT, &variant.name)
                    .header("x-amzn-requestid", request_id());
                if let Some(ct) = h.get(header::CONTENT_TYPE) {
                    resp = resp.header(header::CONTENT_TYPE, ct);
                }
                if let Some(ca) = h.get(CUSTOM_ATTRIBUTES) {
                    resp = resp.header(CUSTOM_ATTRIBUTES, ca);
                }
                return resp
                    .body(full(out))
                    .expect("headers came from a valid response");
            }
            Ok((status, _, out)) => {
                let answer = if status.is_server_error() {
                    Answer::ServerError
                } else {
                    Answer::ClientError
                };
                record(answer, Some(model));
                return model_error(control, endpoint, &variant.name, status, &out);
            }
            Err(e) => last_error = format!("instance {} did not answer: {e}", instance.id),
        }
    }
    record(Answer::ServerError, None);
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        &format!("Endpoint {endpoint} could not serve the request ({last_error}); retry shortly"),
    )
}
