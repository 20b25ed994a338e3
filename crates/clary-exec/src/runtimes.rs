//! Runtimes: the Python environments that run a framework version, and how an image URI the
//! SDK sends maps onto one.
//!
//! A runtime is a virtual environment built once with pip under the runtimes directory. The
//! build happens under an exclusive file lock into a temporary directory that is renamed into
//! place at the end, so concurrent jobs wait for one build and a crash never leaves a
//! half-built runtime that looks ready.

use nix::fcntl::{Flock, FlockArg};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A runtime Clary knows how to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDef {
    pub name: &'static str,
    /// The MXNet it really runs.
    pub mxnet: &'static str,
    pub pip_requirements: &'static [&'static str],
}

pub const MXNET_19: RuntimeDef = RuntimeDef {
    name: "mxnet-1.9",
    mxnet: "1.9.1",
    // MXNet 1.9.1 uses numpy APIs that numpy 1.24 removed.
    pip_requirements: &["mxnet==1.9.1", "numpy<1.24"],
};

pub const RUNTIMES: &[RuntimeDef] = &[MXNET_19];

/// `SAGEMAKER_TRAINING_MODULE` of the MXNet training images (script mode).
pub const MXNET_TRAINING_MODULE: &str = "sagemaker_mxnet_container.training:main";

/// Framework versions accepted in script mode and the runtime each runs on. MXNet 1.3–1.8
/// wheels do not install on Python 3.11, so those versions run on MXNet 1.9.1, whose 1.x API
/// is a superset for training scripts.
pub const SCRIPT_MODE_VERSIONS: &[(&str, &str)] = &[
    ("1.9.0", "mxnet-1.9"),
    ("1.9", "mxnet-1.9"),
    ("1.8.0", "mxnet-1.9"),
    ("1.8", "mxnet-1.9"),
    ("1.7.0", "mxnet-1.9"),
    ("1.7", "mxnet-1.9"),
    ("1.6.0", "mxnet-1.9"),
    ("1.6", "mxnet-1.9"),
    ("1.5.1", "mxnet-1.9"),
    ("1.5", "mxnet-1.9"),
    ("1.4.1", "mxnet-1.9"),
    ("1.4.0", "mxnet-1.9"),
    ("1.4", "mxnet-1.9"),
    ("1.3.0", "mxnet-1.9"),
    ("1.3", "mxnet-1.9"),
];

/// Versions of the legacy `train()` mode (MXNet ≤ 1.2).
pub const LEGACY_VERSIONS: &[&str] = &[
    "0.12.1", "0.12", "1.0.0", "1.0", "1.1.0", "1.1", "1.2.1", "1.2",
];

/// What an image URI asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    pub framework_version: String,
    pub device: String,
    pub py_version: String,
    pub runtime: RuntimeDef,
}

/// Maps `AlgorithmSpecification.TrainingImage` (e.g.
/// `763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38`) to a runtime,
/// or says clearly why it can't.
pub fn resolve_training_image(image: &str) -> Result<ImageRequest, String> {
    let supported = || {
        let versions: Vec<&str> = SCRIPT_MODE_VERSIONS.iter().map(|(v, _)| *v).collect();
        format!(
            "Clary runs the MXNet training images (mxnet-training or sagemaker-mxnet, tag <version>-<cpu|gpu>-<py>) for framework versions {}",
            versions.join(", ")
        )
    };
    let last = image.rsplit('/').next().unwrap_or(image);
    let (repo, tag) = last
        .split_once(':')
        .ok_or_else(|| format!("TrainingImage {image:?} has no tag. {}", supported()))?;
    if !matches!(
        repo,
        "mxnet-training" | "sagemaker-mxnet" | "sagemaker-mxnet-training"
    ) {
        return Err(format!(
            "TrainingImage {image:?} is not an MXNet training image. {}",
            supported()
        ));
    }
    let mut parts = tag.split('-');
    let (version, device, py) = match (parts.next(), parts.next(), parts.next()) {
        (Some(v), Some(d), Some(p)) if matches!(d, "cpu" | "gpu") => (v, d, p),
        _ => {
            return Err(format!(
                "TrainingImage tag {tag:?} is not <version>-<cpu|gpu>-<py>. {}",
                supported()
            ));
        }
    };
    if LEGACY_VERSIONS.contains(&version) {
        return Err(format!(
            "MXNet {version} uses the legacy train() mode (framework versions 1.2 and earlier), which this Clary does not run yet; use framework_version 1.3 or later with a script-mode entry point"
        ));
    }
    let runtime = SCRIPT_MODE_VERSIONS
        .iter()
        .find(|(v, _)| *v == version)
        .and_then(|(_, r)| RUNTIMES.iter().find(|d| d.name == *r))
        .ok_or_else(|| {
            format!(
                "MXNet framework version {version:?} is not available here. {}",
                supported()
            )
        })?;
    Ok(ImageRequest {
        framework_version: version.to_string(),
        device: device.to_string(),
        py_version: py.to_string(),
        runtime: runtime.clone(),
    })
}

