//! `nodeos-vm image`: the root image for other engines and machines — `export` writes it as an
//! OCI image (sandbox::oci_image) that `ctr image import`, `docker load` and `podman load` take,
//! or as a Raspberry Pi SD card image (sandbox::rpi_card).

use std::path::PathBuf;

use sandbox::artifacts::{Artifact, Store};
use sandbox::oci_image::{self, ImageName};
use sandbox::rpi_card;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Write the root image as a container image archive, or a Raspberry Pi SD card image
    /// (builds what it needs first if missing).
    ///
    /// Example: nodeos-vm image export -o nodeos.tar && ctr image import nodeos.tar
    ///          nodeos-vm image export --format rpi -o nodeos-rpi.img && dd if=nodeos-rpi.img of=/dev/sdX bs=4M
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// An OCI image layout that is also `docker load`'s format (as `docker save` writes it).
    Oci,
    /// An SD card image for the Raspberry Pi 3 B, 3 B+ and 4 B: the REPL as PID 1 on the
    /// serial console (GPIO 14/15, 115200 baud), the writable layer on the card (`--name` is
    /// not used).
    Rpi,
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
    if let Format::Rpi = args.format {
        rpi_card::export(&Store::from_env()?, &args.output)?;
        let size = std::fs::metadata(&args.output)
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "Raspberry Pi SD card image: {} ({:.0} MiB); write it to a card with dd",
            args.output.display(),
            size as f64 / (1 << 20) as f64
        );
        return Ok(());
    }
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
