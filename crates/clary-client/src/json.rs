//! JSON 1.1 calls: `POST /` with `X-Amz-Target: <prefix><operation>` and a JSON body.

use crate::{ClientError, Retry, ServiceError, SignedClient, header_value, payload_hash};
use serde::Serialize;
use serde_json::Value;

/// One JSON 1.1 API of the server: the service its requests are signed for and the prefix of
/// its targets (`SageMaker.`, `Logs_20140328.`, `ClaryAgent.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonApi {
    pub signing_service: &'static str,
    pub target_prefix: &'static str,
}

impl SignedClient {
    /// Calls `op` of `api` with `body`. The answer is its JSON value (a body that is not JSON
    /// comes back as a string); an AWS error is [`ClientError::Json`].
    pub async fn call_json(
        &self,
        api: JsonApi,
        op: &str,
        body: &impl Serialize,
    ) -> Result<Value, ClientError> {
        let body = to_body(body)?;
        self.call_json_bytes(api, op, body).await
    }

    /// Like [`call_json`](Self::call_json), retried as `retry` says.
    pub async fn call_json_retrying(
        &self,
        api: JsonApi,
        op: &str,
        body: &impl Serialize,
        retry: &Retry,
    ) -> Result<Value, ClientError> {
        let body = to_body(body)?;
        retry
            .run(|| self.call_json_bytes(api, op, body.clone()))
            .await
    }

    async fn call_json_bytes(
        &self,
        api: JsonApi,
        op: &str,
        body: bytes::Bytes,
    ) -> Result<Value, ClientError> {
        let target = format!("{}{op}", api.target_prefix);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        headers.insert("x-amz-target", header_value("x-amz-target", &target)?);
        let hash = payload_hash(&body);
        let resp = self
            .send(
                api.signing_service,
                http::Method::POST,
                "/",
                headers,
                body.into(),
                &hash,
            )
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if status.is_success() {
            Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
        } else {
            Err(ClientError::Json(aws_error(status, &text)))
        }
    }
}

fn to_body(body: &impl Serialize) -> Result<bytes::Bytes, ClientError> {
    serde_json::to_vec(body)
        .map(Into::into)
        .map_err(|e| ClientError::BadRequest(format!("the request body is not JSON: {e}")))
}

/// A JSON 1.1 error answer: `__type` and `message` (or `Message`); a body that is neither is
/// the message itself.
pub(crate) fn aws_error(status: http::StatusCode, text: &str) -> ServiceError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = v.get("__type").and_then(Value::as_str).unwrap_or("Error");
    let message = v
        .get("message")
        .or(v.get("Message"))
        .and_then(Value::as_str)
        .unwrap_or(text);
    ServiceError {
        status,
        code: code.to_string(),
        message: message.to_string(),
    }
}
