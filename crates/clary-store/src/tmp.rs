//! Files being written under the store's `tmp/` directory, and the clean-up of those a crash
//! left there.
//!
//! Several processes open one store (the server, agents, model servers), so "at start" is not
//! a moment when nothing is being written. Each writer therefore holds an flock on its file for
//! as long as the file is open (the kernel drops it when the process dies), and clean-up
//! removes only files whose lock it can take: no one is writing them any more.

use crate::StoreError;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Creates a new file in `tmp_dir`, named `<prefix>-<random>`, locked while the returned
/// `File` is open: keep it open until the file has been renamed out of `tmp_dir`.
pub(crate) fn create(tmp_dir: &Path, prefix: &str) -> Result<(PathBuf, File), StoreError> {
    let failed =
        |e: io::Error| StoreError::Io(format!("creating a file in {}: {e}", tmp_dir.display()));
    for _ in 0..3 {
        let path = tmp_dir.join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(failed)?;
        file.lock().map_err(failed)?;
        // A clean-up may have taken the lock between the create and ours, and removed the file.
        if still_named(&file, &path) {
            return Ok((path, file));
        }
    }
    Err(failed(io::Error::other(
        "each new file was removed before it could be locked",
    )))
}

fn still_named(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Removes the files in `tmp_dir` that no writer holds; returns how many.
pub(crate) fn remove_abandoned(tmp_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // Removed while locked, so a writer that locks it after us sees it gone.
        if file.try_lock().is_ok() && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use crate::{LocalStore, PutOptions};
    use std::io::Write;

    #[test]
    fn opening_the_store_removes_what_a_crash_left_and_keeps_live_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.create_bucket("tmp-bucket").unwrap();
        let tmp = dir.path().join("tmp");
        // As a killed upload leaves them: written, never renamed, no process holding them.
        for name in ["o-0123", "p-4567", "w-89ab"] {
            std::fs::write(tmp.join(name), b"cut short").unwrap();
        }
        let mut live = store.writer("tmp-bucket", "live").unwrap();
        live.write_all(b"still ").unwrap();
        let up = store
            .create_upload("tmp-bucket", "part", PutOptions::default())
            .unwrap();
        store
            .upload_part("tmp-bucket", "part", &up.upload_id, 1, None, |w| {
                w.write_all(b"half ")?;
                // Another process (an agent) opens the store mid-part.
                LocalStore::open(dir.path()).unwrap();
                w.write_all(b"and the rest")
            })
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("o-"), "{names:?}");
        live.write_all(b"here").unwrap();
        live.commit(PutOptions::default()).unwrap();
        assert_eq!(
            store.get_bytes("tmp-bucket", "live").unwrap(),
            b"still here"
        );
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(
            store
                .list_parts("tmp-bucket", "part", &up.upload_id)
                .unwrap()[0]
                .size,
            17
        );
    }
}
