//! Multipart uploads pass through part by part: the store keeps the upload and its parts, and
//! its upload ids and ETags come back as it gave them. Parts that are never completed are no
//! object, so a client that goes away mid-upload leaves none.

use super::errors::unreadable;
use super::objects::{Upload, described};
use super::request::{StoreRequest, etag, header};
use super::xml;
use clary_store::ExternalStore;
use http::Method;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result};

pub(super) async fn create(
    store: &ExternalStore,
    i: CreateMultipartUploadInput,
) -> S3Result<CreateMultipartUploadOutput> {
    let r = StoreRequest::new(
        Method::POST,
        Some(&i.bucket),
        Some(&i.key),
        S3ErrorCode::NoSuchBucket,
    )
    .flag("uploads");
    let r = described!(i).apply(r)?.header(
        "x-amz-checksum-algorithm",
        i.checksum_algorithm.as_ref().map(|a| a.as_str()),
    )?;
    let (h, text) = r.send_for_xml(store).await?;
    let upload_id =
        xml::upload_id(&text).map_err(|e| unreadable(store, "CreateMultipartUpload", &e))?;
    Ok(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(upload_id),
        checksum_algorithm: header(&h, "x-amz-checksum-algorithm").map(Into::into),
        ..Default::default()
    })
}

pub(super) async fn upload_part(
    store: &ExternalStore,
    mut i: UploadPartInput,
    trailers: Option<s3s::TrailingHeaders>,
) -> S3Result<UploadPartOutput> {
    if !(1..=10000).contains(&i.part_number) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive",
        ));
    }
    let body = i.body.take();
    let r = StoreRequest::new(
        Method::PUT,
        Some(&i.bucket),
        Some(&i.key),
        S3ErrorCode::NoSuchUpload,
    )
    .param("partNumber", Some(i.part_number))
    .param("uploadId", Some(&i.upload_id));
    let up = Upload {
        body,
        content_length: i.content_length,
        content_md5: i.content_md5.as_deref(),
        checksum_crc32: &i.checksum_crc32,
        checksum_sha256: &i.checksum_sha256,
        trailers: &trailers,
    }
    .send(r, store)
    .await?;
    Ok(UploadPartOutput {
        e_tag: up.e_tag,
        checksum_crc32: up.checksum_crc32,
        checksum_sha256: up.checksum_sha256,
        ..Default::default()
    })
}

pub(super) async fn list_parts(
    store: &ExternalStore,
    i: ListPartsInput,
) -> S3Result<ListPartsOutput> {
    let (_, text) = StoreRequest::new(
        Method::GET,
        Some(&i.bucket),
        Some(&i.key),
        S3ErrorCode::NoSuchUpload,
    )
    .param("max-parts", i.max_parts)
    .param("part-number-marker", i.part_number_marker)
    .param("uploadId", Some(&i.upload_id))
    .send_for_xml(store)
    .await?;
    let mut out = xml::list_parts(&text).map_err(|e| unreadable(store, "ListParts", &e))?;
    out.bucket = Some(i.bucket);
    Ok(out)
}

pub(super) async fn complete(
    store: &ExternalStore,
    i: CompleteMultipartUploadInput,
) -> S3Result<CompleteMultipartUploadOutput> {
    let body = xml::complete_body(&i.multipart_upload.unwrap_or_default());
    let (h, text) = StoreRequest::new(
        Method::POST,
        Some(&i.bucket),
        Some(&i.key),
        S3ErrorCode::NoSuchUpload,
    )
    .param("uploadId", Some(&i.upload_id))
    .header("content-type", Some("application/xml"))?
    .bytes(body)
    .send_for_xml(store)
    .await?;
    let mut out =
        xml::completed(&text).map_err(|e| unreadable(store, "CompleteMultipartUpload", &e))?;
    if out.e_tag.is_none() {
        // Ceph RGW pacific completes with an empty ETag; the object's own is the one S3 gives.
        let resp = StoreRequest::new(
            Method::HEAD,
            Some(&i.bucket),
            Some(&i.key),
            S3ErrorCode::NoSuchKey,
        )
        .send(store)
        .await?;
        out.e_tag = header(resp.headers(), "etag").and_then(|e| etag(&e));
    }
    // The store's location names the store; the client's is Clary's, as the local store's is.
    out.location = Some(format!("/{}/{}", i.bucket, i.key));
    out.bucket = Some(i.bucket);
    out.key = Some(i.key);
    out.version_id = header(&h, "x-amz-version-id");
    Ok(out)
}

pub(super) async fn abort(
    store: &ExternalStore,
    i: AbortMultipartUploadInput,
) -> S3Result<AbortMultipartUploadOutput> {
    StoreRequest::new(
        Method::DELETE,
        Some(&i.bucket),
        Some(&i.key),
        S3ErrorCode::NoSuchUpload,
    )
    .param("uploadId", Some(&i.upload_id))
    .send(store)
    .await?;
    Ok(AbortMultipartUploadOutput::default())
}

pub(super) async fn list_uploads(
    store: &ExternalStore,
    i: ListMultipartUploadsInput,
) -> S3Result<ListMultipartUploadsOutput> {
    let (_, text) = StoreRequest::new(
        Method::GET,
        Some(&i.bucket),
        None,
        S3ErrorCode::NoSuchBucket,
    )
    .flag("uploads")
    .param("delimiter", i.delimiter.as_deref())
    .param(
        "encoding-type",
        i.encoding_type.as_ref().map(|e| e.as_str()),
    )
    .param("key-marker", i.key_marker.as_deref())
    .param("max-uploads", i.max_uploads)
    .param("prefix", i.prefix.as_deref())
    .param("upload-id-marker", i.upload_id_marker.as_deref())
    .send_for_xml(store)
    .await?;
    let mut out =
        xml::list_uploads(&text).map_err(|e| unreadable(store, "ListMultipartUploads", &e))?;
    out.bucket = Some(i.bucket);
    Ok(out)
}
