//! The `nodeos-vm` command: parses what the user asked for and drives the sandbox, serve and
//! VMM crates (docs/architecture.md).

pub mod cli;
