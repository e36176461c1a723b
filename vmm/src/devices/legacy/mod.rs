//! The devices outside virtio: the PC's on port I/O (x86-64: COM1, the i8042, the CMOS RTC,
//! the guest contract's ports), the console UART and RTC on MMIO (arm64).

#[cfg(target_arch = "x86_64")]
pub mod cmos;
#[cfg(target_arch = "x86_64")]
pub mod i8042;
pub mod ports;
#[cfg(any(target_arch = "aarch64", test))]
pub mod rtc;
pub mod serial;

use vmm_sys_util::eventfd::EventFd;

#[cfg(target_arch = "x86_64")]
pub use pc::*;

/// Where the PC's devices answer, and their interrupt lines.
#[cfg(target_arch = "x86_64")]
mod pc {
    /// COM1.
    pub const SERIAL_PORT_BASE: u64 = 0x3f8;
    pub const SERIAL_PORT_LEN: u64 = 8;
    pub const SERIAL_IRQ: u32 = 4;
    /// The i8042 answers at 0x60 (data) and 0x64 (status/command); 0x61 is KVM's (PIT speaker).
    pub const I8042_PORT_BASE: u64 = 0x60;
    pub const I8042_PORT_LEN: u64 = 5;
    pub const I8042_IRQ: u32 = 1;
    /// The CMOS RTC: 0x70 (index), 0x71 (data). Its IRQ 8 is never raised.
    pub const CMOS_PORT_BASE: u64 = 0x70;
    pub const CMOS_PORT_LEN: u64 = 2;
}

/// An interrupt line: an eventfd registered with KVM as an irqfd, so a write raises the line
/// (as an edge) without a trip through the VMM.
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl IrqLine {
    pub fn new() -> std::io::Result<Self> {
        EventFd::new(libc::EFD_NONBLOCK).map(IrqLine)
    }

    pub fn trigger(&self) {
        // EAGAIN means the counter is saturated: the interrupt is pending anyway.
        if let Err(e) = self.0.write(1) {
            tracing::warn!("cannot raise an interrupt: {e}");
        }
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        IrqLine::trigger(self);
        Ok(())
    }
}
