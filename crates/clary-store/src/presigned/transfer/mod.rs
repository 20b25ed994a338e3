//! The requests themselves: each one with a URL the server presigned, sent with plain HTTP,
//! retried and re-presigned as [`plan::next_step`] says, bounded by one semaphore per store.
//! Listings live here; objects coming down in [`download`], going up in [`upload`].

use super::error::{DirectError, transport};
use super::plan::{self, Failure, Next, Tuning};
use super::wire::{MAX_BATCH, Presign, PresignRequest};
use crate::ObjectRef;
use base64::Engine;
use bytes::Bytes;
use clary_client::ClientError;
use clary_client::s3::{encode_query_value, parse_list_page, walk_xml};
use futures::{StreamExt, TryStreamExt};
use http::{StatusCode, header};
use md5::Digest;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

mod download;
mod upload;

/// A URL older than this is presigned afresh before use, well before its hour runs out.
const REFRESH_AFTER: Duration = Duration::from_secs(45 * 60);
/// How long a request may take to be answered (an upload's body included).
const ANSWER_WAIT: Duration = Duration::from_secs(300);
/// Parts read into memory at once while uploading: each holds a whole part.
const MAX_PARTS_IN_FLIGHT: usize = 8;

/// A presigned URL and what it was presigned for (to presign it again).
#[derive(Clone)]
pub(super) struct Signed {
    request: PresignRequest,
    url: String,
    at: Instant,
}

/// How one try ended, when not well.
pub(super) enum TryError {
    /// Worth a decision: retry, re-presign, or give up (see [`plan::next_step`]).
    Failed(Failure),
    /// Final whatever happens next (a local file, an answer that is not S3's).
    Fatal(DirectError),
}

fn broken(e: reqwest::Error) -> TryError {
    TryError::Failed(Failure::Transport(transport(e)))
}

/// The response if it succeeded; its S3 error otherwise.
async fn checked(resp: reqwest::Response) -> Result<reqwest::Response, TryError> {
    match clary_client::s3::checked(resp).await {
        Ok(r) => Ok(r),
        Err(ClientError::S3(e)) => Err(TryError::Failed(Failure::Status {
            status: e.status.as_u16(),
            code: e.code,
            message: e.message,
        })),
        Err(e) => Err(TryError::Failed(Failure::Transport(e.to_string()))),
    }
}

/// The async side of a [`PresignedStore`](super::PresignedStore).
pub(super) struct Direct {
    presigner: Arc<dyn Presign>,
    http: reqwest::Client,
    tuning: Tuning,
    /// Requests in flight, over everything this store does at once.
    slots: Arc<Semaphore>,
    /// `scheme://host:port` of the store, as the server said (for messages).
    endpoint: OnceLock<String>,
}

