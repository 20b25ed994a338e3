//! A model server's calls to the control plane, over the agents' JSON API: the spec of its
//! endpoint instance, and the address it listens on once it does. Calls are retried with
//! backoff, so a restarting server loses nothing.

use clary_client::{ClientError, Retry, SignedClient};
use clary_exec::protocol::{AGENT_API, ModelServerSpec};
use serde_json::{Value, json};

/// A call is retried with backoff before giving up on the server; a refusal (4xx) is final.
const RETRY: Retry = Retry::CONTROL_PLANE;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{op}: {source}")]
    Call {
        op: &'static str,
        source: ClientError,
    },
    #[error("the model server spec is not valid: {0}")]
    BadSpec(serde_json::Error),
}

/// The control plane as one endpoint instance's model server sees it.
pub struct ControlPlane {
    client: SignedClient,
}

impl ControlPlane {
    pub fn new(client: SignedClient) -> Self {
        ControlPlane { client }
    }

    async fn call(&self, op: &'static str, body: &Value) -> Result<Value, ControlError> {
        self.client
            .call_json_retrying(AGENT_API, op, body, &RETRY)
            .await
            .map_err(|source| ControlError::Call { op, source })
    }

    /// The spec of an endpoint instance (model servers started by Slurm have only the URL).
    pub async fn model_server_spec(
        &self,
        endpoint: &str,
        instance: &str,
    ) -> Result<ModelServerSpec, ControlError> {
        let body = json!({"EndpointName": endpoint, "InstanceId": instance});
        let answer = self.call("GetModelServerSpec", &body).await?;
        serde_json::from_value(answer).map_err(ControlError::BadSpec)
    }

    /// Tells the control plane where an endpoint instance listens.
    pub async fn report_instance(
        &self,
        endpoint: &str,
        instance: &str,
        address: &str,
        port: u16,
    ) -> Result<(), ControlError> {
        let body = json!({"EndpointName": endpoint, "InstanceId": instance,
                          "Address": address, "Port": port});
        self.call("ReportInstance", &body).await.map(|_| ())
    }
}
