//! nodeos-init: the guest side of nodeos-vm, one static binary with several personalities.
//!
//! - PID 1 (`/sbin/init`): sets the machine up and becomes the Node.js REPL (init/), with the
//!   supervisor (supervisor.rs) and, where the host asks for it, the agent (agent/) beside it.
//! - `nodeos-init spawn -- FILE ARGS...` or argv[0] `nodeos-spawn`: the spawn shim (spawn.rs).
//! - `nodeos-init env ...` or argv[0] `env` (`/usr/bin/env`): a minimal env(1) (env.rs).
//! - `nodeos-init sh ...` or argv[0] `sh` (`/bin/sh`): a minimal `sh -c` (sh/).

mod agent;
mod env;
mod error;
mod exec;
mod fdpass;
mod init;
mod ports;
mod poweroff;
mod protocol;
mod sh;
mod spawn;
mod supervisor;
mod sys;

use std::ffi::OsString;
use std::path::Path;

const USAGE: &str = "usage: nodeos-init                      (as PID 1: boot NodeOS)
       nodeos-init spawn [--argv0 NAME] -- FILE [ARGS...]
       nodeos-init env [-i] [-u NAME] [-S STRING] [NAME=VALUE]... [COMMAND [ARGS...]]
       nodeos-init sh -c STRING [NAME [ARGS...]] | sh FILE [ARGS...]";

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .map(Path::new)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    match name {
        "env" => env::main(&args[1..]),
        "sh" => sh::main(&args[0], &args[1..]),
        "nodeos-spawn" => spawn::main(&args[1..]),
        _ => {}
    }
    if sys::getpid() == 1 {
        init::main();
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some("spawn") => spawn::main(&args[2..]),
        Some("env") => env::main(&args[2..]),
        Some("sh") => sh::main("sh".as_ref(), &args[2..]),
        Some("-h" | "--help") => println!("{USAGE}"),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
