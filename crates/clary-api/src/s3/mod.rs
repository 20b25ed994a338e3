//! The S3 API on the `s3s` crate, over the local object store. s3s parses and answers the
//! wire protocol (XML, SigV4 for the `s3` scope, aws-chunked bodies); this module maps each
//! operation onto [`LocalStore`], whose writes are atomic.

use bytes::Bytes;
use clary_store::{LocalStore, ObjectMeta, PutOptions, StoreError};
use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use std::io::{Read, Seek, SeekFrom, Write};

mod checksums;
pub mod external;
mod listing;

use checksums::{
    base64_of_hex, check_checksum, returned_checksum, sent_checksum, without_aws_chunked,
};
use listing::{list_page, resume_after};

/// Keys one `DeleteObjects` may name (S3's limit).
const MAX_DELETE_KEYS: usize = 1000;

pub struct S3Store {
    pub store: LocalStore,
}

fn err(e: StoreError) -> S3Error {
    let code = match &e {
        StoreError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        StoreError::NoSuchKey(_) => S3ErrorCode::NoSuchKey,
        StoreError::BucketAlreadyOwnedByYou(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        StoreError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        StoreError::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
        StoreError::InvalidKey(_) => S3ErrorCode::InvalidArgument,
        StoreError::KeyTooLong(_) => S3ErrorCode::KeyTooLongError,
        StoreError::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
        StoreError::InvalidPart(_) => S3ErrorCode::InvalidPart,
        StoreError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        StoreError::EntityTooSmall(_) => S3ErrorCode::EntityTooSmall,
        StoreError::MalformedXml(_) => S3ErrorCode::MalformedXML,
        StoreError::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
        StoreError::BadDigest(_) => S3ErrorCode::BadDigest,
        StoreError::Io(_) => S3ErrorCode::InternalError,
    };
    if let StoreError::Io(detail) = &e {
        // The detail names files under the data directory: it is for the server's log only.
        tracing::error!("S3 storage error: {detail}");
        return S3Error::with_message(code, "We encountered an internal error. Please try again.");
    }
    S3Error::with_message(code, e.to_string())
}

fn blocking<T>(f: impl FnOnce() -> Result<T, StoreError>) -> S3Result<T> {
    // Local filesystem calls are short; running them inline on a worker thread is cheaper
    // than a hop to the blocking pool for every request.
    tokio::task::block_in_place(f).map_err(err)
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp::from(std::time::SystemTime::from(t))
}

fn etag(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.trim_matches('"').to_string())
}

fn put_options(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    metadata: Option<Metadata>,
) -> PutOptions {
    PutOptions {
        content_type,
        content_encoding: content_encoding.and_then(|e| without_aws_chunked(&e)),
        content_disposition,
        content_language,
        cache_control,
        user_metadata: metadata
            .map(|m| m.into_iter().collect())
            .unwrap_or_default(),
        ..PutOptions::default()
    }
}

/// Streams a request body into `sink`, chunk by chunk.
async fn drain(body: Option<StreamingBlob>, sink: &mut (dyn Write + Send)) -> S3Result<u64> {
    let mut n = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk.map_err(|e| {
                S3Error::with_message(
                    S3ErrorCode::IncompleteBody,
                    format!("reading the body: {e}"),
                )
            })?;
            tokio::task::block_in_place(|| sink.write_all(&chunk)).map_err(|e| {
                S3Error::with_message(S3ErrorCode::InternalError, format!("storing the body: {e}"))
            })?;
            n += chunk.len() as u64;
        }
    }
    Ok(n)
}

