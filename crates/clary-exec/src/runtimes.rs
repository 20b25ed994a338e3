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
use std::path::{Path, PathBuf};
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

/// What an inference image (`CreateModel.PrimaryContainer.Image`) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingImage {
    pub framework_version: String,
    pub device: String,
    pub runtime: RuntimeDef,
    /// MXNet 1.2 and earlier: the legacy handler signatures (model first in `predict_fn`).
    pub legacy_handlers: bool,
    /// MXNet 1.4 and later (the MMS images): the code travels in `model.tar.gz` under `code/`;
    /// earlier images fetch `SAGEMAKER_SUBMIT_DIRECTORY`.
    pub code_in_model: bool,
}

/// Every version the serving images existed for; all run on the MXNet 1.9 runtime, whose
/// inference API covers theirs.
const SERVING_VERSIONS: &[&str] = &[
    "0.12.1", "0.12", "1.0.0", "1.0", "1.1.0", "1.1", "1.2.1", "1.2", "1.3.0", "1.3", "1.4.0",
    "1.4.1", "1.4", "1.5.1", "1.5", "1.6.0", "1.6", "1.7.0", "1.7", "1.8.0", "1.8", "1.9.0", "1.9",
];

/// Maps an MXNet inference image URI (`mxnet-inference`, `sagemaker-mxnet-serving`, the
/// pre-1.4 `sagemaker-mxnet`, and their `-eia` variants; tag `<version>-<cpu|gpu>-<py>`, or
/// `1.0`-style tags of the oldest images) to a runtime.
pub fn resolve_inference_image(image: &str) -> Result<ServingImage, String> {
    let supported = || {
        format!(
            "Clary serves the MXNet inference images (mxnet-inference, sagemaker-mxnet-serving, sagemaker-mxnet, and their -eia variants) for framework versions {}",
            SERVING_VERSIONS.join(", ")
        )
    };
    let last = image.rsplit('/').next().unwrap_or(image);
    let (repo, tag) = last
        .split_once(':')
        .ok_or_else(|| format!("Image {image:?} has no tag. {}", supported()))?;
    let repo = repo.strip_suffix("-eia").unwrap_or(repo);
    if !matches!(
        repo,
        "mxnet-inference" | "sagemaker-mxnet-serving" | "sagemaker-mxnet" | "mxnet-training"
    ) {
        return Err(format!(
            "Image {image:?} is not an MXNet inference image. {}",
            supported()
        ));
    }
    let mut parts = tag.split('-');
    let version = parts.next().unwrap_or_default();
    let device = parts
        .next()
        .filter(|d| matches!(*d, "cpu" | "gpu"))
        .unwrap_or("cpu");
    if !SERVING_VERSIONS.contains(&version) {
        return Err(format!(
            "MXNet framework version {version:?} is not available for serving here. {}",
            supported()
        ));
    }
    let numeric: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    let at_least = |major: u32, minor: u32| {
        (
            numeric.first().copied().unwrap_or(0),
            numeric.get(1).copied().unwrap_or(0),
        ) >= (major, minor)
    };
    Ok(ServingImage {
        framework_version: version.to_string(),
        device: device.to_string(),
        runtime: MXNET_19,
        legacy_handlers: !at_least(1, 3),
        code_in_model: at_least(1, 4),
    })
}

/// Creates a virtual environment at `venv` layered over the runtime of `runtime_python`: the
/// runtime's packages (pip included) stay visible through a `.pth` file, so pip installs only
/// what the runtime lacks, into `venv`, and the shared runtime never changes. Returns the new
/// interpreter.
pub fn create_layered_venv(runtime_python: &Path, venv: &Path) -> Result<PathBuf, String> {
    let out = Command::new(runtime_python)
        .args([
            "-c",
            "import sys, site, json; print(json.dumps([sys._base_executable, site.getsitepackages()]))",
        ])
        .output()
        .map_err(|e| format!("running {}: {e}", runtime_python.display()))?;
    let (base_python, site_dirs): (String, Vec<String>) = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("inspecting the runtime {}: {e}", runtime_python.display()))?;
    let status = Command::new(&base_python)
        .args(["-m", "venv", "--without-pip"])
        .arg(venv)
        .status()
        .map_err(|e| format!("creating the environment {}: {e}", venv.display()))?;
    if !status.success() {
        return Err(format!(
            "creating the environment {} failed",
            venv.display()
        ));
    }
    let python = venv.join("bin").join("python");
    let site = Command::new(&python)
        .args(["-c", "import site; print(site.getsitepackages()[0])"])
        .output()
        .map_err(|e| format!("inspecting {}: {e}", python.display()))?;
    let site = PathBuf::from(String::from_utf8_lossy(&site.stdout).trim());
    fs::write(site.join("_clary_runtime.pth"), site_dirs.join("\n") + "\n")
        .map_err(|e| format!("linking the runtime into {}: {e}", venv.display()))?;
    Ok(python)
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
