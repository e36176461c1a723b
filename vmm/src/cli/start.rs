//! `nodeos-vm start`: a Node.js REPL, PID 1 of a fresh microVM, on this terminal.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::{BackendChoice, ImageArgs};
use crate::artifacts::{check_kernel, check_rootfs, Artifact, Store};
use crate::backend::{detect, kvm, qemu, RunReport, VmExit, VmSpec};
use crate::cmdline::{self, UpperLayer};
use crate::console::HostConsole;
use crate::vm_config;

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Guest memory: 512M, 2G, or MiB.
    #[arg(long, default_value = vm_config::DEFAULT_MEMORY)]
    memory: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    #[command(flatten)]
    images: ImageArgs,
    /// Extra kernel command-line parameters.
    #[arg(long, value_name = "PARAMS", default_value = "")]
    cmdline_extra: String,
    /// Drive the console as plain pipes even on a terminal (no echo, no prompt, ^D at end of input).
    #[arg(long)]
    pipe: bool,
    /// Print boot timings (to init, to the end) on stderr.
    #[arg(long, hide = true)]
    timings: bool,
}

pub fn run(args: StartArgs) -> anyhow::Result<u8> {
    let memory_mib = vm_config::memory_mib(&args.memory)?;
    let cpus = vm_config::cpus(args.cpus)?;
    let backend = choose_backend(args.backend)?;
    let (kernel, rootfs) = images(&args.images)?;

    let (host_console, console) = HostConsole::attach(args.pipe)?;
    let spec = VmSpec {
        kernel,
        rootfs,
        upper_disk: None,
        disks: Vec::new(),
        agent_socket: None,
        net: None,
        memory_mib,
        cpus,
        cmdline: cmdline::build(host_console.mode(), UpperLayer::Tmpfs, &args.cmdline_extra)?,
    };
    let started = std::time::Instant::now();
    let report = match backend {
        Backend::Kvm => kvm::run(&spec, console)?,
        Backend::Qemu(accel) => qemu::run(&spec, console, accel)?,
    };
    drop(host_console);
    if args.timings {
        print_timings(&report, started.elapsed());
    }
    match report.exit {
        VmExit::Guest(status) => Ok(status),
        VmExit::Reset => bail!(
            "the guest ended without an exit status: its kernel panicked or it reset \
             (its console output above says why)"
        ),
    }
}

enum Backend {
    Kvm,
    Qemu(qemu::Accel),
}

fn choose_backend(choice: BackendChoice) -> anyhow::Result<Backend> {
    let kvm = detect::probe();
    match (choice, kvm) {
        (BackendChoice::Kvm, detect::KvmSupport::Unusable(why)) => {
            bail!("--backend kvm: KVM cannot run Linux guests on this host: {why}; use --backend qemu")
        }
        (BackendChoice::Kvm | BackendChoice::Auto, detect::KvmSupport::Usable) => Ok(Backend::Kvm),
        (BackendChoice::Qemu, detect::KvmSupport::Usable) => Ok(Backend::Qemu(qemu::Accel::Kvm)),
        (_, detect::KvmSupport::Unusable(why)) => {
            eprintln!("nodeos-vm: {why}; using QEMU with TCG (slower)");
            Ok(Backend::Qemu(qemu::Accel::Tcg))
        }
    }
}

/// The kernel and root image to boot: the user's, checked, or the cached builds (built now
/// when missing).
fn images(args: &ImageArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    let store = || Store::from_env().context("finding the kernel and root image");
    let kernel = match &args.kernel {
        Some(path) => path.clone(),
        None => store()?.ensure(Artifact::Kernel, false)?,
    };
    let rootfs = match &args.rootfs {
        Some(path) => path.clone(),
        None => store()?.ensure(Artifact::Rootfs, false)?,
    };
    check_kernel(&kernel)?;
    check_rootfs(&rootfs)?;
    Ok((kernel, rootfs))
}

fn print_timings(report: &RunReport, total: std::time::Duration) {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    match report.init_reached {
        Some(init) => eprintln!(
            "nodeos-vm: timings: init {:.1} ms, total {:.1} ms",
            ms(init),
            ms(total)
        ),
        None => eprintln!(
            "nodeos-vm: timings: init never reached, total {:.1} ms",
            ms(total)
        ),
    }
    if let Some(kib) = report.vmm_overhead_kib {
        eprintln!(
            "nodeos-vm: memory: VMM overhead {:.1} MiB besides guest RAM",
            kib as f64 / 1024.0
        );
    }
}
