//! The real-project corpus (cli/tests/corpus/) as a table: each project's `npm test` on this
//! host, in a microVM here (`nodeos-vm run -v DIR:/app -w /app -- npm test`, the backend
//! `auto` picks: QEMU/TCG where KVM is PVM) and in a VM of our VMM inside one KVM box run;
//! pass/fail counts, exit status and time of each. The tests (cli/tests/corpus.rs,
//! cli/tests/kvm_box/x86_64.rs) assert the same; this prints all of it, every project in the box.
//!
//! cargo build --release && ./target/release/corpus [--no-box] [PROJECT...]

use std::time::Duration;

use kvm_box::{BoxFile, BoxRun, Script};
use nodeos_vm_benches::{artifacts, nodeos_vm_bin};

#[path = "../../../cli/tests/common/corpus.rs"]
#[allow(dead_code)] // shared with the tests, which use all of it
mod corpus;

use corpus::{Outcome, Project};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let with_box = !args.iter().any(|a| a == "--no-box");
    args.retain(|a| a != "--no-box");
    let projects: Vec<&Project> = if args.is_empty() {
        corpus::PROJECTS.iter().collect()
    } else {
        args.iter().map(|name| corpus::project(name)).collect()
    };
    let bin = nodeos_vm_bin();
    let (kernel, rootfs) = artifacts(&bin);
    let dir = tempfile::tempdir().unwrap();

    let mut rows = Vec::new();
    for project in &projects {
        let host = corpus::on_host(&corpus::prepare(project, &dir.path().join("host")));
        let run = [bin.as_path(), "run".as_ref(), "--kernel".as_ref(), &kernel]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .chain(["--rootfs".into(), rootfs.display().to_string()])
            .collect::<Vec<_>>();
        let vm = corpus::in_vm(&run, &corpus::prepare(project, &dir.path().join("vm")));
        eprintln!(
            "{}: host {}, here {}",
            project.name,
            cell(project, &host),
            cell(project, &vm)
        );
        rows.push((host, vm));
    }

    let in_box = with_box.then(|| {
        let mut script = Script::new();
        let run_cmd = "/nodeos/nodeos-vm run --backend kvm --kernel /nodeos/vmlinux --rootfs /nodeos/rootfs.img";
        let mut run = BoxRun::new("")
            .file(BoxFile::with_libs(&bin, "/nodeos/nodeos-vm"))
            .file(BoxFile::new(&kernel, "/nodeos/vmlinux"))
            .file(BoxFile::new(&rootfs, "/nodeos/rootfs.img"));
        for file in kvm_box::volume_tools().expect("e2fsprogs for the KVM box") {
            run = run.file(file);
        }
        for project in &projects {
            corpus::in_box::add_check(&mut script, run_cmd, project);
            run = run.file(corpus::in_box::file(project, &dir.path().join("box")));
        }
        let run = BoxRun {
            script: script.build(),
            timeout: Duration::from_secs(600 + 600 * projects.len() as u64),
            ..run
        };
        let out = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("KVM box run");
        eprintln!(
            "KVM box: L1 boot {:?}, whole run {:?}, initramfs {} MiB",
            out.boot,
            out.wall,
            out.initramfs_bytes >> 20
        );
        out.checks()
    });

    println!(
        "## The corpus: `npm test` on the host, in a VM here, in a VM of our VMM in the KVM box\n"
    );
    println!("Counts passed/failed, exit status, wall time (for a VM: boot to exit, with packing the volume and copying it back).\n");
    println!(
        "| project | written for | host | VM here (`auto`) | our VMM, KVM box | same as host |"
    );
    println!("|---|---|---|---|---|---|");
    for (project, (host, vm)) in projects.iter().zip(&rows) {
        let boxed = in_box.as_ref().map(|checks| {
            checks
                .get(&corpus::in_box::check_name(project))
                .map(corpus::in_box::outcome)
        });
        let box_cell = match &boxed {
            None => "not run".to_string(),
            Some(None) => "no result (the box ended early)".to_string(),
            Some(Some(o)) => cell(project, o),
        };
        let mut same = vec![corpus::compare(project, host, vm, "here").is_ok()];
        if let Some(Some(o)) = &boxed {
            same.push(corpus::compare(project, host, o, "in the box").is_ok());
        }
        for why in [corpus::compare(project, host, vm, "here")]
            .into_iter()
            .chain(
                boxed
                    .iter()
                    .flatten()
                    .map(|o| corpus::compare(project, host, o, "in the box")),
            )
            .filter_map(Result::err)
        {
            eprintln!("{why}");
        }
        println!(
            "| {} | {} | {} | {} | {box_cell} | {} |",
            project.name,
            project.expected,
            cell(project, host),
            cell(project, vm),
            if same.iter().all(|s| *s) {
                "yes"
            } else {
                "**no**"
            }
        );
    }
}

fn cell(project: &Project, o: &Outcome) -> String {
    let counts = o
        .counts(project.reporter)
        .map_or("no counts".into(), |c| format!("{}/{}", c.passed, c.failed));
    let status = o.status.map_or("killed".into(), |s| s.to_string());
    format!(
        "{counts}, status {status}, {:.1} s",
        o.elapsed.as_secs_f64()
    )
}
