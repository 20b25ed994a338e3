//! The control plane's call that presigns a host's requests to an external store
//! (`ClaryAgent.PresignObjectRequests`): its body and answer, the [`Presign`] seam a
//! [`PresignedStore`](super::PresignedStore) asks through, and [`ControlPresigner`], the
//! client of that call that agents and model servers use.

use clary_client::{JsonApi, Retry, SignedClient};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// The operation's name after the agents' target prefix.
pub const PRESIGN_OP: &str = "PresignObjectRequests";

/// The most requests one call may presign: a page of a listing's worth, so staging a large
/// channel takes a call per thousand objects.
pub const MAX_BATCH: usize = 1000;

/// One request a host wants to make on the store, in Clary's names: the server maps the
/// bucket to the store's and checks the host's key may make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PresignRequest {
    /// `GET`, `HEAD`, `PUT`, `POST` or `DELETE`.
    pub method: String,
    pub bucket: String,
    /// The object's key; none for a request on the bucket (a listing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The query, already encoded, without `?` (`list-type=2&prefix=a%2Fb`, `uploads`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
}

impl PresignRequest {
    pub fn object(method: &str, bucket: &str, key: &str, query: String) -> Self {
        PresignRequest {
            method: method.into(),
            bucket: bucket.into(),
            key: Some(key.into()),
            query,
        }
    }

    pub fn bucket(method: &str, bucket: &str, query: String) -> Self {
        PresignRequest {
            method: method.into(),
            bucket: bucket.into(),
            key: None,
            query,
        }
    }
}

/// The call's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PresignBatch {
    pub requests: Vec<PresignRequest>,
}

/// The call's answer: a URL for each request, in the same order, and where the store is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PresignedBatch {
    pub urls: Vec<String>,
    /// The store's endpoint (`scheme://host:port`), for messages; an empty batch asks only
    /// this.
    #[serde(default)]
    pub store: String,
}

/// What a presign call resolves to: the URLs in order, or why there are none.
pub type PresignFuture = Pin<Box<dyn Future<Output = Result<PresignedBatch, String>> + Send>>;

/// Whoever presigns a host's requests (the control plane, for a host).
pub trait Presign: Send + Sync {
    /// URLs for `requests` (at most [`MAX_BATCH`]), in order.
    fn presign(&self, requests: Vec<PresignRequest>) -> PresignFuture;
}

/// The control plane at the other end of `client`, asked with `api`'s `PresignObjectRequests`.
pub struct ControlPresigner {
    client: SignedClient,
    api: JsonApi,
}

impl ControlPresigner {
    pub fn new(client: SignedClient, api: JsonApi) -> Self {
        ControlPresigner { client, api }
    }
}

impl Presign for ControlPresigner {
    fn presign(&self, requests: Vec<PresignRequest>) -> PresignFuture {
        let (client, api) = (self.client.clone(), self.api);
        Box::pin(async move {
            let n = requests.len();
            // A restarting server is waited for, as the agents' reports do; a refusal is final.
            let answer = client
                .call_json_retrying(
                    api,
                    PRESIGN_OP,
                    &PresignBatch { requests },
                    &Retry::CONTROL_PLANE,
                )
                .await
                .map_err(|e| e.to_string())?;
            let batch: PresignedBatch = serde_json::from_value(answer)
                .map_err(|e| format!("the server's answer has no URLs: {e}"))?;
            if batch.urls.len() != n {
                return Err(format!(
                    "the server presigned {} URLs for {n} requests",
                    batch.urls.len()
                ));
            }
            Ok(batch)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_travel_in_the_agents_pascal_case_and_omit_what_is_empty() {
        let batch = PresignBatch {
            requests: vec![
                PresignRequest::object("GET", "b", "k", String::new()),
                PresignRequest::bucket("GET", "b", "list-type=2".into()),
            ],
        };
        assert_eq!(
            serde_json::to_value(&batch).unwrap(),
            serde_json::json!({"Requests": [
                {"Method": "GET", "Bucket": "b", "Key": "k"},
                {"Method": "GET", "Bucket": "b", "Query": "list-type=2"},
            ]})
        );
        let back: PresignBatch = serde_json::from_value(
            serde_json::json!({"Requests": [{"Method": "HEAD", "Bucket": "b"}]}),
        )
        .unwrap();
        assert_eq!(
            back.requests[0],
            PresignRequest::bucket("HEAD", "b", String::new())
        );
    }
}