impl Direct {
    pub fn new(presigner: Arc<dyn Presign>, tuning: Tuning) -> Result<Self, String> {
        let http = clary_client::http_client_builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(tuning.concurrency.max(MAX_PARTS_IN_FLIGHT) * 2)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Direct {
            presigner,
            http,
            tuning,
            slots: Arc::new(Semaphore::new(tuning.concurrency.max(1))),
            endpoint: OnceLock::new(),
        })
    }

    /// "the object store at http://host:port", once the server has said where it is.
    pub fn store_name(&self) -> String {
        match self.endpoint.get() {
            Some(e) => format!("the object store at {e}"),
            None => "the object store".into(),
        }
    }

    /// URLs for `requests`, a call per [`MAX_BATCH`].
    pub async fn presign(&self, requests: Vec<PresignRequest>) -> Result<Vec<Signed>, DirectError> {
        let mut out = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(MAX_BATCH) {
            let batch = self
                .presigner
                .presign(chunk.to_vec())
                .await
                .map_err(DirectError::Presign)?;
            let at = Instant::now();
            self.note_store(&batch.store);
            let urls = batch.urls;
            out.extend(
                chunk
                    .iter()
                    .cloned()
                    .zip(urls)
                    .map(|(request, url)| Signed { request, url, at }),
            );
        }
        Ok(out)
    }

    /// Where the store is, as the server says (no URL is presigned for it).
    pub async fn endpoint(&self) -> Result<String, DirectError> {
        let batch = self
            .presigner
            .presign(Vec::new())
            .await
            .map_err(DirectError::Presign)?;
        self.note_store(&batch.store);
        Ok(batch.store)
    }

    fn note_store(&self, store: &str) {
        if !store.is_empty() && self.endpoint.get().is_none() {
            let _ = self.endpoint.set(store.to_string());
        }
    }

    pub async fn presign_one(&self, request: PresignRequest) -> Result<Signed, DirectError> {
        let mut v = self.presign(vec![request]).await?;
        v.pop()
            .ok_or_else(|| DirectError::Presign("the server presigned no URL".into()))
    }

    /// Runs `try_once` with the URL until it succeeds or fails for good: transient failures
    /// are retried with backoff, a refused URL is presigned afresh once, and an old one is
    /// presigned afresh before it can expire.
    async fn run<T, Fut>(
        &self,
        signed: &mut Signed,
        mut try_once: impl FnMut(String) -> Fut,
    ) -> Result<T, DirectError>
    where
        Fut: Future<Output = Result<T, TryError>>,
    {
        let (mut tried, mut represigned) = (0, false);
        loop {
            if signed.at.elapsed() > REFRESH_AFTER {
                *signed = self.presign_one(signed.request.clone()).await?;
            }
            tried += 1;
            let failure = match try_once(signed.url.clone()).await {
                Ok(v) => return Ok(v),
                Err(TryError::Fatal(e)) => return Err(e),
                Err(TryError::Failed(f)) => f,
            };
            match plan::next_step(&failure, tried, self.tuning.attempts, represigned) {
                Next::Retry(pause) => tokio::time::sleep(pause).await,
                Next::Represign => {
                    represigned = true;
                    *signed = self.presign_one(signed.request.clone()).await?;
                }
                Next::Fail => return Err(failure.into()),
            }
        }
    }

    /// Every object under `prefix`, a presigned ListObjectsV2 per page.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, DirectError> {
        let silence = self.tuning.silence;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let query = clary_client::s3::list_v2_query(prefix, token.as_deref());
            let mut signed = self
                .presign_one(PresignRequest::bucket("GET", bucket, query))
                .await?;
            let http = &self.http;
            let page = self
                .run(&mut signed, |url| async move {
                    let resp = checked(http.get(url).send().await.map_err(broken)?).await?;
                    let text = body_text(resp, silence).await?;
                    parse_list_page(&text).map_err(|e| TryError::Fatal(DirectError::Answer(e)))
                })
                .await?;
            out.extend(page.objects.into_iter().map(ObjectRef::listed));
            match page.next_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// A HEAD that finds something or nothing: `Some(response)`, or `None` on 404.
    pub async fn head(
        &self,
        request: PresignRequest,
    ) -> Result<Option<reqwest::Response>, DirectError> {
        let mut signed = self.presign_one(request).await?;
        let http = &self.http;
        self.run(&mut signed, |url| async move {
            let resp = http.head(url).send().await.map_err(broken)?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            checked(resp).await.map(Some)
        })
        .await
    }
}

async fn http_send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, TryError> {
    match tokio::time::timeout(ANSWER_WAIT, req.send()).await {
        Ok(sent) => sent.map_err(broken),
        Err(_) => Err(TryError::Failed(Failure::Transport(format!(
            "no answer within {} s",
            ANSWER_WAIT.as_secs()
        )))),
    }
}

/// The next piece of a body, or why none came: a store silent for `silence` while we wait has
/// a broken connection. Timed per wait, not with the HTTP client's read timeout, which also
/// counts the time a slow reader of a Pipe stream spends away and would break a healthy one.
async fn next_chunk(
    resp: &mut reqwest::Response,
    silence: Duration,
) -> Result<Option<Bytes>, TryError> {
    match tokio::time::timeout(silence, resp.chunk()).await {
        Ok(chunk) => chunk.map_err(broken),
        Err(_) => Err(TryError::Failed(Failure::Transport(format!(
            "the store sent nothing for {:.1} s",
            silence.as_secs_f64()
        )))),
    }
}

/// A whole (small) body as text.
async fn body_text(mut resp: reqwest::Response, silence: Duration) -> Result<String, TryError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(&mut resp, silence).await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn fatal(e: TryError) -> DirectError {
    match e {
        TryError::Fatal(e) => e,
        TryError::Failed(f) => f.into(),
    }
}

/// Runs file I/O on a blocking thread; its failure says `what` was being done.
async fn on_disk<T: Send + 'static>(
    what: String,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, DirectError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|source| DirectError::File { what, source }),
        Err(e) => Err(DirectError::File {
            what,
            source: io::Error::other(e.to_string()),
        }),
    }
}

/// The text of the element at `path` (from the root) of an XML answer.
fn xml_field(xml: &str, path: &[&str]) -> Option<String> {
    let mut found = None;
    let _ = walk_xml(xml, |at, text| {
        if found.is_none() && at == path {
            found = Some(text);
        }
    });
    found
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_by_element_path() {
        let xml = r#"<?xml version="1.0"?><InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>2~ab&amp;c</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(
            xml_field(xml, &["InitiateMultipartUploadResult", "UploadId"]).as_deref(),
            Some("2~ab&c")
        );
        assert_eq!(xml_field(xml, &["Error", "Code"]), None);
        assert_eq!(xml_escape("\"e&t\""), "&quot;e&amp;t&quot;");
    }
}
