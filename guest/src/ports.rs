//! Writing the host–guest contract's marks and exit status ([`contract::ports`]): on x86 to its
//! two I/O ports, on arm64 (no I/O ports) to the marks port, a virtio-serial port.
//!
//! x86: through `/dev/port` (CONFIG_DEVPORT), where the kernel executes the `out`; else from
//! this process with `ioperm(2)` (CONFIG_X86_IOPL_IOPERM). Both need CAP_SYS_RAWIO. The
//! kernel's way first: a user-space `out` is checked against the TSS's I/O bitmap, and QEMU's
//! TCG (which runs the KVM box's SVM) refuses that check in a guest KVM restored from a
//! snapshot, whose task register comes back as a busy TSS
//! (kernel/patches/devport-without-pci.patch).

use contract::ports::{CONSOLE_READY, INIT_STARTED, MAX_EXIT_STATUS, TEMPLATE_READY};

/// Marks "init started" for the host's boot timer. Best effort: a kernel without port access
/// still boots, the host just gets no timestamp.
pub fn mark_boot_timer() {
    let _ = write_mark(INIT_STARTED);
    // Node (PID 1 after exec) must not keep port access.
    drop_port_access();
}

/// Marks "the console is ready for input" (the REPL reads it) for the host. Best effort, like
/// the boot mark.
pub fn mark_console_ready() {
    let _ = write_mark(CONSOLE_READY);
}

/// Marks the template point (the agent listens, nothing of the VM's own is set up): a
/// snapshot may be taken from here. Best effort, like the boot mark.
pub fn mark_template_ready() {
    let _ = write_mark(TEMPLATE_READY);
    drop_port_access();
}

/// Maps a process exit code to the status the VM ends with: like a real exit status
/// (`code & 0xff`), then clamped to 0..=127 as the contract says.
pub fn exit_status_byte(code: i64) -> u8 {
    let status = (code & 0xff) as u8;
    status.min(MAX_EXIT_STATUS)
}

/// Ends the VM with `status`. Falls back to a reboot or power-off (which the host's backends
/// take as the VM's end) when the status cannot be written, and never returns.
pub fn exit_vm(status: u8) -> ! {
    let _ = machine::write_exit(status);
    // Still here (x86: no exit device, or no port access), or done writing (arm64).
    // SAFETY: reboot(2) with a valid command; needs CAP_SYS_BOOT, which init and the supervisor have.
    unsafe {
        libc::reboot(machine::END_VM);
    }
    loop {
        // SAFETY: pause has no preconditions; PID 1 must never return or exit.
        unsafe { libc::pause() };
    }
}

// Each machine's way, with the same four items.
#[cfg(target_arch = "aarch64")]
use self::marks_port as machine;
#[cfg(target_arch = "x86_64")]
use self::x86 as machine;
use machine::{drop_port_access, write_mark};

/// x86: the contract's two I/O ports.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::io;

    use contract::ports::{BOOT_TIMER_PORT, EXIT_PORT};

    use crate::error::{Error, Result};

    /// The `reboot(2)` command that ends the VM when the exit port could not: a reset, which
    /// the contract's `reboot=t` and QEMU's `-no-reboot` make the end.
    pub const END_VM: libc::c_int = libc::RB_AUTOBOOT;

    pub fn write_mark(byte: u8) -> Result<()> {
        outb(BOOT_TIMER_PORT, byte)
    }

    pub fn write_exit(status: u8) -> Result<()> {
        outb(EXIT_PORT, status)
    }

    pub fn drop_port_access() {
        let _ = ioperm(BOOT_TIMER_PORT, false);
    }

    /// Writes one byte to an I/O port.
    fn outb(port: u16, value: u8) -> Result<()> {
        if dev_port_write(port, value).is_ok() {
            return Ok(());
        }
        ioperm(port, true).map_err(|e| Error::sys(format!("write to I/O port {port:#x}"), e))?;
        // SAFETY: ioperm granted this process access to exactly this port, so `out` does not
        // fault; writing to these ports has no effect on this process's memory.
        unsafe {
            std::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
        };
        Ok(())
    }

    /// Grants or revokes access to one port (revoking needs no privilege).
    fn ioperm(port: u16, on: bool) -> io::Result<()> {
        // SAFETY: ioperm changes only this thread's I/O permission bitmap.
        let ret = unsafe { libc::ioperm(libc::c_ulong::from(port), 1, libc::c_int::from(on)) };
        crate::sys::cvt(ret).map(drop)
    }

    fn dev_port_write(port: u16, value: u8) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open("/dev/port")?;
        file.write_all_at(&[value], u64::from(port))
    }
}

/// arm64: the marks port, a virtio-serial port ([`contract::ports::MARKS_PORT_NAME`]).
#[cfg(target_arch = "aarch64")]
mod marks_port {
    use std::io::{self, Write};
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::{Duration, Instant};

    use contract::ports::{EXIT_MARK, MARKS_PORT_NAME};

    use crate::error::{Error, Result};
    use crate::virtio_ports;

    /// The `reboot(2)` command that ends the VM after its status went out: a PSCI power-off.
    pub const END_VM: libc::c_int = libc::RB_POWER_OFF;
    /// How long a write waits for the port: to appear (its driver adds it after the device's
    /// probe), to be free (one writer at a time: another guest process may be writing), and
    /// for the host to take the bytes. A host that never reads the port costs the guest this
    /// much per mark, and never a hang.
    const WAIT: Duration = Duration::from_millis(500);
    const RETRY: Duration = Duration::from_millis(2);

    pub fn write_mark(byte: u8) -> Result<()> {
        write(&[byte])
    }

    pub fn write_exit(status: u8) -> Result<()> {
        // The power-off's own line ("reboot: Power down", an emergency message) must not
        // reach the console, which is the user's output: console level 0 prints nothing.
        let _ = std::fs::write("/proc/sys/kernel/printk", "0");
        write(&[EXIT_MARK, status])
    }

    /// Nothing to drop: the port is a file, opened for each write.
    pub fn drop_port_access() {}

    /// Writes `bytes` to the marks port (found in sysfs: after the early mounts).
    fn write(bytes: &[u8]) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let device = virtio_ports::find(MARKS_PORT_NAME, WAIT)?;
        let failed = |what: &str, e| Error::sys(format!("{what} {}", device.display()), e);
        let mut port = loop {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&device);
            match opened {
                Ok(port) => break port,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(RETRY)
                }
                Err(e) => return Err(failed("open", e)),
            }
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            match port.write(rest) {
                Ok(n) => rest = &rest[n..],
                // The host has not taken the last bytes yet, or has not opened the port.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(RETRY)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failed("write to", e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_clamped_like_a_process_status() {
        assert_eq!(exit_status_byte(0), 0);
        assert_eq!(exit_status_byte(3), 3);
        assert_eq!(exit_status_byte(127), 127);
        assert_eq!(exit_status_byte(128), 127);
        assert_eq!(exit_status_byte(255), 127);
        assert_eq!(exit_status_byte(256), 0);
        assert_eq!(exit_status_byte(-1), 127);
    }
}
