//! Copy-on-write clones of stored files (the FICLONE ioctl of btrfs, XFS, bcachefs, ...): the
//! clone shares the stored file's blocks, costs no copying, and a write to either leaves the
//! other unchanged.

// Unsafe: FICLONE has no safe wrapper in std, libc or nix; the call passes two open file
// descriptors and no pointers.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Makes `dst` (empty, open for writing) a clone of `src`. Fails with `EOPNOTSUPP`, `EXDEV`,
/// `EINVAL` or `ENOTTY` where the filesystem cannot clone; the caller then copies.
pub(crate) fn clone_file(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: both descriptors stay open for the whole call (borrowed `File`s); FICLONE takes
    // the source descriptor as its integer argument and touches no memory of ours.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
