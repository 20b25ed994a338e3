//! The embedded object store: one directory per bucket, objects committed by renaming their
//! metadata file into place, so a crash never leaves half an object visible.
//!
//! Layout under the root:
//! ```text
//! buckets/<bucket>/~bucket.json            bucket record (creation time)
//! buckets/<bucket>/<dirs>/<name>~m         object metadata; its existence is the object's
//! buckets/<bucket>/<dirs>/<name>~<id>~d    object data, named by the metadata
//! uploads/<upload-id>/                     multipart uploads in progress
//! tmp/                                     files being written (same filesystem, for rename)
//! ```

use crate::key_path::{self, META_SUFFIX};
use crate::{Fetched, ObjectError, ObjectMeta, ObjectRef, ObjectStore, PutOptions, StoreError};
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const BUCKET_RECORD: &str = "~bucket.json";
/// The longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub created: DateTime<Utc>,
}

/// A local-directory object store. Cheap to clone; clones share the commit lock.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    commit_lock: Arc<Mutex<()>>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::Io(format!("{what}: {e}"))
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename).
pub(crate) fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let (tmp, mut file) = crate::tmp::create(tmp_dir, "w")?;
    if let Err(e) = file.write_all(bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::Io(format!("writing {}: {e}", tmp.display())));
    }
    let renamed = rename_into(&tmp, path);
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    // The file stays open (locked) until renamed, so no clean-up takes it (see `tmp`).
    drop(file);
    renamed
}

