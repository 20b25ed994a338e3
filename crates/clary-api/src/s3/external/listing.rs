//! ListObjects and ListObjectsV2: the client's parameters go to the store as they came, and
//! the store's page comes back as it is (keys, sizes, ETags, dates, common prefixes,
//! truncation and tokens, URL-encoded when the client asked for that), under Clary's bucket
//! name.

use super::errors::unreadable;
use super::request::StoreRequest;
use super::xml;
use clary_store::ExternalStore;
use http::Method;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Result};

pub(super) async fn v1(store: &ExternalStore, i: ListObjectsInput) -> S3Result<ListObjectsOutput> {
    let (_, text) = StoreRequest::new(
        Method::GET,
        Some(&i.bucket),
        None,
        S3ErrorCode::NoSuchBucket,
    )
    .param("delimiter", i.delimiter.as_deref())
    .param(
        "encoding-type",
        i.encoding_type.as_ref().map(|e| e.as_str()),
    )
    .param("marker", i.marker.as_deref())
    .param("max-keys", i.max_keys)
    .param("prefix", i.prefix.as_deref())
    .send_for_xml(store)
    .await?;
    let mut out = xml::list_objects(&text).map_err(|e| unreadable(store, "ListObjects", &e))?;
    out.name = Some(i.bucket);
    Ok(out)
}

pub(super) async fn v2(
    store: &ExternalStore,
    i: ListObjectsV2Input,
) -> S3Result<ListObjectsV2Output> {
    let (_, text) = StoreRequest::new(
        Method::GET,
        Some(&i.bucket),
        None,
        S3ErrorCode::NoSuchBucket,
    )
    .param("list-type", Some(2))
    .param("continuation-token", i.continuation_token.as_deref())
    .param("delimiter", i.delimiter.as_deref())
    .param(
        "encoding-type",
        i.encoding_type.as_ref().map(|e| e.as_str()),
    )
    .param("fetch-owner", i.fetch_owner)
    .param("max-keys", i.max_keys)
    .param("prefix", i.prefix.as_deref())
    .param("start-after", i.start_after.as_deref())
    .send_for_xml(store)
    .await?;
    let mut out =
        xml::list_objects_v2(&text).map_err(|e| unreadable(store, "ListObjectsV2", &e))?;
    out.name = Some(i.bucket);
    Ok(out)
}
