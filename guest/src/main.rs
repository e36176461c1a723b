//! nodeos-init: the guest side of nodeos-vm, one static binary with several personalities.
//!
//! - PID 1 (`/sbin/init`): sets the machine up and becomes the Node.js REPL (init/), with the
//!   supervisor (supervisor.rs) and, where the host asks for it, the agent (agent/) beside it.
//! - `nodeos-init spawn -- FILE ARGS...` or argv[0] `nodeos-spawn`: the spawn shim (spawn.rs).

mod agent;
mod error;
mod exec;
mod fdpass;
mod init;
mod ports;
mod poweroff;
mod protocol;
mod spawn;
mod supervisor;
mod sys;
mod virtio_ports;

use std::ffi::OsString;
use std::path::Path;

const USAGE: &str = "usage: nodeos-init                      (as PID 1: boot NodeOS)
       nodeos-init spawn [--argv0 NAME] -- FILE [ARGS...]";

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .map(Path::new)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if name == "nodeos-spawn" {
        spawn::main(&args[1..]);
    }
    if sys::getpid() == 1 {
        init::main();
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some("spawn") => spawn::main(&args[2..]),
        Some("-h" | "--help") => println!("{USAGE}"),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
