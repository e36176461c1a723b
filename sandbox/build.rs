//! Builds the two programs this crate carries, with cargo, from this workspace:
//! - the guest binary (`guest/`, a static executable for the architecture this build is for),
//!   packed into the root image, so that the image always holds the guest code of this build;
//! - the VMM program (`nodeos-vmm`, the vmm crate's binary), which runs each VM of our own
//!   backend jailed and filtered, and which links no CLI, async runtime or HTTP stack: carried
//!   inside nodeos-vm, so that one binary is all there is to run or install.
//!
//! Both are built for this build's target: a cross build of nodeos-vm (for an arm64 host)
//! carries an arm64 VMM and guest.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const GUEST_PROFILE: &str = "release-guest";
const VMM_PROFILE: &str = "release";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target = env::var("TARGET").unwrap();
    for input in [
        "guest/src",
        "guest/Cargo.toml",
        "contract/src",
        "contract/Cargo.toml",
        "vmm/src",
        "vmm/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }

    let guest_target = out_dir.join("guest-target");
    // The guest has no dynamic loader of its own at PID 1 time: link glibc statically.
    cargo_build(
        &workspace,
        &guest_target,
        &[
            "-p",
            "nodeos-guest",
            "--profile",
            GUEST_PROFILE,
            "--target",
            &target,
        ],
        "-Ctarget-feature=+crt-static",
    );
    let guest = guest_target
        .join(&target)
        .join(GUEST_PROFILE)
        .join("nodeos-init");
    fs::copy(&guest, out_dir.join("nodeos-init")).expect("copying the guest binary");

    let vmm_target = out_dir.join("vmm-target");
    cargo_build(
        &workspace,
        &vmm_target,
        &[
            "-p",
            "nodeos-vmm",
            "--bin",
            "nodeos-vmm",
            "--profile",
            VMM_PROFILE,
            "--target",
            &target,
        ],
        "",
    );
    let vmm = fs::read(
        vmm_target
            .join(&target)
            .join(VMM_PROFILE)
            .join("nodeos-vmm"),
    )
    .expect("reading nodeos-vmm");
    fs::write(out_dir.join("nodeos-vmm"), &vmm).expect("copying nodeos-vmm");
    println!(
        "cargo:rustc-env=NODEOS_VMM_SHA256={}",
        hex::encode(Sha256::digest(&vmm))
    );
}

/// `cargo build --quiet ARGS` in `workspace` into `target_dir`, with `rustflags` alone (not the
/// flags of the build that runs this script: a fuzzing or coverage build's instrumentation).
fn cargo_build(workspace: &Path, target_dir: &Path, args: &[&str], rustflags: &str) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    for var in [
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo");
    assert!(status.success(), "cargo build {} failed", args.join(" "));
}
