//! `CheckpointConfig`: the local checkpoint directory is seeded from its S3 prefix before the
//! script starts, and every file written there goes back to S3 while the job runs (each file
//! once it has changed and held still for a scan) and at the end, so a later job with the same
//! URI, or a restarted attempt of this one, resumes from it.

use crate::job_log::JobLog;
use crate::objects::Objects;
use clary_exec::protocol::CheckpointSpec;
use clary_store::FetchItem;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the directory is scanned for changed files while the script runs.
const SCAN_EVERY: Duration = Duration::from_secs(1);

fn key_for(cp: &CheckpointSpec, rel: &str) -> String {
    let prefix = cp.prefix.trim_end_matches('/');
    if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}

/// Copies every object under the checkpoint prefix into the local directory (copies, not
/// links: the script may rewrite its checkpoints in place). Returns how many.
pub fn seed(store: &Objects, cp: &CheckpointSpec) -> Result<usize, String> {
    std::fs::create_dir_all(&cp.local_path)
        .map_err(|e| format!("creating {}: {e}", cp.local_path.display()))?;
    let prefix = match cp.prefix.trim_end_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    let objects = store
        .list(&cp.bucket, &prefix)
        .map_err(|e| format!("listing s3://{}/{prefix}: {e}", cp.bucket))?;
    let mut fetch = Vec::new();
    for obj in objects.iter().filter(|o| !o.key.ends_with('/')) {
        let rel = &obj.key[prefix.len()..];
        if rel.split('/').any(|s| s == ".." || s.is_empty()) {
            continue;
        }
        let target = cp.local_path.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        fetch.push(FetchItem {
            bucket: cp.bucket.clone(),
            key: obj.key.clone(),
            target,
            size: Some(obj.size),
        });
    }
    // Copies (never links), in one batch: a remote store fetches them several at once.
    store.fetch_many(&fetch).map_err(|e| e.to_string())?;
    Ok(fetch.len())
}

/// What a file looked like when it was last seen: size and modification time.
type Stamp = (u64, SystemTime);

fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf, Stamp)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(&path, base, out);
        } else if meta.is_file()
            && let Ok(rel) = path.strip_prefix(base)
        {
            let stamp = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            out.push((rel.to_string_lossy().into_owned(), path, stamp));
        }
    }
}

/// The uploader's memory of what S3 already has.
#[derive(Default)]
struct Synced {
    uploaded: HashMap<String, Stamp>,
    /// Seen changed on the previous scan; uploaded once unchanged for a whole scan.
    pending: HashMap<String, Stamp>,
}

impl Synced {
    /// Uploads changed files: while the script runs only those that held still since the last
    /// scan (so a file being written is not sent half-done), at the end all of them.
    fn scan(&mut self, store: &Objects, cp: &CheckpointSpec, last: bool) -> Result<usize, String> {
        let mut files = Vec::new();
        walk(&cp.local_path, &cp.local_path, &mut files);
        let mut sent = 0;
        for (rel, path, stamp) in files {
            if self.uploaded.get(&rel) == Some(&stamp) {
                continue;
            }
            let settled = self.pending.get(&rel) == Some(&stamp);
            if !settled && !last {
                self.pending.insert(rel, stamp);
                continue;
            }
            let key = key_for(cp, &rel);
            match store.put_file(&cp.bucket, &key, &path, None) {
                Ok(_) => {}
                // Removed since the scan saw it.
                Err(_) if !path.exists() => continue,
                Err(e) => return Err(format!("s3://{}/{key}: {e}", cp.bucket)),
            }
            self.pending.remove(&rel);
            self.uploaded.insert(rel, stamp);
            sent += 1;
        }
        Ok(sent)
    }
}

/// Uploads every file under `dir.local_path` to its prefix now (an `EndOfJob` output);
/// returns how many.
pub fn upload_dir(store: &Objects, dir: &CheckpointSpec) -> Result<usize, String> {
    Synced::default().scan(store, dir, true)
}

/// The running uploader of one host's checkpoints.
pub struct CheckpointSync {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<usize, String>>,
}

impl CheckpointSync {
    /// Starts scanning; files already there (the seed) count as uploaded.
    pub fn start(store: Objects, cp: CheckpointSpec, log: JobLog) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut synced = Synced::default();
            let mut seeded = Vec::new();
            walk(&cp.local_path, &cp.local_path, &mut seeded);
            synced.uploaded = seeded.into_iter().map(|(rel, _, s)| (rel, s)).collect();
            let mut total = 0;
            loop {
                let last = *stopped.borrow();
                let (store2, cp2) = (store.clone(), cp.clone());
                let (s, result) = tokio::task::spawn_blocking(move || {
                    let r = synced.scan(&store2, &cp2, last);
                    (synced, r)
                })
                .await
                .map_err(|e| e.to_string())?;
                synced = s;
                match result {
                    Ok(n) => total += n,
                    Err(e) if last => return Err(e),
                    Err(e) => log.info(&format!("Checkpoint upload: {e}; retrying")),
                }
                if last {
                    return Ok(total);
                }
                tokio::select! {
                    _ = tokio::time::sleep(SCAN_EVERY) => {}
                    _ = stopped.changed() => {}
                }
            }
        });
        CheckpointSync { stop, task }
    }

    /// Uploads whatever is left and returns how many files went up in all.
    pub async fn finish(self) -> Result<usize, String> {
        let _ = self.stop.send(true);
        self.task.await.map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_from_the_prefix_and_uploads_settled_changes_then_everything_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let local = clary_store::LocalStore::open(dir.path().join("store")).unwrap();
        local.create_bucket("bkt").unwrap();
        local
            .put_bytes(
                "bkt",
                "ck/run/old.txt",
                b"old",
                clary_store::PutOptions::default(),
            )
            .unwrap();
        let store: Objects = std::sync::Arc::new(local);
        let cp = CheckpointSpec {
            bucket: "bkt".into(),
            prefix: "ck/run".into(),
            local_path: dir.path().join("local"),
        };
        assert_eq!(seed(&store, &cp).unwrap(), 1);
        assert_eq!(
            std::fs::read(cp.local_path.join("old.txt")).unwrap(),
            b"old"
        );
        let mut synced = Synced::default();
        std::fs::create_dir_all(cp.local_path.join("sub")).unwrap();
        std::fs::write(cp.local_path.join("sub/new.txt"), b"new").unwrap();
        // First sight: pending; second, unchanged: uploaded (with the seeded file).
        assert_eq!(synced.scan(&store, &cp, false).unwrap(), 0);
        assert_eq!(synced.scan(&store, &cp, false).unwrap(), 2);
        assert_eq!(
            store.get_bytes("bkt", "ck/run/sub/new.txt").unwrap(),
            b"new"
        );
        std::fs::write(cp.local_path.join("sub/new.txt"), b"newer!").unwrap();
        assert_eq!(synced.scan(&store, &cp, true).unwrap(), 1);
        assert_eq!(
            store.get_bytes("bkt", "ck/run/sub/new.txt").unwrap(),
            b"newer!"
        );
    }
}
