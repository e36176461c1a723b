//! Shared pieces of the benchmarks: timing a `nodeos-vm start` to its REPL, statistics, and
//! a containerd of our own ([`containerd`], also for the shim's tests).

pub mod containerd;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One boot: to the guest's first userspace instruction (boot-timer port), to the REPL
/// answering its first line, and to the VM's end after `.exit`.
#[derive(Debug, Clone, Copy)]
pub struct Boot {
    pub init: Duration,
    pub repl_ready: Duration,
    pub total: Duration,
}

/// Boots with `nodeos-vm start --pipe --timings <args>` and measures.
pub fn boot(bin: &Path, args: &[&str]) -> Result<Boot, String> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["start", "--pipe", "--timings"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let mut stdin = child.stdin.take().unwrap();
    // nodeos-vm holds input until the guest console is ready: the answer marks REPL-ready.
    stdin.write_all(b"6*7\n").map_err(|e| e.to_string())?;
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let repl_ready = loop {
        line.clear();
        if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!(
                "the VM ended before answering: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if line.trim() == "42" {
            break started.elapsed();
        }
    };
    stdin.write_all(b".exit\n").map_err(|e| e.to_string())?;
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let total = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("nodeos-vm exited with {}: {stderr}", out.status));
    }
    let (init_ms, _) =
        parse_timings(&stderr).ok_or_else(|| format!("no init timing in: {stderr}"))?;
    Ok(Boot {
        init: Duration::from_secs_f64(init_ms / 1000.0),
        repl_ready,
        total,
    })
}

/// Milliseconds to init and in all from `nodeos-vm start --timings`'s line
/// `nodeos-vm: timings: init 512.5 ms, total 900.0 ms`.
pub fn parse_timings(output: &str) -> Option<(f64, f64)> {
    let line = output
        .lines()
        .find_map(|l| l.split("timings: init ").nth(1))?;
    let (init, rest) = line.split_once(" ms, total ")?;
    Some((
        init.parse().ok()?,
        rest.trim_end_matches(" ms").parse().ok()?,
    ))
}

/// A bench's one argument, a count (how many rounds, instances, ...): `default` when absent.
pub fn count_arg(default: usize) -> usize {
    std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the argument is a number"))
        .unwrap_or(default)
}

/// A bench's two arguments: where it runs (`host` unless given) and how many rounds (5).
pub fn mode_and_runs() -> (String, usize) {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "host".into());
    let runs = args
        .next()
        .map(|a| a.parse().expect("RUNS is a number"))
        .unwrap_or(5);
    (mode, runs)
}

/// The `nodeos-vm` binary built beside this benchmark.
pub fn nodeos_vm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().unwrap().join("nodeos-vm");
    assert!(
        bin.is_file(),
        "build nodeos-vm first: cargo build --release (looked for {})",
        bin.display()
    );
    bin
}

/// Builds (or finds cached) the kernel and root image: `(kernel, rootfs)`.
pub fn artifacts(bin: &Path) -> (PathBuf, PathBuf) {
    artifacts_with(bin, &[])
}

/// [`artifacts`] with more options for `nodeos-vm build` (`--arch aarch64`).
pub fn artifacts_with(bin: &Path, options: &[&str]) -> (PathBuf, PathBuf) {
    let out = Command::new(bin)
        .arg("build")
        .args(options)
        .stderr(Stdio::inherit())
        .output()
        .expect("nodeos-vm build");
    assert!(out.status.success(), "nodeos-vm build failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let path = |prefix: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {text}"));
        PathBuf::from(line[prefix.len()..].rsplit_once(" (").unwrap().0.trim())
    };
    (path("kernel:"), path("root image:"))
}

/// A KVM box run of `script` with nodeos-vm, the kernel and image under /nodeos, and QEMU:
/// both backends side by side.
pub fn side_by_side_box(
    bin: &Path,
    kernel: &Path,
    rootfs: &Path,
    script: String,
) -> kvm_box::BoxRun {
    use kvm_box::BoxFile;
    kvm_box::BoxRun::new(script)
        .file(BoxFile::with_libs(bin, "/nodeos/nodeos-vm"))
        .file(BoxFile::new(kernel, "/nodeos/vmlinux"))
        .file(BoxFile::new(rootfs, "/nodeos/rootfs.img"))
        .file(BoxFile::with_libs(
            "/usr/bin/qemu-system-x86_64",
            "/usr/bin/qemu-system-x86_64",
        ))
        .file(BoxFile::same_path("/usr/share/qemu"))
}

/// The arm64 side-by-side box: [`side_by_side_box`] for an arm64 L1, with nodeos-vm built for
/// aarch64 (`kvm_box::nodeos_vm_for`, release, cached), the arm64 kernel and image that `host_bin`
/// builds, and Debian's arm64 QEMU with its libraries and data (from the box's arm64 sysroot).
pub fn side_by_side_box_arm64(host_bin: &Path, script: String) -> kvm_box::BoxRun {
    use kvm_box::{Arch, BoxFile, Sysroot};
    let (kernel, rootfs) = artifacts_with(host_bin, &["--arch", "aarch64"]);
    let cache = kvm_box::default_cache_dir();
    let bin = kvm_box::nodeos_vm_for(&cache, Arch::Aarch64, "release")
        .unwrap_or_else(|e| panic!("nodeos-vm for aarch64: {e}"));
    let sysroot = Sysroot::ensure(&cache, Arch::Aarch64, &["qemu-system-arm"])
        .unwrap_or_else(|e| panic!("the arm64 QEMU: {e}"));
    let run = kvm_box::BoxRun::new(script)
        .arch(Arch::Aarch64)
        .file(BoxFile::with_libs(bin, "/nodeos/nodeos-vm"))
        .file(BoxFile::new(kernel, "/nodeos/vmlinux"))
        .file(BoxFile::new(rootfs, "/nodeos/rootfs.img"));
    kvm_box::sysroot_qemu(&sysroot)
        .unwrap_or_else(|e| panic!("the arm64 QEMU: {e}"))
        .into_iter()
        .fold(run, kvm_box::BoxRun::file)
}

/// Median and spread of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stats(values: &[f64]) -> Stats {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stats {
        median,
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
        n,
    }
}

/// The `p`th percentile of a sample (nearest rank; 0 is the smallest value, 100 the largest).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:8.1} ms (min {:.1}, max {:.1}, n={})",
            self.median, self.min, self.max, self.n
        )
    }
}

/// The folder `dir/package` as `npm pack` makes a package: a gzipped tar of `package/`.
pub fn npm_pack(dir: &Path) -> Vec<u8> {
    let tgz = dir.join("app.tgz");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(dir)
        .arg("package")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar czf failed");
    std::fs::read(tgz).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = stats(&[5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        assert_eq!(stats(&[1.0, 2.0, 3.0, 10.0]).median, 2.5);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!((percentile(&v, 0.0), percentile(&v, 100.0)), (1.0, 100.0));
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn timings_line() {
        let t = parse_timings("x\nnodeos-vm: timings: init 512.5 ms, total 900.0 ms\n").unwrap();
        assert_eq!(t, (512.5, 900.0));
        assert!(parse_timings("nothing").is_none());
    }
}
