//! The CLI's client: the same SigV4-signed SageMaker, Logs and S3 calls boto3 makes.

use crate::settings::{self, Identity, ServerInfo};
use anyhow::{Result, anyhow, bail};
use clary_client::{ClientError, JsonApi, SignedClient, payload_hash};
use clary_sigv4::Signer;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// The server [default: $AWS_ENDPOINT_URL, else the one recorded in the data dir].
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// Data dir of the local server, for its URL and key pair [default: $XDG_DATA_HOME/clary].
    #[arg(long, global = true, env = "CLARY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub struct Client {
    pub url: String,
    pub region: String,
    signed: SignedClient,
}

/// The SageMaker API, as boto3 calls it.
const SAGEMAKER: JsonApi = JsonApi {
    signing_service: "sagemaker",
    target_prefix: "SageMaker.",
};
/// CloudWatch Logs.
const LOGS: JsonApi = JsonApi {
    signing_service: "logs",
    target_prefix: "Logs_20140328.",
};
/// CloudWatch metrics (its JSON 1.0 protocol).
const CLOUDWATCH: JsonApi = JsonApi {
    signing_service: "monitoring",
    target_prefix: "GraniteServiceVersion20100801.",
};

impl Client {
    /// Credentials from the AWS variables `clary env` exports, falling back to the data dir.
    pub fn from_env(args: &ClientArgs) -> Result<Self> {
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(settings::default_data_dir);
        let info = ServerInfo::load(&data_dir);
        let identity = Identity::load_or_create(&data_dir).ok();
        let url = args
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| info.as_ref().map(|i| i.url.clone()))
            .ok_or_else(|| {
                anyhow!(
                    "no server to talk to: start one with `clary server`, or set AWS_ENDPOINT_URL"
                )
            })?;
        let env_keys = std::env::var("AWS_ACCESS_KEY_ID")
            .ok()
            .zip(std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let (ak, sk) = match (env_keys, &identity) {
            (Some(k), _) => k,
            (None, Some(id)) => ServerInfo::keys_or(info.as_ref(), id),
            (None, None) => bail!(
                "no credentials: run `eval \"$(clary env)\"` or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ),
        };
        let region = std::env::var("AWS_DEFAULT_REGION")
            .ok()
            .or_else(|| info.map(|i| i.region))
            .unwrap_or_else(|| settings::DEFAULT_REGION.to_string());
        let signed = SignedClient::new(
            &url,
            Signer {
                access_key: ak,
                secret_key: sk,
                region: region.clone(),
            },
        );
        Ok(Client {
            url: signed.base_url().to_string(),
            signed,
            region,
        })
    }

    /// A client error as the CLI reports it: an unreachable server says what to start.
    fn explain(&self, e: ClientError) -> anyhow::Error {
        match e {
            ClientError::Transport(source) => anyhow::Error::new(source).context(format!(
                "could not reach the Clary server at {} (is `clary server` running?)",
                self.url
            )),
            other => anyhow::Error::new(other),
        }
    }

    /// A JSON 1.1 call; an AWS error comes back as `Err` reading `<code>: <message>`.
    async fn json(&self, api: JsonApi, op: &str, body: &Value) -> Result<Value> {
        self.signed
            .call_json(api, op, body)
            .await
            .map_err(|e| self.explain(e))
    }

    pub async fn sagemaker(&self, op: &str, body: &Value) -> Result<Value> {
        self.json(SAGEMAKER, op, body).await
    }

    pub async fn logs(&self, op: &str, body: &Value) -> Result<Value> {
        self.json(LOGS, op, body).await
    }

    pub async fn cloudwatch(&self, op: &str, body: &Value) -> Result<Value> {
        self.json(CLOUDWATCH, op, body).await
    }

    /// PUT of a file, streamed from disk; `progress` gets each chunk's size.
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<()> {
        match self
            .signed
            .put_object_file(bucket, key, path, None, progress)
            .await
        {
            Ok(_) => Ok(()),
            Err(e @ ClientError::S3(_)) => {
                Err(anyhow!("uploading s3://{bucket}/{key} failed: {e}"))
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// GET of an object into memory.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let read = async { self.signed.get_object(bucket, key).await?.bytes().await };
        match read.await {
            Ok(b) => Ok(b.to_vec()),
            Err(e @ ClientError::S3(_)) => Err(anyhow!("reading s3://{bucket}/{key} failed: {e}")),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// `InvokeEndpoint`: the HTTP status, the response's content type and its body.
    pub async fn invoke(
        &self,
        endpoint: &str,
        body: Vec<u8>,
        content_type: &str,
        accept: Option<&str>,
    ) -> Result<(u16, String, Vec<u8>)> {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", content_type.parse()?);
        if let Some(a) = accept {
            headers.insert("accept", a.parse()?);
        }
        let hash = payload_hash(&body);
        let path = format!(
            "/endpoints/{}/invocations",
            clary_sigv4::uri_encode(endpoint)
        );
        let resp = self
            .signed
            .send(
                "sagemaker",
                http::Method::POST,
                &path,
                headers,
                body.into(),
                &hash,
            )
            .await
            .map_err(|e| self.explain(e))?;
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((status, ct, resp.bytes().await?.to_vec()))
    }

    /// The account of the server this client talks to, from its STS `GetCallerIdentity` (the
    /// default bucket and role ARNs are that server's, not those of whatever data dir is local).
    pub async fn account(&self) -> Result<String> {
        let body = b"Action=GetCallerIdentity&Version=2011-06-15".to_vec();
        let hash = payload_hash(&body);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        let resp = self
            .signed
            .send("sts", http::Method::POST, "/", headers, body.into(), &hash)
            .await
            .map_err(|e| self.explain(e))?;
        let status = resp.status();
        let text = resp.text().await?;
        let account = text
            .split_once("<Account>")
            .and_then(|(_, rest)| rest.split_once("</Account>"))
            .map(|(a, _)| a.trim().to_string())
            .filter(|a| !a.is_empty());
        match account {
            Some(a) if status.is_success() => Ok(a),
            _ => bail!(
                "the server at {} did not say its account (STS GetCallerIdentity answered {status}); check that AWS_ENDPOINT_URL and the key pair are a Clary server's (eval \"$(clary env)\")",
                self.url
            ),
        }
    }

    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        self.signed
            .head_bucket(bucket)
            .await
            .map_err(|e| self.explain(e))
    }
}
