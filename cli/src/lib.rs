//! The `nodeos-vm` command: parses what the user asked for and drives the sandbox, serve and
//! VMM crates (docs/architecture.md).

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
