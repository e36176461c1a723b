//! The arm64 guest against the x86-64 guest on this host, both under QEMU's TCG, booted cold
//! and restored from their templates, rounds interleaved: `start` to the REPL answering `6*7`,
//! and `run -- node -e 'console.log(1)'` end to end. Image sizes too.
//!
//! cargo build --release && ./target/release/arch 5

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use nodeos_vm_benches::{artifacts_with, boot, count_arg, nodeos_vm_bin, stats};

fn main() {
    let rounds = count_arg(5);
    let bin = nodeos_vm_bin();
    let (x86_kernel, x86_rootfs) = artifacts_with(&bin, &[]);
    let (arm_kernel, arm_rootfs) = artifacts_with(&bin, &["--arch", "aarch64"]);
    let images = |arch: &str, kernel: &Path, rootfs: &Path| -> Vec<String> {
        vec![
            "--arch".into(),
            arch.into(),
            "--kernel".into(),
            kernel.display().to_string(),
            "--rootfs".into(),
            rootfs.display().to_string(),
        ]
    };
    let cold = |mut args: Vec<String>| {
        args.push("--no-snapshot".into());
        args
    };
    let x86 = images("x86_64", &x86_kernel, &x86_rootfs);
    let arm = images("aarch64", &arm_kernel, &arm_rootfs);
    let variants = [
        ("x86-64 guest, cold", cold(x86.clone())),
        ("arm64 guest, cold", cold(arm.clone())),
        ("x86-64 guest, restored", x86),
        ("arm64 guest, restored", arm),
    ];
    let mut init = vec![Vec::new(); variants.len()];
    let mut repl = vec![Vec::new(); variants.len()];
    let mut run = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (name, args)) in variants.iter().enumerate() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let b = boot(&bin, &args).unwrap_or_else(|e| panic!("{name}: {e}"));
            init[i].push(b.init.as_secs_f64() * 1000.0);
            repl[i].push(b.repl_ready.as_secs_f64() * 1000.0);
            run[i].push(time_run(&bin, &args));
        }
    }
    println!("## The arm64 guest under TCG (`./target/release/arch {rounds}`, this host)\n");
    println!("| guest | to init | start → REPL answering | `run` hello, end to end |");
    println!("|---|---|---|---|");
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "| {name} | {} | {} | {} |",
            stats(&init[i]),
            stats(&repl[i]),
            stats(&run[i])
        );
    }
    let median = |v: &[f64]| stats(v).median;
    for (what, x86, arm) in [("cold", 0, 1), ("restored", 2, 3)] {
        println!(
            "\narm64 / x86-64, both {what}: REPL {:.2}, run {:.2}",
            median(&repl[arm]) / median(&repl[x86]),
            median(&run[arm]) / median(&run[x86])
        );
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    println!(
        "root images: x86-64 {:.1} MB, arm64 {:.1} MB ({:+.1}%); kernels: vmlinux {:.1} MB, Image {:.1} MB",
        size(&x86_rootfs),
        size(&arm_rootfs),
        (size(&arm_rootfs) / size(&x86_rootfs) - 1.0) * 100.0,
        size(&x86_kernel),
        size(&arm_kernel)
    );
}

/// `nodeos-vm run ARGS -- node -e 'console.log(1)'`, in milliseconds.
fn time_run(bin: &Path, args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new(bin)
        .arg("run")
        .args(args)
        .args(["--", "node", "-e", "console.log(1)"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout == b"1\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64() * 1000.0
}
