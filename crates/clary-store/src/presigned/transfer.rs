//! The requests themselves: each one with a URL the server presigned, sent with plain HTTP,
//! retried and re-presigned as [`plan::next_step`] says. Large objects come down in ranges
//! and go up in parts, several at once, bounded by one semaphore per store.

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
            let mut query = format!("list-type=2&prefix={}", encode_query_value(prefix));
            if let Some(t) = &token {
                query.push_str("&continuation-token=");
                query.push_str(&encode_query_value(t));
            }
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

    /// Many objects into their files: [`MAX_BATCH`] presigned per call, the objects (and a
    /// large one's ranges) [`Tuning::concurrency`] requests at a time. Stops at the first
    /// failure, naming its object.
    pub async fn fetch_many(
        &self,
        items: Vec<(String, String, PathBuf, Option<u64>)>,
    ) -> Result<(), (String, String, DirectError)> {
        for chunk in items.chunks(MAX_BATCH) {
            let requests = chunk
                .iter()
                .map(|(b, k, _, _)| PresignRequest::object("GET", b, k, String::new()))
                .collect();
            let signed = self.presign(requests).await.map_err(|e| {
                let (b, k, _, _) = &chunk[0];
                (b.clone(), k.clone(), e)
            })?;
            futures::stream::iter(chunk.iter().zip(signed))
                .map(|((b, k, target, size), signed)| async move {
                    self.fetch(signed, target, *size)
                        .await
                        .map_err(|e| (b.clone(), k.clone(), e))
                })
                .buffer_unordered(self.tuning.concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
        }
        Ok(())
    }

    /// One object into its file, replacing what is there: small ones in one GET, large ones
    /// in ranges written at their offsets, several at once, all of the same version.
    pub async fn fetch(
        &self,
        mut signed: Signed,
        target: &Path,
        size: Option<u64>,
    ) -> Result<(), DirectError> {
        let silence = self.tuning.silence;
        // A new file: whatever was there (a link, an earlier copy) is left alone. Creating it
        // here, like writing to it (see `write_body`), is quicker than a thread hop.
        let _ = std::fs::remove_file(target);
        let file = File::create(target).map_err(|source| DirectError::File {
            what: format!("creating {}", target.display()),
            source,
        })?;
        let range = self.tuning.range_size;
        let known_small = size.is_some_and(|s| s <= range);
        // The first request: the whole of a small object, or the first range of any other,
        // whose answer says how large the object is and which version it is.
        let first = {
            let _slot = self.slots.acquire().await;
            let (http, file) = (&self.http, &file);
            self.run(&mut signed, |url| async move {
                let mut req = http.get(url);
                if !known_small {
                    req = req.header(header::RANGE, format!("bytes=0-{}", range - 1));
                }
                let resp = http_send(req).await?;
                // Only an empty object has no first byte to give.
                if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
                    return Ok((0, None, true));
                }
                let resp = checked(resp).await?;
                // A 200 (to a ranged GET too) is the whole object.
                let whole = resp.status() != StatusCode::PARTIAL_CONTENT;
                let total = match resp.status() {
                    StatusCode::PARTIAL_CONTENT => content_range_total(&resp).ok_or_else(|| {
                        TryError::Fatal(DirectError::Answer(
                            "a ranged GET's answer has no Content-Range".into(),
                        ))
                    })?,
                    _ => resp.content_length().unwrap_or(0),
                };
                let etag = resp
                    .headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let expected = resp.content_length();
                let got = write_body(resp, file, target, 0, silence).await?;
                if expected.is_some_and(|n| n != got) {
                    return Err(TryError::Failed(Failure::Transport(format!(
                        "the body ended after {got} of {} bytes",
                        expected.unwrap_or(0)
                    ))));
                }
                Ok((if whole { got } else { total }, etag, whole))
            })
            .await?
        };
        let (total, etag, whole) = first;
        let rest = if whole {
            Vec::new()
        } else {
            plan::pieces(range.min(total), total, range)
        };
        if !rest.is_empty() {
            let (signed, etag, file) = (&signed, &etag, &file);
            futures::stream::iter(rest)
                .map(|(offset, len)| async move {
                    let _slot = self.slots.acquire().await;
                    // The same URL serves every range (the Range header is not signed).
                    let mut s = signed.clone();
                    let http = &self.http;
                    self.run(&mut s, |url| async move {
                        let mut req = http.get(url).header(
                            header::RANGE,
                            format!("bytes={offset}-{}", offset + len - 1),
                        );
                        // Every range of the same version: a replaced object fails as
                        // PreconditionFailed instead of mixing two.
                        if let Some(e) = etag {
                            req = req.header(header::IF_MATCH, e);
                        }
                        let resp = checked(http_send(req).await?).await?;
                        let got = write_body(resp, file, target, offset, silence).await?;
                        if got != len {
                            return Err(TryError::Failed(Failure::Transport(format!(
                                "a range ended after {got} of {len} bytes"
                            ))));
                        }
                        Ok(())
                    })
                    .await
                })
                .buffer_unordered(self.tuning.concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
        }
        // A retried first request may have written less than an earlier try.
        file.set_len(total).map_err(|source| DirectError::File {
            what: format!("writing {}", target.display()),
            source,
        })
    }

    /// A GET whose body streams into `tx` as it arrives; a connection that breaks mid-way is
    /// resumed from the byte it reached (same version), so a long Pipe-mode stream survives.
    pub async fn open(&self, request: PresignRequest) -> Result<Stream, DirectError> {
        let mut signed = self.presign_one(request).await?;
        let http = &self.http;
        let resp = self
            .run(&mut signed, |url| async move {
                checked(http_send(http.get(url)).await?).await
            })
            .await?;
        Ok(Stream { signed, resp })
    }

    /// Sends an open GET's body to `tx`; a failure arrives as the last item.
    pub async fn stream_to(
        &self,
        stream: Stream,
        tx: mpsc::Sender<io::Result<Bytes>>,
        what: String,
    ) {
        let Stream { mut signed, resp } = stream;
        let total = resp.content_length();
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut resp = Some(resp);
        let mut at = 0u64;
        let mut breaks = 0u32;
        // Bytes to drop from the start of a resumed answer (a store that ignores Range sends
        // the object from its beginning again).
        let mut skip = 0u64;
        loop {
            let mut body = match resp.take() {
                Some(r) => r,
                None => {
                    let (http, etag) = (&self.http, &etag);
                    let resumed = self
                        .run(&mut signed, |url| async move {
                            let mut req =
                                http.get(url).header(header::RANGE, format!("bytes={at}-"));
                            if let Some(e) = etag {
                                req = req.header(header::IF_MATCH, e);
                            }
                            checked(http_send(req).await?).await
                        })
                        .await;
                    match resumed {
                        Ok(r) if r.status() != StatusCode::PARTIAL_CONTENT => {
                            skip = at;
                            r
                        }
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(io::Error::other(format!("{what}: {e}")))).await;
                            return;
                        }
                    }
                }
            };
            loop {
                match next_chunk(&mut body, self.tuning.silence).await {
                    Ok(Some(mut chunk)) => {
                        if skip > 0 {
                            let drop = skip.min(chunk.len() as u64);
                            skip -= drop;
                            chunk = chunk.slice(drop as usize..);
                            if chunk.is_empty() {
                                continue;
                            }
                        }
                        at += chunk.len() as u64;
                        // Progress: the breaks that count are those in a row without any.
                        breaks = 0;
                        if tx.send(Ok(chunk)).await.is_err() {
                            // The reader is gone.
                            return;
                        }
                    }
                    Ok(None) => return,
                    // Every byte arrived before the connection broke: that is the end.
                    Err(_) if total.is_some_and(|t| at >= t) => return,
                    Err(e) => {
                        breaks += 1;
                        if breaks >= self.tuning.attempts {
                            let e = fatal(e);
                            let _ = tx.send(Err(io::Error::other(format!("{what}: {e}")))).await;
                            return;
                        }
                        tokio::time::sleep(plan::backoff(breaks)).await;
                        break;
                    }
                }
            }
        }
    }

    /// Stores the file at `path` as an object: one PUT when small, a multipart upload when
    /// large (aborted on any failure, so a half-written object never appears).
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, DirectError> {
        let silence = self.tuning.silence;
        let file = {
            let path = path.to_path_buf();
            on_disk(format!("reading {}", path.display()), move || {
                File::open(&path)
            })
            .await?
        };
        let size = file
            .metadata()
            .map_err(|source| DirectError::File {
                what: format!("reading {}", path.display()),
                source,
            })?
            .len();
        let file = Arc::new(file);
        if size <= self.tuning.part_size {
            let data = read_part(&file, path, 0, size).await.map_err(fatal)?;
            let mut signed = self
                .presign_one(PresignRequest::object("PUT", bucket, key, String::new()))
                .await?;
            let _slot = self.slots.acquire().await;
            self.put_bytes(&mut signed, data, content_type).await?;
            return Ok(size);
        }
        let mut create = self
            .presign_one(PresignRequest::object(
                "POST",
                bucket,
                key,
                "uploads".into(),
            ))
            .await?;
        let http = &self.http;
        let upload_id = self
            .run(&mut create, |url| async move {
                let mut req = http.post(url);
                if let Some(ct) = content_type {
                    req = req.header(header::CONTENT_TYPE, ct);
                }
                let resp = checked(http_send(req).await?).await?;
                let text = body_text(resp, silence).await?;
                xml_field(&text, &["InitiateMultipartUploadResult", "UploadId"]).ok_or_else(|| {
                    TryError::Fatal(DirectError::Answer(format!(
                        "CreateMultipartUpload answered without an UploadId: {}",
                        text.chars().take(200).collect::<String>()
                    )))
                })
            })
            .await?;
        let upload = format!("uploadId={}", encode_query_value(&upload_id));
        match self
            .upload_parts(bucket, key, &file, path, size, &upload)
            .await
        {
            Ok(()) => Ok(size),
            Err(e) => {
                // Nothing half-written stays behind; the first failure is the one to tell.
                let abort = PresignRequest::object("DELETE", bucket, key, upload.clone());
                if let Ok(mut signed) = self.presign_one(abort).await {
                    let _ = self
                        .run(&mut signed, |url| async move {
                            checked(http_send(http.delete(url)).await?).await
                        })
                        .await;
                }
                Err(e)
            }
        }
    }

    /// One PUT of `data`, with its MD5 for the store to check.
    async fn put_bytes(
        &self,
        signed: &mut Signed,
        data: Bytes,
        content_type: Option<&str>,
    ) -> Result<Option<String>, DirectError> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&data));
        let (http, data, md5) = (&self.http, &data, &md5);
        self.run(signed, |url| async move {
            let mut req = http.put(url).header("content-md5", md5).body(data.clone());
            if let Some(ct) = content_type {
                req = req.header(header::CONTENT_TYPE, ct);
            }
            let resp = checked(http_send(req).await?).await?;
            Ok(resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string))
        })
        .await
    }

    /// The parts of a multipart upload, several at once, then its completion.
    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        file: &Arc<File>,
        path: &Path,
        size: u64,
        upload: &str,
    ) -> Result<(), DirectError> {
        let silence = self.tuning.silence;
        let part = plan::part_size(size, self.tuning.part_size);
        let parts: Vec<(u32, u64, u64)> = plan::pieces(0, size, part)
            .into_iter()
            .enumerate()
            .map(|(i, (offset, len))| (i as u32 + 1, offset, len))
            .collect();
        let mut etags: Vec<(u32, String)> = Vec::with_capacity(parts.len());
        for chunk in parts.chunks(MAX_BATCH) {
            let requests = chunk
                .iter()
                .map(|(n, _, _)| {
                    PresignRequest::object("PUT", bucket, key, format!("partNumber={n}&{upload}"))
                })
                .collect();
            let signed = self.presign(requests).await?;
            let done: Vec<(u32, String)> = futures::stream::iter(chunk.iter().zip(signed))
                .map(|(&(n, offset, len), mut signed)| async move {
                    let _slot = self.slots.acquire().await;
                    let data = read_part(file, path, offset, len).await.map_err(fatal)?;
                    let etag = self.put_bytes(&mut signed, data, None).await?;
                    let etag = etag.ok_or_else(|| {
                        DirectError::Answer(format!("UploadPart {n} answered without an ETag"))
                    })?;
                    Ok::<_, DirectError>((n, etag))
                })
                .buffer_unordered(self.tuning.concurrency.clamp(1, MAX_PARTS_IN_FLIGHT))
                .try_collect()
                .await?;
            etags.extend(done);
        }
        etags.sort_by_key(|(n, _)| *n);
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, etag) in &etags {
            body.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let body = Bytes::from(body);
        let mut signed = self
            .presign_one(PresignRequest::object(
                "POST",
                bucket,
                key,
                upload.to_string(),
            ))
            .await?;
        let (http, body) = (&self.http, &body);
        self.run(&mut signed, |url| async move {
            let resp = checked(http_send(http.post(url).body(body.clone())).await?).await?;
            let text = body_text(resp, silence).await?;
            // S3 may answer 200 and put the error in the body.
            if let Some(code) = xml_field(&text, &["Error", "Code"]) {
                let message = xml_field(&text, &["Error", "Message"]).unwrap_or_default();
                let status = if code == "InternalError" || code == "SlowDown" {
                    503
                } else {
                    400
                };
                return Err(TryError::Failed(Failure::Status {
                    status,
                    code,
                    message,
                }));
            }
            Ok(())
        })
        .await
    }
}

