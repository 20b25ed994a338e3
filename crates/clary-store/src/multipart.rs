//! S3 multipart uploads on the local store: parts are files in the upload's directory, joined
//! in order into one object on completion. Parts may arrive concurrently and out of order.

use crate::local::{LocalStore, validate_key, write_atomic};
use crate::{ObjectMeta, PutOptions, StoreError};
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadInfo {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated: DateTime<Utc>,
    pub options: PutOptions,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartInfo {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub checksum_crc32: String,
}

/// S3's limits: parts are numbered 1..=10000 and all but the last are at least 5 MiB.
pub const MAX_PART_NUMBER: u32 = 10_000;
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

impl LocalStore {
    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf, StoreError> {
        // Upload ids are ours (hex); anything else cannot name an upload.
        if upload_id.is_empty() || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NoSuchUpload(upload_id.to_string()));
        }
        let dir = self.uploads_dir().join(upload_id);
        if dir.join("upload.json").is_file() {
            Ok(dir)
        } else {
            Err(StoreError::NoSuchUpload(upload_id.to_string()))
        }
    }

    /// Locks an upload for completing or aborting it: an flock on its `upload.json`, held until
    /// the returned file is dropped. Concurrent completions of one upload (from any process
    /// sharing the store) then run one at a time, and each finds the upload as the one before
    /// left it: gone (`NoSuchUpload`) once completed or aborted.
    fn lock_upload(&self, upload_id: &str) -> Result<(File, PathBuf), StoreError> {
        let dir = self.upload_dir(upload_id)?;
        let file = match File::open(dir.join("upload.json")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchUpload(upload_id.to_string()));
            }
            Err(e) => return Err(StoreError::Io(format!("opening upload {upload_id}: {e}"))),
        };
        file.lock()
            .map_err(|e| StoreError::Io(format!("locking upload {upload_id}: {e}")))?;
        let dir = self.upload_dir(upload_id)?;
        Ok((file, dir))
    }

    pub fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        options: PutOptions,
    ) -> Result<UploadInfo, StoreError> {
        self.existing_bucket_dir(bucket)?;
        validate_key(key)?;
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.uploads_dir().join(&upload_id);
        fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
        let info = UploadInfo {
            upload_id,
            bucket: bucket.to_string(),
            key: key.to_string(),
            initiated: Utc::now(),
            options,
        };
        let json = serde_json::to_vec(&info).map_err(|e| StoreError::Io(e.to_string()))?;
        write_atomic(&self.tmp_dir(), &dir.join("upload.json"), &json)?;
        Ok(info)
    }

    pub fn upload_info(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<UploadInfo, StoreError> {
        let dir = self.upload_dir(upload_id)?;
        let bytes = fs::read(dir.join("upload.json")).map_err(|e| StoreError::Io(e.to_string()))?;
        let info: UploadInfo =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Io(e.to_string()))?;
        if info.bucket != bucket || info.key != key {
            return Err(StoreError::NoSuchUpload(upload_id.to_string()));
        }
        Ok(info)
    }

    /// Stores one part from `reader`, replacing an earlier upload of the same number. With
    /// `expected_crc32` (base64, as S3 clients send it) a part whose bytes do not match is
    /// refused and the earlier upload of that number stays.
    pub fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        expected_crc32: Option<&str>,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<PartInfo, StoreError> {
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(StoreError::InvalidArgument(format!(
                "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive; got {part_number}"
            )));
        }
        self.upload_info(bucket, key, upload_id)?;
        let dir = self.upload_dir(upload_id)?;
        let (tmp, file) = crate::tmp::create(&self.tmp_dir(), "p")?;
        let mut hashing = HashingFile {
            file,
            md5: Md5::new(),
            crc32: crc32fast::Hasher::new(),
            size: 0,
        };
        if let Err(e) = write(&mut hashing) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Io(format!("receiving part {part_number}: {e}")));
        }
        let HashingFile {
            file,
            md5,
            crc32,
            size,
        } = hashing;
        let part = PartInfo {
            part_number,
            etag: format!("\"{}\"", hex::encode(md5.finalize())),
            size,
            last_modified: Utc::now(),
            checksum_crc32: crate::b64(&crc32.finalize().to_be_bytes()),
        };
        if expected_crc32.is_some_and(|want| want != part.checksum_crc32) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::BadDigest("CRC32"));
        }
        let stored = fs::rename(&tmp, dir.join(format!("part-{part_number:05}")));
        // Open (locked) until renamed, so no clean-up takes it (see `tmp`).
        drop(file);
        stored.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::Io(format!("storing part {part_number}: {e}"))
        })?;
        let json = serde_json::to_vec(&part).map_err(|e| StoreError::Io(e.to_string()))?;
        write_atomic(
            &self.tmp_dir(),
            &dir.join(format!("part-{part_number:05}.json")),
            &json,
        )?;
        Ok(part)
    }

    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>, StoreError> {
        self.upload_info(bucket, key, upload_id)?;
        let dir = self.upload_dir(upload_id)?;
        let mut parts = Vec::new();
        for entry in fs::read_dir(&dir)
            .map_err(|e| StoreError::Io(e.to_string()))?
            .flatten()
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("part-") && name.ends_with(".json") {
                let bytes = fs::read(entry.path()).map_err(|e| StoreError::Io(e.to_string()))?;
                parts.push(
                    serde_json::from_slice::<PartInfo>(&bytes)
                        .map_err(|e| StoreError::Io(e.to_string()))?,
                );
            }
        }
        parts.sort_by_key(|p| p.part_number);
        Ok(parts)
    }

    pub fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadInfo>, StoreError> {
        self.existing_bucket_dir(bucket)?;
        let mut out = Vec::new();
        for entry in fs::read_dir(self.uploads_dir())
            .map_err(|e| StoreError::Io(e.to_string()))?
            .flatten()
        {
            if let Ok(bytes) = fs::read(entry.path().join("upload.json"))
                && let Ok(info) = serde_json::from_slice::<UploadInfo>(&bytes)
                && info.bucket == bucket
            {
                out.push(info);
            }
        }
        out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
        Ok(out)
    }

    /// Joins the named parts, in the order given, into the object. `parts` pairs part numbers
    /// with the ETags the client got back; both must match what was stored.
    pub fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectMeta, StoreError> {
        let (_lock, dir) = self.lock_upload(upload_id)?;
        let info = self.upload_info(bucket, key, upload_id)?;
        if parts.is_empty() {
            return Err(StoreError::MalformedXml(
                "You must specify at least one part to complete a multipart upload".into(),
            ));
        }
        let stored = self.list_parts(bucket, key, upload_id)?;
        let mut chosen = Vec::with_capacity(parts.len());
        let mut last = 0;
        for (n, etag) in parts {
            if *n <= last {
                return Err(StoreError::InvalidPartOrder);
            }
            last = *n;
            let part = stored
                .iter()
                .find(|p| p.part_number == *n && p.etag.trim_matches('"') == etag.trim_matches('"'))
                .ok_or(StoreError::InvalidPart(*n))?;
            chosen.push(part.clone());
        }
        if let Some(small) = chosen[..chosen.len() - 1]
            .iter()
            .find(|p| p.size < MIN_PART_SIZE)
        {
            return Err(StoreError::EntityTooSmall(small.part_number));
        }
        let mut writer = self.writer(bucket, key)?;
        let mut etag_md5 = Md5::new();
        for part in &chosen {
            let mut f = File::open(dir.join(format!("part-{:05}", part.part_number)))
                .map_err(|e| StoreError::Io(format!("opening part {}: {e}", part.part_number)))?;
            io::copy(&mut f, &mut writer)
                .map_err(|e| StoreError::Io(format!("joining parts: {e}")))?;
            let raw = hex::decode(part.etag.trim_matches('"'))
                .map_err(|e| StoreError::Io(e.to_string()))?;
            etag_md5.update(&raw);
        }
        let mut options = info.options;
        options.etag = Some(format!(
            "\"{}-{}\"",
            hex::encode(etag_md5.finalize()),
            chosen.len()
        ));
        options.parts = Some(chosen.len() as u32);
        // A whole-object checksum of a multipart object is composite on S3; returning none is
        // allowed and keeps clients from validating a value we did not compute their way.
        options.checksum_crc32 = None;
        options.checksum_sha256 = None;
        let meta = writer.commit(options)?;
        // Removed while still locked, so a waiting completion finds the upload gone.
        fs::remove_dir_all(&dir)
            .map_err(|e| StoreError::Io(format!("removing upload {upload_id}: {e}")))?;
        Ok(meta)
    }

    pub fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let (_lock, dir) = self.lock_upload(upload_id)?;
        self.upload_info(bucket, key, upload_id)?;
        fs::remove_dir_all(&dir)
            .map_err(|e| StoreError::Io(format!("removing upload {upload_id}: {e}")))
    }
}

