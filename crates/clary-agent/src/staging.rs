//! Getting code and data in, and artifacts out.

use crate::contract::Layout;
use crate::host::JobLog;
use crate::runner::{EntryPoint, stream_command};
use clary_exec::protocol::{ChannelSpec, HostSpec};
use clary_store::archive::{DEFAULT_GZIP_LEVEL, extract_tar_gz, pack_dir};
use clary_store::{LocalStore, PutOptions};
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

/// File mode: every object under the channel's prefix appears under `dest`. The local store's
/// data files are hard-linked (no bytes copied); a copy is the fallback across filesystems.
pub fn stage_channel(store: &LocalStore, ch: &ChannelSpec, dest: &Path) -> Result<usize, String> {
    let objects = store.list(&ch.bucket, &ch.prefix).map_err(|e| {
        format!(
            "listing s3://{}/{} for channel {}: {e}",
            ch.bucket, ch.prefix, ch.name
        )
    })?;
    if objects.is_empty() {
        return Err(format!(
            "No S3 objects found under S3 URL \"s3://{}/{}\" given in input data source for channel {}. Please ensure that the bucket exists and that objects exist under that S3 prefix.",
            ch.bucket, ch.prefix, ch.name
        ));
    }
    let mut n = 0;
    for obj in objects {
        let rel = relative_key(&ch.prefix, &obj.key);
        let Some(target) = safe_join(dest, &rel) else {
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
        let _ = fs::remove_file(&target);
        // The listing already holds the metadata; only an object replaced since then needs a
        // fresh lookup of its data file.
        let source = store.data_path_of(&ch.bucket, &obj);
        if link_or_copy(&source, &target).is_err() {
            let (_, fresh) = store
                .data_path(&ch.bucket, &obj.key)
                .map_err(|e| e.to_string())?;
            link_or_copy(&fresh, &target)
                .map_err(|e| format!("copying {} to {}: {e}", obj.key, target.display()))?;
        }
        n += 1;
    }
    Ok(n)
}

/// Hard-links `source` to `target` (no bytes copied), copying across filesystems.
fn link_or_copy(source: &Path, target: &Path) -> std::io::Result<()> {
    fs::hard_link(source, target).or_else(|_| fs::copy(source, target).map(|_| ()))
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
    store: &LocalStore,
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
    let (_, file) = store
        .open_object(bucket, key)
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
    let code_status = stream_command(&job_python, &cmd, &code, log).await?;
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
    store: &LocalStore,
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
        let writer = store
            .writer(&spec.output_bucket, &key)
            .map_err(|e| e.to_string())?;
        let writer = pack_dir(dir, writer, DEFAULT_GZIP_LEVEL)
            .map_err(|e| format!("packing {}: {e}", dir.display()))?;
        let opts = PutOptions {
            content_type: Some("application/x-tar".into()),
            ..PutOptions::default()
        };
        let meta = writer.commit(opts).map_err(|e| e.to_string())?;
        log.info(&format!(
            "Uploaded s3://{}/{key} ({} bytes)",
            spec.output_bucket, meta.size
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
}
