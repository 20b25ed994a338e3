//! tar.gz packing (model.tar.gz, output.tar.gz, sourcedir.tar.gz) and safe extraction.

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// gzip level for archives we write. Model weights barely compress, and level 1 is several
/// times faster than the toolkit's level 9 for the same size (DEPENDENCIES.md §1.7).
pub const DEFAULT_GZIP_LEVEL: u32 = 1;

/// Writes the contents of `dir` (not `dir` itself) as a gzipped tar to `out`. Entry names are
/// relative, without a leading `./`; symlinks are stored as links, not followed.
pub fn pack_dir<W: Write>(dir: &Path, out: W, level: u32) -> io::Result<W> {
    let gz = GzEncoder::new(out, Compression::new(level));
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            tar.append_dir_all(&name, &path)?;
        } else {
            tar.append_path_with_name(&path, &name)?;
        }
    }
    tar.into_inner()?.finish()
}

/// What extraction left out, and why; callers log it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skipped(pub Vec<String>);

/// Mode bits extraction never keeps: setuid, setgid and sticky (a setuid file of the server's
/// user would let any local user run as it), and every group and world bit (another user could
/// read or change the code a job or an endpoint runs; the data directory is private).
pub const STRIPPED_MODE_BITS: u32 = 0o7077;

/// Extracts a gzipped tar into `dest`, refusing anything that could write outside it: absolute
/// names are made relative, names with `..` are skipped, links that point outside `dest` are
/// skipped, and devices and FIFOs are never created. Modes lose [`STRIPPED_MODE_BITS`].
pub fn extract_tar_gz<R: Read>(input: R, dest: &Path) -> io::Result<Skipped> {
    fs::create_dir_all(dest)?;
    let mut archive = tar::Archive::new(MultiGzDecoder::new(input));
    archive.set_preserve_permissions(true);
    archive.set_mask(STRIPPED_MODE_BITS);
    archive.set_overwrite(true);
    let mut skipped = Skipped::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let Some(rel) = sanitize(&raw) else {
            skipped.0.push(format!(
                "{}: names outside the target directory",
                raw.display()
            ));
            continue;
        };
        let kind = entry.header().entry_type();
        if !(kind.is_file()
            || kind.is_dir()
            || kind.is_symlink()
            || kind.is_hard_link()
            || kind.is_contiguous())
        {
            skipped.0.push(format!(
                "{}: devices, FIFOs and other special files are not extracted",
                raw.display()
            ));
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let base = if kind.is_symlink() {
                rel.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                PathBuf::new()
            };
            if target.is_absolute() || sanitize(&base.join(&target)).is_none() {
                skipped.0.push(format!(
                    "{}: link to {} points outside the target directory",
                    raw.display(),
                    target.display()
                ));
                continue;
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        // unpack_in re-checks the path and refuses to write through symlinked parents.
        if !entry.unpack_in(dest)? {
            skipped
                .0
                .push(format!("{}: refused by the extractor", raw.display()));
        }
    }
    Ok(skipped)
}

/// A relative path with `.`, leading `/` and prefixes removed, or `None` if it climbs with `..`
/// above its start.
fn sanitize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
        }
    }
    // A `..` anywhere is suspicious enough to refuse even when it stays inside.
    if path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<GzEncoder<Vec<u8>>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        build(&mut b);
        b.into_inner().unwrap().finish().unwrap()
    }

    fn file(b: &mut tar::Builder<GzEncoder<Vec<u8>>>, name: &[u8], data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        // Write the raw name so hostile names survive the builder's own checks.
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn pack_then_extract_round_trips() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("sub")).unwrap();
        fs::write(src.path().join("a.txt"), "A").unwrap();
        fs::write(src.path().join("sub/b.txt"), "B").unwrap();
        let bytes = pack_dir(src.path(), Vec::new(), DEFAULT_GZIP_LEVEL).unwrap();
        let names: Vec<String> = tar::Archive::new(MultiGzDecoder::new(&bytes[..]))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(
            names.contains(&"a.txt".to_string()) && names.contains(&"sub/b.txt".to_string()),
            "{names:?}"
        );
        let dst = tempfile::tempdir().unwrap();
        assert_eq!(
            extract_tar_gz(&bytes[..], dst.path()).unwrap(),
            Skipped::default()
        );
        assert_eq!(
            fs::read_to_string(dst.path().join("sub/b.txt")).unwrap(),
            "B"
        );
    }

    #[test]
    fn setuid_setgid_sticky_group_and_world_bits_are_stripped() {
        use std::os::unix::fs::PermissionsExt;
        let bytes = tar_with(|b| {
            for (name, mode, kind) in [
                ("bin", 0o1777, tar::EntryType::Directory),
                ("bin/suid", 0o4777, tar::EntryType::Regular),
                ("bin/sgid", 0o2755, tar::EntryType::Regular),
                ("shared.txt", 0o666, tar::EntryType::Regular),
                ("plain.txt", 0o640, tar::EntryType::Regular),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_path(name).unwrap();
                h.set_mode(mode);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        });
        let dst = tempfile::tempdir().unwrap();
        extract_tar_gz(&bytes[..], dst.path()).unwrap();
        let mode = |p: &str| {
            fs::metadata(dst.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin"), 0o700);
        assert_eq!(mode("bin/suid"), 0o700);
        assert_eq!(mode("bin/sgid"), 0o700);
        assert_eq!(mode("shared.txt"), 0o600);
        assert_eq!(mode("plain.txt"), 0o600);
    }

    #[test]
    fn hostile_entries_are_skipped() {
        let bytes = tar_with(|b| {
            file(b, b"../escape.txt", b"x");
            file(b, b"/abs.txt", b"y");
            file(b, b"ok.txt", b"z");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "link", "/etc/passwd").unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Char);
            h.set_size(0);
            h.set_path("dev").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        });
        let outer = tempfile::tempdir().unwrap();
        let dst = outer.path().join("code");
        let skipped = extract_tar_gz(&bytes[..], &dst).unwrap();
        assert_eq!(skipped.0.len(), 3, "{skipped:?}");
        assert!(!outer.path().join("escape.txt").exists());
        assert_eq!(fs::read_to_string(dst.join("abs.txt")).unwrap(), "y");
        assert_eq!(fs::read_to_string(dst.join("ok.txt")).unwrap(), "z");
        assert!(fs::symlink_metadata(dst.join("link")).is_err());
        assert!(!dst.join("dev").exists());
    }
}
