use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// How many trailing lines of the console and the script output an error shows.
pub(crate) const TAIL_LINES: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not run `{cmd}` (is it installed?)")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },

    #[error("`{cmd}` failed ({status}){}", stderr_suffix(.stderr))]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },

    #[error("{0}")]
    Assets(String),

    #[error("box file {guest:?}: {reason}")]
    BadFile { guest: String, reason: String },

    #[error(
        "the initramfs is {size_mib} MiB but L1's root (a tmpfs, half of RAM) holds at most {limit_mib} MiB \
         with {memory_mib} MiB of RAM: raise memory_mib (--mem)"
    )]
    TooBig {
        size_mib: u64,
        limit_mib: u64,
        memory_mib: u32,
    },

    #[error("{path}: {source}")]
    Elf {
        path: PathBuf,
        #[source]
        source: crate::elf::ElfError,
    },

    #[error("L1 has no /dev/kvm after loading its KVM modules; console tail:\n{}", tail(.console))]
    NoKvm { console: String },

    #[error(
        "the box timed out after {timeout:?} (QEMU killed)\n--- console tail ---\n{}\n--- script output tail ---\n{}",
        tail(.console), tail(.output)
    )]
    Timeout {
        timeout: Duration,
        console: String,
        output: String,
    },

    #[error(
        "L1 stalled in each of {tries} tries, QEMU idle for good (an emulator fault, see kvm-box's README): \
         run the box again\n--- console tail ---\n{}\n--- script output tail ---\n{}",
        tail(.console), tail(.output)
    )]
    Stalled {
        tries: u32,
        console: String,
        output: String,
    },

    #[error(
        "L1 ended without the status marker (QEMU {qemu_status}){}\n--- console tail ---\n{}\n--- script output tail ---\n{}",
        stderr_suffix(.qemu_stderr), tail(.console), tail(.output)
    )]
    NoMarker {
        qemu_status: String,
        qemu_stderr: String,
        console: String,
        output: String,
    },
}

impl BoxError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> BoxError {
        let path = path.into();
        move |source| BoxError::Io { op, path, source }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(":\n{}", tail(stderr))
    }
}

/// The last [`TAIL_LINES`] lines of `text`.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[... {start} lines before]\n"));
    }
    out.push_str(&lines[start..].join("\n"));
    out
}
