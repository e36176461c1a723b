//! The two x86 I/O ports of the contract (docs/guest-contract.md), and the bytes written to
//! them. The guest writes; the host's backends (KVM and QEMU) watch for these exact values.
//!
//! A machine without I/O ports (arm64) carries the same bytes on a virtio-serial port of its
//! own, [`MARKS_PORT_NAME`]: the boot-timer bytes as they are, and the exit status as
//! [`EXIT_MARK`] followed by the status byte, after which the guest powers off (PSCI).

/// Exit: the byte the guest writes here ends the VM and is the host command's exit status.
pub const EXIT_PORT: u16 = 0xf4;
/// The highest status the exit port carries: the guest reports larger codes as this, so the
/// statuses above it stay free for the host's own meanings ([`crate::status`]).
pub const MAX_EXIT_STATUS: u8 = 127;

/// Boot timer: the guest writes [`INIT_STARTED`] here as its first action, then
/// [`CONSOLE_READY`]; the host timestamps the first and holds console input until the second.
pub const BOOT_TIMER_PORT: u16 = 0x3f0;
/// Boot-timer byte: the guest's first userspace instruction ran (init started).
pub const INIT_STARTED: u8 = b'I';
/// Boot-timer byte: the guest console is configured and read; input sent from now on is kept
/// (earlier input may be echoed or lost while the console is set up).
pub const CONSOLE_READY: u8 = b'R';
/// Boot-timer byte: the guest is at its template point: booted, its agent listening for the
/// host's `Activate`, nothing of the VM's own set up yet, no Node.js process. A snapshot taken
/// from here serves any VM of the same kernel, image and shape.
pub const TEMPLATE_READY: u8 = b'T';

/// The virtio-serial port that carries the boot-timer bytes and the exit status where there
/// are no I/O ports (the guest finds it by this name in sysfs, like the agent's).
pub const MARKS_PORT_NAME: &str = "org.nodeos.marks";
/// On the marks port: the byte after this one is the guest's exit status (0..=
/// [`MAX_EXIT_STATUS`]); the guest powers off next.
pub const EXIT_MARK: u8 = b'X';

// Checked as the crate builds: the boot-timer bytes are told apart, and a guest's boot
// failure fits the exit port while a signal's status (which the guest clamps) does not.
const _: () = {
    assert!(INIT_STARTED != CONSOLE_READY);
    assert!(TEMPLATE_READY != INIT_STARTED && TEMPLATE_READY != CONSOLE_READY);
    assert!(EXIT_MARK != INIT_STARTED && EXIT_MARK != CONSOLE_READY && EXIT_MARK != TEMPLATE_READY);
    assert!(EXIT_PORT != BOOT_TIMER_PORT);
    assert!(crate::status::BOOT_FAILURE <= MAX_EXIT_STATUS);
    assert!(MAX_EXIT_STATUS < crate::status::SIGNALED_BASE);
};
