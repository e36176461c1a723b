//! The `nodeos-vm` command: parses what the user asked for and drives the sandbox, serve and
//! VMM crates (docs/architecture.md).

pub mod cli;

/// What the fuzz targets in fuzz/ reach of this crate's private modules.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::cli::run::{env_entry, workdir};
    pub use crate::cli::vm_options::{parse_net, parse_publish};
}
