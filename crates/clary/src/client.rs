//! The CLI's client: the same SigV4-signed SageMaker, Logs and S3 calls boto3 makes.

use crate::settings::{self, Identity, ServerInfo};
use anyhow::{Context, Result, anyhow, bail};
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
    signer: Signer,
    http: reqwest::Client,
    pub account: Option<String>,
}

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
            (None, Some(id)) => (id.access_key.clone(), id.secret_key.clone()),
            (None, None) => bail!(
                "no credentials: run `eval \"$(clary env)\"` or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ),
        };
        let region = std::env::var("AWS_DEFAULT_REGION")
            .ok()
            .or_else(|| info.map(|i| i.region))
            .unwrap_or_else(|| settings::DEFAULT_REGION.to_string());
        Ok(Client {
            url: url.trim_end_matches('/').to_string(),
            signer: Signer {
                access_key: ak,
                secret_key: sk,
                region: region.clone(),
            },
            region,
            http: reqwest::Client::new(),
            account: identity.map(|i| i.account),
        })
    }

    async fn send(
        &self,
        service: &str,
        method: http::Method,
        path_and_query: &str,
        headers: http::HeaderMap,
        body: reqwest::Body,
        payload_hash: &str,
    ) -> Result<reqwest::Response> {
        let full = format!("{}{path_and_query}", self.url);
        let uri: http::Uri = full.parse().with_context(|| format!("bad URL {full}"))?;
        let mut headers = headers;
        self.signer
            .sign_with_payload_hash(
                service,
                &method,
                &uri,
                &mut headers,
                payload_hash,
                chrono::Utc::now(),
            )
            .map_err(|e| anyhow!(e))?;
        let mut req = self.http.request(method, &full).body(body);
        for (k, v) in &headers {
            if k != http::header::HOST {
                req = req.header(k.as_str(), v.as_bytes());
            }
        }
        req.send().await.with_context(|| {
            format!(
                "could not reach the Clary server at {} (is `clary server` running?)",
                self.url
            )
        })
    }

    /// A JSON 1.1 call; an AWS error comes back as `Err` with its code and message.
    pub async fn json(&self, service: &str, target: &str, body: &Value) -> Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        headers.insert("x-amz-target", target.parse()?);
        let hash = hex_sha256(&bytes);
        let resp = self
            .send(
                service,
                http::Method::POST,
                "/",
                headers,
                bytes.into(),
                &hash,
            )
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if status.is_success() {
            Ok(v)
        } else {
            let code = v.get("__type").and_then(Value::as_str).unwrap_or("Error");
            let msg = v
                .get("message")
                .or(v.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or(&text);
            bail!("{code}: {msg}")
        }
    }

    pub async fn sagemaker(&self, op: &str, body: &Value) -> Result<Value> {
        self.json("sagemaker", &format!("SageMaker.{op}"), body)
            .await
    }

    pub async fn logs(&self, op: &str, body: &Value) -> Result<Value> {
        self.json("logs", &format!("Logs_20140328.{op}"), body)
            .await
    }

    /// PUT of a file, streamed from disk; `progress` gets each chunk's size.
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<()> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().await?.len();
        let stream = futures::stream::unfold(file, move |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let stream = futures::StreamExt::inspect(stream, move |c| {
            if let Ok(b) = c {
                progress(b.len() as u64)
            }
        });
        let mut headers = http::HeaderMap::new();
        headers.insert("content-length", len.to_string().parse()?);
        let path_q = object_path(bucket, key);
        let resp = self
            .send(
                "s3",
                http::Method::PUT,
                &path_q,
                headers,
                reqwest::Body::wrap_stream(stream),
                "UNSIGNED-PAYLOAD",
            )
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!(
                "uploading s3://{bucket}/{key} failed: HTTP {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// GET of an object into memory.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let path_q = object_path(bucket, key);
        let resp = self
            .send(
                "s3",
                http::Method::GET,
                &path_q,
                http::HeaderMap::new(),
                reqwest::Body::from(Vec::new()),
                &hex_sha256(b""),
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "reading s3://{bucket}/{key} failed: HTTP {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(resp.bytes().await?.to_vec())
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
        let hash = hex_sha256(&body);
        let path = format!(
            "/endpoints/{}/invocations",
            clary_sigv4::uri_encode(endpoint)
        );
        let resp = self
            .send(
                "sagemaker",
                http::Method::POST,
                &path,
                headers,
                body.into(),
                &hash,
            )
            .await?;
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((status, ct, resp.bytes().await?.to_vec()))
    }

    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let resp = self
            .send(
                "s3",
                http::Method::HEAD,
                &format!("/{bucket}"),
                http::HeaderMap::new(),
                reqwest::Body::from(Vec::new()),
                &hex_sha256(b""),
            )
            .await?;
        Ok(resp.status().is_success())
    }
}

/// The path-style S3 path of an object, as boto3 encodes it.
fn object_path(bucket: &str, key: &str) -> String {
    format!(
        "/{bucket}/{}",
        clary_sigv4::uri_encode(key).replace("%2F", "/")
    )
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}
