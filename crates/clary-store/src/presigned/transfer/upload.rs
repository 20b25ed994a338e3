//! Objects going up: a small file in one PUT, a large one in parts several at once, the
//! upload aborted on any failure so no half-written object appears.

use super::*;

impl Direct {
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
