//! How a host's name resolves for the job: each host has its own loopback address
//! (`127.A.B.i`), listed in a hosts file of the job's. Where the agent may make a mount and UTS
//! namespace (root, or CAP_SYS_ADMIN), the user's processes see that file as `/etc/hosts` and
//! `algo-i` as their hostname, so every resolver (Python, ps-lite, a shell) agrees; elsewhere
//! Python's resolver is taught the file by the `sitecustomize` shim (`CLARY_HOSTS_FILE`).
//! The same namespace carries the protected view of linked channels ([`crate::input_overlay`])
//! and, where [`HostIdentity::bind_opt_ml`] found it possible, the host's directory bound at
//! `/opt/ml`, so paths written as on SageMaker (`/opt/ml/input/data/...`) find this host's files.

// Unsafe: a pre-exec hook (unshare, mount, sethostname) between fork and exec has no safe API.
#![allow(unsafe_code)]

use crate::input_overlay::{InputOverlay, InputView, JOB_NAMESPACES, enter_private_namespace};
use clary_exec::protocol::HostSpec;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// What a host's processes are given to find the job's hosts by name.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    pub hosts_file: PathBuf,
    hosts_file_c: CString,
    hostname: CString,
    inputs: Option<InputOverlay>,
    /// The host's `/opt/ml` stand-in, bound at `/opt/ml` for every process once set.
    opt_ml: Option<CString>,
}

/// Where SageMaker's containers find their files, and where the host's directory is bound.
pub const OPT_ML: &str = "/opt/ml";

/// The hosts file's text: the machine's own entries (so `localhost` and the rest still
/// resolve) followed by one line per job host.
pub fn hosts_file_text(system_hosts: &str, spec: &HostSpec) -> String {
    hosts_text(system_hosts, &spec.job_name, &job_hosts(spec))
}

/// Each host of a training job with its address.
fn job_hosts(spec: &HostSpec) -> Vec<(String, String)> {
    spec.hosts
        .iter()
        .map(|h| (h.clone(), spec.address_of(h)))
        .collect()
}

fn hosts_text(system_hosts: &str, job_name: &str, hosts: &[(String, String)]) -> String {
    let mut text = system_hosts.trim_end().to_string();
    text.push_str("\n# Hosts of job ");
    text.push_str(job_name);
    text.push('\n');
    for (host, address) in hosts {
        text.push_str(&format!("{address}\t{host}\n"));
    }
    text
}

impl HostIdentity {
    /// Writes the hosts file next to the host's `/opt/ml` stand-in.
    pub fn prepare(spec: &HostSpec) -> std::io::Result<Self> {
        Self::prepare_for(
            &spec.job_name,
            &job_hosts(spec),
            &spec.current_host,
            &spec.base_dir,
        )
    }

    /// [`prepare`](Self::prepare) for any job kind: its hosts (name, address), this host's
    /// name and its `/opt/ml` stand-in.
    pub fn prepare_for(
        job_name: &str,
        hosts: &[(String, String)],
        current_host: &str,
        base_dir: &Path,
    ) -> std::io::Result<Self> {
        let dir = base_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| base_dir.to_path_buf());
        std::fs::create_dir_all(&dir)?;
        let hosts_file = dir.join("hosts");
        let system = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        std::fs::write(&hosts_file, hosts_text(&system, job_name, hosts))?;
        let to_c = |s: &str| {
            CString::new(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        };
        Ok(HostIdentity {
            hosts_file_c: to_c(&hosts_file.display().to_string())?,
            hostname: to_c(current_host)?,
            hosts_file,
            inputs: None,
            opt_ml: None,
        })
    }

