use std::process::ExitCode;

use clap::Parser;
use nodeos_vm::cli::{self, Cli};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(Cli::parse()) {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            eprintln!("nodeos-vm: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(contract::status::HOST_FAILURE)
        }
    }
}
