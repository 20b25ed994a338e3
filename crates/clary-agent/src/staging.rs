//! Getting code and data in, and artifacts out.

use crate::contract::Layout;
use crate::job_log::JobLog;
use crate::network::HostIdentity;
use crate::objects::Objects;
use crate::runner::{EntryPoint, stream_command};
use clary_exec::protocol::{ChannelSpec, HostSpec};
use clary_store::archive::{DEFAULT_GZIP_LEVEL, extract_tar_gz, pack_dir};
use clary_store::{FetchItem, Fetched, LocalStore};
use std::fs;
use std::path::{Path, PathBuf};

/// The path of `key` inside a channel whose S3 prefix is `prefix` (the part after the prefix's
/// directory, so `data/train` and `data/train/` both put `data/train/a.csv` at `a.csv`).
pub fn relative_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        return key[prefix.len()..].to_string();
    }
    if key == prefix {
        return key.rsplit('/').next().unwrap_or(key).to_string();
    }
    if let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
        return rest.to_string();
    }
    // A sibling such as `data/train2/x` under the prefix `data/train`: keep it relative to the
    // prefix's directory so nothing collides.
    match prefix.rfind('/') {
        Some(i) => key[i + 1..].to_string(),
        None => key.to_string(),
    }
}

/// One object of a channel: where it is and where it appears under the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelObject {
    pub bucket: String,
    pub key: String,
    /// Its path relative to the channel directory (File mode).
    pub rel: String,
    /// Its size, when a listing said (a manifest does not).
    pub size: Option<u64>,
}

/// The manifest's entries (S3's `ManifestFile` format: a JSON list, `{"prefix": "s3://bucket/p/"}` first, then
/// keys relative to it) as objects.
pub fn parse_manifest(text: &str) -> Result<Vec<ChannelObject>, String> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("the manifest is not a JSON list: {e}"))?;
    let mut items = list.into_iter();
    let prefix = items
        .next()
        .and_then(|p| p.get("prefix").and_then(|v| v.as_str()).map(String::from))
        .ok_or("the manifest's first element must be {\"prefix\": \"s3://bucket/prefix/\"}")?;
    let rest = prefix
        .strip_prefix("s3://")
        .ok_or_else(|| format!("the manifest's prefix {prefix:?} is not an s3:// URI"))?;
    let (bucket, key_prefix) = rest.split_once('/').unwrap_or((rest, ""));
    items
        .map(|v| {
            let rel = v
                .as_str()
                .ok_or_else(|| format!("manifest entry {v} is not a string key"))?;
            Ok(ChannelObject {
                bucket: bucket.to_string(),
                key: format!("{key_prefix}{rel}"),
                rel: rel.to_string(),
                size: None,
            })
        })
        .collect()
}

/// The objects this host gets from a channel, in the order a pipe streams them: key order
/// for a prefix, the manifest's order for a manifest. `ShardedByS3Key` deals them out round
/// robin by that order, so host `i` of `n` gets every `n`th object starting at the `i`th:
/// disjoint shares, all of them together, the same on every run.
pub fn channel_objects(
    store: &Objects,
    ch: &ChannelSpec,
    host_index: usize,
    host_count: usize,
) -> Result<Vec<ChannelObject>, String> {
    let all: Vec<ChannelObject> = if ch.data_type == "ManifestFile" {
        let text = store.get_bytes(&ch.bucket, &ch.prefix).map_err(|e| {
            format!(
                "reading the manifest s3://{}/{} of channel {}: {e}",
                ch.bucket, ch.prefix, ch.name
            )
        })?;
        parse_manifest(&String::from_utf8_lossy(&text))
            .map_err(|e| format!("channel {}: {e}", ch.name))?
    } else {
        store
            .list(&ch.bucket, &ch.prefix)
            .map_err(|e| {
                format!(
                    "listing s3://{}/{} for channel {}: {e}",
                    ch.bucket, ch.prefix, ch.name
                )
            })?
            .into_iter()
            .map(|obj| ChannelObject {
                bucket: ch.bucket.clone(),
                rel: relative_key(&ch.prefix, &obj.key),
                key: obj.key,
                size: Some(obj.size),
            })
            .collect()
    };
    if all.is_empty() {
        return Err(format!(
            "No S3 objects found under S3 URL \"s3://{}/{}\" given in input data source for channel {}. Please ensure that the bucket exists and that objects exist under that S3 prefix.",
            ch.bucket, ch.prefix, ch.name
        ));
    }
    if !ch.sharded || host_count <= 1 {
        return Ok(all);
    }
    Ok(all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % host_count == host_index)
        .map(|(_, o)| o)
        .collect())
}

