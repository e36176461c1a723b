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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and succeed; a bad argument is our failure (125), so the
        // guest command's own statuses are never confused with it.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                contract::status::HOST_FAILURE
            } else {
                0
            });
        }
    };
    match cli::run(cli) {
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