/// Renames `from` to `to`, creating `to`'s directory; retries once because a concurrent delete
/// may prune an empty directory between the create and the rename.
fn rename_into(from: &Path, to: &Path) -> Result<(), StoreError> {
    for attempt in 0..2 {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        match fs::rename(from, to) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => continue,
            Err(e) => {
                return Err(StoreError::Io(format!(
                    "renaming into {}: {e}",
                    to.display()
                )));
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

pub fn validate_bucket_name(name: &str) -> Result<(), StoreError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends = name
        .bytes()
        .next()
        .zip(name.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if (3..=63).contains(&name.len()) && ok_chars && ok_ends && !name.contains("..") {
        Ok(())
    } else {
        Err(StoreError::InvalidBucketName(name.to_string()))
    }
}

impl LocalStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for d in ["buckets", "uploads", "tmp"] {
            fs::create_dir_all(root.join(d))
                .map_err(io_err(format!("creating {}", root.join(d).display())))?;
        }
        // What a crash cut short; files still being written (by any process) are kept.
        crate::tmp::remove_abandoned(&root.join("tmp"));
        Ok(LocalStore {
            root,
            commit_lock: Arc::new(Mutex::new(())),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join("buckets").join(bucket)
    }

    /// The bucket directory, or `NoSuchBucket`.
    pub(crate) fn existing_bucket_dir(&self, bucket: &str) -> Result<PathBuf, StoreError> {
        let dir = self.bucket_dir(bucket);
        if validate_bucket_name(bucket).is_ok() && dir.join(BUCKET_RECORD).is_file() {
            Ok(dir)
        } else {
            Err(StoreError::NoSuchBucket(bucket.to_string()))
        }
    }

    pub fn create_bucket(&self, bucket: &str) -> Result<BucketInfo, StoreError> {
        validate_bucket_name(bucket)?;
        let dir = self.bucket_dir(bucket);
        if dir.join(BUCKET_RECORD).is_file() {
            return Err(StoreError::BucketAlreadyOwnedByYou(bucket.to_string()));
        }
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let info = BucketInfo {
            name: bucket.to_string(),
            created: Utc::now(),
        };
        let json = serde_json::to_vec(&info).map_err(|e| StoreError::Io(e.to_string()))?;
        write_atomic(&self.tmp_dir(), &dir.join(BUCKET_RECORD), &json)?;
        Ok(info)
    }

    pub fn head_bucket(&self, bucket: &str) -> Result<BucketInfo, StoreError> {
        let dir = self.existing_bucket_dir(bucket)?;
        let bytes = fs::read(dir.join(BUCKET_RECORD)).map_err(io_err("reading bucket record"))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Io(format!("bucket record of {bucket}: {e}")))
    }

    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("buckets")).map_err(io_err("listing buckets"))? {
            let entry = entry.map_err(io_err("listing buckets"))?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(info) = self.head_bucket(name)
            {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn delete_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let dir = self.existing_bucket_dir(bucket)?;
        if !self.list(bucket, "")?.is_empty() {
            return Err(StoreError::BucketNotEmpty(bucket.to_string()));
        }
        fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))
    }

    fn read_meta(&self, bucket_dir: &Path, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = bucket_dir.join(key_path::meta_path(key));
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Io(format!("metadata of {key}: {e}"))),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                Ok(None)
            }
            Err(e) => Err(StoreError::Io(format!("reading {}: {e}", path.display()))),
        }
    }

    pub fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let dir = self.existing_bucket_dir(bucket)?;
        self.read_meta(&dir, key)?
            .ok_or_else(|| StoreError::NoSuchKey(key.to_string()))
    }

    /// The path of an object's data file (never write to it).
    pub fn data_path(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, PathBuf), StoreError> {
        let meta = self.head(bucket, key)?;
        let path = self.data_path_of(bucket, &meta);
        Ok((meta, path))
    }

    /// The data file of an object whose metadata the caller already has (from [`list`](Self::list)),
    /// without reading the metadata again. The file may have been replaced since; callers that
    /// open it should expect `NotFound` in that case.
    pub fn data_path_of(&self, bucket: &str, meta: &ObjectMeta) -> PathBuf {
        let (dir, _) = key_path::split(&meta.key);
        self.bucket_dir(bucket).join(dir).join(&meta.data_file)
    }

    /// Opens an object for reading. The handle stays valid even if the object is replaced.
    pub fn open_object(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, File), StoreError> {
        // A concurrent overwrite may remove the data file between reading the metadata and
        // opening it; the second read then sees the new object.
        for _ in 0..3 {
            let (meta, path) = self.data_path(bucket, key)?;
            match File::open(&path) {
                Ok(f) => return Ok((meta, f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io(format!("opening {}: {e}", path.display()))),
            }
        }
        Err(StoreError::Io(format!(
            "{key} kept changing while being opened; try again"
        )))
    }

    pub fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, StoreError> {
        let (_, mut f) = self.open_object(bucket, key)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(io_err(format!("reading {key}")))?;
        Ok(buf)
    }

    /// Starts writing a new object; nothing is visible until [`ObjectWriter::commit`].
    pub fn writer(&self, bucket: &str, key: &str) -> Result<ObjectWriter, StoreError> {
        self.existing_bucket_dir(bucket)?;
        validate_key(key)?;
        ObjectWriter::new(self.clone(), bucket, key)
    }

    pub fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
        opts: PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        let mut w = self.writer(bucket, key)?;
        w.write_all(bytes)
            .map_err(io_err(format!("writing {key}")))?;
        w.commit(opts)
    }

    /// Makes `data` (a finished file in `tmp/`) the object `key`, replacing any older version.
    pub(crate) fn commit(
        &self,
        bucket: &str,
        key: &str,
        data: &Path,
        mut meta: ObjectMeta,
    ) -> Result<ObjectMeta, StoreError> {
        let bucket_dir = self.existing_bucket_dir(bucket)?;
        let (dir, name) = key_path::split(key);
        let dir = bucket_dir.join(dir);
        meta.data_file = format!(
            "{name}~{}{}",
            uuid::Uuid::new_v4().simple(),
            key_path::DATA_SUFFIX
        );
        rename_into(data, &dir.join(&meta.data_file))?;
        let json = serde_json::to_vec(&meta).map_err(|e| StoreError::Io(e.to_string()))?;
        let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.read_meta(&bucket_dir, key)?;
        write_atomic(
            &self.tmp_dir(),
            &dir.join(format!("{name}{META_SUFFIX}")),
            &json,
        )?;
        if let Some(old) = old
            && old.data_file != meta.data_file
        {
            let _ = fs::remove_file(dir.join(old.data_file));
        }
        Ok(meta)
    }

    pub fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let bucket_dir = self.existing_bucket_dir(bucket)?;
        let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(meta) = self.read_meta(&bucket_dir, key)? else {
            return Ok(());
        };
        let (dir, name) = key_path::split(key);
        let dir = bucket_dir.join(dir);
        fs::remove_file(dir.join(format!("{name}{META_SUFFIX}")))
            .map_err(io_err(format!("deleting {key}")))?;
        let _ = fs::remove_file(dir.join(meta.data_file));
        // Prune directories left empty, up to the bucket.
        let mut d = dir.as_path();
        while d != bucket_dir && fs::remove_dir(d).is_ok() {
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        Ok(())
    }

    pub fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        replace: Option<PutOptions>,
    ) -> Result<ObjectMeta, StoreError> {
        let (src_meta, mut f) = self.open_object(src_bucket, src_key)?;
        let mut w = self.writer(dst_bucket, dst_key)?;
        io::copy(&mut f, &mut w).map_err(io_err(format!("copying {src_key}")))?;
        let opts = replace.unwrap_or_else(|| src_meta.put_options());
        w.commit(opts)
    }

    /// Every object whose key starts with `prefix`, sorted by key (S3's UTF-8 byte order).
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let bucket_dir = self.existing_bucket_dir(bucket)?;
        // Only the prefix's complete segments narrow the walk; the rest is filtered.
        let (start, start_key) = match prefix.rfind('/') {
            Some(i) => {
                let (dir, key) = key_path::prefix_dir(&prefix[..=i]);
                (bucket_dir.join(dir), key)
            }
            None => (bucket_dir.clone(), String::new()),
        };
        let mut out = Vec::new();
        walk(&start, &start_key, &mut |key, meta_path| {
            // A hashed leaf's key is known only from its metadata.
            if key.is_none_or(|k| k.starts_with(prefix))
                && let Ok(bytes) = fs::read(meta_path)
                && let Ok(meta) = serde_json::from_slice::<ObjectMeta>(&bytes)
                && meta.key.starts_with(prefix)
            {
                out.push(meta);
            }
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Visits every committed object below `dir`, whose keys all start with `key_prefix`, with its
/// key when the name tells it (`None` for a hashed leaf).
fn walk(
    dir: &Path,
    key_prefix: &str,
    visit: &mut dyn FnMut(Option<&str>, &Path),
) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Io(format!("listing {}: {e}", dir.display()))),
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let path = entry.path();
        if let Some(enc) = name.strip_suffix(META_SUFFIX) {
            if key_path::is_hashed(enc) {
                visit(None, &path);
            } else if !enc.contains('~') || enc == "~e" {
                let key = format!("{key_prefix}{}", key_path::decode_segment(enc));
                visit(Some(&key), &path);
            }
        } else if (!name.contains('~') || name == "~e")
            && entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
        {
            let sub = format!("{key_prefix}{}/", key_path::decode_segment(&name));
            walk(&path, &sub, visit)?;
        }
    }
    Ok(())
}

