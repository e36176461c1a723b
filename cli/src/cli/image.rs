//! `nodeos-vm image`: the root image for other engines — `export` writes it as an OCI image
//! (sandbox::oci_image) that `ctr image import`, `docker load` and `podman load` take.

use std::path::PathBuf;

use sandbox::artifacts::{Artifact, Store};
use sandbox::oci_image::{self, ImageName};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Write the root image as a container image archive (builds the image first if missing).
    ///
    /// Example: nodeos-vm image export -o nodeos.tar && ctr image import nodeos.tar
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// An OCI image layout that is also `docker load`'s format (as `docker save` writes it).
    Oci,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Where to write the archive (replaced if it exists).
    #[arg(short, long)]
    output: PathBuf,
    /// The image's name, `repository[:tag]`.
    #[arg(long, default_value = "nodeos:latest")]
    name: String,
    /// The archive's format.
    #[arg(long, value_enum, default_value = "oci")]
    format: Format,
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Export(args) => export(args),
    }
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let Format::Oci = args.format;
    let name = ImageName::parse(&args.name)?;
    let rootfs = Store::from_env()?.ensure(Artifact::Rootfs, false)?;
    let exported = oci_image::export(&rootfs, &name, &args.output)?;
    println!(
        "image: {} ({}), {} ({:.1} MB; its layer {:.1} MB)",
        name.full(),
        exported.digest,
        args.output.display(),
        exported.archive_bytes as f64 / 1e6,
        exported.layer_bytes as f64 / 1e6,
    );
    Ok(())
}
