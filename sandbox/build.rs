//! Builds the guest binaries (`guest/`, a static x86-64 executable) and embeds them in
//! nodeos-vm, so that the root-image builder always packs the guest code of this very build.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
const GUEST_PROFILE: &str = "release-guest";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guest-target");

    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("guest/src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("guest/Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("contract/src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "nodeos-guest",
            "--profile",
            GUEST_PROFILE,
        ])
        .args(["--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        // The guest has no dynamic loader of its own at PID 1 time: link glibc statically.
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    for var in [
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the guest binaries");
    assert!(
        status.success(),
        "building the guest binaries (guest/) failed"
    );

    let bin = target_dir
        .join(GUEST_TARGET)
        .join(GUEST_PROFILE)
        .join("nodeos-init");
    std::fs::copy(&bin, out_dir.join("nodeos-init")).expect("copying the guest binary");
}
