//! An external S3 store as a host reaches it: straight to the store, never through the server,
//! with a URL the server presigns for each request (the store's key pair stays on the
//! server). Plain HTTP, no signing here. Listings page by page, objects streamed or fetched in
//! parallel ranges, a channel's many objects several at once, large files up in parallel
//! parts; transient failures are retried and expired URLs presigned afresh.
//!
//! The transfers run on a small runtime of the store's own: a host's agent runs on one thread,
//! and a gigabyte in a thousand objects wants more than that.

pub(crate) mod error;
pub mod plan;
#[cfg(test)]
mod tests;
mod transfer;
pub mod wire;

pub use error::DirectError;
pub use plan::Tuning;
pub use wire::{
    ControlPresigner, MAX_BATCH, PRESIGN_OP, Presign, PresignBatch, PresignFuture, PresignRequest,
    PresignedBatch,
};

use crate::object_store::FetchItem;
use crate::{Fetched, ObjectError, ObjectRef, ObjectStore};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use transfer::Direct;

/// Objects in an external store, with URLs presigned by `Presign`.
pub struct PresignedStore {
    direct: Arc<Direct>,
    /// Always `Some` until dropped (taken then, to shut down without blocking).
    runtime: Option<tokio::runtime::Runtime>,
}

impl PresignedStore {
    pub fn new(presigner: Arc<dyn Presign>, tuning: Tuning) -> Result<Self, String> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("clary-objects")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the object transfer threads: {e}"))?;
        Ok(PresignedStore {
            direct: Arc::new(Direct::new(presigner, tuning)?),
            runtime: Some(runtime),
        })
    }

    /// Where the store is (`scheme://host:port`), as the server says. Runs on the store's own
    /// threads, so any async caller may await it.
    pub fn endpoint(
        &self,
    ) -> impl std::future::Future<Output = Result<String, ObjectError>> + Send + 'static {
        let direct = self.direct.clone();
        let task = self.runtime().spawn(async move { direct.endpoint().await });
        async move {
            let what = "asking the server where the object store is".to_string();
            match task.await {
                Ok(r) => r.map_err(|source| ObjectError::Direct { what, source }),
                Err(e) => Err(ObjectError::Direct {
                    what,
                    source: DirectError::Presign(e.to_string()),
                }),
            }
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime().block_on(f)
    }

    /// `"<doing> s3://bucket/key <from|to> the object store at <endpoint>"` and the error.
    fn failed(
        &self,
        doing: &str,
        bucket: &str,
        key: &str,
        dir: &str,
    ) -> impl FnOnce(DirectError) -> ObjectError {
        let what = format!(
            "{doing} s3://{bucket}/{key} {dir} {}",
            self.direct.store_name()
        );
        move |source| ObjectError::Direct { what, source }
    }
}

impl Drop for PresignedStore {
    fn drop(&mut self) {
        // The store may be dropped on an async thread, where a runtime may not block.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ObjectStore for PresignedStore {
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, ObjectError> {
        let d = &self.direct;
        self.block(d.list(bucket, prefix))
            .map_err(|e| self.failed("listing", bucket, prefix, "in")(e))
    }

    fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
        let request = PresignRequest::object("GET", bucket, key, String::new());
        let stream = self
            .block(self.direct.open(request))
            .map_err(|e| self.failed("reading", bucket, key, "from")(e))?;
        let what = format!(
            "reading s3://{bucket}/{key} from {}",
            self.direct.store_name()
        );
        // The body streams through a small bounded channel: the reader's pace is the download's.
        let (tx, rx) = mpsc::channel(8);
        let direct = self.direct.clone();
        self.runtime()
            .spawn(async move { direct.stream_to(stream, tx, what).await });
        Ok(Box::new(crate::s3_http::ChannelReader::new(rx)))
    }

    fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, ObjectError> {
        self.block(self.direct.put_file(bucket, key, path, content_type))
            .map_err(|e| self.failed("uploading", bucket, key, "to")(e))
    }

    fn bucket_exists(&self, bucket: &str) -> Result<bool, ObjectError> {
        let request = PresignRequest::bucket("HEAD", bucket, String::new());
        self.block(self.direct.head(request))
            .map(|r| r.is_some())
            .map_err(|e| self.failed("looking for", bucket, "", "in")(e))
    }

    fn object_size(&self, bucket: &str, key: &str) -> Result<Option<u64>, ObjectError> {
        let request = PresignRequest::object("HEAD", bucket, key, String::new());
        self.block(self.direct.head(request))
            // From the header: a HEAD's body is empty, and so would its length be.
            .map(|r| {
                r.map(|r| {
                    r.headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                })
            })
            .map_err(|e| self.failed("looking for", bucket, key, "in")(e))
    }

    fn fetch_to(&self, bucket: &str, key: &str, target: &Path) -> Result<Fetched, ObjectError> {
        self.fetch_many(&[FetchItem {
            bucket: bucket.into(),
            key: key.into(),
            target: target.into(),
            size: None,
        }])
        .map(|_| Fetched::Downloaded)
    }

    fn fetch_many(&self, items: &[FetchItem]) -> Result<Vec<Fetched>, ObjectError> {
        let batch = items
            .iter()
            .map(|i| (i.bucket.clone(), i.key.clone(), i.target.clone(), i.size))
            .collect();
        self.block(self.direct.fetch_many(batch))
            .map_err(|(bucket, key, e)| self.failed("reading", &bucket, &key, "from")(e))?;
        Ok(vec![Fetched::Downloaded; items.len()])
    }
}
