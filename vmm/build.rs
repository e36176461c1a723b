//! Sets `NODEOS_VMM_BUILD`, this build's identity for snapshots (crate::snapshot): a hash of
//! the crate's sources and manifest, so that a snapshot is restored only by the VMM that saved
//! it, whatever the version says.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut paths = vec![root.join("Cargo.toml"), root.join("build.rs")];
    files(&root.join("src"), &mut paths);
    paths.sort();
    let mut hash = DefaultHasher::new();
    for path in &paths {
        path.strip_prefix(&root).unwrap_or(path).hash(&mut hash);
        std::fs::read(path).unwrap_or_default().hash(&mut hash);
    }
    println!("cargo:rustc-env=NODEOS_VMM_BUILD={:016x}", hash.finish());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=build.rs");
}
