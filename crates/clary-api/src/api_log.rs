//! The API log: one structured line per call (time, operation, resource, status, duration and
//! the caller's access key id), never a secret or a body. Handlers note what they learn of a
//! call (its operation, the resource it names, why it failed) on the response's extensions;
//! the entry point writes the line once the response is ready: a client's mistake (4xx) at
//! INFO, the server's own failure (5xx) at ERROR. The agents' own calls (reports
//! every few hundred milliseconds) go to the debug level.

use crate::Body;
use crate::edge::{Route, bounded};
use http::{HeaderMap, Method, Response};
use std::time::Duration;

/// What a handler learned of the call it answered.
#[derive(Debug, Clone, Default)]
pub struct CallNote {
    pub operation: String,
    /// The resource the call names (a job, an endpoint, `bucket/key`).
    pub resource: Option<String>,
}

/// Why a call failed, as its error response says.
#[derive(Debug, Clone)]
pub struct ErrorNote {
    pub code: String,
    pub message: String,
}

/// Notes why a call was refused on its response, unless its handler already did.
pub fn refused(resp: &mut Response<Body>, code: &str, message: &str) {
    if resp.extensions().get::<ErrorNote>().is_none() {
        resp.extensions_mut().insert(ErrorNote {
            code: code.to_string(),
            message: message.to_string(),
        });
    }
}

/// Notes the call's operation and resource on its response.
pub fn note(resp: &mut Response<Body>, operation: &str, resource: Option<String>) {
    resp.extensions_mut().insert(CallNote {
        operation: operation.to_string(),
        resource,
    });
}

/// The resource a JSON request names: the first `…Name` field botocore's requests lead with
/// (`TrainingJobName`, `EndpointName`, `logGroupName`, …), or a `ResourceArn`.
pub fn resource_of(body: &serde_json::Value) -> Option<String> {
    let obj = body.as_object()?;
    obj.iter()
        .find(|(k, v)| (k.ends_with("Name") || k.as_str() == "ResourceArn") && v.is_string())
        .and_then(|(_, v)| v.as_str())
        .map(bounded)
}

/// The access key id a request's credential claims (`Credential=AKID/…`), from the header or a
/// presigned URL's query; only the id, which is not a secret.
pub fn access_key_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .map(|c| c.split('/').next().unwrap_or_default().to_string());
    let from_query = || {
        query?
            .split('&')
            .find_map(|p| p.strip_prefix("X-Amz-Credential="))
            .map(|c| {
                c.split("%2F")
                    .next()
                    .unwrap_or_default()
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
    };
    from_header
        .or_else(from_query)
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The `Action` of a query-protocol form.
pub fn form_action(body: &[u8]) -> String {
    std::str::from_utf8(body)
        .ok()
        .and_then(|f| f.split('&').find_map(|p| p.strip_prefix("Action=")))
        .filter(|a| a.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("-")
        .to_string()
}

/// What the log names a call by when no handler noted it: S3's method and path, the route.
fn fallback_operation(route: Route, method: &Method, path: &str) -> (String, Option<String>) {
    match route {
        Route::S3 => (
            format!("S3 {method}"),
            Some(bounded(path.trim_start_matches('/'))),
        ),
        Route::Health => ("Health".into(), None),
        _ => (format!("{route:?} {method}"), Some(bounded(path))),
    }
}

/// Writes the call's line.
pub fn record(
    route: Route,
    method: &Method,
    path: &str,
    access_key: Option<&str>,
    resp: &Response<Body>,
    elapsed: Duration,
) {
    if route == Route::Health {
        return;
    }
    let (operation, resource) = match resp.extensions().get::<CallNote>() {
        Some(n) => (n.operation.clone(), n.resource.clone()),
        None => fallback_operation(route, method, path),
    };
    let status = resp.status().as_u16();
    let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let access_key = access_key.unwrap_or("-");
    let resource = resource.as_deref().unwrap_or("-");
    let error = resp.extensions().get::<ErrorNote>();
    let agent = operation.starts_with(clary_exec::protocol::AGENT_TARGET_PREFIX);
    let failed = resp.status().is_server_error();
    let refused = resp.status().is_client_error();
    let (code, reason) = error.map_or(("-".to_string(), "-".to_string()), |e| {
        (e.code.clone(), bounded(&e.message))
    });
    if failed {
        tracing::error!(
            target: "clary::api",
            operation, resource, status, duration_ms, access_key,
            error_code = %code, error = %reason,
            "api call failed"
        );
    } else if refused && !agent {
        tracing::info!(
            target: "clary::api",
            operation, resource, status, duration_ms, access_key,
            error_code = %code, error = %reason,
            "api call refused"
        );
    } else if agent {
        tracing::debug!(
            target: "clary::api",
            operation, resource, status, duration_ms, access_key,
            "api call"
        );
    } else {
        tracing::info!(
            target: "clary::api",
            operation, resource, status, duration_ms, access_key,
            "api call"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_is_the_name_a_request_leads_with() {
        let body = serde_json::json!({"TrainingJobName": "j1", "MaxResults": 3});
        assert_eq!(resource_of(&body).as_deref(), Some("j1"));
        assert_eq!(resource_of(&serde_json::json!({"MaxResults": 3})), None);
    }

    #[test]
    fn only_the_access_key_id_is_taken_from_a_credential() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(access_key_of(&h, None).as_deref(), Some("AKIAEXAMPLE"));
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAQ%2F20260101%2Fus-east-1%2Fs3%2Faws4_request";
        assert_eq!(
            access_key_of(&HeaderMap::new(), Some(q)).as_deref(),
            Some("ASIAQ")
        );
        assert_eq!(access_key_of(&HeaderMap::new(), None), None);
    }
}