/// S3's key rule: 1 to 1,024 bytes of UTF-8 (a `&str` is UTF-8 already).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey(
            "object keys must be at least 1 byte long".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::KeyTooLong(key.len()));
    }
    Ok(())
}

/// Streams a new object into a temporary file, hashing as it goes; [`commit`](Self::commit)
/// makes it visible. Dropping the writer without committing leaves nothing behind.
pub struct ObjectWriter {
    store: LocalStore,
    bucket: String,
    key: String,
    tmp: PathBuf,
    file: Option<File>,
    md5: Md5,
    crc32: crc32fast::Hasher,
    sha256: sha2::Sha256,
    size: u64,
}

impl ObjectWriter {
    fn new(store: LocalStore, bucket: &str, key: &str) -> Result<Self, StoreError> {
        let (tmp, file) = crate::tmp::create(&store.tmp_dir(), "o")?;
        Ok(ObjectWriter {
            store,
            bucket: bucket.to_string(),
            key: key.to_string(),
            tmp,
            file: Some(file),
            md5: Md5::new(),
            crc32: crc32fast::Hasher::new(),
            sha256: sha2::Sha256::new(),
            size: 0,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Base64 of the big-endian CRC32 of what was written (the `x-amz-checksum-crc32` form).
    pub fn crc32_base64(&self) -> String {
        crate::b64(&self.crc32.clone().finalize().to_be_bytes())
    }

    pub fn sha256_base64(&self) -> String {
        crate::b64(&self.sha256.clone().finalize())
    }

    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5.clone().finalize())
    }

    pub fn commit(mut self, opts: PutOptions) -> Result<ObjectMeta, StoreError> {
        let file = self.file.take().expect("commit consumes the writer");
        file.sync_data()
            .map_err(io_err(format!("syncing {}", self.key)))?;
        let meta = ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            etag: opts
                .etag
                .clone()
                .unwrap_or_else(|| format!("\"{}\"", self.md5_hex())),
            last_modified: Utc::now(),
            content_type: opts.content_type,
            content_encoding: opts.content_encoding,
            content_disposition: opts.content_disposition,
            content_language: opts.content_language,
            cache_control: opts.cache_control,
            user_metadata: opts.user_metadata,
            checksum_crc32: opts.checksum_crc32,
            checksum_sha256: opts.checksum_sha256,
            parts: opts.parts,
            data_file: String::new(),
        };
        let tmp = self.tmp.clone();
        let result = self.store.commit(&self.bucket, &self.key, &tmp, meta);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        // Open (locked) until renamed into place, so no clean-up takes it (see `tmp`).
        drop(file);
        result
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already committed"))?;
        let n = f.write(buf)?;
        self.md5.update(&buf[..n]);
        self.crc32.update(&buf[..n]);
        sha2::Digest::update(&mut self.sha256, &buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A host that shares the store's disk: channels appear as clones (or copies) of the stored
/// files and artifacts are written straight into the store.
impl ObjectStore for LocalStore {
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, ObjectError> {
        Ok(LocalStore::list(self, bucket, prefix)?
            .into_iter()
            .map(|m| ObjectRef {
                key: m.key,
                size: m.size,
                last_modified: Some(m.last_modified),
            })
            .collect())
    }

    fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
        let (_, file) = self.open_object(bucket, key)?;
        Ok(Box::new(file))
    }

    fn bucket_exists(&self, bucket: &str) -> Result<bool, ObjectError> {
        match self.head_bucket(bucket) {
            Ok(_) => Ok(true),
            Err(StoreError::NoSuchBucket(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn object_size(&self, bucket: &str, key: &str) -> Result<Option<u64>, ObjectError> {
        match self.head(bucket, key) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(StoreError::NoSuchKey(_) | StoreError::NoSuchBucket(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, ObjectError> {
        let mut file =
            File::open(path).map_err(ObjectError::io(format!("reading {}", path.display())))?;
        self.put_written(bucket, key, content_type, path, &mut |w| {
            io::copy(&mut file, w).map(|_| ())
        })
    }

    /// A clone of the stored file where the filesystem can make one, a copy where it cannot:
    /// never a link, so nothing written to the staged file reaches the store.
    fn fetch_to(&self, bucket: &str, key: &str, target: &Path) -> Result<Fetched, ObjectError> {
        let _ = fs::remove_file(target);
        // The open handle stays valid even if the object is replaced meanwhile.
        let (_, mut source) = self.open_object(bucket, key)?;
        let failed = |what: &str| ObjectError::io(format!("{what} {}", target.display()));
        let mut file = File::create(target).map_err(failed("creating"))?;
        if crate::reflink::clone_file(&source, &file).is_ok() {
            return Ok(Fetched::Reflinked);
        }
        // std copies File to File with copy_file_range: in the kernel, no user-space buffer.
        io::copy(&mut source, &mut file).map_err(failed("copying into"))?;
        Ok(Fetched::Copied)
    }

    /// Writes straight into the store; `scratch` is not needed.
    fn put_written(
        &self,
        bucket: &str,
        key: &str,
        content_type: Option<&str>,
        _scratch: &Path,
        fill: &mut dyn FnMut(&mut dyn io::Write) -> io::Result<()>,
    ) -> Result<u64, ObjectError> {
        let mut writer = self.writer(bucket, key)?;
        fill(&mut writer).map_err(ObjectError::Fill)?;
        let opts = PutOptions {
            content_type: content_type.map(String::from),
            ..PutOptions::default()
        };
        Ok(writer.commit(opts)?.size)
    }
}
