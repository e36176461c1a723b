//! The `nodeos-vm` command line.

mod build;
mod cp;
mod doctor;
mod generated;
mod image;
mod printable;
pub(crate) mod run;
mod serve;
mod start;
mod users;
mod version;
pub(crate) mod vm_options;
mod vms;

use clap::{Parser, Subcommand};

pub use vm_options::{NO_JAIL_WARNING, NO_SECCOMP_WARNING};

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
    /// Run a command in a fresh microVM and exit with its status; the VM is gone afterwards.
    ///
    /// Example: nodeos-vm run -v $PWD:/app -w /app -- npm test
    Run(run::RunArgs),
    /// List the detached VMs (`start --detach`) that are running.
    Ps(vms::PsArgs),
    /// Run a command in a detached VM.
    Exec(vms::ExecArgs),
    /// Print a detached VM's console output (control characters escaped; --raw for the bytes).
    Logs(vms::LogsArgs),
    /// Stop a detached VM.
    Stop(vms::IdArg),
    /// Pause a detached VM: its vCPUs stop, its memory, processes and connections stay (in
    /// memory, not saved to disk) until `unpause`.
    Pause(vms::IdArg),
    /// Let a paused VM go on where it was.
    Unpause(vms::IdArg),
    /// Copy files between the host and a detached VM (ID:/PATH on one side).
    Cp(cp::CpArgs),
    /// Host Node apps as functions over HTTP, each app in microVMs of its own (docs/serve.md).
    ///
    /// Example: nodeos-vm serve --listen 127.0.0.1:8080
    Serve(serve::ServeArgs),
    /// List or remove user environments (the persistent layers of `--user NAME`).
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Build the kernel and root image into the cache (only what is missing, unless --force).
    Build(build::BuildArgs),
    /// The root image for other engines: `export` writes it as an OCI image (containerd,
    /// Docker, Podman).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Say what this host offers (KVM or not, which backend `auto` picks) and what is cached.
    Doctor(doctor::DoctorArgs),
    /// Print this build's version and the kernel, root image and Node.js it boots.
    Version(version::VersionArgs),
    /// Print a shell completion script for nodeos-vm.
    Completions(generated::CompletionsArgs),
    /// Print nodeos-vm's man page (roff), every subcommand included.
    ///
    /// Example: nodeos-vm man > /usr/local/share/man/man1/nodeos-vm.1
    Man,
    /// (internal) Keep detached VM ID: boot what `start --detach` asked for and own it.
    #[command(hide = true)]
    Keep(vms::IdArg),
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Start(args) => start::run(args),
        Command::Run(args) => run::run(args),
        Command::Ps(args) => vms::ps(args),
        Command::Exec(args) => vms::exec(args),
        Command::Logs(args) => vms::logs(args),
        Command::Stop(args) => vms::stop(args),
        Command::Pause(args) => vms::pause(args),
        Command::Unpause(args) => vms::unpause(args),
        Command::Cp(args) => cp::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Users(command) => users::run(command),
        Command::Build(args) => build::run(args).map(|()| 0),
        Command::Image(command) => image::run(command).map(|()| 0),
        Command::Doctor(args) => doctor::run(args).map(|()| 0),
        Command::Version(args) => version::run(args).map(|()| 0),
        Command::Completions(args) => generated::completions(args).map(|()| 0),
        Command::Man => generated::man().map(|()| 0),
        Command::Keep(args) => vms::keep(args),
    }
}
