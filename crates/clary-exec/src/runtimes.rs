//! Runtimes: the Python environments that run a framework version.
//!
//! A built-in runtime is a virtual environment built once with pip under the runtimes
//! directory, holding the real MXNet of its version. The build happens under an exclusive file
//! lock into a temporary directory that is renamed into place at the end, so concurrent jobs
//! wait for one build and a crash never leaves a half-built runtime that looks ready.
//!
//! Operators add custom runtimes (`clary runtimes add`): an existing interpreter, or a
//! requirements file Clary builds like a built-in. They live as one JSON file each under
//! `<runtimes dir>/custom/`, so the server, the agents and the model servers all see them.

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How a runtime comes to exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Install {
    /// A fresh venv: `pip install <with_deps>`, then `pip install --no-deps <no_deps>`. The old
    /// MXNet wheels pin numpy versions that have no wheels for current Pythons; they run fine
    /// on numpy 1.23, so they go in without their pins.
    Pip {
        with_deps: Vec<String>,
        no_deps: Vec<String>,
    },
    /// A fresh venv: `pip install -r <file>` (the file is kept in the registry).
    Requirements(PathBuf),
    /// An interpreter the operator manages; Clary only runs it.
    Interpreter(PathBuf),
}

/// A runtime: a name, the MXNet it really runs, and how to get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub name: String,
    /// The MXNet version it runs ("" when a custom one has none).
    pub mxnet: String,
    pub install: Install,
    /// Image URIs that select it, besides its name (custom runtimes only).
    #[serde(default)]
    pub images: Vec<String>,
}

impl Runtime {
    pub fn is_custom(&self) -> bool {
        builtin(&self.name).is_none()
    }
}

/// The built-in runtimes: every MXNet 1.x wheel on PyPI that installs and imports on the
/// Python 3.8+ Clary runs on. (1.2.1 has a `yield` inside a comprehension, a syntax error
/// since Python 3.8; 0.12.1 and 1.0.0 link libgfortran.so.3, which current systems lack.)
pub fn builtins() -> Vec<Runtime> {
    const NUMPY: &str = "numpy<1.24";
    let old = |name: &str, mxnet: &str, wheel: &str| Runtime {
        name: name.into(),
        mxnet: mxnet.into(),
        install: Install::Pip {
            with_deps: vec![NUMPY.into(), "requests".into()],
            no_deps: vec![format!("mxnet=={wheel}")],
        },
        images: vec![],
    };
    vec![
        Runtime {
            name: "mxnet-1.9".into(),
            mxnet: "1.9.1".into(),
            // MXNet 1.9.1 uses numpy APIs that numpy 1.24 removed.
            install: Install::Pip {
                with_deps: vec!["mxnet==1.9.1".into(), NUMPY.into()],
                no_deps: vec![],
            },
            images: vec![],
        },
        old("mxnet-1.8", "1.8.0", "1.8.0.post0"),
        old("mxnet-1.7", "1.7.0", "1.7.0.post2"),
        old("mxnet-1.6", "1.6.0", "1.6.0"),
        old("mxnet-1.5", "1.5.1", "1.5.1"),
        old("mxnet-1.4", "1.4.1", "1.4.1"),
        old("mxnet-1.3", "1.3.0", "1.3.0"),
        old("mxnet-1.1", "1.1.0", "1.1.0"),
    ]
}

pub fn builtin(name: &str) -> Option<Runtime> {
    builtins().into_iter().find(|r| r.name == name)
}

/// `SAGEMAKER_TRAINING_MODULE` of the MXNet training images (script mode).
pub const MXNET_TRAINING_MODULE: &str = "sagemaker_mxnet_container.training:main";

/// The runtime every serving image runs on: the handler toolkit's inference API is the same
/// from 0.12 to 1.9, and 1.9 has the fastest CachedOp.
pub const SERVING_RUNTIME: &str = "mxnet-1.9";

/// How a framework version trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `SM_*` environment and command-line hyperparameters (1.3 and later).
    Script,
    /// The script's `train(**kwargs)` is called (1.2 and earlier).
    Legacy,
}

/// One row of the framework version table.
#[derive(Debug, Clone, Copy)]
pub struct VersionRow {
    pub versions: &'static [&'static str],
    pub runtime: &'static str,
    pub mode: Mode,
    pub note: &'static str,
}

/// Every `framework_version` the SDK can send (the seed's table, the later releases and the
/// minor-only aliases) and the runtime it trains on.
pub const VERSION_TABLE: &[VersionRow] = &[
    script(&["1.9.0", "1.9"], "mxnet-1.9", ""),
    script(&["1.8.0", "1.8"], "mxnet-1.8", ""),
    script(&["1.7.0", "1.7"], "mxnet-1.7", ""),
    script(&["1.6.0", "1.6"], "mxnet-1.6", ""),
    script(&["1.5.1", "1.5"], "mxnet-1.5", ""),
    script(
        &["1.4.1", "1.4.0", "1.4"],
        "mxnet-1.4",
        "1.4.0 runs on MXNet 1.4.1 (its bug-fix release)",
    ),
    script(&["1.3.0", "1.3"], "mxnet-1.3", ""),
    legacy(
        &["1.2.1", "1.2"],
        "mxnet-1.3",
        "MXNet 1.2.1 does not import on Python 3.8+; runs on MXNet 1.3.0",
    ),
    legacy(&["1.1.0", "1.1"], "mxnet-1.1", ""),
    legacy(
        &["1.0.0", "1.0", "0.12.1", "0.12"],
        "mxnet-1.1",
        "MXNet 0.12.1 and 1.0.0 need libgfortran.so.3; run on MXNet 1.1.0",
    ),
];

