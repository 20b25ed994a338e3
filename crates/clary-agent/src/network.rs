//! How a host's name resolves for the job: each host has its own loopback address
//! (`127.A.B.i`), listed in a hosts file of the job's. Where the agent may make a mount and UTS
//! namespace (root, or CAP_SYS_ADMIN), the user's processes see that file as `/etc/hosts` and
//! `algo-i` as their hostname, so every resolver (Python, ps-lite, a shell) agrees; elsewhere
//! Python's resolver is taught the file by the `sitecustomize` shim (`CLARY_HOSTS_FILE`).
//! The same namespace carries the protected view of linked channels ([`crate::input_overlay`]).

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
}

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
        })
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
        // SAFETY: between fork and exec only async-signal-safe system calls run, on strings
        // prepared before the fork; nothing allocates.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                if let Err(e) = enter_private_namespace(JOB_NAMESPACES) {
                    return match inputs {
                        Some(_) => Err(e),
                        None => Ok(()),
                    };
                }
                if let Some(inputs) = &inputs {
                    inputs.mount_in_child(view)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
