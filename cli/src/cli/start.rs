//! `nodeos-vm start`: a Node.js REPL, PID 1 of a fresh microVM, on this terminal.

use anyhow::bail;

use contract::params::Shell;
use sandbox::activation::Identity;
use sandbox::agent::{Handshake, TemplatePoint};
use sandbox::booted::BOOT_TIMEOUT;
use sandbox::console::HostConsole;
use vmm::runtime;
use vmm::vm::{RunReport, StopSignal, VmExit};

use super::vm_options::{choose_backend, VmArgs};
use super::vms;

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Drive the console as plain pipes even on a terminal (no echo, no prompt, ^D at end of input).
    #[arg(long)]
    pipe: bool,
    /// Run nsh, the Node shell, instead of the REPL (`exit N` ends the VM with status N).
    #[arg(long, conflicts_with = "detach")]
    shell: bool,
    /// Print boot timings (to init, to the end) and, with our VMM, its memory besides guest RAM
    /// on stderr.
    #[arg(long, hide = true)]
    timings: bool,
    /// Run the VM in the background, without a REPL: prints its ID, for `exec`, `logs`, `stop`.
    #[arg(short, long, conflicts_with = "pipe")]
    detach: bool,
}

pub fn run(args: StartArgs) -> anyhow::Result<u8> {
    args.vm.seccomp.warn_if_off();
    args.vm.jail.warn_if_off();
    if args.detach {
        return vms::detach(&args.vm);
    }
    let backend = choose_backend(args.vm.backend, args.vm.arch, &args.vm.jail, false)?;
    let (mut config, _held) = args.vm.config()?;
    config.shell = if args.shell { Shell::Nsh } else { Shell::Repl };
    config.measure_overhead = args.timings;
    let stop = StopSignal::new()?;
    let (host_console, mut console) = HostConsole::attach(args.pipe)?;
    config.console = host_console.mode();
    // The guest waits for its activation (its console, shell and environment: never on the
    // kernel command line) at its template point.
    let dir = runtime::scratch_dir("start")?;
    let socket = dir.path().join("agent.sock");
    config.agent_socket = Some(socket.clone());
    args.vm.restore_or_boot(&backend, &mut config)?;
    let point = TemplatePoint::of(&config.start, &mut console)?;
    let identity = Identity::of(&config);
    let handshake = Handshake::spawn(&socket, point, identity, BOOT_TIMEOUT, stop.clone())?;
    let started = std::time::Instant::now();
    let report = backend.run(&config, console, &stop, None);
    drop(host_console);
    handshake.finish()?;
    drop(dir);
    let report = report?;
    if args.timings {
        print_timings(&report, started.elapsed());
    }
    match report.exit {
        VmExit::Guest(status) => Ok(status),
        // Nothing stops (nor saves) a foreground `start` but the guest itself.
        VmExit::Stopped | VmExit::Saved => Ok(0),
        VmExit::Reset => bail!(
            "the guest ended without an exit status: its kernel panicked or it reset \
             (its console output above says why)"
        ),
    }
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
    if let Some(backing) = report.memory {
        eprintln!("nodeos-vm: memory: guest RAM on {backing}");
    }
}
