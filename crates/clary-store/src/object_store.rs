//! The seam between a host (a training agent, a model server) and wherever its objects live:
//! the embedded store's directory when the host shares the server's disk
//! ([`LocalStore`](crate::LocalStore): objects are cloned in where the filesystem can, copied
//! where it cannot, never linked, so a host cannot change a stored object), or the
//! server's S3 API over HTTP when it does not ([`S3HttpStore`](crate::S3HttpStore)), or an
//! external S3 store, for the server itself ([`ExternalStore`](crate::ExternalStore)) and for
//! hosts with URLs the server presigns ([`PresignedStore`](crate::PresignedStore)).
//!
//! Every method blocks; call them from blocking threads, never on an async runtime.

use crate::StoreError;
// The error module itself, not `presigned`, which depends on this seam.
use crate::presigned::error::DirectError;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: String,
    pub size: u64,
    /// When the store says.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

impl ObjectRef {
    /// An object of a listing over the S3 API.
    pub fn listed(o: clary_client::s3::ListedObject) -> Self {
        ObjectRef {
            key: o.key,
            size: o.size,
            last_modified: o
                .last_modified
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }
}

/// Why an object could not be read or stored. Each says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The local store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A call to the server's S3 API failed.
    #[error("{what}: {source}")]
    Remote {
        what: String,
        source: clary_client::ClientError,
    },
    /// A request straight to an external store failed; `what` names the object and the store.
    #[error("{what}: {source}")]
    Direct { what: String, source: DirectError },
    /// A local file (a download's target, an upload's source or scratch file) failed.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// The caller's writer failed while filling an object.
    #[error(transparent)]
    Fill(io::Error),
}

impl ObjectError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ObjectError {
        let what = what.into();
        move |source| ObjectError::Io { what, source }
    }
}

/// How [`ObjectStore::fetch_to`] made an object appear as a file. Each way gives the host a
/// file of its own: writing to it never changes the stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// A copy-on-write clone of the stored file (no bytes copied).
    Reflinked,
    /// A copy of the stored file (the filesystem cannot clone).
    Copied,
    /// Downloaded over the S3 API.
    Downloaded,
}

/// One object of [`ObjectStore::fetch_many`]: where it is, where it goes, and its size when a
/// listing said (a store may fetch a small object in one request then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchItem {
    pub bucket: String,
    pub key: String,
    pub target: PathBuf,
    pub size: Option<u64>,
}

/// What a host does with objects: list a prefix, read an object, make it appear as a file,
/// store a file or what a writer produces.
pub trait ObjectStore: Send + Sync {
    /// The objects under `prefix`, in key order.
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, ObjectError>;

    /// Reads an object as a stream.
    fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, ObjectError>;

    /// Stores the file at `path` as an object; returns its size.
    fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, ObjectError>;

    /// Whether the bucket exists (and this store's key may use it).
    fn bucket_exists(&self, bucket: &str) -> Result<bool, ObjectError>;

    /// An object's size, `None` when there is no such object.
    fn object_size(&self, bucket: &str, key: &str) -> Result<Option<u64>, ObjectError>;

    /// An object's bytes.
    fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, ObjectError> {
        let mut out = Vec::new();
        self.reader(bucket, key)?
            .read_to_end(&mut out)
            .map_err(ObjectError::io(format!("reading s3://{bucket}/{key}")))?;
        Ok(out)
    }

    /// Makes the object appear at `target` (replacing what is there) as a file of the
    /// caller's own. Here: a download; a store on the same disk clones or copies instead.
    fn fetch_to(&self, bucket: &str, key: &str, target: &Path) -> Result<Fetched, ObjectError> {
        let _ = std::fs::remove_file(target);
        let mut reader = self.reader(bucket, key)?;
        let mut file = std::fs::File::create(target)
            .map_err(ObjectError::io(format!("creating {}", target.display())))?;
        io::copy(&mut reader, &mut file)
            .map_err(ObjectError::io(format!("downloading s3://{bucket}/{key}")))?;
        Ok(Fetched::Downloaded)
    }

    /// Makes each object appear at its target as [`fetch_to`](Self::fetch_to) does, in order;
    /// stops at the first failure. Here: one after the other; a remote store fetches several
    /// at once.
    fn fetch_many(&self, items: &[FetchItem]) -> Result<Vec<Fetched>, ObjectError> {
        items
            .iter()
            .map(|i| self.fetch_to(&i.bucket, &i.key, &i.target))
            .collect()
    }

    /// Stores what `fill` writes as an object; returns its size. Here: through the file
    /// `scratch` (removed afterwards) and one upload; a local store writes straight in.
    fn put_written(
        &self,
        bucket: &str,
        key: &str,
        content_type: Option<&str>,
        scratch: &Path,
        fill: &mut dyn FnMut(&mut dyn io::Write) -> io::Result<()>,
    ) -> Result<u64, ObjectError> {
        let result = (|| {
            let mut file = io::BufWriter::new(
                std::fs::File::create(scratch)
                    .map_err(ObjectError::io(format!("creating {}", scratch.display())))?,
            );
            fill(&mut file).map_err(ObjectError::Fill)?;
            io::Write::flush(&mut file).map_err(ObjectError::Fill)?;
            drop(file);
            self.put_file(bucket, key, scratch, content_type)
        })();
        let _ = std::fs::remove_file(scratch);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalStore, PutOptions};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::sync::Mutex;

