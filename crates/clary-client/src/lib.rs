//! The one signed HTTP client of Clary: the CLI, the training agents and the model servers all
//! talk to the server through [`SignedClient`]. Every request carries a SigV4 signature over
//! every header it sends (so `x-amz-target` is always among `SignedHeaders`), the way botocore
//! signs. Two protocols ride on it:
//!
//! - JSON 1.1 ([`JsonApi`]): a target prefix and an operation name, a JSON body in, a JSON value
//!   out, and an AWS error (`__type`, `message`) as a typed [`ServiceError`];
//! - S3, path-style ([`s3`]): GET, PUT (streamed from a file), HEAD and ListObjectsV2, with one
//!   key encoder and a real XML reader for listings and errors.
//!
//! There are no timeouts: an upload or a long poll takes as long as it takes. Calls are tried
//! once unless the caller asks for a [`Retry`].

mod json;
pub mod s3;

pub use json::JsonApi;
pub use s3::{ListPage, ListedObject, ObjectBody, ObjectHead};

use clary_sigv4::Signer;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request could not be built: a bad URL, header value or signing input.
    #[error("{0}")]
    BadRequest(String),
    /// The server could not be reached, or the connection broke mid-way.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// A JSON 1.1 call answered with an AWS error.
    #[error("{}: {}", .0.code, .0.message)]
    Json(ServiceError),
    /// An S3 call answered with an error status.
    #[error("HTTP {}: {}", .0.status, .0.message)]
    S3(ServiceError),
    /// A ListObjectsV2 answer that is not a listing.
    #[error("bad listing XML: {0}")]
    BadListing(String),
    /// A local file to upload could not be read.
    #[error("reading {}: {source}", .path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An error the server answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub status: http::StatusCode,
    /// The AWS error code (`__type` or `<Code>`); the status number when the answer has none.
    pub code: String,
    pub message: String,
}

impl ClientError {
    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            ClientError::Json(e) | ClientError::S3(e) => Some(e.status),
            _ => None,
        }
    }

    /// Whether the same request may succeed later: the server was unreachable or failed. A
    /// 4xx means it understood and refused, and a request that cannot be built never will be.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Json(e) | ClientError::S3(e) => !e.status.is_client_error(),
            _ => false,
        }
    }
}

/// How a call is retried: backoff doubling from `first_delay` up to `max_delay`, for as long
/// as `give_up_after` allows. Only [retryable](ClientError::is_retryable) failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub give_up_after: Duration,
}

impl Retry {
    /// What agents and model servers use for their calls to the control plane: backoff from
    /// 100 ms to 5 s, for up to 15 minutes before giving up on the server.
    pub const CONTROL_PLANE: Retry = Retry {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
        give_up_after: Duration::from_secs(15 * 60),
    };

    /// Runs `attempt` until it succeeds, fails for good, or time runs out.
    pub async fn run<T, Fut>(&self, mut attempt: impl FnMut() -> Fut) -> Result<T, ClientError>
    where
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let started = Instant::now();
        let mut delay = self.first_delay;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() || started.elapsed() > self.give_up_after => {
                    return Err(e);
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max_delay);
                }
            }
        }
    }
}

/// Every HTTP client Clary makes starts here: TLS (for an `https` store such as AWS S3) uses
/// rustls with the ring provider, installed for the process on first use.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Another part of the process may have installed one first; either serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// The hex SHA-256 of a request body, as SigV4 signs it.
pub fn payload_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The server at one base URL, with one key pair.
#[derive(Clone)]
pub struct SignedClient {
    http: reqwest::Client,
    base: String,
    signer: Signer,
}

impl SignedClient {
    /// A client of the server at `base_url` (a trailing `/` is ignored).
    pub fn new(base_url: &str, signer: Signer) -> Self {
        SignedClient {
            http: http_client_builder()
                .build()
                .expect("an HTTP client with default settings builds"),
            base: base_url.trim_end_matches('/').to_string(),
            signer,
        }
    }

    /// [`new`](Self::new) over a client of the caller's making (timeouts, pools).
    pub fn with_http(base_url: &str, signer: Signer, http: reqwest::Client) -> Self {
        SignedClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            signer,
        }
    }

    /// The server's URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.signer.region
    }

    /// `headers` plus `Host`, `X-Amz-Date`, `X-Amz-Content-SHA256` and the `Authorization` that
    /// signs all of them for `service`.
    fn sign(
        &self,
        service: &str,
        method: &http::Method,
        url: &str,
        mut headers: http::HeaderMap,
        payload_hash: &str,
    ) -> Result<http::HeaderMap, ClientError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| ClientError::BadRequest(format!("bad URL {url}: {e}")))?;
        self.signer
            .sign_with_payload_hash(
                service,
                method,
                &uri,
                &mut headers,
                payload_hash,
                chrono::Utc::now(),
            )
            .map_err(ClientError::BadRequest)?;
        Ok(headers)
    }

    /// Signs and sends one request to `path_and_query` under the base URL. `payload_hash` is
    /// the body's [`payload_hash`], or `UNSIGNED-PAYLOAD` for an S3 body streamed from disk.
    /// Any status comes back as a response; only an unreachable server is an error.
    pub async fn send(
        &self,
        service: &str,
        method: http::Method,
        path_and_query: &str,
        headers: http::HeaderMap,
        body: reqwest::Body,
        payload_hash: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path_and_query}", self.base);
        self.send_url(service, method, &url, headers, body, payload_hash)
            .await
    }

    /// [`send`](Self::send) to a whole URL (another host than the base's, as an S3 store's
    /// virtual-hosted bucket is).
    pub async fn send_url(
        &self,
        service: &str,
        method: http::Method,
        url: &str,
        headers: http::HeaderMap,
        body: reqwest::Body,
        payload_hash: &str,
    ) -> Result<reqwest::Response, ClientError> {
        // The signed `Host` travels as signed: reqwest would drop a default port from its own.
        let headers = self.sign(service, &method, url, headers, payload_hash)?;
        Ok(self
            .http
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await?)
    }
}

/// A header value from a string that may not be one.
fn header_value(name: &str, value: &str) -> Result<http::HeaderValue, ClientError> {
    http::HeaderValue::from_str(value)
        .map_err(|_| ClientError::BadRequest(format!("bad value for header {name}: {value:?}")))
}

#[cfg(test)]
mod tests;