const fn script(
    versions: &'static [&'static str],
    runtime: &'static str,
    note: &'static str,
) -> VersionRow {
    VersionRow {
        versions,
        runtime,
        mode: Mode::Script,
        note,
    }
}

const fn legacy(
    versions: &'static [&'static str],
    runtime: &'static str,
    note: &'static str,
) -> VersionRow {
    VersionRow {
        versions,
        runtime,
        mode: Mode::Legacy,
        note,
    }
}

pub fn version_row(version: &str) -> Option<&'static VersionRow> {
    VERSION_TABLE.iter().find(|r| r.versions.contains(&version))
}

/// Runtime names are directory and file names.
pub fn valid_runtime_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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

    pub fn python(&self, rt: &Runtime) -> PathBuf {
        match &rt.install {
            Install::Interpreter(p) => p.clone(),
            _ => self.dir.join(&rt.name).join("bin").join("python"),
        }
    }

    pub fn is_ready(&self, rt: &Runtime) -> bool {
        match &rt.install {
            Install::Interpreter(p) => p.is_file(),
            _ => self.dir.join(&rt.name).join(".clary-ready").is_file(),
        }
    }

    fn custom_dir(&self) -> PathBuf {
        self.dir.join("custom")
    }

    /// A built-in or registered runtime by name.
    pub fn find(&self, name: &str) -> Option<Runtime> {
        builtin(name).or_else(|| {
            if !valid_runtime_name(name) {
                return None;
            }
            let text = fs::read(self.custom_dir().join(format!("{name}.json"))).ok()?;
            serde_json::from_slice(&text).ok()
        })
    }

    /// The registered custom runtimes, by name.
    pub fn customs(&self) -> Vec<Runtime> {
        let mut out: Vec<Runtime> = fs::read_dir(self.custom_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                self.find(name.strip_suffix(".json")?)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Registers a custom runtime: checks that it runs MXNet (building it first when it comes
    /// from a requirements file), then writes its registry entry in one rename.
    pub fn add_custom(
        &self,
        name: &str,
        source: Install,
        images: Vec<String>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Runtime, String> {
        if !valid_runtime_name(name) {
            return Err(format!(
                "{name:?} is not a valid runtime name: use letters, digits, '-', '_' and '.' (at most 64)"
            ));
        }
        if builtin(name).is_some() {
            return Err(format!(
                "{name} is a built-in runtime; give the custom runtime another name"
            ));
        }
        let custom = self.custom_dir();
        fs::create_dir_all(&custom).map_err(|e| format!("creating {}: {e}", custom.display()))?;
        let install = match source {
            Install::Interpreter(p) => {
                // Absolute but not resolved: a venv's interpreter is a symlink to the base
                // Python, and only the link's path finds the venv's packages.
                let abs = std::path::absolute(&p)
                    .map_err(|e| format!("the interpreter {} is not usable: {e}", p.display()))?;
                if !abs.is_file() {
                    return Err(format!("there is no interpreter at {}", abs.display()));
                }
                Install::Interpreter(abs)
            }
            Install::Requirements(file) => {
                let kept = custom.join(format!("{name}.requirements.txt"));
                fs::copy(&file, &kept).map_err(|e| {
                    format!("reading the requirements file {}: {e}", file.display())
                })?;
                // A changed requirements file means a rebuild.
                let _ = fs::remove_file(self.dir.join(name).join(".clary-ready"));
                Install::Requirements(kept)
            }
            Install::Pip { .. } => {
                return Err("a custom runtime comes from --python or --requirements".into());
            }
        };
        let mut rt = Runtime {
            name: name.to_string(),
            mxnet: String::new(),
            install,
            images,
        };
        let checked = self
            .ensure(&rt, progress)
            .and_then(|python| mxnet_version(&python));
        rt.mxnet = match checked {
            Ok(version) => version,
            Err(e) => {
                // Nothing half-registered: a venv built for a refused runtime goes too (unless
                // an earlier registration of this name still uses it).
                if let Install::Requirements(file) = &rt.install
                    && self.find(name).is_none()
                {
                    let _ = fs::remove_file(file);
                    let _ = fs::remove_dir_all(self.dir.join(name));
                }
                return Err(e);
            }
        };
        let entry = custom.join(format!("{name}.json"));
        let tmp = custom.join(format!(".{name}.json.{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec_pretty(&rt).unwrap_or_default())
            .and_then(|_| fs::rename(&tmp, &entry))
            .map_err(|e| format!("writing {}: {e}", entry.display()))?;
        Ok(rt)
    }

    /// Unregisters a custom runtime (and removes the environment Clary built for it).
    pub fn remove_custom(&self, name: &str) -> Result<(), String> {
        let Some(rt) = self.find(name).filter(Runtime::is_custom) else {
            return Err(format!("there is no custom runtime {name:?}"));
        };
        fs::remove_file(self.custom_dir().join(format!("{name}.json")))
            .map_err(|e| format!("removing {name}: {e}"))?;
        if let Install::Requirements(file) = &rt.install {
            let _ = fs::remove_file(file);
            let _ = fs::remove_dir_all(self.dir.join(name));
        }
        Ok(())
    }

    /// Builds the runtime if it is not ready, sending each line of progress to `progress`.
    /// Returns its interpreter.
    pub fn ensure(&self, rt: &Runtime, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, String> {
        let steps: Vec<Vec<String>> = match &rt.install {
            Install::Interpreter(p) if p.is_file() => return Ok(p.clone()),
            Install::Interpreter(p) => {
                return Err(format!(
                    "the interpreter {} of runtime {} does not exist any more; register it again with `clary runtimes add {} --python PATH`",
                    p.display(),
                    rt.name,
                    rt.name
                ));
            }
            Install::Pip { with_deps, no_deps } => {
                let mut steps = vec![with_deps.clone()];
                if !no_deps.is_empty() {
                    steps.push(
                        std::iter::once("--no-deps".to_string())
                            .chain(no_deps.iter().cloned())
                            .collect(),
                    );
                }
                steps
            }
            Install::Requirements(file) => {
                vec![vec!["-r".into(), file.display().to_string()]]
            }
        };
        if self.is_ready(rt) {
            return Ok(self.python(rt));
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let lock_path = self.dir.join(format!("{}.lock", rt.name));
        let lock_file = fs::File::create(&lock_path)
            .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
        progress(&format!("Waiting for the lock on runtime {} ...", rt.name));
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("locking {}: {e}", lock_path.display()))?;
        if self.is_ready(rt) {
            return Ok(self.python(rt));
        }
        let final_dir = self.dir.join(&rt.name);
        let tmp = self
            .dir
            .join(format!(".{}.building-{}", rt.name, std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        progress(&format!(
            "Building runtime {} {} once, with {} -m venv and pip; later jobs reuse it",
            rt.name,
            if rt.mxnet.is_empty() {
                String::new()
            } else {
                format!("(MXNet {})", rt.mxnet)
            },
            self.base_python
        ));
        run_streaming(
            Command::new(&self.base_python)
                .arg("-m")
                .arg("venv")
                .arg(&tmp),
            progress,
        )?;
        let pip = tmp.join("bin").join("python");
        for step in steps {
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
                    .args(step),
                progress,
            )
            .inspect_err(|_| {
                let _ = fs::remove_dir_all(&tmp);
            })?;
        }
        // A venv's scripts name their own path; the interpreter itself works after a move, and
        // jobs only ever run `bin/python`.
        let _ = fs::remove_dir_all(&final_dir);
        fs::rename(&tmp, &final_dir).map_err(|e| format!("moving the runtime into place: {e}"))?;
        fs::write(final_dir.join(".clary-ready"), &rt.mxnet)
            .map_err(|e| format!("marking the runtime ready: {e}"))?;
        progress(&format!("Runtime {} is ready", rt.name));
        Ok(self.python(rt))
    }
}

/// The MXNet version an interpreter imports, or why it can't.
fn mxnet_version(python: &Path) -> Result<String, String> {
    let out = Command::new(python)
        .args(["-c", "import mxnet; print(mxnet.__version__)"])
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        return Err(format!(
            "{} cannot import mxnet ({last}); a runtime must run MXNet",
            python.display()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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
    fn every_table_row_names_a_builtin_runtime() {
        for row in VERSION_TABLE {
            assert!(builtin(row.runtime).is_some(), "{}", row.runtime);
        }
        assert_eq!(version_row("1.2").unwrap().mode, Mode::Legacy);
        assert_eq!(version_row("1.4.0").unwrap().runtime, "mxnet-1.4");
        assert!(version_row("2.0.0").is_none());
    }

    #[test]
    fn custom_runtimes_register_and_resolve_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let rts = Runtimes::new(dir.path().to_path_buf());
        // A stand-in interpreter that "imports" mxnet: a shell script printing a version.
        let fake = dir.path().join("python");
        fs::write(&fake, "#!/bin/sh\necho 1.9.1\n").unwrap();
        let mut perms = fs::metadata(&fake).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&fake, perms).unwrap();
        let rt = rts
            .add_custom(
                "my-mx",
                Install::Interpreter(fake.clone()),
                vec!["x/y:1".into()],
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(rt.mxnet, "1.9.1");
        assert_eq!(rts.find("my-mx").unwrap(), rt);
        assert_eq!(rts.customs().len(), 1);
        assert!(
            rts.add_custom("mxnet-1.9", Install::Interpreter(fake), vec![], &mut |_| {})
                .unwrap_err()
                .contains("built-in")
        );
        rts.remove_custom("my-mx").unwrap();
        assert!(rts.find("my-mx").is_none());
    }
}