/// How many files a channel got, by the way each was made (see [`Fetched`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Staged {
    /// Hard links to the store's files, seen by the job only through an overlay.
    pub linked: usize,
    pub reflinked: usize,
    pub copied: usize,
    pub downloaded: usize,
    /// The downloaded bytes (where the listing said their sizes) and how long they took.
    pub downloaded_bytes: u64,
    pub download_time: std::time::Duration,
}

impl Staged {
    pub fn files(&self) -> usize {
        self.linked + self.reflinked + self.copied + self.downloaded
    }

    /// For the job's log: how the files were made, and so why the store is safe from the job.
    pub fn method(&self) -> String {
        let mut ways = Vec::new();
        if self.linked > 0 {
            ways.push(format!(
                "{} linked from the store, read-only under an overlay (the script's writes go to this host's own copies)",
                self.linked
            ));
        }
        if self.reflinked > 0 {
            ways.push(format!(
                "{} cloned copy-on-write from the store (reflinks: no bytes copied)",
                self.reflinked
            ));
        }
        if self.copied > 0 {
            ways.push(format!(
                "{} copied from the store (this filesystem cannot clone files)",
                self.copied
            ));
        }
        if self.downloaded > 0 {
            let secs = self.download_time.as_secs_f64();
            let mib = self.downloaded_bytes as f64 / (1u64 << 20) as f64;
            ways.push(if self.downloaded_bytes > 0 && secs > 0.0 {
                format!(
                    "{} downloaded ({mib:.1} MiB in {secs:.2} s, {:.0} MiB/s)",
                    self.downloaded,
                    mib / secs
                )
            } else {
                format!("{} downloaded", self.downloaded)
            });
        }
        if ways.is_empty() {
            return "no files".to_string();
        }
        ways.join(", ")
    }
}

/// File mode: the channel's objects appear under `dest`. With `link` (a local store, and an
/// agent that can put an overlay over `dest` for the job, see [`crate::input_overlay`]) as
/// hard links to the stored files; otherwise as files of the job's own (clones or copies of
/// the local store's files, downloads when the store is remote, many at once). Either way a
/// script writing to its input never changes a stored object.
pub fn stage_channel(
    store: &Objects,
    link: Option<&LocalStore>,
    ch: &ChannelSpec,
    objects: &[ChannelObject],
    dest: &Path,
) -> Result<Staged, String> {
    let mut n = Staged::default();
    let mut fetch = Vec::new();
    for obj in objects {
        let Some(target) = safe_join(dest, &obj.rel) else {
            continue;
        };
        if obj.key.ends_with('/') {
            fs::create_dir_all(&target)
                .map_err(|e| format!("creating {}: {e}", target.display()))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        // A store on another filesystem cannot be linked: that file is fetched instead.
        if link.is_some_and(|local| link_object(local, &obj.bucket, &obj.key, &target)) {
            n.linked += 1;
            continue;
        }
        fetch.push(FetchItem {
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            target,
            size: obj.size,
        });
    }
    // In one batch, so a remote store fetches a channel of many small objects in parallel.
    let started = std::time::Instant::now();
    let fetched = store
        .fetch_many(&fetch)
        .map_err(|e| format!("channel {}: {e}", ch.name))?;
    for (how, item) in fetched.into_iter().zip(&fetch) {
        match how {
            Fetched::Reflinked => n.reflinked += 1,
            Fetched::Copied => n.copied += 1,
            Fetched::Downloaded => {
                n.downloaded += 1;
                n.downloaded_bytes += item.size.unwrap_or(0);
            }
        }
    }
    n.download_time = started.elapsed();
    Ok(n)
}

/// Hard-links the stored file of `bucket/key` at `target`; false if it cannot.
fn link_object(local: &LocalStore, bucket: &str, key: &str, target: &Path) -> bool {
    let _ = fs::remove_file(target);
    // A failed link may mean the object was replaced since the lookup: look again.
    (0..3).any(|_| {
        local
            .data_path(bucket, key)
            .is_ok_and(|(_, source)| fs::hard_link(source, target).is_ok())
    })
}

/// `dest/rel` if `rel` stays inside `dest`.
fn safe_join(dest: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = dest.to_path_buf();
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s => out.push(s),
        }
    }
    Some(out)
}

