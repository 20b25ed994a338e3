//! Buckets: Clary's bucket `b` is the store's `<prefix>b`; listings show only the store's
//! buckets under the prefix, by Clary's names.

use super::errors::unreadable;
use super::request::StoreRequest;
use super::xml;
use clary_store::ExternalStore;
use http::Method;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Result};

pub(super) async fn create(
    store: &ExternalStore,
    i: CreateBucketInput,
) -> S3Result<CreateBucketOutput> {
    // The store's buckets live in the store's region, whatever constraint the client named
    // for Clary's (which has one region, as the local store does).
    let body = store.create_bucket_body();
    let mut r = StoreRequest::new(
        Method::PUT,
        Some(&i.bucket),
        None,
        S3ErrorCode::NoSuchBucket,
    );
    if !body.is_empty() {
        r = r.bytes(body);
    }
    r.send(store).await?;
    Ok(CreateBucketOutput {
        location: Some(format!("/{}", i.bucket)),
    })
}

pub(super) async fn head(store: &ExternalStore, i: HeadBucketInput) -> S3Result<HeadBucketOutput> {
    StoreRequest::new(
        Method::HEAD,
        Some(&i.bucket),
        None,
        S3ErrorCode::NoSuchBucket,
    )
    .send(store)
    .await?;
    Ok(HeadBucketOutput::default())
}

pub(super) async fn location(
    store: &ExternalStore,
    i: GetBucketLocationInput,
) -> S3Result<GetBucketLocationOutput> {
    let (_, text) = StoreRequest::new(
        Method::GET,
        Some(&i.bucket),
        None,
        S3ErrorCode::NoSuchBucket,
    )
    .flag("location")
    .send_for_xml(store)
    .await?;
    let constraint =
        xml::location(&text).map_err(|e| unreadable(store, "GetBucketLocation", &e))?;
    Ok(GetBucketLocationOutput {
        location_constraint: constraint.map(Into::into),
    })
}

pub(super) async fn list(
    store: &ExternalStore,
    i: ListBucketsInput,
) -> S3Result<ListBucketsOutput> {
    let (_, text) = StoreRequest::new(Method::GET, None, None, S3ErrorCode::NoSuchBucket)
        .send_for_xml(store)
        .await?;
    let all = xml::buckets(&text).map_err(|e| unreadable(store, "ListBuckets", &e))?;
    let wanted = i.prefix.unwrap_or_default();
    let buckets = all
        .into_iter()
        .filter_map(|b| {
            let name = store.clary_bucket(b.name.as_deref()?)?.to_string();
            name.starts_with(&wanted).then_some(Bucket {
                name: Some(name),
                ..b
            })
        })
        .collect();
    Ok(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(super::super::owner()),
        ..Default::default()
    })
}

pub(super) async fn delete(
    store: &ExternalStore,
    i: DeleteBucketInput,
) -> S3Result<DeleteBucketOutput> {
    StoreRequest::new(
        Method::DELETE,
        Some(&i.bucket),
        None,
        S3ErrorCode::NoSuchBucket,
    )
    .send(store)
    .await?;
    Ok(DeleteBucketOutput::default())
}
