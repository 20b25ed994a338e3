//! Object storage for Clary: the embedded local-directory store behind the S3 API, the
//! [`ObjectStore`] seam through which hosts reach objects (that store on the same disk, the
//! server's S3 API over HTTP, or an external store with presigned URLs), and the tar.gz packing and safe extraction that training uses
//! for code and artifacts.

pub mod archive;
pub mod external;
pub mod key_path;
pub mod local;
pub mod multipart;
pub mod object_store;
pub mod presigned;
mod reflink;
pub mod s3_http;
mod tmp;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use external::{Addressing, ExternalStore, ExternalStoreConfig};
pub use local::{BucketInfo, LocalStore, ObjectWriter};
pub use object_store::{FetchItem, Fetched, ObjectError, ObjectRef, ObjectStore};
pub use presigned::{ControlPresigner, Presign, PresignRequest, PresignedStore};
pub use s3_http::S3HttpStore;

/// What S3 keeps about an object besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Quoted, as S3 returns it: `"<md5>"`, or `"<md5-of-md5s>-<parts>"` after multipart.
    pub etag: String,
    pub last_modified: DateTime<Utc>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    #[serde(default)]
    pub content_disposition: Option<String>,
    #[serde(default)]
    pub content_language: Option<String>,
    #[serde(default)]
    pub cache_control: Option<String>,
    #[serde(default)]
    pub user_metadata: BTreeMap<String, String>,
    /// Base64 big-endian CRC32 of the whole object, kept only when the client sent one and it
    /// matched; returned with `x-amz-checksum-mode: ENABLED`.
    #[serde(default)]
    pub checksum_crc32: Option<String>,
    #[serde(default)]
    pub checksum_sha256: Option<String>,
    #[serde(default)]
    pub parts: Option<u32>,
    /// The data file's name in the key's directory (see [`key_path`]).
    pub data_file: String,
}

impl ObjectMeta {
    /// The options that would recreate this object's metadata (for CopyObject's COPY directive).
    pub fn put_options(&self) -> PutOptions {
        PutOptions {
            content_type: self.content_type.clone(),
            content_encoding: self.content_encoding.clone(),
            content_disposition: self.content_disposition.clone(),
            content_language: self.content_language.clone(),
            cache_control: self.cache_control.clone(),
            user_metadata: self.user_metadata.clone(),
            ..PutOptions::default()
        }
    }
}

