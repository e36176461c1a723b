//! NodeOS VMs to work in, on top of the VMM core (`vmm`): the kernel and root image
//! ([`artifacts`], built and cached), `run`'s volumes ([`volume`]), users' disks ([`users`]),
//! the host side of the guest agent ([`agent`]), the serial console ([`console`]), the VMM
//! program this build carries ([`vmm_program`]), and a booted VM that runs commands through its
//! agent ([`booted`]), the host's npm registry and CA certificates for the guest
//! ([`npm_registry`], [`host_ca`]), and the root image as an OCI image ([`oci_image`]) and
//! recognised in a container's root ([`image_tree`]). The CLI and the function host build on this crate
//! (docs/architecture.md).

pub mod activation;
pub mod agent;
pub mod artifacts;
pub mod booted;
pub mod console;
pub mod folders;
pub mod guest_copy;
pub mod guest_files;
pub mod host_ca;
pub mod image_tree;
pub mod npm_registry;
pub mod oci_image;
pub mod rpi_card;
pub mod templates;
#[cfg(test)]
mod test_child;
pub mod users;
pub mod vm_config;
pub mod vmm_program;
pub mod volume;
