//! File-mode channels as hard links to the store's files (1,000 files in tens of
//! milliseconds, no bytes copied), kept from the job's writes: the user's process sees each
//! channel through an overlay mounted in its own mount namespace, the links as the read-only
//! lower layer and a directory of the host's own as the upper one. A write, truncate, chmod
//! or rename of an input copies the file up first (overlayfs never writes a lower layer), so
//! the script may change or add files in its input directory, as on SageMaker, and the
//! store's inodes stay as they were. The helper processes (pip, the parameter server) see the
//! channels read-only.
//!
//! Only where [`probe`] shows that this agent can make the namespace and the overlay on this
//! filesystem are channels linked; elsewhere they are cloned or copied
//! ([`clary_store::ObjectStore::fetch_to`]). Once linked, a process that cannot get its
//! protected view is not started at all.

// Unsafe: unshare(2) and mount(2) run in the child between fork and exec, where only
// async-signal-safe calls on memory prepared before the fork are allowed; std and nix have
// no such wrappers (nix's may allocate for long paths).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a process sees the linked channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputView {
    /// The user's entry point (and its children): the overlay, writable.
    Writable,
    /// Helper processes: the linked files, read-only.
    ReadOnly,
}

#[derive(Debug)]
struct ChannelMount {
    /// The channel directory: the overlay's lower layer and its mount point.
    dir: CString,
    /// `lowerdir=...,upperdir=...,workdir=...`
    options: CString,
}

/// The overlays of one host's linked channels, ready to mount in a child process.
#[derive(Debug, Clone)]
pub struct InputOverlay {
    channels: Arc<Vec<ChannelMount>>,
}

/// Where a host keeps its channels' upper layers: next to (never under) its `/opt/ml`
/// stand-in, so the script does not see them and they are never below a lower layer.
pub fn state_dir(base_dir: &Path) -> PathBuf {
    base_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| base_dir.to_path_buf())
        .join("input-writes")
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

impl InputOverlay {
    /// Makes an empty upper and work directory for each channel (a retried attempt on the
    /// same host starts from the staged inputs, not from what the last attempt wrote).
    /// `channels`: each channel's name and directory.
    pub fn prepare(state: &Path, channels: &[(String, PathBuf)]) -> io::Result<Self> {
        let mut mounts = Vec::new();
        for (name, dir) in channels {
            let root = state.join("channels").join(name);
            let _ = fs::remove_dir_all(&root);
            let (upper, work) = (root.join("upper"), root.join("work"));
            fs::create_dir_all(&upper)?;
            fs::create_dir_all(&work)?;
            let paths = [dir, &upper, &work].map(|p| p.display().to_string());
            // overlayfs splits its options at ',' and its layers at ':'.
            if let Some(p) = paths.iter().find(|p| p.contains([',', ':', '\\', '\n'])) {
                return Err(invalid(format!(
                    "{p} has a character overlayfs cannot take in a path (, : \\)"
                )));
            }
            let [lower, upper, work] = paths;
            // redirect_dir: renaming a directory that came from the store works as on any
            // filesystem instead of failing with EXDEV.
            let options =
                format!("lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=on");
            let to_c = |s: String| CString::new(s).map_err(|e| invalid(e.to_string()));
            mounts.push(ChannelMount {
                dir: to_c(lower)?,
                options: to_c(options)?,
            });
        }
        Ok(InputOverlay {
            channels: Arc::new(mounts),
        })
    }

