//! The Python helpers every job and model server imports (the repository's `python/`: the
//! `sagemaker_mxnet_container` and `clary_training` training shims, `sitecustomize.py`, the
//! `clary_serving` package), embedded in the binary and written into a directory that goes on
//! the job's `PYTHONPATH`.
//!
//! `build.rs` lists python/ at build time, so a file added there ships without touching Rust.
//! Files are written atomically (a temporary file in the same directory, renamed into place),
//! so a Python process importing from the directory while it is refreshed sees either the old
//! or the new file, never half of one. The directory is read only by processes of the user who
//! writes it, so what this creates is private: directories 0700, files 0600.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

include!(concat!(env!("OUT_DIR"), "/files.rs"));

/// Writes every embedded file under `dir` (created if need be), at its path relative to
/// python/. Files whose content is already right are left alone.
pub fn write_tree(dir: &Path) -> io::Result<()> {
    for (rel, bytes) in FILES {
        write_file(dir, rel, bytes)?;
    }
    Ok(())
}

/// Writes the embedded files under `top` (a directory of python/, such as `clary_serving`, or
/// one file) into `dir`, at the same relative paths as [`write_tree`]: `dir/clary_serving/…`.
pub fn write_subtree(dir: &Path, top: &str) -> io::Result<()> {
    let top = top.trim_end_matches('/');
    let mut found = false;
    for (rel, bytes) in FILES {
        let inside = rel
            .strip_prefix(top)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if inside {
            write_file(dir, rel, bytes)?;
            found = true;
        }
    }
    if found {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no embedded Python file under {top:?}"),
        ))
    }
}

/// Puts `bytes` at `dir/rel` unless it is there already: written to a temporary file next to
/// it, then renamed over it.
fn write_file(dir: &Path, rel: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(rel);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let parent = path.parent().expect("a file under dir has a parent");
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)?;
    // Unique among live writers: the process id, and a counter for threads of one process.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = parent.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn python_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python")
    }

    /// Every file under `dir` by its path relative to `root`, bytecode caches and dotfiles
    /// left out as build.rs leaves them out.
    fn files_on_disk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = entry.file_name().into_string().unwrap();
            if name == "__pycache__" || name.ends_with(".pyc") || name.starts_with('.') {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                files_on_disk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
                out.insert(rel.replace('\\', "/"), std::fs::read(&path).unwrap());
            }
        }
    }

    #[test]
    fn every_python_file_is_embedded_as_it_is() {
        let root = python_dir();
        let mut on_disk = BTreeMap::new();
        files_on_disk(&root, &root, &mut on_disk);
        assert!(on_disk.contains_key("sitecustomize.py"), "{on_disk:?}");
        assert!(on_disk.contains_key("clary_serving/service.py"));
        assert!(on_disk.contains_key("clary_training/legacy.py"));
        assert!(on_disk.contains_key("sagemaker_mxnet_container/training_utils.py"));
        let embedded: BTreeMap<&str, &[u8]> = FILES.iter().copied().collect();
        assert_eq!(embedded.len(), FILES.len(), "no path twice");
        // Every .py file (and every other file) under python/ is embedded, byte for byte.
        for (rel, bytes) in &on_disk {
            assert_eq!(
                embedded.get(rel.as_str()).copied(),
                Some(bytes.as_slice()),
                "{rel} is not embedded, or not as it is on disk"
            );
        }
        for rel in embedded.keys() {
            assert!(
                root.join(rel).is_file(),
                "{rel} is embedded but not on disk"
            );
            assert!(!rel.contains("__pycache__") && !rel.ends_with(".pyc"));
        }
    }

    #[test]
    fn writing_is_idempotent_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("python");
        write_tree(&out).unwrap();
        let listing = |out: &Path| {
            let mut all = BTreeMap::new();
            files_on_disk(out, out, &mut all);
            all
        };
        let first = listing(&out);
        assert_eq!(first.len(), FILES.len());
        for (rel, bytes) in FILES {
            assert_eq!(first[*rel].as_slice(), *bytes, "{rel}");
            let mode = std::fs::metadata(out.join(rel))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{rel}");
        }
        let mode = std::fs::metadata(out.join("clary_serving"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // A second write changes nothing and leaves no temporary files behind.
        let mtimes = |out: &Path| -> Vec<_> {
            FILES
                .iter()
                .map(|(rel, _)| {
                    std::fs::metadata(out.join(rel))
                        .unwrap()
                        .modified()
                        .unwrap()
                })
                .collect()
        };
        let before = mtimes(&out);
        write_tree(&out).unwrap();
        write_subtree(&out, "clary_serving").unwrap();
        assert_eq!(listing(&out), first);
        assert_eq!(mtimes(&out), before);
        // A stale or damaged file is replaced.
        std::fs::write(out.join("sitecustomize.py"), "broken").unwrap();
        write_tree(&out).unwrap();
        assert_eq!(listing(&out), first);
        let stray: Vec<_> = walk_names(&out)
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    #[test]
    fn a_subtree_is_written_alone() {
        let dir = tempfile::tempdir().unwrap();
        write_subtree(dir.path(), "clary_serving/").unwrap();
        let names = walk_names(dir.path());
        assert!(names.iter().any(|n| n == "service.py"), "{names:?}");
        assert!(!dir.path().join("sitecustomize.py").exists());
        assert!(!dir.path().join("clary_training").exists());
        // A prefix of a name is not a directory.
        assert!(write_subtree(dir.path(), "clary_serv").is_err());
    }

    fn walk_names(dir: &Path) -> Vec<String> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            names.push(entry.file_name().into_string().unwrap());
            if entry.file_type().unwrap().is_dir() {
                names.extend(walk_names(&entry.path()));
            }
        }
        names
    }
}
