//! Objects: uploads stream through to the store, downloads stream back, and what the store
//! says about an object (ETag, dates, metadata, checksums) comes back as it said it.

use super::body::Expected;
use super::errors::unreadable;
use super::request::{StoreRequest, etag, header, header_date, header_num, metadata};
use super::xml;
use crate::s3::MAX_DELETE_KEYS;
use crate::s3::checksums::{sent_checksum, without_aws_chunked};
use clary_client::s3::encode_key;
use clary_store::ExternalStore;
use futures::TryStreamExt;
use http::Method;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result};

/// An `If-Match`/`If-None-Match` value as it goes on.
pub(super) fn condition(c: Option<&ETagCondition>) -> Option<String> {
    c.and_then(|c| c.to_http_header().ok())
        .and_then(|v| v.to_str().ok().map(str::to_string))
}

/// The [`Described`] of an input that carries an object's description (PutObject,
/// CreateMultipartUpload and CopyObject share the field names, not a type).
macro_rules! described {
    ($i:expr) => {
        $crate::s3::external::objects::Described {
            content_type: $i.content_type.as_deref(),
            content_encoding: $i.content_encoding.as_deref(),
            content_disposition: $i.content_disposition.as_deref(),
            content_language: $i.content_language.as_deref(),
            cache_control: $i.cache_control.as_deref(),
            expires: $i.expires.as_ref(),
            metadata: $i.metadata.as_ref(),
            tagging: $i.tagging.as_deref(),
            storage_class: $i.storage_class.as_ref().map(|s| s.as_str()),
        }
    };
}
pub(super) use described;

/// The headers that describe an object as a client sets them, on an upload, a multipart
/// upload's start, or a copy that replaces them.
pub(super) struct Described<'a> {
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub content_disposition: Option<&'a str>,
    pub content_language: Option<&'a str>,
    pub cache_control: Option<&'a str>,
    pub expires: Option<&'a Timestamp>,
    pub metadata: Option<&'a Metadata>,
    pub tagging: Option<&'a str>,
    pub storage_class: Option<&'a str>,
}

impl Described<'_> {
    pub fn apply(self, r: StoreRequest) -> S3Result<StoreRequest> {
        // `aws-chunked` framed the client's request to Clary; it is not the object's.
        let encoding = self.content_encoding.and_then(without_aws_chunked);
        r.header("content-type", self.content_type)?
            .header("content-encoding", encoding)?
            .header("content-disposition", self.content_disposition)?
            .header("content-language", self.content_language)?
            .header("cache-control", self.cache_control)?
            .date_header("expires", self.expires)?
            .header("x-amz-tagging", self.tagging)?
            .header("x-amz-storage-class", self.storage_class)?
            .metadata(self.metadata)
    }
}

/// What a client said about the body it sends.
pub(super) fn expected(
    body: &Option<StreamingBlob>,
    content_length: Option<i64>,
    crc32: &Option<String>,
    sha256: &Option<String>,
    trailers: &Option<s3s::TrailingHeaders>,
) -> Expected {
    let length = content_length
        .and_then(|l| u64::try_from(l).ok())
        .or_else(|| {
            body.as_ref()
                .and_then(|b| s3s::stream::ByteStream::remaining_length(b).exact())
                .map(|l| l as u64)
        });
    Expected {
        length,
        crc32: crc32.clone(),
        sha256: sha256.clone(),
        trailers: trailers.clone(),
    }
}

/// A client's body sent on to the store: what PutObject and UploadPart share.
pub(super) struct Upload<'a> {
    pub body: Option<StreamingBlob>,
    pub content_length: Option<i64>,
    pub content_md5: Option<&'a str>,
    pub checksum_crc32: &'a Option<String>,
    pub checksum_sha256: &'a Option<String>,
    pub trailers: &'a Option<s3s::TrailingHeaders>,
}

/// What the store said of an upload, with the checksums to answer: the store's, else the
/// client's (checked on the way through; a trailer's only now that the body has ended).
pub(super) struct Uploaded {
    pub headers: http::HeaderMap,
    pub e_tag: Option<ETag>,
    pub checksum_crc32: Option<String>,
    pub checksum_sha256: Option<String>,
}

