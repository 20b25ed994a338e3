//! Wire protocols: one port that tells the AWS services apart (docs/sdk-wire.md §1.3), verifies
//! SigV4 on every call, and hands typed calls to the control plane or the object store.
//!
//! Dispatch ([`edge::Route`]): `X-Amz-Target` (SageMaker, Logs, agent reports) → the SageMaker
//! Runtime path → query protocol for scopes `sts`/`iam` (or a form posted to `/`) → S3 (s3s)
//! for everything else. The signature's header part is checked before a body is read. The web
//! console (`console`, under `/_clary/console/`) signs in with a session instead.

pub mod access;
pub mod api_log;
#[cfg(test)]
mod botocore_model_tests;
pub mod cloudwatch_api;
pub mod console;
pub mod edge;
pub mod errors;
pub mod hosting_api;
pub mod job_list;
pub mod json_api;
pub mod logs_api;
pub mod processing_api;
pub mod profiler_api;
pub mod prometheus_api;
pub mod query;
pub mod runtime;
pub mod s3;
pub mod sagemaker_api;
pub mod training_api;
pub mod transform_api;
pub mod tuning_api;
pub mod validate;
mod wire;

use bytes::Bytes;
use clary_control::ControlPlane;
use clary_exec::protocol::{AGENT_SIGNING_SERVICE, AGENT_TARGET_PREFIX};
use clary_store::{ExternalStore, LocalStore, ObjectStore};
use edge::Route;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use std::sync::Arc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Where the server keeps its buckets and objects.
#[derive(Clone)]
pub enum Backing {
    /// The embedded store: a directory on this machine.
    Local(LocalStore),
    /// An external S3 store; hosts get presigned URLs to it.
    External(Arc<ExternalStore>),
}

impl Backing {
    /// The store's objects, for the API's own reads (checking that a bucket or model exists,
    /// listing a job's output). Blocks: call from a worker thread of the multi-threaded runtime
    /// or a blocking thread.
    pub fn objects(&self) -> &dyn ObjectStore {
        match self {
            Backing::Local(s) => s,
            Backing::External(s) => s.as_ref(),
        }
    }

    /// Whether `bucket` exists; a store that cannot be asked counts as no.
    pub fn bucket_exists(&self, bucket: &str) -> bool {
        self.objects().bucket_exists(bucket).unwrap_or(false)
    }
}

pub struct ApiState {
    pub control: Arc<ControlPlane>,
    pub store: Backing,
    pub s3: s3s::service::S3Service,
    /// The server's key pair and the scoped ones.
    pub keys: access::Keys,
    pub region: String,
    pub account: String,
    pub connections: runtime::Connections,
    pub body_budget: edge::BodyBudget,
    /// The web console's sessions (in memory: a restart signs everyone out).
    pub console: console::auth::Sessions,
    /// What `/_clary/metrics` counts as it happens.
    pub telemetry: prometheus_api::Telemetry,
}

impl ApiState {
    pub fn new(
        control: Arc<ControlPlane>,
        store: Backing,
        access_key: &str,
        secret_key: &str,
        region: &str,
        account: &str,
    ) -> Arc<Self> {
        let mut builder = match &store {
            Backing::Local(local) => s3s::service::S3ServiceBuilder::new(s3::S3Store {
                store: local.clone(),
            }),
            Backing::External(external) => {
                s3s::service::S3ServiceBuilder::new(s3::external::S3External {
                    store: external.clone(),
                })
            }
        };
        let keys = access::Keys {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            control: control.clone(),
        };
        builder.set_auth(keys.clone());
        builder.set_access(keys.clone());
        Arc::new(ApiState {
            control,
            store,
            s3: builder.build(),
            keys,
            region: region.into(),
            account: account.into(),
            connections: Default::default(),
            body_budget: Default::default(),
            console: Default::default(),
            telemetry: Default::default(),
        })
    }
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A JSON 1.1 error (`{"__type": ..., "message": ...}`), as botocore parses it.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"__type": code, "message": message, "Message": message});
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-errortype", code)
        .header("x-amzn-requestid", request_id())
        .body(full(body.to_string()))
        .expect("static response parts are valid");
    resp.extensions_mut().insert(api_log::ErrorNote {
        code: code.to_string(),
        message: message.to_string(),
    });
    resp
}

fn json_ok(value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", request_id())
        .body(full(value.to_string()))
        .expect("static response parts are valid")
}

fn api_error(e: &errors::ApiError) -> Response<Body> {
    let (status, code) = e.status_and_code();
    json_error(status, code, &e.to_string())
}

/// Entry point for every request on the server's port.
pub async fn handle(
    state: Arc<ApiState>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    // No bucket name begins with `_`, so the console takes no S3 path.
    if console::owns(req.uri().path()) {
        return Ok(console::handle(state, req).await);
    }
    let route = Route::of(&req);
    if route == Route::Health {
        return Ok(edge::health());
    }
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let access_key = api_log::access_key_of(req.headers(), req.uri().query());
    let resp = match route {
        Route::S3 => s3(state, req).await,
        Route::Metrics => {
            let mut resp = prometheus_api::scrape(&state, req.headers()).await;
            api_log::note(&mut resp, "Metrics", None);
            resp
        }
        _ => signed_call(state, route, req).await,
    };
    api_log::record(
        route,
        &method,
        &path,
        access_key.as_deref(),
        &resp,
        started.elapsed(),
    );
    Ok(resp)
}

