//! `nodeos-vm build`: fill the artifact cache.

use sandbox::artifacts::{Artifact, Store};

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
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let store = Store::from_env()?;
    let wanted: &[Artifact] = match (args.kernel_only, args.rootfs_only) {
        (true, _) => &[Artifact::Kernel],
        (_, true) => &[Artifact::Rootfs],
        _ => &[Artifact::Kernel, Artifact::Rootfs],
    };
    for &artifact in wanted {
        let path = store.ensure(artifact, args.force)?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{}: {} ({:.1} MB)",
            artifact.name(),
            path.display(),
            size as f64 / 1e6
        );
    }
    Ok(())
}
