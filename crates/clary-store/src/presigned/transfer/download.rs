//! Objects coming down: many at once into their files, a large one in ranges written at
//! their offsets, and a stream (Pipe mode) that resumes where a broken connection left it.

use super::*;

impl Direct {
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
}

/// An open GET: its URL (to resume with) and its response.
pub(in crate::presigned) struct Stream {
    signed: Signed,
    resp: reqwest::Response,
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