impl Upload<'_> {
    /// `r` with the client's digests on it and its body streamed, checked, to the store.
    pub(super) async fn send(self, r: StoreRequest, store: &ExternalStore) -> S3Result<Uploaded> {
        let expect = expected(
            &self.body,
            self.content_length,
            self.checksum_crc32,
            self.checksum_sha256,
            self.trailers,
        );
        let r = r
            .header("content-md5", self.content_md5)?
            .header("x-amz-checksum-crc32", self.checksum_crc32.as_deref())?
            .header("x-amz-checksum-sha256", self.checksum_sha256.as_deref())?;
        let r = match self.body {
            Some(b) => r.stream(b, expect),
            None => r.bytes(Vec::new()),
        };
        let resp = r.send(store).await?;
        let headers = resp.headers().clone();
        let crc32 = sent_checksum(self.checksum_crc32, self.trailers, "x-amz-checksum-crc32");
        let sha256 = sent_checksum(self.checksum_sha256, self.trailers, "x-amz-checksum-sha256");
        Ok(Uploaded {
            e_tag: header(&headers, "etag").and_then(|e| etag(&e)),
            checksum_crc32: header(&headers, "x-amz-checksum-crc32").or(crc32),
            checksum_sha256: header(&headers, "x-amz-checksum-sha256").or(sha256),
            headers,
        })
    }
}

pub(super) async fn put(
    store: &ExternalStore,
    mut i: PutObjectInput,
    trailers: Option<s3s::TrailingHeaders>,
) -> S3Result<PutObjectOutput> {
    let body = i.body.take();
    let mut r = StoreRequest::new(
        Method::PUT,
        Some(&i.bucket),
        Some(&i.key),
        S3ErrorCode::NoSuchKey,
    );
    r = described!(i)
        .apply(r)?
        .header("if-match", condition(i.if_match.as_ref()))?
        .header("if-none-match", condition(i.if_none_match.as_ref()))?;
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
    Ok(PutObjectOutput {
        e_tag: up.e_tag,
        checksum_crc32: up.checksum_crc32,
        checksum_sha256: up.checksum_sha256,
        version_id: header(&up.headers, "x-amz-version-id"),
        ..Default::default()
    })
}

/// The [`Read`] of a GetObject or HeadObject input (the same fields, two types).
macro_rules! read_of {
    ($i:expr) => {
        Read {
            bucket: &$i.bucket,
            key: &$i.key,
            if_match: $i.if_match.as_ref(),
            if_none_match: $i.if_none_match.as_ref(),
            if_modified_since: $i.if_modified_since.as_ref(),
            if_unmodified_since: $i.if_unmodified_since.as_ref(),
            range: $i.range.as_ref(),
            checksum_mode: $i.checksum_mode.as_ref(),
            part_number: $i.part_number,
            version_id: $i.version_id.as_deref(),
        }
    };
}

/// The request of a GetObject or HeadObject.
struct Read<'a> {
    bucket: &'a str,
    key: &'a str,
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    if_modified_since: Option<&'a Timestamp>,
    if_unmodified_since: Option<&'a Timestamp>,
    range: Option<&'a Range>,
    checksum_mode: Option<&'a ChecksumMode>,
    part_number: Option<i32>,
    version_id: Option<&'a str>,
}

impl Read<'_> {
    async fn send(self, store: &ExternalStore, method: Method) -> S3Result<reqwest::Response> {
        StoreRequest::new(
            method,
            Some(self.bucket),
            Some(self.key),
            S3ErrorCode::NoSuchKey,
        )
        .param("partNumber", self.part_number)
        .param("versionId", self.version_id)
        .header("range", self.range.map(Range::to_header_string))?
        .header("if-match", condition(self.if_match))?
        .header("if-none-match", condition(self.if_none_match))?
        .date_header("if-modified-since", self.if_modified_since)?
        .date_header("if-unmodified-since", self.if_unmodified_since)?
        .header(
            "x-amz-checksum-mode",
            self.checksum_mode.map(|m| m.as_str()),
        )?
        .send(store)
        .await
    }
}

/// Sets the fields GetObject and HeadObject share from the store's answer.
macro_rules! describe_object {
    ($out:expr, $resp:expr) => {{
        let resp = $resp;
        $out.content_length = header_num(resp, "content-length");
        $out.content_range = header(resp, "content-range");
        $out.accept_ranges = header(resp, "accept-ranges");
        $out.e_tag = header(resp, "etag").and_then(|e| etag(&e));
        $out.last_modified = header_date(resp, "last-modified");
        $out.content_type = header(resp, "content-type");
        $out.content_encoding = header(resp, "content-encoding");
        $out.content_disposition = header(resp, "content-disposition");
        $out.content_language = header(resp, "content-language");
        $out.cache_control = header(resp, "cache-control");
        $out.expires = header_date(resp, "expires");
        $out.metadata = Some(metadata(resp));
        $out.checksum_crc32 = header(resp, "x-amz-checksum-crc32");
        $out.checksum_sha256 = header(resp, "x-amz-checksum-sha256");
        $out.parts_count = header_num(resp, "x-amz-mp-parts-count");
        $out.version_id = header(resp, "x-amz-version-id");
        $out.storage_class = header(resp, "x-amz-storage-class").map(Into::into);
    }};
}

