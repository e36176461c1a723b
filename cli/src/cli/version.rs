//! `nodeos-vm version [--json]`: this build, and the kernel, image and Node.js it boots.

use std::path::Path;

use serde::Serialize;

use sandbox::artifacts::{Artifact, Store};

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// One JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Versions {
    nodeos_vm: &'static str,
    /// The guest kernel's version (its banner), when it is built.
    kernel: Option<String>,
    kernel_path: Option<String>,
    root_image_path: Option<String>,
    /// The Node.js and npm the root image is built with (its pinned inputs).
    node: Option<String>,
    npm: Option<String>,
}

pub fn run(args: VersionArgs) -> anyhow::Result<()> {
    let store = Store::from_env()?;
    // Without the sources (a binary copied elsewhere) nothing built can be named.
    let kernel = store.cached(Artifact::Kernel).unwrap_or(None);
    let rootfs = store.cached(Artifact::Rootfs).unwrap_or(None);
    let pinned =
        std::fs::read_to_string(store.sources().join("rootfs/versions")).unwrap_or_default();
    let versions = Versions {
        nodeos_vm: env!("CARGO_PKG_VERSION"),
        kernel: kernel.as_deref().and_then(kernel_version),
        kernel_path: kernel.map(|p| p.display().to_string()),
        root_image_path: rootfs.map(|p| p.display().to_string()),
        node: pinned_value(&pinned, "NODE_VERSION"),
        npm: pinned_value(&pinned, "NPM_VERSION"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&versions)?);
        return Ok(());
    }
    let or_unbuilt = |v: &Option<String>| {
        v.clone()
            .unwrap_or_else(|| "not built yet (`nodeos-vm build`)".into())
    };
    println!("nodeos-vm {}", versions.nodeos_vm);
    println!("kernel: Linux {}", or_unbuilt(&versions.kernel));
    println!("root image: {}", or_unbuilt(&versions.root_image_path));
    println!(
        "node: {}, npm: {}",
        versions.node.as_deref().unwrap_or("?"),
        versions.npm.as_deref().unwrap_or("?")
    );
    Ok(())
}

/// The version in a Linux kernel's banner (`Linux version 6.1.192 (...)`).
fn kernel_version(path: &Path) -> Option<String> {
    let image = std::fs::read(path).ok()?;
    let banner = b"Linux version ";
    let at = image.windows(banner.len()).position(|w| w == banner)? + banner.len();
    let rest = &image[at..image.len().min(at + 64)];
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// `NAME=VALUE` of a sourced shell file like rootfs/versions.
fn pinned_value(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernels_banner_and_pinned_values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(
            &kernel,
            b"\x7fELF\0\0Linux version 6.1.192 (nodeos@nodeos-vm) #1\0",
        )
        .unwrap();
        assert_eq!(kernel_version(&kernel).as_deref(), Some("6.1.192"));
        std::fs::write(&kernel, b"no banner").unwrap();
        assert_eq!(kernel_version(&kernel), None);
        let pinned = "# comment\nNODE_VERSION=24.21.0\nNPM_VERSION=\"11.21.2\"\n";
        assert_eq!(
            pinned_value(pinned, "NODE_VERSION").as_deref(),
            Some("24.21.0")
        );
        assert_eq!(
            pinned_value(pinned, "NPM_VERSION").as_deref(),
            Some("11.21.2")
        );
        assert_eq!(pinned_value(pinned, "NODE"), None);
    }
}