/// Fetches `sagemaker_submit_directory` into the code directory, only when that directory is
/// empty (toolkit behaviour: code already present wins).
pub fn fetch_code(
    store: &Objects,
    module_dir: &str,
    code: &Path,
    log: &JobLog,
) -> Result<(), String> {
    let empty = fs::read_dir(code)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if !empty {
        return Ok(());
    }
    let Some(rest) = module_dir.strip_prefix("s3://") else {
        let src = Path::new(module_dir);
        if src.is_dir() && src != code {
            return copy_dir(src, code)
                .map_err(|e| format!("copying the code from {module_dir}: {e}"));
        }
        return Ok(());
    };
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| format!("sagemaker_submit_directory {module_dir:?} has no key"))?;
    let file = store
        .reader(bucket, key)
        .map_err(|e| format!("the training code {module_dir} could not be read: {e}"))?;
    let skipped = extract_tar_gz(std::io::BufReader::new(file), code)
        .map_err(|e| format!("the training code {module_dir} is not a readable tar.gz: {e}"))?;
    for s in skipped.0 {
        log.info(&format!("Not extracted from the code archive: {s}"));
    }
    Ok(())
}

/// Copies a directory tree (files and subdirectories).
pub fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            fs::copy(entry.path(), to)?;
        }
    }
    Ok(())
}

/// Installs `requirements.txt` (and the package itself for `setup.py` entry points) into a
/// job-private environment layered over the runtime, so the shared runtime never changes.
/// Returns the interpreter to run the script with.
pub async fn install_requirements(
    entry: &EntryPoint,
    runtime_python: &Path,
    layout: &Layout,
    identity: &HostIdentity,
    log: &JobLog,
) -> Result<PathBuf, String> {
    let code = layout.code();
    let requirements = code.join("requirements.txt");
    let is_package = matches!(entry, EntryPoint::Package(_));
    if matches!(entry, EntryPoint::Command(_)) || (!requirements.is_file() && !is_package) {
        return Ok(runtime_python.to_path_buf());
    }
    let venv = layout.base.join(".clary-venv");
    let job_python = clary_exec::runtimes::create_layered_venv(runtime_python, &venv)
        .map_err(|e| format!("InstallRequirementsError: {e}"))?;
    let mut cmd = vec![
        "-m".to_string(),
        "pip".into(),
        "install".into(),
        "--disable-pip-version-check".into(),
        "--progress-bar".into(),
        "off".into(),
    ];
    if is_package {
        cmd.push(".".into());
    }
    if requirements.is_file() {
        cmd.extend(["-r".into(), "requirements.txt".into()]);
    }
    log.info(&format!(
        "Installing dependencies from {}: {} {}",
        code.display(),
        job_python.display(),
        cmd.join(" ")
    ));
    let code_status = stream_command(&job_python, &cmd, &code, identity, log).await?;
    if code_status != 0 {
        let kind = if is_package {
            "InstallModuleError"
        } else {
            "InstallRequirementsError"
        };
        return Err(format!(
            "{kind}:\nExitCode {code_status}\nCommand \"{} {}\"",
            job_python.display(),
            cmd.join(" ")
        ));
    }
    Ok(job_python)
}

