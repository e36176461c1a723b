//! Running L1: QEMU TCG with an AMD CPU that has SVM and nested paging, so that L1's KVM works.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::initramfs::MARK_READY;
use crate::{host, BoxError, Stream};

/// SVM with nested paging: what kvm-amd needs to offer /dev/kvm with NPT.
const L1_CPU: &str = "EPYC,+svm,+npt";
/// qboot starts a `-kernel` boot faster than SeaBIOS; used when the host has it.
const QBOOT: &str = "/usr/share/qemu/qboot.rom";
/// `quiet` keeps the kernel's console short; `panic=-1` with `-no-reboot` ends QEMU on a panic.
const L1_CMDLINE: &str = "console=ttyS0 quiet panic=-1 tsc=reliable";
const POLL: Duration = Duration::from_millis(20);

pub(crate) struct L1<'a> {
    pub qemu: &'a Path,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub memory_mib: u32,
    pub cpus: u8,
    /// Where the two UARTs and QEMU's stderr are written.
    pub work_dir: &'a Path,
}

pub(crate) enum Ended {
    Exited(ExitStatus),
    TimedOut,
}

pub(crate) struct L1Result {
    pub ended: Ended,
    pub console: String,
    pub output: String,
    pub qemu_stderr: String,
    /// From QEMU's start until `/init` had `/dev/kvm` and started the script.
    pub ready_after: Option<Duration>,
    pub wall: Duration,
}

/// Kills QEMU on every way out, panics included.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A serial log QEMU appends to, read as it grows.
struct Tail {
    file: File,
    data: Vec<u8>,
    stream: Stream,
}

impl Tail {
    fn create(path: &Path, stream: Stream) -> Result<Self, BoxError> {
        File::create(path).map_err(BoxError::io("creating", path))?;
        let file = File::open(path).map_err(BoxError::io("opening", path))?;
        Ok(Self {
            file,
            data: Vec::new(),
            stream,
        })
    }

    fn poll(&mut self, sink: &mut dyn FnMut(Stream, &[u8])) {
        let start = self.data.len();
        let _ = self.file.read_to_end(&mut self.data);
        if self.data.len() > start {
            sink(self.stream, &self.data[start..]);
        }
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.data);
        match self.stream {
            // The console UART is a cooked tty: \n went out as \r\n.
            Stream::Console => text.replace("\r\n", "\n"),
            Stream::Output => text.into_owned(),
        }
    }
}

impl L1<'_> {
    fn command(&self, console: &Path, output: &Path) -> Command {
        let mut cmd = Command::new(self.qemu);
        cmd.args(["-M", "pc", "-accel", "tcg", "-cpu", L1_CPU])
            .args([
                "-m",
                &self.memory_mib.to_string(),
                "-smp",
                &self.cpus.max(1).to_string(),
            ])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ]);
        if Path::new(QBOOT).exists() {
            cmd.args(["-bios", QBOOT]);
        }
        cmd.arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initrd);
        cmd.args(["-append", L1_CMDLINE]);
        cmd.arg("-serial")
            .arg(chardev_file(console))
            .arg("-serial")
            .arg(chardev_file(output));
        cmd
    }

    pub(crate) fn run(
        &self,
        timeout: Duration,
        sink: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<L1Result, BoxError> {
        let console_path = self.work_dir.join("console.log");
        let output_path = self.work_dir.join("output.log");
        let stderr_path = self.work_dir.join("qemu.stderr");
        let mut console = Tail::create(&console_path, Stream::Console)?;
        let mut output = Tail::create(&output_path, Stream::Output)?;
        let stderr = File::create(&stderr_path).map_err(BoxError::io("creating", &stderr_path))?;

        let mut cmd = self.command(&console_path, &output_path);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let line = host::describe(&cmd);
        tracing::debug!(cmd = %line, "starting L1");
        let start = Instant::now();
        let mut child = KillOnDrop(
            cmd.spawn()
                .map_err(|source| BoxError::Spawn { cmd: line, source })?,
        );

        let mut ready_after = None;
        let ended = loop {
            let status = child.0.try_wait().map_err(|source| BoxError::Io {
                op: "waiting for",
                path: PathBuf::from(self.qemu),
                source,
            })?;
            console.poll(sink);
            output.poll(sink);
            if ready_after.is_none() && contains_line(&console.data, MARK_READY) {
                ready_after = Some(start.elapsed());
            }
            if let Some(status) = status {
                break Ended::Exited(status);
            }
            if start.elapsed() > timeout {
                tracing::warn!(?timeout, "L1 timed out; killing QEMU");
                break Ended::TimedOut;
            }
            std::thread::sleep(POLL);
        };
        drop(child);
        let wall = start.elapsed();
        console.poll(sink);
        output.poll(sink);

        Ok(L1Result {
            ended,
            console: console.text(),
            output: output.text(),
            qemu_stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            ready_after,
            wall,
        })
    }
}

fn chardev_file(path: &Path) -> String {
    format!("file:{}", path.display())
}

fn contains_line(data: &[u8], line: &str) -> bool {
    data.split(|&b| b == b'\n')
        .any(|l| l.strip_suffix(b"\r").unwrap_or(l) == line.as_bytes())
}
