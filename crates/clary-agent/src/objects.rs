//! Where a host gets its objects (channels, code, checkpoints) and puts its artifacts: the
//! embedded store's directory when the host shares the server's disk (files are hard-linked
//! in, no bytes copied), or the server's S3 API over HTTP when it does not (a cluster node).
//! Every method blocks; call them from blocking threads, never on the async runtime.

use clary_client::SignedClient;
use clary_sigv4::Signer;
use clary_store::{LocalStore, PutOptions};
use std::io::{self, Read};
use std::path::Path;
use tokio::runtime::Handle;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: String,
    pub size: u64,
}

#[derive(Clone)]
pub enum Objects {
    Local(LocalStore),
    Http(HttpObjects),
}

/// The server's S3 API, signed with the job's key pair.
#[derive(Clone)]
pub struct HttpObjects {
    client: SignedClient,
    handle: Handle,
}

fn link_or_copy(source: &Path, target: &Path) -> io::Result<()> {
    std::fs::hard_link(source, target).or_else(|_| std::fs::copy(source, target).map(|_| ()))
}

impl Objects {
    /// The embedded store at `root`.
    pub fn local(root: &Path) -> Result<Self, String> {
        LocalStore::open(root)
            .map(Objects::Local)
            .map_err(|e| format!("opening the object store at {}: {e}", root.display()))
    }

    /// The S3 API at `base` (the server's URL); `handle` runs the requests.
    pub fn http(base: &str, signer: Signer, handle: Handle) -> Self {
        Objects::Http(HttpObjects {
            client: SignedClient::new(base, signer),
            handle,
        })
    }

    /// The objects under `prefix`, in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, String> {
        match self {
            Objects::Local(store) => store
                .list(bucket, prefix)
                .map(|v| {
                    v.into_iter()
                        .map(|m| ObjectRef {
                            key: m.key,
                            size: m.size,
                        })
                        .collect()
                })
                .map_err(|e| e.to_string()),
            Objects::Http(h) => h.list(bucket, prefix),
        }
    }

    /// Reads an object as a stream.
    pub fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, String> {
        match self {
            Objects::Local(store) => store
                .open_object(bucket, key)
                .map(|(_, f)| Box::new(f) as Box<dyn Read + Send>)
                .map_err(|e| e.to_string()),
            Objects::Http(h) => h.reader(bucket, key),
        }
    }

    pub fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.reader(bucket, key)?
            .read_to_end(&mut out)
            .map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))?;
        Ok(out)
    }

    /// Makes the object appear at `target`: a hard link of the stored file when the store is
    /// local, a download otherwise.
    pub fn fetch_to(&self, bucket: &str, key: &str, target: &Path) -> Result<(), String> {
        let _ = std::fs::remove_file(target);
        if let Objects::Local(store) = self {
            for _ in 0..3 {
                let (_, source) = store.data_path(bucket, key).map_err(|e| e.to_string())?;
                // A failed link means the object was replaced since the lookup: look again.
                if link_or_copy(&source, target).is_ok() {
                    return Ok(());
                }
            }
            return Err(format!(
                "s3://{bucket}/{key} kept changing while being staged"
            ));
        }
        let mut reader = self.reader(bucket, key)?;
        let mut file = std::fs::File::create(target)
            .map_err(|e| format!("creating {}: {e}", target.display()))?;
        io::copy(&mut reader, &mut file)
            .map_err(|e| format!("downloading s3://{bucket}/{key}: {e}"))?;
        Ok(())
    }

    /// Stores what `fill` writes as an object: straight into the store when it is local,
    /// through the file `scratch` and one upload otherwise. Returns its size.
    pub fn put_written(
        &self,
        bucket: &str,
        key: &str,
        content_type: Option<&str>,
        scratch: &Path,
        fill: &mut dyn FnMut(&mut dyn io::Write) -> io::Result<()>,
    ) -> Result<u64, String> {
        match self {
            Objects::Local(store) => {
                let mut writer = store.writer(bucket, key).map_err(|e| e.to_string())?;
                fill(&mut writer).map_err(|e| e.to_string())?;
                let opts = PutOptions {
                    content_type: content_type.map(String::from),
                    ..PutOptions::default()
                };
                writer
                    .commit(opts)
                    .map(|m| m.size)
                    .map_err(|e| e.to_string())
            }
            Objects::Http(_) => {
                let result = (|| {
                    let mut file = io::BufWriter::new(
                        std::fs::File::create(scratch)
                            .map_err(|e| format!("creating {}: {e}", scratch.display()))?,
                    );
                    fill(&mut file).map_err(|e| e.to_string())?;
                    io::Write::flush(&mut file).map_err(|e| e.to_string())?;
                    drop(file);
                    self.put_file(bucket, key, scratch, content_type)
                })();
                let _ = std::fs::remove_file(scratch);
                result
            }
        }
    }

    /// Stores the file at `path` as an object; returns its size.
    pub fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, String> {
        match self {
            Objects::Local(_) => {
                let mut file = std::fs::File::open(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                self.put_written(bucket, key, content_type, path, &mut |w| {
                    io::copy(&mut file, w).map(|_| ())
                })
            }
            Objects::Http(h) => h.put_file(bucket, key, path, content_type),
        }
    }
}

impl HttpObjects {
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, String> {
        let listed = self
            .handle
            .block_on(self.client.list_objects(bucket, prefix))
            .map_err(|e| format!("listing s3://{bucket}/{prefix}: {e}"))?;
        Ok(listed
            .into_iter()
            .map(|o| ObjectRef {
                key: o.key,
                size: o.size,
            })
            .collect())
    }

    fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, String> {
        let mut body = self
            .handle
            .block_on(self.client.get_object(bucket, key))
            .map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))?;
        // The body streams through a small bounded channel: the reader's pace is the download's.
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(8);
        self.handle.spawn(async move {
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
        Ok(Box::new(ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        }))
    }

    fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, String> {
        self.handle
            .block_on(
                self.client
                    .put_object_file(bucket, key, path, content_type, |_| {}),
            )
            .map_err(|e| format!("uploading s3://{bucket}/{key}: {e}"))
    }
}

/// A `Read` over the chunks a download task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
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
