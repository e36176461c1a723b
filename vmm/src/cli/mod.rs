//! The `nodeos-vm` command line.

mod build;
mod doctor;
mod start;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit status of nodeos-vm's own failures (bad input, a backend that cannot start, a guest
/// that crashed): what the guest's own statuses (0..=124 in practice) cannot be confused with.
pub const EXIT_FAILURE: u8 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "nodeos-vm",
    version,
    about = "Run NodeOS — Linux with Node.js as its whole userland — in microVMs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a fresh microVM with the Node.js REPL as PID 1 on this terminal (builds the kernel
    /// and root image first if they are missing).
    Start(start::StartArgs),
    /// Build the kernel and root image into the cache (only what is missing, unless --force).
    Build(build::BuildArgs),
    /// Say what this host offers (KVM or not, which backend `auto` picks) and what is cached.
    Doctor,
}

/// Which machine monitor runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Our VMM where the host's KVM can run Linux guests, QEMU otherwise.
    Auto,
    /// nodeos-vm's own VMM on /dev/kvm.
    Kvm,
    /// QEMU's microvm machine (KVM when usable, TCG otherwise).
    Qemu,
}

/// Kernel and image options shared by the commands that boot a VM.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Boot this kernel (ELF vmlinux or bzImage) instead of the cached build.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Boot this squashfs root image instead of the cached build.
    #[arg(long, value_name = "PATH")]
    pub rootfs: Option<PathBuf>,
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Start(args) => start::run(args),
        Command::Build(args) => build::run(args).map(|()| 0),
        Command::Doctor => doctor::run().map(|()| 0),
    }
}
