//! The guest kernel command line shared by both backends (docs/guest-contract.md). Each backend
//! appends the `virtio_mmio.device=` entries of the devices it creates.

use std::fmt::Write;

/// Parameters every NodeOS boot needs: serial console, no ACPI (MP tables bring up the vCPUs),
/// the read-only squashfs root on the first virtio-blk disk, our init, and a VM that ends on
/// a triple fault instead of rebooting.
const BASE: &str = "console=ttyS0 reboot=t panic=-1 quiet acpi=off \
8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd tsc=reliable \
root=/dev/vda rootfstype=squashfs ro init=/sbin/init";

/// Longest command line the x86 boot protocol takes (COMMAND_LINE_SIZE).
pub const MAX_LEN: usize = 2048;

/// How the guest's console is driven (`nodeos.console=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// The host terminal is in raw mode; the REPL edits lines itself.
    Tty { cols: u16, rows: u16 },
    /// Host stdin/stdout are pipes: no echo, no prompt, `^D` is end of input.
    Pipe,
}

/// Where the overlay's writable layer lives (`nodeos.upper=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpperLayer {
    Tmpfs,
    /// The second virtio-blk disk, `/dev/vdb`, ext4.
    Disk,
}

/// Kernel command-line safe text: bytes other than `A-Za-z0-9/._-` become `%XX` (the guest
/// decodes them; docs/guest-contract.md).
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}

/// `nodeos.env=NAME=VALUE`: an environment entry for the guest's shell and the commands its
/// agent runs.
pub fn env_param(name: &str, value: &str) -> String {
    format!("nodeos.env={name}={}", percent_encode(value.as_bytes()))
}

impl UpperLayer {
    /// The disk when the VM has one (a user's), tmpfs otherwise.
    pub fn of(has_disk: bool) -> UpperLayer {
        if has_disk {
            UpperLayer::Disk
        } else {
            UpperLayer::Tmpfs
        }
    }

    /// The first `/dev/vdX` letter free for volumes: after the root image and the upper disk.
    pub fn first_volume_letter(self) -> u8 {
        match self {
            UpperLayer::Tmpfs => b'b',
            UpperLayer::Disk => b'c',
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("the kernel command line would be {len} bytes; the limit is {MAX_LEN}")]
    TooLong { len: usize },
    #[error("--cmdline-extra contains a control character (byte {0:#04x})")]
    ControlChar(u8),
}

/// Builds the command line for `console`, `upper` and the user's extra parameters.
pub fn build(console: ConsoleMode, upper: UpperLayer, extra: &str) -> Result<String, CmdlineError> {
    if let Some(b) = extra.bytes().find(|b| b.is_ascii_control()) {
        return Err(CmdlineError::ControlChar(b));
    }
    let mut line = String::from(BASE);
    match console {
        ConsoleMode::Tty { cols, rows } => write!(
            line,
            " nodeos.console=tty nodeos.cols={cols} nodeos.rows={rows}"
        )
        .unwrap(),
        ConsoleMode::Pipe => line.push_str(" nodeos.console=pipe"),
    }
    if upper == UpperLayer::Disk {
        line.push_str(" nodeos.upper=/dev/vdb");
    }
    let extra = extra.trim();
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    // Leave room for the backends' virtio_mmio.device= entries (~40 bytes each).
    if line.len() + 256 > MAX_LEN {
        return Err(CmdlineError::TooLong {
            len: line.len() + 256,
        });
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_console_and_tmpfs_upper() {
        let line = build(ConsoleMode::Pipe, UpperLayer::Tmpfs, "").unwrap();
        assert!(line.starts_with("console=ttyS0 "));
        assert!(line.ends_with(" nodeos.console=pipe"));
        assert!(!line.contains("nodeos.upper"));
    }

    #[test]
    fn tty_size_disk_upper_and_extra() {
        let line = build(
            ConsoleMode::Tty {
                cols: 120,
                rows: 40,
            },
            UpperLayer::Disk,
            " foo=1 ",
        )
        .unwrap();
        assert!(line.contains(" nodeos.console=tty nodeos.cols=120 nodeos.rows=40"));
        assert!(line.contains(" nodeos.upper=/dev/vdb"));
        assert!(line.ends_with(" foo=1"));
    }

    #[test]
    fn rejects_control_characters_and_overlong_lines() {
        assert_eq!(
            build(ConsoleMode::Pipe, UpperLayer::Tmpfs, "a\nb"),
            Err(CmdlineError::ControlChar(b'\n'))
        );
        let long = "x".repeat(MAX_LEN);
        assert!(matches!(
            build(ConsoleMode::Pipe, UpperLayer::Tmpfs, &long),
            Err(CmdlineError::TooLong { .. })
        ));
    }
}
