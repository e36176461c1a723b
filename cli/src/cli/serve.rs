//! `nodeos-vm serve`: the function host (see the serve crate).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::vm_options::{
    choose_backend, images, ArchChoice, BackendChoice, ImageArgs, JailArgs, SeccompArgs,
};
use sandbox::artifacts::Store;
use sandbox::templates::Templates;
use serve::{self, Machine};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port of the admin API (deploy, list, logs, metrics), which needs the token
    /// (port 0: any free port). Both URLs are printed once ready.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address and port the apps are called on (invoke, fetch), without a token; nothing of
    /// the admin API is there. Default: --listen's address and the next port (any free port
    /// when --listen's is 0).
    #[arg(long, value_name = "ADDR")]
    apps_listen: Option<SocketAddr>,
    /// Take the admin token from this file (readable by you alone: mode 600) instead of
    /// generating one at each start (printed, and saved as serve-token in the data folder).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Also take requests addressed (Host) to NAME, at any port, e.g. the name a reverse proxy
    /// forwards; repeatable. Without it, only the listening address and localhost.
    #[arg(long = "allow-host", value_name = "NAME", value_parser = serve::host_name)]
    allow_hosts: Vec<String>,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// The apps' VMs' architecture. Another than this host's runs under QEMU's emulation
    /// (TCG), as with `run --arch`.
    #[arg(long, value_enum, default_value_t = ArchChoice::host())]
    arch: ArchChoice,
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    seccomp: SeccompArgs,
    #[command(flatten)]
    jail: JailArgs,
    /// Boot each app's VMs cold instead of restoring a snapshot of a booted VM (made once per
    /// image and VM size, in the artifact cache).
    #[arg(long)]
    no_snapshot: bool,
    /// Keep no VM ready for the next sandbox: by default, once a sandbox of the default shape
    /// was created, one more is kept booted (one idle VM's memory) for the next such create,
    /// until none came for 10 minutes.
    #[arg(long)]
    no_sandbox_standby: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    let apps = apps_address(args.listen, args.apps_listen)?;
    args.seccomp.warn_if_off();
    args.jail.warn_if_off();
    let backend = choose_backend(args.backend, args.arch, &args.jail, false)?;
    let arch = contract::arch::Arch::from(args.arch);
    let (kernel, rootfs) = images(&args.images, arch)?;
    serve::serve(
        serve::Config {
            admin: args.listen,
            apps,
            token_file: args.token_file,
            allowed_hosts: args.allow_hosts,
            sandbox_standby: !args.no_sandbox_standby,
        },
        Machine {
            backend,
            arch,
            kernel,
            rootfs,
            seccomp: !args.seccomp.no_seccomp,
            templates: (!args.no_snapshot)
                .then(|| Store::from_env().map(|s| Templates::in_cache(s.cache_dir())))
                .transpose()?,
        },
    )?;
    Ok(0)
}

/// The apps' address: `--apps-listen`, else the admin address with the next port (any free
/// port when the admin's is 0). Never the admin's own.
fn apps_address(admin: SocketAddr, apps: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    let apps = match apps {
        Some(apps) => apps,
        None if admin.port() == 0 => admin,
        None => {
            let port = admin.port().checked_add(1).with_context(|| {
                format!("--listen {admin} has no next port for the apps; give --apps-listen")
            })?;
            SocketAddr::new(admin.ip(), port)
        }
    };
    if apps == admin && admin.port() != 0 {
        bail!("--apps-listen {apps} is the admin API's address (--listen); give another port");
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_listen_beside_the_admin_api_unless_told() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let apps = |admin, apps: Option<&str>| apps_address(addr(admin), apps.map(addr));
        assert_eq!(
            apps("127.0.0.1:8080", None).unwrap(),
            addr("127.0.0.1:8081")
        );
        assert_eq!(apps("127.0.0.1:0", None).unwrap(), addr("127.0.0.1:0"));
        assert_eq!(apps("[::1]:0", None).unwrap(), addr("[::1]:0"));
        assert_eq!(
            apps("0.0.0.0:8080", Some("127.0.0.1:9000")).unwrap(),
            addr("127.0.0.1:9000")
        );
        assert!(apps("127.0.0.1:65535", None).is_err());
        assert!(apps("127.0.0.1:8080", Some("127.0.0.1:8080")).is_err());
    }
}
