//! Maps S3 keys to paths under a bucket directory without collisions.
//!
//! S3 allows both `a` and `a/b` as keys, and keys with empty segments (`a//b`, `dir/`), none
//! of which a plain "key = path" layout can hold. Each segment is percent-encoded over a small
//! safe set (so `~` never appears in an encoded name), and the last segment gets a `~m` suffix
//! for the metadata file that commits the object. Directories and objects can then never clash.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::path::PathBuf;

const SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// Suffix of the metadata file that commits an object (its presence is the object's existence).
pub const META_SUFFIX: &str = "~m";
/// Suffix of object data files (`<name>~<id>~d`); several may exist briefly during overwrites.
pub const DATA_SUFFIX: &str = "~d";

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

/// The directory (relative to the bucket) holding the key's files, and its encoded last segment.
pub fn split(key: &str) -> (PathBuf, String) {
    let segs: Vec<&str> = key.split('/').collect();
    let (last, dirs) = segs
        .split_last()
        .expect("split yields at least one segment");
    let dir: PathBuf = dirs.iter().map(|s| encode_segment(s)).collect();
    (dir, encode_segment(last))
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
}