    /// Mounts each channel's view over its directory. Call only in a child between fork and
    /// exec, after [`enter_private_namespace`]: it makes system calls on prepared strings
    /// and allocates nothing.
    pub fn mount_in_child(&self, view: InputView) -> io::Result<()> {
        use nix::libc;
        for ch in self.channels.iter() {
            // SAFETY: every pointer is a NUL-terminated string owned by `self`, alive for
            // the call; mount(2) reads them and keeps nothing.
            let rc = unsafe {
                match view {
                    InputView::Writable => libc::mount(
                        c"overlay".as_ptr(),
                        ch.dir.as_ptr(),
                        c"overlay".as_ptr(),
                        0,
                        ch.options.as_ptr().cast(),
                    ),
                    InputView::ReadOnly => {
                        let rc = libc::mount(
                            ch.dir.as_ptr(),
                            ch.dir.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        );
                        if rc != 0 {
                            rc
                        } else {
                            // A bind mount takes MS_RDONLY only on a remount.
                            libc::mount(
                                std::ptr::null(),
                                ch.dir.as_ptr(),
                                std::ptr::null(),
                                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                                std::ptr::null(),
                            )
                        }
                    }
                }
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The namespaces each of the job's processes gets: mounts (the hosts file, the channels'
/// views) and the host name.
pub const JOB_NAMESPACES: nix::libc::c_int = nix::libc::CLONE_NEWNS | nix::libc::CLONE_NEWUTS;

/// Moves the calling process into new namespaces (`flags`, `CLONE_NEWNS` among them) whose
/// mounts never propagate back to the host. Where this process may not (not root), it first
/// enters an unprivileged user namespace of its own, where the kernel allows one, with its
/// user and group mapped to themselves: it then may make the others, and the job runs as the
/// same user. Call only in a child between fork and exec.
pub fn enter_private_namespace(flags: nix::libc::c_int) -> io::Result<()> {
    use nix::libc;
    // SAFETY: unshare takes no pointers; mount gets static NUL-terminated strings and nulls;
    // the id maps are written from stack buffers.
    unsafe {
        if libc::unshare(flags) != 0 {
            let denied = io::Error::last_os_error();
            let (uid, gid) = (libc::geteuid(), libc::getegid());
            if uid == 0 || libc::unshare(libc::CLONE_NEWUSER | flags) != 0 {
                return Err(denied);
            }
            // setgroups must be denied before an unprivileged gid_map is written.
            write_proc_file(c"/proc/self/setgroups", b"deny")?;
            let mut buf = [0u8; 32];
            write_proc_file(c"/proc/self/uid_map", id_map_line(uid, &mut buf))?;
            let mut buf = [0u8; 32];
            write_proc_file(c"/proc/self/gid_map", id_map_line(gid, &mut buf))?;
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `"<id> <id> 1\n"` (an id mapped to itself) in `buf`, without allocating (it runs between
/// fork and exec).
fn id_map_line(id: u32, buf: &mut [u8; 32]) -> &[u8] {
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = id;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut len = 0;
    for _ in 0..2 {
        for i in (0..n).rev() {
            buf[len] = digits[i];
            len += 1;
        }
        buf[len] = b' ';
        len += 1;
    }
    buf[len] = b'1';
    buf[len + 1] = b'\n';
    &buf[..len + 2]
}

/// Writes `data` to a `/proc` file in one write(2). Only async-signal-safe calls.
fn write_proc_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    use nix::libc;
    // SAFETY: `path` is NUL-terminated and `data` valid for its length during the calls.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

/// Whether this agent can protect linked channels on the filesystem of `state`: a shell,
/// started the way the user's process will be (a private mount namespace, a writable
/// overlay), overwrites a file of a lower layer; the lower file must stay as it was and the
/// write must land in the upper layer. `Err` says what failed, for the job's log.
pub fn probe(state: &Path) -> Result<(), String> {
    let dir = state.join("probe");
    let _ = fs::remove_dir_all(state);
    let result = (|| {
        let lower = dir.join("lower");
        fs::create_dir_all(&lower).map_err(|e| format!("creating {}: {e}", lower.display()))?;
        fs::write(lower.join("f"), "stored").map_err(|e| format!("writing the probe: {e}"))?;
        let overlay = InputOverlay::prepare(&dir, &[("probe".to_string(), lower.clone())])
            .map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "printf changed > \"$1\"", "sh"])
            .arg(lower.join("f"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: the hook makes only async-signal-safe system calls on strings prepared
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                enter_private_namespace(JOB_NAMESPACES)?;
                overlay.mount_in_child(InputView::Writable)
            });
        }
        let status = cmd
            .status()
            .map_err(|e| format!("no mount namespace with an overlay: {e}"))?;
        let lower_text = fs::read_to_string(lower.join("f")).unwrap_or_default();
        let upper = dir.join("channels/probe/upper/f");
        let upper_text = fs::read_to_string(&upper).unwrap_or_default();
        if !status.success() || lower_text != "stored" || upper_text != "changed" {
            return Err(format!(
                "a write through the overlay did not stay in its upper layer ({status}, lower {lower_text:?}, upper {upper_text:?})"
            ));
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&dir);
    result
}

/// The local store to link File-mode inputs from, for a training or processing host: when
/// there is one, some input is in File mode, and this agent can keep the job's writes from the
/// links (the [`probe`]); the job's log says which way its inputs come and why.
pub fn store_to_link(
    local: Option<Arc<clary_store::LocalStore>>,
    all_pipe: bool,
    base_dir: &Path,
    log: &crate::job_log::JobLog,
) -> Option<Arc<clary_store::LocalStore>> {
    let local = local?;
    if all_pipe {
        return None;
    }
    match probe(&state_dir(base_dir)) {
        Ok(()) => {
            log.info("File-mode inputs are linked from the store and seen by the job through an overlay in its own mount namespace: the job may write to them, its writes go to this host's own copies, never to the store");
            Some(local)
        }
        Err(why) => {
            log.info(&format!("File-mode inputs are cloned or copied from the store: it cannot be linked safely here ({why})"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn id_maps_map_an_id_to_itself() {
        let mut buf = [0u8; 32];
        assert_eq!(id_map_line(0, &mut buf), b"0 0 1\n");
        let mut buf = [0u8; 32];
        assert_eq!(
            id_map_line(u32::MAX, &mut buf),
            b"4294967295 4294967295 1\n"
        );
        let mut buf = [0u8; 32];
        assert_eq!(id_map_line(1000, &mut buf), b"1000 1000 1\n");
    }

    #[test]
    fn paths_overlayfs_cannot_parse_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = InputOverlay::prepare(dir.path(), &[("train".into(), "/a,b".into())]);
        assert!(err.is_err());
        let ok = InputOverlay::prepare(dir.path(), &[("train".into(), "/a/b".into())]).unwrap();
        let opts = ok.channels[0].options.to_str().unwrap().to_string();
        assert!(opts.starts_with("lowerdir=/a/b,upperdir="), "{opts}");
        assert!(dir.path().join("channels/train/work").is_dir());
        assert_eq!(
            state_dir(Path::new("/j/algo-1/opt_ml")),
            Path::new("/j/algo-1/input-writes")
        );
    }

    /// Runs `script` under `sh` with the channel seen through `view`.
    fn run_in_view(overlay: &InputOverlay, view: InputView, script: &str) -> bool {
        let overlay = overlay.clone();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", script]);
        // SAFETY: as in `probe`.
        unsafe {
            cmd.pre_exec(move || {
                enter_private_namespace(JOB_NAMESPACES)?;
                overlay.mount_in_child(view)
            });
        }
        cmd.status().unwrap().success()
    }

    /// Where this test runs with the privileges CI has (root): a hard-linked "stored" file
    /// under the writable view can be rewritten, chmodded and added to, and the stored inode
    /// keeps its bytes and mode; the read-only view refuses writes.
    #[test]
    fn writes_through_the_overlay_never_reach_a_linked_file() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("input-writes");
        if let Err(why) = probe(&state) {
            eprintln!("skipped: {why}");
            return;
        }
        let stored = root.path().join("stored");
        fs::write(&stored, "original").unwrap();
        fs::set_permissions(&stored, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let channel = root.path().join("opt_ml/input/data/train");
        fs::create_dir_all(&channel).unwrap();
        fs::hard_link(&stored, channel.join("a")).unwrap();
        fs::create_dir(channel.join("sub")).unwrap();
        fs::hard_link(&stored, channel.join("sub/c")).unwrap();
        let overlay = InputOverlay::prepare(&state, &[("train".into(), channel.clone())]).unwrap();
        let d = channel.display();
        assert!(run_in_view(
            &overlay,
            InputView::Writable,
            &format!(
                "set -e; printf new > {d}/a; chmod 600 {d}/a; printf x > {d}/b; mv {d}/sub {d}/moved; printf z >> {d}/moved/c; test \"$(cat {d}/a)\" = new"
            )
        ));
        assert_eq!(fs::read_to_string(&stored).unwrap(), "original");
        assert_eq!(fs::metadata(&stored).unwrap().mode() & 0o777, 0o644);
        assert!(!channel.join("b").exists() && channel.join("sub/c").exists());
        let upper = state.join("channels/train/upper");
        assert_eq!(fs::read_to_string(upper.join("a")).unwrap(), "new");
        assert!(!run_in_view(
            &overlay,
            InputView::ReadOnly,
            &format!("printf y > {d}/a")
        ));
        assert!(run_in_view(
            &overlay,
            InputView::ReadOnly,
            &format!("test \"$(cat {d}/a)\" = original")
        ));
        assert_eq!(fs::read_to_string(&stored).unwrap(), "original");
        // A fresh prepare (a retried attempt) forgets what the last one wrote.
        InputOverlay::prepare(&state, &[("train".into(), channel)]).unwrap();
        assert!(!upper.join("a").exists());
    }
}