/// A body that reads `len` bytes of an open file from its current position, in chunks.
fn file_body(file: std::fs::File, len: u64) -> StreamingBlob {
    const CHUNK: u64 = 256 * 1024;
    let stream = futures::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = left.min(CHUNK) as usize;
        let mut buf = vec![0u8; want];
        match tokio::task::block_in_place(|| file.read_exact(&mut buf)) {
            Ok(()) => Some((
                Ok::<Bytes, std::io::Error>(Bytes::from(buf)),
                (file, left - want as u64),
            )),
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    StreamingBlob::wrap(stream)
}

fn owner() -> Owner {
    Owner {
        display_name: Some("clary".into()),
        id: Some("clary".into()),
    }
}

#[async_trait::async_trait]
impl S3 for S3Store {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        blocking(|| self.store.create_bucket(&bucket))?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        blocking(|| self.store.head_bucket(&req.input.bucket))?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        blocking(|| self.store.head_bucket(&req.input.bucket))?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = blocking(|| self.store.list_buckets())?
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        blocking(|| self.store.delete_bucket(&req.input.bucket))?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let trailers = req.trailing_headers;
        let mut i = req.input;
        let mut writer = blocking(|| self.store.writer(&i.bucket, &i.key))?;
        drain(i.body.take(), &mut writer).await?;
        i.checksum_crc32 = sent_checksum(&i.checksum_crc32, &trailers, "x-amz-checksum-crc32");
        i.checksum_sha256 = sent_checksum(&i.checksum_sha256, &trailers, "x-amz-checksum-sha256");
        check_checksum(&i.checksum_crc32, &writer.crc32_base64(), "CRC32")?;
        check_checksum(&i.checksum_sha256, &writer.sha256_base64(), "SHA256")?;
        if let Some(md5) = &i.content_md5 {
            let computed = base64_of_hex(&writer.md5_hex());
            if *md5 != computed {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    "The Content-MD5 you specified did not match what we received.",
                ));
            }
        }
        let mut opts = put_options(
            i.content_type,
            i.content_encoding,
            i.content_disposition,
            i.content_language,
            i.cache_control,
            i.metadata,
        );
        opts.checksum_crc32 = i.checksum_crc32.clone();
        opts.checksum_sha256 = i.checksum_sha256.clone();
        let meta = blocking(|| writer.commit(opts))?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta)),
            checksum_crc32: meta.checksum_crc32.clone(),
            checksum_sha256: meta.checksum_sha256.clone(),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        let (meta, mut file) = blocking(|| self.store.open_object(&i.bucket, &i.key))?;
        if let Some(ETagCondition::ETag(want)) = &i.if_match
            && want.value() != meta.etag.trim_matches('"')
        {
            return Err(S3Error::with_message(
                S3ErrorCode::PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold",
            ));
        }
        let (start, len, content_range) = match &i.range {
            Some(r) => {
                let range = r.check(meta.size).map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidRange,
                        format!(
                            "The requested range is not satisfiable for an object of {} bytes",
                            meta.size
                        ),
                    )
                })?;
                let len = range.end - range.start;
                (
                    range.start,
                    len,
                    Some(format!(
                        "bytes {}-{}/{}",
                        range.start,
                        range.end.saturating_sub(1),
                        meta.size
                    )),
                )
            }
            None => (0, meta.size, None),
        };
        tokio::task::block_in_place(|| file.seek(SeekFrom::Start(start)))
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?;
        let whole = content_range.is_none();
        let checksums = whole && i.checksum_mode.is_some();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(file_body(file, len)),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&meta)),
            last_modified: Some(timestamp(meta.last_modified)),
            content_type: meta.content_type.clone(),
            content_encoding: meta.content_encoding.clone(),
            content_disposition: meta.content_disposition.clone(),
            content_language: meta.content_language.clone(),
            cache_control: meta.cache_control.clone(),
            metadata: Some(meta.user_metadata.clone().into_iter().collect()),
            checksum_crc32: returned_checksum(checksums, &meta.checksum_crc32),
            checksum_sha256: returned_checksum(checksums, &meta.checksum_sha256),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let meta = blocking(|| self.store.head(&i.bucket, &i.key))?;
        let checksums = i.checksum_mode.is_some();
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            e_tag: Some(etag(&meta)),
            last_modified: Some(timestamp(meta.last_modified)),
            content_type: meta.content_type.clone(),
            content_encoding: meta.content_encoding.clone(),
            content_disposition: meta.content_disposition.clone(),
            content_language: meta.content_language.clone(),
            cache_control: meta.cache_control.clone(),
            accept_ranges: Some("bytes".into()),
            metadata: Some(meta.user_metadata.clone().into_iter().collect()),
            checksum_crc32: returned_checksum(checksums, &meta.checksum_crc32),
            checksum_sha256: returned_checksum(checksums, &meta.checksum_sha256),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &i.copy_source
        else {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Only bucket/key copy sources are supported",
            ));
        };
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE)
            .then(|| {
                put_options(
                    i.content_type,
                    i.content_encoding,
                    i.content_disposition,
                    i.content_language,
                    i.cache_control,
                    i.metadata,
                )
            });
        let meta = blocking(|| {
            self.store
                .copy(src_bucket, src_key, &i.bucket, &i.key, replace)
        })?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta)),
                last_modified: Some(timestamp(meta.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        blocking(|| self.store.delete(&req.input.bucket, &req.input.key))?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        // S3's cap: a larger request is refused whole, before any key is deleted.
        if i.delete.objects.len() > MAX_DELETE_KEYS {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema",
            ));
        }
        blocking(|| self.store.head_bucket(&i.bucket))?;
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in i.delete.objects {
            match blocking(|| self.store.delete(&i.bucket, &obj.key)) {
                Ok(()) if !quiet => deleted.push(DeletedObject {
                    key: Some(obj.key),
                    ..Default::default()
                }),
                Ok(()) => {}
                Err(e) => errors.push(Error {
                    key: Some(obj.key),
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let objects = blocking(|| self.store.list(&i.bucket, &prefix))?;
        let max = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = resume_after(i.marker.as_deref().unwrap_or(""), i.delimiter.as_deref());
        let (contents, prefixes, truncated, next) =
            list_page(objects, &prefix, i.delimiter.as_deref(), &after, max);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(prefix),
            delimiter: i.delimiter,
            marker: i.marker,
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_marker: next,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let objects = blocking(|| self.store.list(&i.bucket, &prefix))?;
        let max = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let marker = i
            .continuation_token
            .clone()
            .or(i.start_after.clone())
            .unwrap_or_default();
        let after = resume_after(&marker, i.delimiter.as_deref());
        let (contents, prefixes, truncated, next) =
            list_page(objects, &prefix, i.delimiter.as_deref(), &after, max);
        let count = (contents.len() + prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(prefix),
            delimiter: i.delimiter,
            max_keys: Some(max as i32),
            key_count: Some(count),
            continuation_token: i.continuation_token,
            start_after: i.start_after,
            is_truncated: Some(truncated),
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        let opts = put_options(
            i.content_type,
            i.content_encoding,
            i.content_disposition,
            i.content_language,
            i.cache_control,
            i.metadata,
        );
        let up = blocking(|| self.store.create_upload(&i.bucket, &i.key, opts))?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(up.upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let trailers = req.trailing_headers;
        let mut i = req.input;
        let part_number = u32::try_from(i.part_number).map_err(|_| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })?;
        // Receive the body first (it may be large and slow), then store it as the part.
        let mut tmp = tempfile_in(&self.store)?;
        drain(i.body.take(), tmp.as_file_mut()).await?;
        i.checksum_crc32 = sent_checksum(&i.checksum_crc32, &trailers, "x-amz-checksum-crc32");
        let mut file = tmp
            .reopen()
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?;
        let expected = i.checksum_crc32.as_deref();
        let part = blocking(|| {
            self.store.upload_part(
                &i.bucket,
                &i.key,
                &i.upload_id,
                part_number,
                expected,
                |w| std::io::copy(&mut file, w).map(|_| ()),
            )
        })?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag.trim_matches('"').to_string())),
            checksum_crc32: i.checksum_crc32.is_some().then_some(part.checksum_crc32),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let after = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let all = blocking(|| self.store.list_parts(&i.bucket, &i.key, &i.upload_id))?;
        let remaining: Vec<_> = all.into_iter().filter(|p| p.part_number > after).collect();
        let truncated = remaining.len() > max;
        let parts: Vec<Part> = remaining
            .iter()
            .take(max)
            .map(|p| Part {
                part_number: Some(p.part_number as i32),
                e_tag: Some(ETag::Strong(p.etag.trim_matches('"').to_string())),
                size: Some(p.size as i64),
                last_modified: Some(timestamp(p.last_modified)),
                ..Default::default()
            })
            .collect();
        let next = if truncated {
            parts.last().and_then(|p| p.part_number)
        } else {
            None
        };
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            parts: Some(parts),
            is_truncated: Some(truncated),
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let parts: Vec<(u32, String)> = i
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let n = p.part_number.unwrap_or(0).max(0) as u32;
                let e = p.e_tag.map(|e| e.value().to_string()).unwrap_or_default();
                (n, e)
            })
            .collect();
        let meta = blocking(|| {
            self.store
                .complete_upload(&i.bucket, &i.key, &i.upload_id, &parts)
        })?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag(&meta)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        blocking(|| self.store.abort_upload(&i.bucket, &i.key, &i.upload_id))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let uploads: Vec<MultipartUpload> = blocking(|| self.store.list_uploads(&i.bucket))?
            .into_iter()
            .filter(|u| u.key.starts_with(&prefix))
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(timestamp(u.initiated)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: Some(prefix),
            uploads: Some(uploads),
            is_truncated: Some(false),
            ..Default::default()
        }))
    }
}

fn tempfile_in(store: &LocalStore) -> S3Result<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new_in(store.root().join("tmp"))
        .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_never_show_a_server_path() {
        let e = err(StoreError::Io(
            "renaming into /srv/clary/objects/buckets/b/k~d: File name too long".into(),
        ));
        assert_eq!(*e.code(), S3ErrorCode::InternalError);
        assert!(!e.message().unwrap_or_default().contains('/'), "{e:?}");
        let e = err(StoreError::KeyTooLong(1025));
        assert_eq!(*e.code(), S3ErrorCode::KeyTooLongError);
    }
}
