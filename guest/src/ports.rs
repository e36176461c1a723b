//! Writing the two x86 I/O ports of the host–guest contract ([`contract::ports`]).
//!
//! Through `/dev/port` (CONFIG_DEVPORT), where the kernel executes the `out`; else from this
//! process with `ioperm(2)` (CONFIG_X86_IOPL_IOPERM). Both need CAP_SYS_RAWIO. The kernel's way
//! first: a user-space `out` is checked against the TSS's I/O bitmap, and QEMU's TCG (which runs
//! the KVM box's SVM) refuses that check in a guest KVM restored from a snapshot, whose task
//! register comes back as a busy TSS (kernel/patches/devport-without-pci.patch).

use std::io;

use contract::ports::{
    BOOT_TIMER_PORT, CONSOLE_READY, EXIT_PORT, INIT_STARTED, MAX_EXIT_STATUS, TEMPLATE_READY,
};

use crate::error::{Error, Result};

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) -> Result<()> {
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
pub fn ioperm(port: u16, on: bool) -> io::Result<()> {
    // SAFETY: ioperm changes only this thread's I/O permission bitmap.
    let ret = unsafe { libc::ioperm(libc::c_ulong::from(port), 1, libc::c_int::from(on)) };
    crate::sys::cvt(ret).map(drop)
}

fn dev_port_write(port: u16, value: u8) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open("/dev/port")?;
    file.write_all_at(&[value], u64::from(port))
}

/// Marks "init started" for the host's boot timer. Best effort: a kernel without port access
/// still boots, the host just gets no timestamp.
pub fn mark_boot_timer() {
    let _ = outb(BOOT_TIMER_PORT, INIT_STARTED);
    // Node (PID 1 after exec) must not keep port access.
    let _ = ioperm(BOOT_TIMER_PORT, false);
}

/// Marks "the console is ready for input" (the REPL reads it) for the host. Best effort, like
/// the boot mark.
pub fn mark_console_ready() {
    let _ = outb(BOOT_TIMER_PORT, CONSOLE_READY);
}

/// Marks the template point (the agent listens, nothing of the VM's own is set up): a
/// snapshot may be taken from here. Best effort, like the boot mark.
pub fn mark_template_ready() {
    let _ = outb(BOOT_TIMER_PORT, TEMPLATE_READY);
    let _ = ioperm(BOOT_TIMER_PORT, false);
}

/// Maps a process exit code to the byte for the exit port: like a real exit status
/// (`code & 0xff`), then clamped to 0..=127 as the contract says.
pub fn exit_status_byte(code: i64) -> u8 {
    let status = (code & 0xff) as u8;
    status.min(MAX_EXIT_STATUS)
}

/// Ends the VM with `status`. Falls back to a reboot (which `-no-reboot`/`reboot=t` turn into
/// an exit) when the exit port cannot be written, and never returns.
pub fn exit_vm(status: u8) -> ! {
    let _ = outb(EXIT_PORT, status);
    // Still here: no exit device, or no port access. End the VM some other way.
    // SAFETY: reboot(2) with a valid command; needs CAP_SYS_BOOT, which init and the supervisor have.
    unsafe {
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        // SAFETY: pause has no preconditions; PID 1 must never return or exit.
        unsafe { libc::pause() };
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
