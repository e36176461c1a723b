//! Our VMM against QEMU microvm, side by side in one KVM box run: same L1, same kernel, same
//! root image, same memory and vCPUs, runs interleaved. Ours runs twice per round: with guest
//! RAM on 2 MiB huge pages from L1's pool (set aside by the script), and with the pool turned
//! off by `NODEOS_VM_HUGE_PAGES=off` (transparent huge pages, as QEMU's RAM). Absolute times in
//! the box are emulated (not hardware times); the ratios are the figures that matter.
//!
//! With `aarch64`, the same in the arm64 KVM box: nodeos-vm built for aarch64, the arm64 guest,
//! our VMM on arm64 KVM against QEMU's `virt` machine (-accel kvm).
//!
//! cargo build --release && cargo run --release -p nodeos-vm-benches --bin kvm_box -- [RUNS] [aarch64]

use std::time::Duration;

use kvm_box::{BoxRun, Script};
use nodeos_vm_benches::{
    artifacts, count_arg, nodeos_vm_bin, parse_timings, side_by_side_box, side_by_side_box_arm64,
    stats,
};

/// Each case: its name, the environment it adds, its backend, and the backing its timings
/// line must name (our VMM's; `None` for QEMU).
const CASES: [(&str, &str, &str, Option<&str>); 3] = [
    ("kvm-huge", "", "kvm", Some("2 MiB huge pages")),
    (
        "kvm-thp",
        "NODEOS_VM_HUGE_PAGES=off ",
        "kvm",
        Some("transparent huge pages"),
    ),
    ("qemu", "", "qemu", None),
];
/// L1's pool: one 512 MiB guest (256 pages) at a time, and some room.
const L1_HUGE_PAGES: u32 = 300;

fn main() {
    let runs = count_arg(5);
    let arm64 = std::env::args().nth(2).is_some_and(|a| a == "aarch64");
    let bin = nodeos_vm_bin();

    let mut script = Script::new();
    script.setup(&format!("echo {L1_HUGE_PAGES} > /proc/sys/vm/nr_hugepages"));
    script.check("pool", "grep HugePages_ /proc/meminfo");
    for i in 0..runs {
        for (name, env, backend, _) in CASES {
            script.check_with_timeout(
                &format!("{name}.{i}"),
                Duration::from_secs(120),
                &format!(
                    "printf '6*7\\n' | {env}/nodeos/nodeos-vm start --pipe --timings --no-snapshot \
                     --backend {backend} --kernel /nodeos/vmlinux --rootfs /nodeos/rootfs.img 2>&1"
                ),
            );
        }
    }
    let run = if arm64 {
        side_by_side_box_arm64(&bin, script.build())
    } else {
        let (kernel, rootfs) = artifacts(&bin);
        side_by_side_box(&bin, &kernel, &rootfs, script.build())
    };
    let run = BoxRun {
        timeout: Duration::from_secs(1800),
        memory_mib: 3072,
        ..run
    };
    let result = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("KVM box run");
    let checks = result.checks();
    if let Some(pool) = checks.get("pool") {
        eprintln!("L1's pool:\n{}", pool.output);
    }

    let (machine, qemu) = if arm64 {
        ("the arm64 KVM box", "QEMU virt")
    } else {
        ("the KVM box", "QEMU microvm")
    };
    println!(
        "## In {machine}: nodeos-vm start, our VMM (kvm) on huge pages and on THP vs {qemu} (qemu, -accel kvm)\n"
    );
    println!("{runs} runs each, interleaved; 1 vCPU, 512 MiB, cold boots (`--no-snapshot`); `6*7` piped to the REPL, then end of input.\n");
    println!("| case | to init | boot + REPL answers + VM ends | whole command (L1 clock) |");
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    let mut memory = Vec::new();
    for (name, _, _, backing) in CASES {
        let (mut init, mut total, mut wall, mut overhead) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let Some(check) = checks.get(&format!("{name}.{i}")) else {
                continue;
            };
            if !check.passed() || !check.output.lines().any(|l| l.trim() == "42") {
                eprintln!("{name}.{i} failed: {}", check.output);
                continue;
            }
            if let Some(backing) = backing {
                let line = format!("guest RAM on {backing}");
                if !check.output.contains(&line) {
                    eprintln!("{name}.{i} left out: no {line:?} in {}", check.output);
                    continue;
                }
            }
            if let Some((a, b)) = parse_timings(&check.output) {
                init.push(a);
                total.push(b);
            }
            if let Some(mib) = check
                .output
                .lines()
                .find_map(|l| l.split("VMM overhead ").nth(1))
            {
                overhead.extend(mib.split(' ').next().and_then(|m| m.parse::<f64>().ok()));
            }
            if let Some(e) = check.elapsed {
                wall.push(e.as_secs_f64() * 1000.0);
            }
        }
        let (init, total, wall) = (stats(&init), stats(&total), stats(&wall));
        println!("| {name} | {init} | {total} | {wall} |");
        if !overhead.is_empty() {
            memory.push((name, stats(&overhead)));
        }
        medians.push((init.median, total.median));
    }
    let ratio = |a: usize, b: usize| {
        format!(
            "to init {:.2}, boot + REPL + end {:.2}",
            medians[a].0 / medians[b].0,
            medians[a].1 / medians[b].1
        )
    };
    println!("\nratio kvm-huge/kvm-thp: {}", ratio(0, 1));
    println!("ratio kvm-huge/QEMU: {}", ratio(0, 2));
    println!("ratio kvm-thp/QEMU: {}", ratio(1, 2));
    for (backend, mib) in memory {
        println!("{backend}: VMM memory overhead besides guest RAM: median {:.1} MiB (min {:.1}, max {:.1})", mib.median, mib.min, mib.max);
    }
    println!(
        "(L1 boot {:?}, whole box run {:?})",
        result.boot, result.wall
    );
}
