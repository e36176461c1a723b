//! `nodeos-vm serve`: the function host (see the serve crate).

use std::net::SocketAddr;

use super::vm_options::{choose_backend, images, BackendChoice, ImageArgs, JailArgs, SeccompArgs};
use serve::{self, Machine};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0: any free port). The URL is printed once ready.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    seccomp: SeccompArgs,
    #[command(flatten)]
    jail: JailArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    args.seccomp.warn_if_off();
    args.jail.warn_if_off();
    let backend = choose_backend(args.backend, &args.jail, false)?;
    let (kernel, rootfs) = images(&args.images)?;
    serve::serve(
        args.listen,
        Machine {
            backend,
            kernel,
            rootfs,
            seccomp: !args.seccomp.no_seccomp,
        },
    )?;
    Ok(0)
}
