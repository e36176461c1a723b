//! The containerd shim against runc and against `nodeos-vm run`, on this host: a hello
//! container end to end (`ctr run --rm IMAGE ID node -e 'console.log(1)'`) with runc
//! (Debian's), with `--runtime io.containerd.nodeos.v2` (a microVM on this host's backend), as
//! a member of a pod whose microVM runs already (annotated as containerd's CRI annotates a
//! pod's containers), and the same command through `nodeos-vm run`; rounds interleaved,
//! medians and ratios. Uses a containerd of its own (needs root).
//!
//! cargo build --release --workspace && ./target/release/shim [RUNS]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use nodeos_vm_benches::containerd::{Containerd, IMAGE, RUNTIME};
use nodeos_vm_benches::{artifacts, count_arg, nodeos_vm_bin, stats};

const JS: &str = "console.log(1)";

/// One way of running the hello container, given the round: whether it printed its line.
type Way<'a> = Box<dyn Fn(usize) -> bool + 'a>;

fn main() {
    let runs = count_arg(5);
    let bin = nodeos_vm_bin();
    let here = bin.parent().unwrap();
    assert!(
        here.join("containerd-shim-nodeos-v2").is_file(),
        "build the shim first: cargo build --release --workspace"
    );
    artifacts(&bin);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("nodeos.tar");
    let exported = Command::new(&bin)
        .args(["image", "export", "-o"])
        .arg(&archive)
        .status()
        .unwrap();
    assert!(exported.success(), "nodeos-vm image export failed");
    for (program, package) in [("containerd", "containerd"), ("runc", "runc")] {
        kvm_box::host_program(program, package).expect("containerd and runc, as root");
    }
    let containerd = Containerd::start(here, &archive);

    // The pod the members join: its sandbox container waits for ever in its microVM.
    let sandbox = [
        "--runtime",
        RUNTIME,
        "-d",
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=pod",
    ];
    let mut args = vec!["run"];
    args.extend_from_slice(&sandbox);
    args.extend_from_slice(&[IMAGE, "pod", "node", "-e", "setInterval(() => {}, 1000)"]);
    containerd.ctr_ok(&args);
    let member = [
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=pod",
    ];
    let ways: [(&str, Way); 4] = [
        (
            "ctr run, runc",
            Box::new(|i| ctr_run(&containerd, &[], &format!("runc-{i}"))),
        ),
        (
            "ctr run, nodeos shim",
            Box::new(|i| ctr_run(&containerd, &["--runtime", RUNTIME], &format!("vm-{i}"))),
        ),
        (
            "ctr run, nodeos shim, in a running pod",
            Box::new(|i| ctr_run(&containerd, &member, &format!("member-{i}"))),
        ),
        ("nodeos-vm run", Box::new(|_| nodeos_vm_run(&bin))),
    ];
    let mut samples = vec![Vec::new(); ways.len()];
    // One round first, not counted: caches warm (the template snapshot, the page cache).
    for i in 0..=runs {
        for (n, (name, way)) in ways.iter().enumerate() {
            let started = Instant::now();
            assert!(way(i), "{name} failed");
            if i > 0 {
                samples[n].push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    println!("## A hello container end to end, this host ({runs} rounds, interleaved)\n");
    println!("| how | median (min–max) | / runc | / nodeos-vm run |\n|---|---|---|---|");
    let medians: Vec<f64> = samples.iter().map(|s| stats(s).median).collect();
    for ((name, _), s) in ways.iter().zip(&samples) {
        let median = stats(s).median;
        println!(
            "| {name} | {} | {:.2} | {:.2} |",
            stats(s),
            median / medians[0],
            median / medians[3]
        );
    }
}

/// `ctr run --rm` of the hello command with `options`; whether it printed its line.
fn ctr_run(containerd: &Containerd, options: &[&str], id: &str) -> bool {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(options);
    args.extend_from_slice(&[IMAGE, id, "node", "-e", JS]);
    let out = containerd.ctr(&args);
    out.status.success() && out.stdout == b"1\n"
}

fn nodeos_vm_run(bin: &Path) -> bool {
    let out = Command::new(bin)
        .args(["run", "--", "node", "-e", JS])
        .output()
        .unwrap();
    out.status.success() && out.stdout == b"1\n"
}
