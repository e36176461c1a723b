//! `nodeos-vm build`: fill the artifact cache: the kernel, the root image, and the template
//! snapshots of a booted VM of the default size, with a network and without.

use contract::arch::Arch;
use sandbox::artifacts::{Artifact, Store};
use sandbox::templates::{self, Templates};
use sandbox::vm_config;

use super::vm_options::{choose_backend, ArchChoice, BackendChoice, JailArgs};

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Rebuild even when the cache has a build of the current inputs.
    #[arg(long)]
    force: bool,
    /// Build only the kernel.
    #[arg(long, conflicts_with = "rootfs_only")]
    kernel_only: bool,
    /// Build only the root image.
    #[arg(long)]
    rootfs_only: bool,
    /// Make no snapshot of a booted VM.
    #[arg(long)]
    no_snapshot: bool,
    /// The backend whose snapshots to make.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Build the kernel, root image and snapshots of this guest architecture.
    #[arg(long, value_enum, default_value_t = ArchChoice::host())]
    arch: ArchChoice,
    #[command(flatten)]
    jail: JailArgs,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let arch = Arch::from(args.arch);
    let store = Store::from_env()?.for_arch(arch);
    let wanted: &[Artifact] = match (args.kernel_only, args.rootfs_only) {
        (true, _) => &[Artifact::Kernel],
        (_, true) => &[Artifact::Rootfs],
        _ => &[Artifact::Kernel, Artifact::Rootfs],
    };
    let mut built = Vec::new();
    for &artifact in wanted {
        let path = store.ensure(artifact, args.force)?;
        print_file(artifact.name(), &path, "");
        built.push(path);
    }
    if let ([kernel, rootfs], false) = (&built[..], args.no_snapshot) {
        let backend = choose_backend(args.backend, args.arch, &args.jail, true)?;
        let templates = Templates::in_cache(store.cache_dir());
        let memory =
            vm_config::memory_mib(vm_config::DEFAULT_MEMORY).map_err(anyhow::Error::msg)?;
        for config in templates::default_shapes(kernel, rootfs, arch, memory) {
            let (path, _) = templates.ensure(&backend, &config, args.force)?;
            let shape = format!(" ({})", templates::shape(&backend, &config));
            print_file("snapshot", &path, &shape);
        }
    }
    Ok(())
}

fn print_file(what: &str, path: &std::path::Path, shape: &str) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{what}: {} ({:.1} MB){shape}",
        path.display(),
        size as f64 / 1e6
    );
}