    /// A store that has only the three required methods, to exercise the provided ones the
    /// way the HTTP store uses them.
    #[derive(Default)]
    struct Remote(Mutex<BTreeMap<String, Vec<u8>>>);

    impl ObjectStore for Remote {
        fn list(&self, _: &str, prefix: &str) -> Result<Vec<ObjectRef>, ObjectError> {
            let objects = self.0.lock().unwrap();
            Ok(objects
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| ObjectRef {
                    key: k.clone(),
                    size: v.len() as u64,
                    last_modified: None,
                })
                .collect())
        }

        fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
            let objects = self.0.lock().unwrap();
            let data = objects.get(key).cloned().ok_or_else(|| {
                ObjectError::Store(StoreError::NoSuchKey(format!("{bucket}/{key}")))
            })?;
            Ok(Box::new(io::Cursor::new(data)))
        }

        fn bucket_exists(&self, _: &str) -> Result<bool, ObjectError> {
            Ok(true)
        }

        fn object_size(&self, _: &str, key: &str) -> Result<Option<u64>, ObjectError> {
            Ok(self.0.lock().unwrap().get(key).map(|v| v.len() as u64))
        }

        fn put_file(
            &self,
            _: &str,
            key: &str,
            path: &Path,
            _: Option<&str>,
        ) -> Result<u64, ObjectError> {
            let data = std::fs::read(path).map_err(ObjectError::io("reading"))?;
            let n = data.len() as u64;
            self.0.lock().unwrap().insert(key.to_string(), data);
            Ok(n)
        }
    }

    #[test]
    fn a_remote_store_downloads_and_uploads_through_scratch_files() {
        let dir = tempfile::tempdir().unwrap();
        let store: Box<dyn ObjectStore> = Box::new(Remote::default());
        let scratch = dir.path().join(".part");
        let n = store
            .put_written("b", "out/model.tar.gz", None, &scratch, &mut |w| {
                w.write_all(b"packed")
            })
            .unwrap();
        assert_eq!(n, 6);
        assert!(!scratch.exists(), "the scratch file is removed");
        assert_eq!(store.get_bytes("b", "out/model.tar.gz").unwrap(), b"packed");
        let target = dir.path().join("staged");
        std::fs::write(&target, b"stale").unwrap();
        store.fetch_to("b", "out/model.tar.gz", &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"packed");
        let failed = store.put_written("b", "k", None, &scratch, &mut |_| {
            Err(io::Error::other("packing failed"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "packing failed");
        assert!(!scratch.exists());
        let missing = store.get_bytes("b", "nope").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "The specified key does not exist: b/nope"
        );
    }

    #[test]
    fn the_local_store_links_objects_in_and_writes_straight_into_itself() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(dir.path().join("store")).unwrap();
        local.create_bucket("bkt").unwrap();
        local
            .put_bytes("bkt", "d/a b+c", b"abc", PutOptions::default())
            .unwrap();
        let store: &dyn ObjectStore = &local;
        assert_eq!(
            store.list("bkt", "d/").unwrap(),
            [ObjectRef {
                key: "d/a b+c".into(),
                size: 3,
                last_modified: Some(local.head("bkt", "d/a b+c").unwrap().last_modified),
            }]
        );
        let target = dir.path().join("staged");
        let how = store.fetch_to("bkt", "d/a b+c", &target).unwrap();
        assert!(
            matches!(how, Fetched::Reflinked | Fetched::Copied),
            "{how:?}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");
        // The staged file is the host's own: writing to it leaves the stored object as it was.
        assert_eq!(std::fs::metadata(&target).unwrap().nlink(), 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap()
            .write_all_at(b"XY", 0)
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"XYc");
        assert_eq!(local.get_bytes("bkt", "d/a b+c").unwrap(), b"abc");
        // Staging again replaces the changed file with the stored bytes.
        store.fetch_to("bkt", "d/a b+c", &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");
        let scratch = dir.path().join("never-made");
        let n = store
            .put_written(
                "bkt",
                "out",
                Some("application/x-tar"),
                &scratch,
                &mut |w| w.write_all(b"tarball"),
            )
            .unwrap();
        assert_eq!(n, 7);
        assert!(!scratch.exists());
        assert_eq!(
            local.head("bkt", "out").unwrap().content_type.as_deref(),
            Some("application/x-tar")
        );
        let file = dir.path().join("up.txt");
        std::fs::write(&file, b"uploaded").unwrap();
        assert_eq!(store.put_file("bkt", "up", &file, None).unwrap(), 8);
        assert_eq!(store.get_bytes("bkt", "up").unwrap(), b"uploaded");
        assert!(matches!(
            store.reader("bkt", "absent"),
            Err(ObjectError::Store(StoreError::NoSuchKey(_)))
        ));
    }
}
