//! Embeds every file under the repository's `python/` directory: generates
//! `$OUT_DIR/files.rs`, a sorted `FILES` table of `(relative path, include_bytes!(absolute
//! path))`. Bytecode caches (`__pycache__`, `*.pyc`) and dotfiles (editor swap files) are left
//! out; everything else is a shim, so adding a file to python/ is all it takes to ship it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .join("../../python")
        .canonicalize()
        .expect("the repository's python/ directory");
    println!("cargo:rerun-if-changed={}", root.display());
    // Cargo shares a target directory between checkouts (worktrees, CI clones) and decides
    // whether to rerun this script from the paths the previous run printed: another checkout's
    // python/ would stay embedded while it exists. The directory cargo runs in tells them apart.
    println!("cargo:rerun-if-env-changed=PWD");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    let mut out = String::from(
        "/// Every embedded file: its path relative to python/ ('/'-separated) and its bytes.\n\
         pub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (rel, abs) in &files {
        writeln!(out, "    ({rel:?}, include_bytes!({abs:?})),").unwrap();
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("files.rs");
    std::fs::write(&dest, out).expect("writing files.rs");
}

/// Whether a directory entry of python/ is left out of the binary. The unit test in lib.rs
/// walks the directory with the same rule.
fn skipped(name: &str) -> bool {
    name == "__pycache__" || name.ends_with(".pyc") || name.starts_with('.')
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = entry.path();
        let name = entry.file_name();
        let name = name
            .to_str()
            .unwrap_or_else(|| panic!("{}: not UTF-8", path.display()));
        if skipped(name) {
            continue;
        }
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            walk(root, &path, files);
        } else if kind.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
            let rel = path.strip_prefix(root).expect("under python/");
            let rel: Vec<&str> = rel
                .components()
                .map(|c| c.as_os_str().to_str().expect("UTF-8"))
                .collect();
            let abs = path.to_str().expect("UTF-8").to_string();
            files.push((rel.join("/"), abs));
        } else {
            panic!(
                "{}: python/ holds only files and directories (a link would embed what it points at today)",
                path.display()
            );
        }
    }
}
