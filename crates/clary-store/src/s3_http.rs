//! The server's S3 API as an [`ObjectStore`], for a host that does not share the store's disk
//! (a cluster node): listings, downloads and uploads over HTTP, signed with the host's key pair.

use crate::{ObjectError, ObjectRef, ObjectStore};
use bytes::Bytes;
use clary_client::SignedClient;
use std::io::{self, Read};
use std::path::Path;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Objects over the S3 API of the server `client` talks to.
#[derive(Clone)]
pub struct S3HttpStore {
    client: SignedClient,
    /// Runs the requests; the store's callers block on blocking threads.
    handle: Handle,
}

impl S3HttpStore {
    /// The S3 API behind `client`; `handle` runs its requests.
    pub fn new(client: SignedClient, handle: Handle) -> Self {
        S3HttpStore { client, handle }
    }
}

fn remote(what: String) -> impl FnOnce(clary_client::ClientError) -> ObjectError {
    move |source| ObjectError::Remote { what, source }
}

impl ObjectStore for S3HttpStore {
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, ObjectError> {
        let listed = self
            .handle
            .block_on(self.client.list_objects(bucket, prefix))
            .map_err(remote(format!("listing s3://{bucket}/{prefix}")))?;
        Ok(listed.into_iter().map(ObjectRef::listed).collect())
    }

    fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
        let body = self
            .handle
            .block_on(self.client.get_object(bucket, key))
            .map_err(remote(format!("reading s3://{bucket}/{key}")))?;
        Ok(body_reader(body, &self.handle))
    }

    fn bucket_exists(&self, bucket: &str) -> Result<bool, ObjectError> {
        self.handle
            .block_on(self.client.head_bucket(bucket))
            .map_err(remote(format!("looking for the bucket {bucket}")))
    }

    fn object_size(&self, bucket: &str, key: &str) -> Result<Option<u64>, ObjectError> {
        Ok(self
            .handle
            .block_on(self.client.head_object(bucket, key))
            .map_err(remote(format!("looking for s3://{bucket}/{key}")))?
            .map(|h| h.size))
    }

    fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, ObjectError> {
        self.handle
            .block_on(
                self.client
                    .put_object_file(bucket, key, path, content_type, |_| {}),
            )
            .map_err(remote(format!("uploading s3://{bucket}/{key}")))
    }
}

/// A blocking `Read` over a response's body, which `handle` downloads.
pub fn response_reader(resp: reqwest::Response, handle: &Handle) -> Box<dyn Read + Send> {
    body_reader(clary_client::s3::ObjectBody::from(resp), handle)
}

fn body_reader(mut body: clary_client::s3::ObjectBody, handle: &Handle) -> Box<dyn Read + Send> {
    // The body streams through a small bounded channel: the reader's pace is the download's.
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    handle.spawn(async move {
        loop {
            let item = match body.chunk().await {
                Ok(Some(b)) => Ok(b),
                Ok(None) => return,
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Box::new(ChannelReader::new(rx))
}

/// A `Read` over the chunks a download task sends.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                // The sender is gone after the last chunk: end of the object.
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