struct HashingFile {
    file: File,
    md5: Md5,
    crc32: crc32fast::Hasher,
    size: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.md5.update(&buf[..n]);
        self.crc32.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_completions_of_one_upload_end_with_exactly_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.create_bucket("mp-bucket").unwrap();
        for round in 0..5 {
            let up = store
                .create_upload("mp-bucket", "k", PutOptions::default())
                .unwrap();
            let big = vec![round as u8; MIN_PART_SIZE as usize];
            let p1 = store
                .upload_part("mp-bucket", "k", &up.upload_id, 1, None, |w| {
                    w.write_all(&big)
                })
                .unwrap();
            let p2 = store
                .upload_part("mp-bucket", "k", &up.upload_id, 2, None, |w| {
                    w.write_all(b"tail")
                })
                .unwrap();
            let parts = [(1, p1.etag), (2, p2.etag)];
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| store.complete_upload("mp-bucket", "k", &up.upload_id, &parts))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(won, 1, "{results:?}");
            for r in &results {
                if let Err(e) = r {
                    assert_eq!(*e, StoreError::NoSuchUpload(up.upload_id.clone()));
                }
            }
            assert_eq!(
                store.head("mp-bucket", "k").unwrap().size,
                MIN_PART_SIZE + 4
            );
        }
        // An abort waits for a completion in the same way.
        let up = store
            .create_upload("mp-bucket", "a", PutOptions::default())
            .unwrap();
        store.abort_upload("mp-bucket", "a", &up.upload_id).unwrap();
        assert_eq!(
            store
                .abort_upload("mp-bucket", "a", &up.upload_id)
                .unwrap_err(),
            StoreError::NoSuchUpload(up.upload_id.clone())
        );
    }
}
