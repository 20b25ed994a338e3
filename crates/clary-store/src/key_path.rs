//! Maps S3 keys to paths under a bucket directory without collisions, for every key S3 accepts.
//!
//! S3 allows both `a` and `a/b` as keys, and keys with empty segments (`a//b`, `dir/`), none
//! of which a plain "key = path" layout can hold. Each segment is percent-encoded over a small
//! safe set (so `~` never appears in an encoded name), and the last segment gets a `~m` suffix
//! for the metadata file that commits the object. Directories and objects can then never clash.
//!
//! Encoding can triple a key's length, and filesystems cap a name at 255 bytes and a path at
//! 4096. So segments become directories only while each encoded segment fits in
//! [`MAX_SEGMENT`] and the directory path in [`MAX_DIR_PATH`]; from the first segment that does
//! not, the rest of the key becomes one leaf named `~h<sha256 of the rest>`. Such a leaf's key
//! is read from its metadata (which holds the whole key), never decoded from the name.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

const SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// Suffix of the metadata file that commits an object (its presence is the object's existence).
pub const META_SUFFIX: &str = "~m";
/// Suffix of object data files (`<name>~<id>~d`); several may exist briefly during overwrites.
pub const DATA_SUFFIX: &str = "~d";
/// Prefix of a leaf named by a hash (see the module's description).
pub const HASHED_PREFIX: &str = "~h";
/// Longest encoded segment used as a name: the data file adds `~<32 hex>~d` (35 bytes) and
/// must stay within NAME_MAX (255).
pub const MAX_SEGMENT: usize = 200;
/// Longest encoded directory path below a bucket (with separators), so that the data
/// directory, the bucket and a leaf fit in PATH_MAX (4096) with room to spare.
pub const MAX_DIR_PATH: usize = 1024;

pub fn encode_segment(seg: &str) -> String {
    match seg {
        "" => "~e".to_string(),
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        s => utf8_percent_encode(s, SAFE).to_string(),
    }
}

pub fn decode_segment(enc: &str) -> String {
    if enc == "~e" {
        return String::new();
    }
    percent_decode_str(enc).decode_utf8_lossy().into_owned()
}

/// Whether an encoded segment becomes a directory, given the directory path used so far.
fn fits(enc: &str, used: usize) -> bool {
    enc.len() <= MAX_SEGMENT && used + enc.len() < MAX_DIR_PATH
}

fn hashed_name(rest: &str) -> String {
    format!(
        "{HASHED_PREFIX}{}",
        hex::encode(Sha256::digest(rest.as_bytes()))
    )
}

/// Whether a leaf's encoded name is a hashed one (its key must be read from its metadata).
pub fn is_hashed(enc: &str) -> bool {
    enc.strip_prefix(HASHED_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The directory (relative to the bucket) holding the key's files, and its leaf name.
pub fn split(key: &str) -> (PathBuf, String) {
    let segs: Vec<&str> = key.split('/').collect();
    let mut dir = PathBuf::new();
    let mut used = 0;
    for (i, seg) in segs.iter().enumerate() {
        let enc = encode_segment(seg);
        if !fits(&enc, used) {
            return (dir, hashed_name(&segs[i..].join("/")));
        }
        if i == segs.len() - 1 {
            return (dir, enc);
        }
        used += enc.len() + 1;
        dir.push(enc);
    }
    unreachable!("split yields at least one segment")
}

/// For a prefix ending in `/`: the deepest directory that holds every key under it, and the
/// key prefix that directory stands for. The same rule as [`split`], so every key starting
/// with `prefix` lives at or below that directory.
pub fn prefix_dir(prefix: &str) -> (PathBuf, String) {
    debug_assert!(prefix.ends_with('/'));
    let mut dir = PathBuf::new();
    let mut key = String::new();
    let mut used = 0;
    for seg in prefix[..prefix.len() - 1].split('/') {
        let enc = encode_segment(seg);
        if !fits(&enc, used) {
            break;
        }
        used += enc.len() + 1;
        dir.push(enc);
        key.push_str(seg);
        key.push('/');
    }
    (dir, key)
}

pub fn meta_path(key: &str) -> PathBuf {
    let (dir, name) = split(key);
    dir.join(format!("{name}{META_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_collide_as_paths_get_distinct_files() {
        let a = meta_path("a");
        let ab = meta_path("a/b");
        let dir = meta_path("a/");
        assert_ne!(a, dir);
        assert_eq!(a, PathBuf::from("a~m"));
        assert_eq!(ab, PathBuf::from("a/b~m"));
        assert_eq!(dir, PathBuf::from("a/~e~m"));
        assert_eq!(meta_path("../x"), PathBuf::from("%2E%2E/x~m"));
        assert_eq!(
            meta_path("we ird~/é"),
            PathBuf::from("we%20ird%7E/%C3%A9~m")
        );
        for s in ["", ".", "..", "a b", "é~%"] {
            assert_eq!(decode_segment(&encode_segment(s)), s);
        }
    }

    #[test]
    fn every_key_up_to_1024_bytes_fits_the_filesystem() {
        let long_seg = "x".repeat(300);
        let accents = "é".repeat(150);
        let many_dirs = "%%%%%/".repeat(170);
        let keys = [
            "k".repeat(1024),
            format!("a/{long_seg}"),
            format!("a/{long_seg}/b"),
            accents.clone(),
            format!("{accents}/"),
            many_dirs.clone(),
            format!("{many_dirs}leaf"),
            "/".repeat(1024),
        ];
        for key in &keys {
            let (dir, name) = split(key);
            let dir_len = dir.as_os_str().len();
            assert!(dir_len <= MAX_DIR_PATH, "{key}: {dir_len}");
            assert!(dir.iter().all(|c| c.len() <= MAX_SEGMENT), "{key}");
            assert!(name.len() <= MAX_SEGMENT, "{key}: {name}");
            // Every key lies below its prefixes' directories, so listing finds it.
            for (i, _) in key.match_indices('/') {
                let (pdir, pkey) = prefix_dir(&key[..=i]);
                assert!(dir.starts_with(&pdir), "{key} under {}", &key[..=i]);
                assert!(key.starts_with(&pkey));
            }
        }
        // Distinct keys sharing a long part still get distinct files.
        assert_ne!(
            meta_path(&format!("a/{long_seg}")),
            meta_path(&format!("a/{long_seg}/"))
        );
        assert_eq!(split(&format!("a/{long_seg}/b")).0, PathBuf::from("a"));
        assert!(is_hashed(&split(&accents).1));
        assert!(!is_hashed("~e"));
    }
}