/// An open GET: its URL (to resume with) and its response.
pub(super) struct Stream {
    signed: Signed,
    resp: reqwest::Response,
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

/// `total` of a `Content-Range: bytes a-b/total`.
fn content_range_total(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?
        .rsplit('/')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Writes a response's body into `file` from `offset` as it arrives; returns how many bytes
/// it had. Each chunk is written where it stands, on this thread: a write of tens of kilobytes
/// into the page cache takes microseconds, less than handing it to another thread would, and
/// these threads are the store's own, so nothing else waits behind them.
async fn write_body(
    mut resp: reqwest::Response,
    file: &File,
    target: &Path,
    offset: u64,
    silence: Duration,
) -> Result<u64, TryError> {
    let mut at = offset;
    while let Some(chunk) = next_chunk(&mut resp, silence).await? {
        file.write_all_at(&chunk, at).map_err(|source| {
            TryError::Fatal(DirectError::File {
                what: format!("writing {}", target.display()),
                source,
            })
        })?;
        at += chunk.len() as u64;
    }
    Ok(at - offset)
}

/// `len` bytes of `file` from `offset`.
async fn read_part(
    file: &Arc<File>,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<Bytes, TryError> {
    let file = file.clone();
    on_disk(format!("reading {}", path.display()), move || {
        let mut data = vec![0u8; len as usize];
        file.read_exact_at(&mut data, offset)
            .map(|_| Bytes::from(data))
    })
    .await
    .map_err(TryError::Fatal)
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