/// The runtimes directory and the Python used to create virtual environments.
#[derive(Debug, Clone)]
pub struct Runtimes {
    pub dir: PathBuf,
    pub base_python: String,
}

impl Runtimes {
    pub fn new(dir: PathBuf) -> Self {
        let base_python =
            std::env::var("CLARY_BASE_PYTHON").unwrap_or_else(|_| "python3".to_string());
        Runtimes { dir, base_python }
    }

    pub fn python(&self, def: &RuntimeDef) -> PathBuf {
        self.dir.join(def.name).join("bin").join("python")
    }

    pub fn is_ready(&self, def: &RuntimeDef) -> bool {
        self.dir.join(def.name).join(".clary-ready").is_file()
    }

    /// Builds the runtime if it is not ready, sending each line of progress to `progress`.
    /// Returns its interpreter.
    pub fn ensure(
        &self,
        def: &RuntimeDef,
        progress: &mut dyn FnMut(&str),
    ) -> Result<PathBuf, String> {
        if self.is_ready(def) {
            return Ok(self.python(def));
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let lock_path = self.dir.join(format!("{}.lock", def.name));
        let lock_file = fs::File::create(&lock_path)
            .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
        progress(&format!("Waiting for the lock on runtime {} ...", def.name));
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("locking {}: {e}", lock_path.display()))?;
        if self.is_ready(def) {
            return Ok(self.python(def));
        }
        let final_dir = self.dir.join(def.name);
        let tmp = self
            .dir
            .join(format!(".{}.building-{}", def.name, std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        progress(&format!(
            "Building runtime {} (MXNet {}) once, with {} -m venv and pip; later jobs reuse it",
            def.name, def.mxnet, self.base_python
        ));
        run_streaming(
            Command::new(&self.base_python)
                .arg("-m")
                .arg("venv")
                .arg(&tmp),
            progress,
        )?;
        let pip = tmp.join("bin").join("python");
        run_streaming(
            Command::new(&pip)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--progress-bar",
                    "off",
                    "--disable-pip-version-check",
                ])
                .args(def.pip_requirements),
            progress,
        )?;
        // A venv's scripts name their own path; the interpreter itself works after a move, and
        // jobs only ever run `bin/python`.
        let _ = fs::remove_dir_all(&final_dir);
        fs::rename(&tmp, &final_dir).map_err(|e| format!("moving the runtime into place: {e}"))?;
        fs::write(final_dir.join(".clary-ready"), def.mxnet)
            .map_err(|e| format!("marking the runtime ready: {e}"))?;
        progress(&format!("Runtime {} is ready", def.name));
        Ok(self.python(def))
    }
}

fn run_streaming(cmd: &mut Command, progress: &mut dyn FnMut(&str)) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run {shown}: {e}"))?;
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        stderr
            .map(|s| {
                BufReader::new(s)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            progress(&line);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {shown}: {e}"))?;
    let errors = err_thread.join().unwrap_or_default();
    for line in &errors {
        progress(line);
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status}): {}", errors.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_sdk_image_uris() {
        let r = resolve_training_image(
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38",
        )
        .unwrap();
        assert_eq!(
            (r.framework_version.as_str(), r.runtime.name),
            ("1.9.0", "mxnet-1.9")
        );
        let r = resolve_training_image(
            "520713654638.dkr.ecr.us-east-1.amazonaws.com/sagemaker-mxnet:1.3.0-cpu-py3",
        )
        .unwrap();
        assert_eq!(r.py_version, "py3");
        assert!(resolve_training_image("mxnet-training:1.9-gpu-py38").is_ok());
        let legacy = resolve_training_image("x/sagemaker-mxnet:1.2.1-cpu-py2").unwrap_err();
        assert!(legacy.contains("legacy train()"), "{legacy}");
        assert!(
            resolve_training_image("x/pytorch-training:2.0-cpu-py310")
                .unwrap_err()
                .contains("not an MXNet")
        );
        assert!(
            resolve_training_image("x/mxnet-training:2.5.0-cpu-py38")
                .unwrap_err()
                .contains("not available")
        );
    }
}
