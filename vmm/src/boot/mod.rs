//! Putting the kernel and what it reads at boot into guest memory, and saying how the boot vCPU
//! must start: on x86-64 through PVH or the 64-bit boot protocol (`x86_64`), on arm64 through
//! the `Image` protocol with a device tree (`aarch64`, `fdt`).

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub mod cmdline;
#[cfg(any(target_arch = "aarch64", test))]
pub mod fdt;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;