/// Metadata supplied when writing an object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    pub checksum_crc32: Option<String>,
    pub checksum_sha256: Option<String>,
    /// Set by multipart completion; otherwise the MD5 of the bytes.
    pub etag: Option<String>,
    pub parts: Option<u32>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("The specified bucket does not exist: {0}")]
    NoSuchBucket(String),
    #[error("The specified key does not exist: {0}")]
    NoSuchKey(String),
    #[error(
        "Your previous request to create the named bucket succeeded and you already own it: {0}"
    )]
    BucketAlreadyOwnedByYou(String),
    #[error("The bucket you tried to delete is not empty: {0}; delete its objects first")]
    BucketNotEmpty(String),
    #[error(
        "The specified bucket is not valid: {0:?}; names are 3-63 characters of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
    )]
    InvalidBucketName(String),
    #[error("{0}")]
    InvalidKey(String),
    #[error("Your key is too long: {0} bytes; the maximum is 1024 bytes of UTF-8")]
    KeyTooLong(usize),
    #[error(
        "The specified multipart upload does not exist: {0}; it may have been completed or aborted"
    )]
    NoSuchUpload(String),
    #[error("Part {0} could not be found or its ETag does not match the uploaded part")]
    InvalidPart(u32),
    #[error("The list of parts was not in ascending order; list parts by increasing part number")]
    InvalidPartOrder,
    #[error(
        "Part {0} is smaller than the minimum allowed size of 5 MiB; only the last part may be smaller"
    )]
    EntityTooSmall(u32),
    #[error("{0}")]
    MalformedXml(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("The {0} you specified did not match the calculated checksum.")]
    BadDigest(&'static str),
    #[error("storage error: {0}")]
    Io(String),
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn objects_commit_atomically_and_list_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.create_bucket("my-bucket").unwrap();
        assert!(matches!(
            store.create_bucket("my-bucket"),
            Err(StoreError::BucketAlreadyOwnedByYou(_))
        ));
        for key in ["b", "a/x", "a", "a/", "a/y/z", "c d"] {
            store
                .put_bytes("my-bucket", key, key.as_bytes(), PutOptions::default())
                .unwrap();
        }
        let keys: Vec<String> = store
            .list("my-bucket", "")
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["a", "a/", "a/x", "a/y/z", "b", "c d"]);
        let keys: Vec<String> = store
            .list("my-bucket", "a/y")
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["a/y/z"]);
        assert_eq!(store.get_bytes("my-bucket", "a/y/z").unwrap(), b"a/y/z");
        // An uncommitted writer leaves nothing behind, and the old version stays readable.
        let mut w = store.writer("my-bucket", "b").unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        assert_eq!(store.get_bytes("my-bucket", "b").unwrap(), b"b");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        let meta = store
            .put_bytes("my-bucket", "b", b"new", PutOptions::default())
            .unwrap();
        assert_eq!(
            meta.etag,
            format!(
                "\"{}\"",
                hex::encode(<md5::Md5 as md5::Digest>::digest(b"new"))
            )
        );
        assert_eq!(store.get_bytes("my-bucket", "b").unwrap(), b"new");
        assert!(matches!(
            store.delete_bucket("my-bucket"),
            Err(StoreError::BucketNotEmpty(_))
        ));
        for m in store.list("my-bucket", "").unwrap() {
            store.delete("my-bucket", &m.key).unwrap();
        }
        store.delete_bucket("my-bucket").unwrap();
        assert!(matches!(
            store.head("my-bucket", "a"),
            Err(StoreError::NoSuchBucket(_))
        ));
    }

    #[test]
    fn every_key_s3_accepts_is_stored_and_listed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.create_bucket("long-keys").unwrap();
        let seg = "s".repeat(230);
        let accents = "é".repeat(150);
        let mut keys = vec![
            "k".repeat(1024),
            format!("d/{seg}"),
            format!("d/{seg}/x"),
            format!("d/{seg}/y"),
            format!("d/{seg}0"),
            "d/short".to_string(),
            accents.clone(),
            format!("{accents}/a"),
            format!("{}{}", "%/".repeat(300), "end"),
            "é".repeat(512),
        ];
        for key in &keys {
            store
                .put_bytes("long-keys", key, key.as_bytes(), PutOptions::default())
                .unwrap_or_else(|e| panic!("{} bytes: {e}", key.len()));
            assert_eq!(store.get_bytes("long-keys", key).unwrap(), key.as_bytes());
        }
        keys.sort();
        let listed = |prefix: &str| -> Vec<String> {
            let keys = store.list("long-keys", prefix).unwrap();
            keys.into_iter().map(|m| m.key).collect()
        };
        assert_eq!(listed(""), keys);
        for prefix in [
            "d/".to_string(),
            format!("d/{seg}"),
            format!("d/{seg}/"),
            format!("d/{}", &seg[..100]),
            accents.clone(),
            format!("{accents}/"),
            "%/".repeat(200),
            "k".repeat(1000),
        ] {
            let want: Vec<String> = keys
                .iter()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            assert!(!want.is_empty(), "{prefix}");
            assert_eq!(listed(&prefix), want, "prefix {prefix}");
        }
        let too_long = "k".repeat(1025);
        assert_eq!(
            store
                .put_bytes("long-keys", &too_long, b"x", PutOptions::default())
                .unwrap_err(),
            StoreError::KeyTooLong(1025)
        );
        for key in &keys {
            store.delete("long-keys", key).unwrap();
        }
        assert!(listed("").is_empty());
        store.delete_bucket("long-keys").unwrap();
    }

    #[test]
    fn multipart_joins_parts_in_order_with_s3_etag() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.create_bucket("mp-bucket").unwrap();
        let up = store
            .create_upload("mp-bucket", "big", PutOptions::default())
            .unwrap();
        let big = vec![7u8; multipart::MIN_PART_SIZE as usize];
        let p2 = store
            .upload_part("mp-bucket", "big", &up.upload_id, 2, None, |w| {
                w.write_all(b"tail")
            })
            .unwrap();
        let p1 = store
            .upload_part("mp-bucket", "big", &up.upload_id, 1, None, |w| {
                w.write_all(&big)
            })
            .unwrap();
        assert_eq!(
            store
                .list_parts("mp-bucket", "big", &up.upload_id)
                .unwrap()
                .len(),
            2
        );
        let wrong = store.complete_upload(
            "mp-bucket",
            "big",
            &up.upload_id,
            &[(2, p2.etag.clone()), (1, p1.etag.clone())],
        );
        assert_eq!(wrong.unwrap_err(), StoreError::InvalidPartOrder);
        let meta = store
            .complete_upload(
                "mp-bucket",
                "big",
                &up.upload_id,
                &[(1, p1.etag), (2, p2.etag)],
            )
            .unwrap();
        assert!(meta.etag.ends_with("-2\""), "{}", meta.etag);
        assert_eq!(meta.size, big.len() as u64 + 4);
        assert!(matches!(
            store.list_parts("mp-bucket", "big", &up.upload_id),
            Err(StoreError::NoSuchUpload(_))
        ));
    }
}