    /// From now on every process started with [`apply`](Self::apply) sees `base` at `/opt/ml`
    /// (or is not started), if a probe shows that this agent can make that view: a private
    /// mount namespace (root, or an unprivileged user namespace) and an `/opt/ml` directory
    /// to mount on. `Err` says why not, for the job's log or its failure reason.
    pub fn bind_opt_ml(&mut self, base: &Path) -> Result<(), String> {
        let target = Path::new(OPT_ML);
        if !target.is_dir() {
            std::fs::create_dir_all(target).map_err(|e| {
                format!("{OPT_ML} does not exist and this agent cannot create it ({e}); create it once as root (mkdir -p {OPT_ML}): an empty directory is all it needs")
            })?;
        }
        let source = CString::new(base.display().to_string())
            .map_err(|_| format!("{} has a NUL byte", base.display()))?;
        let marker = ".clary-opt-ml-probe";
        std::fs::write(base.join(marker), "")
            .map_err(|e| format!("writing a probe file in {}: {e}", base.display()))?;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", &format!("test -e {OPT_ML}/{marker}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let probe_source = source.clone();
        // SAFETY: as in `apply`: only async-signal-safe system calls on prepared strings.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                enter_private_namespace(JOB_NAMESPACES)?;
                bind_at_opt_ml(&probe_source)
            });
        }
        let status = cmd.status();
        let _ = std::fs::remove_file(base.join(marker));
        match status {
            Ok(s) if s.success() => {
                self.opt_ml = Some(source);
                Ok(())
            }
            Ok(s) => Err(format!(
                "a process could not see this host's directory at {OPT_ML} ({s}): this agent may not make a private mount namespace here (run the server as root, or allow unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1)"
            )),
            Err(e) => Err(format!(
                "this agent may not make a private mount namespace to bind this host's directory at {OPT_ML} ({e}): run the server as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or user.max_user_namespaces > 0)"
            )),
        }
    }

    /// Whether processes see this host's directory at `/opt/ml`.
    pub fn opt_ml_bound(&self) -> bool {
        self.opt_ml.is_some()
    }

    /// From now on every process started with [`apply`](Self::apply) sees the linked
    /// channels through `overlay`, or is not started.
    pub fn protect_inputs(&mut self, overlay: InputOverlay) {
        self.inputs = Some(overlay);
    }

    /// Makes the command's process see the hosts file as `/etc/hosts` and the host's name as
    /// its hostname, when the kernel lets this agent make namespaces; otherwise the process
    /// runs as it would have, and the `sitecustomize` shim covers Python. Where channels are
    /// linked from the store, the process also gets `view` of them, and fails to start
    /// rather than run without it.
    pub fn apply(&self, cmd: &mut tokio::process::Command, view: InputView) {
        let hosts = self.hosts_file_c.clone();
        let name = self.hostname.clone();
        let inputs = self.inputs.clone();
        let opt_ml = self.opt_ml.clone();
        // SAFETY: between fork and exec only async-signal-safe system calls run, on strings
        // prepared before the fork; nothing allocates.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                if let Err(e) = enter_private_namespace(JOB_NAMESPACES) {
                    return match (&inputs, &opt_ml) {
                        (None, None) => Ok(()),
                        _ => Err(e),
                    };
                }
                if let Some(inputs) = &inputs {
                    inputs.mount_in_child(view)?;
                }
                // After the channels' views, and recursively, so /opt/ml shows them too.
                if let Some(source) = &opt_ml {
                    bind_at_opt_ml(source)?;
                }
                libc::mount(
                    hosts.as_ptr(),
                    c"/etc/hosts".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                );
                libc::sethostname(name.as_ptr(), name.as_bytes().len());
                Ok(())
            });
        }
    }
}

/// Binds `source` (with what is mounted below it) at `/opt/ml`. Call only in a child between
/// fork and exec, after [`enter_private_namespace`].
fn bind_at_opt_ml(source: &CString) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: both paths are NUL-terminated strings alive for the call; mount keeps neither.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            c"/opt/ml".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where this agent may make a mount namespace (root in CI; an unprivileged user namespace
    /// elsewhere, if the kernel allows it), a process sees the host's directory at /opt/ml
    /// and writes there land in the host's directory; elsewhere `bind_opt_ml` says why not.
    #[tokio::test]
    async fn the_hosts_directory_is_seen_at_opt_ml() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("algo-1/opt_ml");
        std::fs::create_dir_all(base.join("input/config")).unwrap();
        std::fs::write(base.join("input/config/marker"), "this host").unwrap();
        let spec = crate::test_spec(serde_json::json!({"base_dir": base}));
        let mut identity = HostIdentity::prepare(&spec).unwrap();
        if let Err(why) = identity.bind_opt_ml(&base) {
            assert!(why.contains("/opt/ml"), "{why}");
            eprintln!("skipped: {why}");
            return;
        }
        assert!(identity.opt_ml_bound());
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args([
            "-c",
            "cat /opt/ml/input/config/marker && echo written > /opt/ml/model.txt && hostname",
        ]);
        identity.apply(&mut cmd, InputView::Writable);
        let out = cmd.output().await.unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "this hostalgo-1\n");
        assert_eq!(
            std::fs::read_to_string(base.join("model.txt")).unwrap(),
            "written\n"
        );
        // The agent's own view of /opt/ml is untouched.
        assert!(!Path::new("/opt/ml/input/config/marker").exists());
    }

    #[test]
    fn hosts_file_keeps_the_system_entries_and_adds_each_host() {
        let spec = crate::test_spec(serde_json::json!({
            "hosts": ["algo-1", "algo-2"], "addresses": ["127.3.4.1", "127.3.4.2"]
        }));
        let text = hosts_file_text("127.0.0.1 localhost\n", &spec);
        assert!(text.starts_with("127.0.0.1 localhost\n"));
        assert!(text.contains("127.3.4.1\talgo-1\n") && text.contains("127.3.4.2\talgo-2\n"));
        assert_eq!(spec.address_of("algo-2"), "127.3.4.2");
    }
}
