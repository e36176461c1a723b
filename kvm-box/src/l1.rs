//! Running L1: QEMU TCG emulating a CPU that virtualizes (see [`Platform`]), so that L1's KVM
//! works; its console and the script's output are files read as they grow.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::initramfs::MARK_READY;
use crate::platform::Platform;
use crate::watchdog::{self, Watchdog};
use crate::{host, BoxError, Stream};

const POLL: Duration = Duration::from_millis(20);

pub(crate) struct L1<'a> {
    pub platform: &'a Platform,
    pub qemu: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub memory_mib: u32,
    pub cpus: u8,
    /// arm64: a GICv2 instead of a GICv3.
    pub gic_v2: bool,
    /// Where the console, the script's output and QEMU's stderr are written.
    pub work_dir: &'a Path,
}

pub(crate) enum Ended {
    Exited(ExitStatus),
    TimedOut,
    /// L1 stopped running for good ([`Watchdog`]).
    Stalled,
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

/// Kills a child (QEMU, or a test's process) on every way out, panics included.
pub(crate) struct KillOnDrop(pub(crate) Child);

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
            // The console is a cooked tty: \n went out as \r\n.
            Stream::Console => text.replace("\r\n", "\n"),
            Stream::Output => text.into_owned(),
        }
    }
}

impl L1<'_> {
    fn command(&self, console: &Path, output: &Path) -> Command {
        let mut cmd = Command::new(self.qemu);
        cmd.args(self.platform.qemu_args(
            self.gic_v2,
            self.memory_mib,
            self.cpus,
            self.kernel,
            self.initrd,
            console,
            output,
        ));
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

        let mut watchdog = Watchdog::new(child.0.id(), watchdog::STALL);
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
            if watchdog.stalled() {
                break Ended::Stalled;
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

fn contains_line(data: &[u8], line: &str) -> bool {
    data.split(|&b| b == b'\n')
        .any(|l| l.strip_suffix(b"\r").unwrap_or(l) == line.as_bytes())
}
