//! The arm64 guest against the x86-64 guest on this host, both under QEMU's TCG and booted cold
//! (an arm64 guest has no template snapshots yet), rounds interleaved: `start` to the REPL
//! answering `6*7`, and `run -- node -e 'console.log(1)'` end to end. The x86 guest restored
//! from its template is there for reference. Image sizes too.
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
    let mut x86 = images("x86_64", &x86_kernel, &x86_rootfs);
    let x86_restored = x86.clone();
    x86.push("--no-snapshot".into());
    let arm = images("aarch64", &arm_kernel, &arm_rootfs);
    let variants = [
        ("x86-64 guest, cold", x86),
        ("arm64 guest, cold", arm),
        ("x86-64 guest, restored", x86_restored),
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
    println!(
        "\narm64 / x86-64, both cold: to init {:.2}, REPL {:.2}, run {:.2}",
        median(&init[1]) / median(&init[0]),
        median(&repl[1]) / median(&repl[0]),
        median(&run[1]) / median(&run[0])
    );
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