pub(super) async fn get(store: &ExternalStore, i: GetObjectInput) -> S3Result<GetObjectOutput> {
    let resp = read_of!(i).send(store, Method::GET).await?;
    let mut out = GetObjectOutput::default();
    describe_object!(out, resp.headers());
    out.tag_count = header_num(resp.headers(), "x-amz-tagging-count");
    // The store's body streams on as it arrives: a 1 GiB object is never held whole.
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    out.body = Some(StreamingBlob::wrap(stream));
    Ok(out)
}

pub(super) async fn head(store: &ExternalStore, i: HeadObjectInput) -> S3Result<HeadObjectOutput> {
    let resp = read_of!(i).send(store, Method::HEAD).await?;
    let mut out = HeadObjectOutput::default();
    describe_object!(out, resp.headers());
    Ok(out)
}

pub(super) async fn copy(store: &ExternalStore, i: CopyObjectInput) -> S3Result<CopyObjectOutput> {
    let CopySource::Bucket {
        bucket: src_bucket,
        key: src_key,
        version_id,
    } = &i.copy_source
    else {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Only bucket/key copy sources are supported",
        ));
    };
    // The source is Clary's bucket too: named as the store's.
    let mut source = format!(
        "/{}/{}",
        encode_key(&store.store_bucket(src_bucket)),
        encode_key(src_key)
    );
    if let Some(v) = version_id {
        source.push_str("?versionId=");
        source.push_str(&clary_client::s3::encode_query_value(v));
    }
    let replace = i
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let mut r = StoreRequest::new(
        Method::PUT,
        Some(&i.bucket),
        Some(&i.key),
        S3ErrorCode::NoSuchKey,
    )
    .also_about(src_bucket)
    .header("x-amz-copy-source", Some(source))?
    .header(
        "x-amz-metadata-directive",
        i.metadata_directive.as_ref().map(|d| d.as_str()),
    )?
    .header(
        "x-amz-tagging-directive",
        i.tagging_directive.as_ref().map(|d| d.as_str()),
    )?
    .header(
        "x-amz-copy-source-if-match",
        condition(i.copy_source_if_match.as_ref()),
    )?
    .header(
        "x-amz-copy-source-if-none-match",
        condition(i.copy_source_if_none_match.as_ref()),
    )?
    .date_header(
        "x-amz-copy-source-if-modified-since",
        i.copy_source_if_modified_since.as_ref(),
    )?
    .date_header(
        "x-amz-copy-source-if-unmodified-since",
        i.copy_source_if_unmodified_since.as_ref(),
    )?;
    if replace {
        r = described!(i).apply(r)?;
    } else {
        r = r.header("x-amz-tagging", i.tagging.as_deref())?.header(
            "x-amz-storage-class",
            i.storage_class.as_ref().map(|s| s.as_str()),
        )?;
    }
    let (h, text) = r.send_for_xml(store).await?;
    let result = xml::copy_result(&text).map_err(|e| unreadable(store, "CopyObject", &e))?;
    Ok(CopyObjectOutput {
        copy_object_result: Some(result),
        version_id: header(&h, "x-amz-version-id"),
        copy_source_version_id: header(&h, "x-amz-copy-source-version-id"),
        ..Default::default()
    })
}

pub(super) async fn delete(
    store: &ExternalStore,
    i: DeleteObjectInput,
) -> S3Result<DeleteObjectOutput> {
    let resp = StoreRequest::new(
        Method::DELETE,
        Some(&i.bucket),
        Some(&i.key),
        S3ErrorCode::NoSuchKey,
    )
    .param("versionId", i.version_id.as_deref())
    .send(store)
    .await?;
    let h = resp.headers();
    Ok(DeleteObjectOutput {
        delete_marker: header(h, "x-amz-delete-marker").map(|v| v == "true"),
        version_id: header(h, "x-amz-version-id"),
        ..Default::default()
    })
}

pub(super) async fn delete_many(
    store: &ExternalStore,
    i: DeleteObjectsInput,
) -> S3Result<DeleteObjectsOutput> {
    // S3's cap, as the local store has it: a larger request is refused whole.
    if i.delete.objects.len() > MAX_DELETE_KEYS {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema",
        ));
    }
    let body = xml::delete_body(&i.delete);
    // S3 requires an integrity check on DeleteObjects.
    let md5 = {
        use base64::Engine;
        use md5::Digest;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body))
    };
    let (_, text) = StoreRequest::new(
        Method::POST,
        Some(&i.bucket),
        None,
        S3ErrorCode::NoSuchBucket,
    )
    .flag("delete")
    .header("content-md5", Some(md5))?
    .bytes(body)
    .send_for_xml(store)
    .await?;
    xml::deleted(&text).map_err(|e| unreadable(store, "DeleteObjects", &e))
}