/// A JSON, Runtime or query call: refused on its headers when they cannot carry a valid
/// signature, before its body is read; then the body (within the budget) and the signature.
async fn signed_call(
    state: Arc<ApiState>,
    route: Route,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let refuse = |e: clary_sigv4::AuthError| {
        let message = e.to_string();
        let mut resp = route.error(StatusCode::FORBIDDEN, e.code(), &message);
        api_log::refused(&mut resp, e.code(), &message);
        resp
    };
    // The key's holder is looked up once, with its secret (an agent signs every few hundred
    // milliseconds).
    let signer = std::cell::RefCell::new(None);
    let pending = match clary_sigv4::check_headers(&parts.headers, chrono::Utc::now(), |ak| {
        let (secret, scoped) = state.keys.resolve(ak)?;
        *signer.borrow_mut() = scoped;
        Some(secret)
    }) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    let (body, _held) = match state.body_budget.read(route, &parts, body).await {
        Ok(b) => b,
        Err(mut resp) => {
            api_log::refused(&mut resp, "RequestRefused", "request body refused");
            return resp;
        }
    };
    let auth = match pending.verify(&parts.method, &parts.uri, &parts.headers, &body) {
        Ok(a) => a,
        Err(e) => return refuse(e),
    };
    let scoped = signer.into_inner();
    if let Some(key) = &scoped
        && route != Route::Json
    {
        let what = match route {
            Route::Runtime => "invoke endpoints",
            _ => "call STS or IAM",
        };
        return route.error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &access::denied(key, what),
        );
    }
    match route {
        Route::Query => {
            let mut resp = if auth.service == "monitoring" {
                cloudwatch_api::handle_query(&state, &body)
            } else {
                query::handle(&state, &auth.service, &body)
            };
            let action = api_log::form_action(&body);
            api_log::note(&mut resp, &format!("{}:{action}", auth.service), None);
            resp
        }
        Route::Runtime => {
            let name = parts
                .uri
                .path()
                .trim_start_matches("/endpoints/")
                .trim_end_matches("/invocations");
            let mut resp = runtime::invoke(
                &state.control,
                Some(&state.telemetry),
                &state.connections,
                &state.account,
                name,
                &parts.headers,
                body,
            )
            .await;
            api_log::note(&mut resp, "InvokeEndpoint", Some(edge::bounded(name)));
            resp
        }
        _ => json_call(state, &parts, auth, scoped, body).await,
    }
}

async fn json_call(
    state: Arc<ApiState>,
    parts: &http::request::Parts,
    auth: clary_sigv4::Authorization,
    scoped: Option<clary_control::domain::credentials::ScopedKey>,
    body: Bytes,
) -> Response<Body> {
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let parsed: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    &format!("the request body is not JSON: {e}"),
                );
            }
        }
    };
    let (service, op) = target
        .split_once('.')
        .map(|(s, o)| (s.to_string(), o.to_string()))
        .unwrap_or((target.clone(), String::new()));
    let expected_scope = match service.as_str() {
        "SageMaker" => "sagemaker",
        "Logs_20140328" => "logs",
        cloudwatch_api::TARGET_PREFIX => "monitoring",
        _ if target.starts_with(AGENT_TARGET_PREFIX) => AGENT_SIGNING_SERVICE,
        _ => "",
    };
    if auth.service != expected_scope {
        return json_error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!(
                "X-Amz-Target {:?} does not belong to the credential scope's service {:?}",
                edge::bounded(&target),
                auth.service
            ),
        );
    }
    if let Some(key) = &scoped
        && !(expected_scope == AGENT_SIGNING_SERVICE
            && access::may_call_agent_api(key, &op, &parsed))
    {
        let what = format!("call {}", edge::bounded(&target));
        return json_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            &access::denied(key, &what),
        );
    }
    let operation = target.clone();
    let resource = api_log::resource_of(&parsed);
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || match service.as_str() {
        "SageMaker" => sagemaker_api::handle(&st, &op, parsed),
        "Logs_20140328" => logs_api::handle(&st, &op, parsed),
        cloudwatch_api::TARGET_PREFIX => cloudwatch_api::handle(&st, &op, &parsed),
        _ => json_api::agent(&st, &op, parsed),
    })
    .await;
    let mut resp = match result {
        Ok(Ok(v)) => json_ok(v),
        Ok(Err(e)) => api_error(&e),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            &format!("the request failed: {e}"),
        ),
    };
    api_log::note(&mut resp, &operation, resource);
    resp
}

async fn s3(state: Arc<ApiState>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    if let Some((code, mut refused)) = edge::presigned_query_error(req.uri()) {
        api_log::refused(&mut refused, code, "presigned URL refused");
        return refused;
    }
    match hyper::service::Service::call(&state.s3, req).await {
        Ok(resp) => {
            // s3s's own logging is off (it logs each error at ERROR, request bodies included);
            // the API log's line names the call and its status.
            resp.map(|b| b.map_err(|e| -> BoxError { e.to_string().into() }).boxed())
        }
        Err(e) => {
            let mut r = Response::new(full(format!(
                "<Error><Code>InternalError</Code><Message>{e:?}</Message></Error>"
            )));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            api_log::refused(&mut r, "InternalError", &format!("{e:?}"));
            r
        }
    }
}