/// Packs `model/` into `model.tar.gz` and `output/data` into `output.tar.gz` under
/// `<output path>/<job>/output/`. Returns the model's URI.
pub fn upload_artifacts(
    store: &Objects,
    spec: &HostSpec,
    layout: &Layout,
    log: &JobLog,
) -> Result<Option<String>, String> {
    // On a multi-host job the model comes from the first host, the one the toolkits'
    // `save` helpers write on; the others' directories would only overwrite it.
    if spec.hosts.first() != Some(&spec.current_host) {
        return Ok(None);
    }
    let prefix = spec.output_prefix.trim_end_matches('/');
    let base = if prefix.is_empty() {
        format!("{}/output", spec.job_name)
    } else {
        format!("{prefix}/{}/output", spec.job_name)
    };
    let upload = |dir: &Path, name: &str| -> Result<String, String> {
        let key = format!("{base}/{name}");
        let size = store
            .put_written(
                &spec.output_bucket,
                &key,
                Some("application/x-tar"),
                &layout.base.join(format!(".{name}.part")),
                &mut |w| pack_dir(dir, w, DEFAULT_GZIP_LEVEL).map(|_| ()),
            )
            .map_err(|e| e.to_string())?;
        log.info(&format!(
            "Uploaded s3://{}/{key} ({size} bytes)",
            spec.output_bucket
        ));
        Ok(format!("s3://{}/{key}", spec.output_bucket))
    };
    let model = upload(&layout.model(), "model.tar.gz")?;
    let has_output = fs::read_dir(layout.output_data())
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_output {
        upload(&layout.output_data(), "output.tar.gz")?;
    }
    Ok(Some(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_paths_relative_to_the_prefix() {
        assert_eq!(relative_key("data/train", "data/train/a.csv"), "a.csv");
        assert_eq!(
            relative_key("data/train/", "data/train/sub/a.csv"),
            "sub/a.csv"
        );
        assert_eq!(
            relative_key("data/train.csv", "data/train.csv"),
            "train.csv"
        );
        assert_eq!(relative_key("data/train", "data/train2/x"), "train2/x");
        assert_eq!(relative_key("", "x/y"), "x/y");
        assert!(safe_join(Path::new("/d"), "../x").is_none());
    }

    #[test]
    fn manifests_list_keys_under_their_prefix() {
        let objs = parse_manifest(r#"[{"prefix": "s3://bkt/data/"}, "a/1.csv", "b.csv"]"#).unwrap();
        assert_eq!(objs[0].key, "data/a/1.csv");
        assert_eq!(objs[1].rel, "b.csv");
        assert_eq!(objs[1].bucket, "bkt");
        assert!(parse_manifest(r#"["a"]"#).is_err());
        assert!(parse_manifest("{}").is_err());
    }

    fn one_object_store() -> (tempfile::TempDir, std::sync::Arc<clary_store::LocalStore>) {
        let dir = tempfile::tempdir().unwrap();
        let local = clary_store::LocalStore::open(dir.path().join("store")).unwrap();
        local.create_bucket("bkt").unwrap();
        local
            .put_bytes("bkt", "d/a", b"stored", clary_store::PutOptions::default())
            .unwrap();
        (dir, std::sync::Arc::new(local))
    }

    fn file_channel() -> ChannelSpec {
        ChannelSpec {
            name: "train".into(),
            bucket: "bkt".into(),
            prefix: "d/".into(),
            config: serde_json::json!({}),
            input_mode: "File".into(),
            data_type: "S3Prefix".into(),
            sharded: false,
            gzip: false,
            record_io: false,
        }
    }

    /// Linking (only ever under an overlay): the staged file is the stored inode.
    #[test]
    fn linked_channels_share_the_stored_files() {
        use std::os::unix::fs::MetadataExt;
        let (dir, local) = one_object_store();
        let store: Objects = local.clone();
        let objects = channel_objects(&store, &file_channel(), 0, 1).unwrap();
        let dest = dir.path().join("train");
        let n = stage_channel(&store, Some(&local), &file_channel(), &objects, &dest).unwrap();
        assert_eq!((n.linked, n.files()), (1, 1), "{n:?}");
        assert!(
            n.method()
                .contains("1 linked from the store, read-only under an overlay")
        );
        let (_, stored) = local.data_path("bkt", "d/a").unwrap();
        assert_eq!(
            fs::metadata(dest.join("a")).unwrap().ino(),
            fs::metadata(stored).unwrap().ino()
        );
    }

    /// The fallback where no overlay can be made: the job's own file, and writing to it
    /// leaves the stored object as it was.
    #[test]
    fn without_an_overlay_channels_are_the_jobs_own_files() {
        let (dir, local) = one_object_store();
        let store: Objects = local.clone();
        let objects = channel_objects(&store, &file_channel(), 0, 1).unwrap();
        let dest = dir.path().join("train");
        let n = stage_channel(&store, None, &file_channel(), &objects, &dest).unwrap();
        assert_eq!((n.linked, n.reflinked + n.copied), (0, 1), "{n:?}");
        fs::write(dest.join("a"), "changed").unwrap();
        assert_eq!(local.get_bytes("bkt", "d/a").unwrap(), b"stored");
    }

    #[test]
    fn shards_are_disjoint_deterministic_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let local = clary_store::LocalStore::open(dir.path()).unwrap();
        local.create_bucket("bkt").unwrap();
        for i in 0..7 {
            local
                .put_bytes(
                    "bkt",
                    &format!("d/{i}"),
                    b"x",
                    clary_store::PutOptions::default(),
                )
                .unwrap();
        }
        let store: Objects = std::sync::Arc::new(local);
        {}
        let ch = ChannelSpec {
            name: "train".into(),
            bucket: "bkt".into(),
            prefix: "d/".into(),
            config: serde_json::json!({}),
            input_mode: "File".into(),
            data_type: "S3Prefix".into(),
            sharded: true,
            gzip: false,
            record_io: false,
        };
        let shares: Vec<Vec<String>> = (0..3)
            .map(|i| {
                channel_objects(&store, &ch, i, 3)
                    .unwrap()
                    .into_iter()
                    .map(|o| o.key)
                    .collect()
            })
            .collect();
        assert_eq!(shares[0], ["d/0", "d/3", "d/6"]);
        let mut all: Vec<String> = shares.concat();
        all.sort();
        assert_eq!(all.len(), 7);
        all.dedup();
        assert_eq!(all.len(), 7);
        assert_eq!(channel_objects(&store, &ch, 0, 1).unwrap().len(), 7);
    }
}
