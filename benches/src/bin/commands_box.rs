//! benches/commands.sh in the KVM box: the start cost of the commands scripts call and `rm -rf`
//! of a 10,000-file tree, in a VM of ours (`--backend kvm`), in QEMU microvm with KVM
//! (`--backend qemu`), and on the box's own Linux (L1) with this host's dash and GNU programs
//! (the same Debian builds the image has). One box run; absolute times in the box are emulated,
//! the ratios between the three are what count.
//!
//! cargo build --release && cargo run --release -p nodeos-vm-benches --bin commands_box -- [SAMPLES] [BATCH]

use std::path::Path;
use std::time::Duration;

use kvm_box::{BoxFile, BoxRun, Script};
use nodeos_vm_benches::{artifacts, nodeos_vm_bin, side_by_side_box};

/// What benches/commands.sh runs, from this host's /usr/bin, for L1 (its own are busybox's).
const PROGRAMS: &[&str] = &[
    "dash", "true", "ls", "cat", "cp", "rm", "mkdir", "grep", "sed", "find", "xargs", "sort",
    "head", "tar", "date", "seq", "mktemp", "sync",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let mut number = |default: u32| {
        args.next()
            .map(|a| a.parse().expect("SAMPLES and BATCH are numbers"))
            .unwrap_or(default)
    };
    let (samples, batch) = (number(7), number(5));
    let bin = nodeos_vm_bin();
    let (kernel, rootfs) = artifacts(&bin);
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("commands.sh");

    let mut script = Script::new();
    let timeout = Duration::from_secs(3600);
    for backend in ["kvm", "qemu"] {
        script.check_with_timeout(
            backend,
            timeout,
            &format!(
                "/nodeos/nodeos-vm run --backend {backend} --kernel /nodeos/vmlinux \
                 --rootfs /nodeos/rootfs.img -v /bench:/bench:ro -- \
                 sh /bench/commands.sh {samples} {batch} 2>&1"
            ),
        );
    }
    script.check_with_timeout(
        "l1",
        timeout,
        &format!("PATH=/gnu:$PATH dash /bench/commands.sh {samples} {batch} /tmp 2>&1"),
    );
    let mut run = BoxRun {
        timeout: Duration::from_secs(3 * 3600),
        memory_mib: 3072,
        ..side_by_side_box(&bin, &kernel, &rootfs, script.build())
    }
    .file(BoxFile::new(&bench, "/bench/commands.sh"));
    for program in PROGRAMS {
        run = run.file(BoxFile::with_libs(
            Path::new("/usr/bin").join(program),
            format!("/gnu/{program}"),
        ));
    }
    // `sh -c true` in the bench: dash, as in the image.
    run = run.file(BoxFile::with_libs("/usr/bin/dash", "/gnu/sh"));
    for file in kvm_box::volume_tools().expect("e2fsprogs for the KVM box") {
        run = run.file(file);
    }
    let result = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("KVM box run");
    let checks = result.checks();
    println!("## In the KVM box: benches/commands.sh {samples} {batch}\n");
    for (name, title) in [
        ("kvm", "a VM of ours (`--backend kvm`)"),
        ("qemu", "QEMU microvm with KVM (`--backend qemu`)"),
        ("l1", "the box's own Linux (L1), the same Debian programs"),
    ] {
        println!("### {title}\n");
        match checks.get(name) {
            Some(check) if check.passed() => println!("{}", check.output.trim_end()),
            Some(check) => println!("failed: {}", check.output),
            None => println!("did not run"),
        }
        println!();
    }
    println!(
        "(L1 boot {:?}, whole box run {:?})",
        result.boot, result.wall
    );
}
