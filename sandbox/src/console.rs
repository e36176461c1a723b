//! The host side of the guest's serial console: the terminal in raw mode (restored on drop), or
//! plain pipes where a `^D` stands for end of input. Input is held back until the guest says
//! its console is ready, since bytes sent earlier would be lost or echoed during boot.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use signal_hook::low_level;

use vmm::vm::Console;
use vmm::vm::ConsoleIo;
use vmm::vm::ConsoleReady;

/// End of transmission: what the guest's canonical-mode console takes as end of input.
const EOT: u8 = 0x04;
/// Window size used when the terminal doesn't report one.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("creating the console pipe")]
    Pipe(#[source] nix::Error),
    #[error("duplicating the host's standard {0} for the guest console")]
    Dup(&'static str, #[source] io::Error),
    #[error("putting the terminal in raw mode")]
    RawMode(#[source] nix::Error),
    #[error("catching the signals that end nodeos-vm, to restore the terminal first")]
    Signals(#[source] io::Error),
}

/// The host terminal attached to a guest console; restores the terminal when dropped.
pub struct HostConsole {
    mode: Console,
    saved: Option<Termios>,
    /// stdin's file status flags (O_NONBLOCK), which a backend sharing the terminal may change.
    flags: Option<OFlag>,
}

impl HostConsole {
    /// Attaches the process's stdin/stdout: a tty (both ends terminals) unless `force_pipe`.
    pub fn attach(force_pipe: bool) -> Result<(HostConsole, ConsoleIo), ConsoleError> {
        let stdin = io::stdin();
        let stdout = io::stdout();
        let is_tty = !force_pipe
            && termios::tcgetattr(stdin.as_fd()).is_ok()
            && nix::unistd::isatty(stdout.as_raw_fd()).unwrap_or(false);
        let (mode, saved) = if is_tty {
            let saved = termios::tcgetattr(stdin.as_fd()).map_err(ConsoleError::RawMode)?;
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            restore_on_signals(&saved)?;
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                .map_err(ConsoleError::RawMode)?;
            let (cols, rows) = window_size(&stdout).unwrap_or(DEFAULT_SIZE);
            (Console::Tty { cols, rows }, Some(saved))
        } else {
            (Console::Pipe, None)
        };
        let flags = fcntl(stdin.as_raw_fd(), FcntlArg::F_GETFL)
            .ok()
            .map(OFlag::from_bits_truncate);
        let host = HostConsole { mode, saved, flags };

        let (guest_in, relay_out) = nix::unistd::pipe().map_err(ConsoleError::Pipe)?;
        let output = stdout
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ConsoleError::Dup("output", e))?;
        let ready = ConsoleReady::default();
        spawn_relay(mode, relay_out, ready.clone(), host.saved.clone());
        Ok((
            host,
            ConsoleIo {
                input: guest_in,
                output,
                ready,
                template: ConsoleReady::default(),
            },
        ))
    }

    pub fn mode(&self) -> Console {
        self.mode
    }
}

impl Drop for HostConsole {
    fn drop(&mut self) {
        if let Some(flags) = self.flags {
            let _ = fcntl(io::stdin().as_raw_fd(), FcntlArg::F_SETFL(flags));
        }
        if let Some(saved) = &self.saved {
            // Best effort: nothing better to do if the terminal went away.
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Signals that end nodeos-vm by default and may reach it while it owns the terminal.
const FATAL_SIGNALS: [libc::c_int; 4] = [SIGTERM, SIGHUP, SIGINT, SIGQUIT];

/// `kill nodeos-vm` must not leave the user's terminal in raw mode: a thread takes these
/// signals, puts `saved` back, then ends the process as the signal would have. Once per process.
fn restore_on_signals(saved: &Termios) -> Result<(), ConsoleError> {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap();
    if *installed {
        return Ok(());
    }
    let mut signals = Signals::new(FATAL_SIGNALS).map_err(ConsoleError::Signals)?;
    let saved = saved.clone();
    thread::Builder::new()
        .name("console-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &saved);
                let _ = low_level::emulate_default_handler(signal);
            }
        })
        .map_err(ConsoleError::Signals)?;
    *installed = true;
    Ok(())
}

fn window_size(stdout: &io::Stdout) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`.
    let rc = unsafe { libc::ioctl(stdout.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

fn wait_readable(fd: &impl AsFd) {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::NONE);
}

/// Copies host stdin to the guest once it is ready. In pipe mode, end of input becomes `^D`
/// (twice after a partial line: the first only ends the line). On a terminal, Ctrl-A x ends
/// nodeos-vm (the VM with it) and Ctrl-A Ctrl-A sends a Ctrl-A. The thread ends with the input
/// or when the guest goes away (broken pipe); it never holds the VM up.
fn spawn_relay(mode: Console, out: OwnedFd, ready: ConsoleReady, saved: Option<Termios>) {
    thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            let mut out = std::fs::File::from(out);
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 4096];
            let mut escape = Escape::default();
            let mut last = b'\n';
            ready.wait();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // QEMU makes its stdout non-blocking, and on a terminal that is the same
                    // open file as our stdin: wait for input instead of giving up.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        wait_readable(&stdin);
                        continue;
                    }
                    Err(_) => break,
                };
                last = buf[n - 1];
                let data = match mode {
                    Console::Pipe => buf[..n].to_vec(),
                    Console::Tty { .. } => match escape.filter(&buf[..n]) {
                        Some(data) => data,
                        None => quit(saved.as_ref()),
                    },
                };
                if out.write_all(&data).is_err() {
                    return;
                }
            }
            if mode == Console::Pipe {
                let eof: &[u8] = if last == b'\n' { &[EOT] } else { &[EOT, EOT] };
                let _ = out.write_all(eof);
            }
        })
        .expect("spawning the console input thread");
}

/// Ctrl-A, the escape key on a terminal console (as in QEMU and screen).
const ESCAPE: u8 = 0x01;
/// Status of a VM the user stopped with Ctrl-A x: as for a command stopped with Ctrl-C.
pub const ESCAPE_QUIT_STATUS: i32 = 130;

/// Recognizes Ctrl-A x in terminal input, across reads.
#[derive(Debug, Default)]
struct Escape {
    pending: bool,
}

impl Escape {
    /// The bytes for the guest, or `None` when the user asked to quit.
    fn filter(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            match (self.pending, b) {
                (false, ESCAPE) => self.pending = true,
                (false, b) => out.push(b),
                (true, b'x' | b'X') => return None,
                (true, ESCAPE) => {
                    out.push(ESCAPE);
                    self.pending = false;
                }
                (true, b) => {
                    out.extend([ESCAPE, b]);
                    self.pending = false;
                }
            }
        }
        Some(out)
    }
}

/// Ends nodeos-vm at the user's request: the terminal restored, the VM gone with the process
/// (our VMM's threads; QEMU through its parent-death signal).
fn quit(saved: Option<&Termios>) -> ! {
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, saved);
    }
    eprintln!("\r\nnodeos-vm: stopped with Ctrl-A x; the VM is gone");
    std::process::exit(ESCAPE_QUIT_STATUS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_child;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    /// Run alone in a child whose stdin and stdout are a terminal: raw mode, then SIGTERM.
    #[test]
    fn child_attached_then_terminated() {
        if !test_child::is_child() {
            return;
        }
        let _console = HostConsole::attach(false).unwrap();
        low_level::raise(SIGTERM).unwrap();
        thread::sleep(std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_fatal_signal_restores_the_terminal() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let cooked = termios::tcgetattr(&pty.slave).unwrap();
        let terminal = || Stdio::from(pty.slave.try_clone().unwrap());
        let out = test_child::command("console::tests::child_attached_then_terminated")
            .stdin(terminal())
            .stdout(terminal())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(SIGTERM), "{stderr}");
        let after = termios::tcgetattr(&pty.slave).unwrap();
        assert_eq!(after.local_flags, cooked.local_flags, "{stderr}");
        assert_eq!(after.input_flags, cooked.input_flags, "{stderr}");
    }

    #[test]
    fn a_console_log_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let out = capture_to_file(&path).unwrap();
        let mut out = std::fs::File::from(out);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            out.write_all(&chunk).unwrap();
        }
        out.write_all(b"the end\n").unwrap();
        drop(out);
        // The thread ends at end of file; wait for the last line.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read(&path).unwrap().ends_with(b"the end\n") {
            assert!(
                std::time::Instant::now() < deadline,
                "the last line never came"
            );
            thread::sleep(std::time::Duration::from_millis(20));
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(path.with_extension("log.1"))
            .unwrap()
            .len();
        assert!(
            now <= LOG_FILE_BYTES && old <= LOG_FILE_BYTES,
            "{now} {old}"
        );
        assert_eq!(
            now % (1 << 20),
            8,
            "whole writes, then the last line: {now}"
        );
    }

    #[test]
    fn escape_sequences() {
        let mut e = Escape::default();
        assert_eq!(e.filter(b"abc"), Some(b"abc".to_vec()));
        assert_eq!(e.filter(b"a\x01\x01b"), Some(b"a\x01b".to_vec()));
        assert_eq!(e.filter(b"\x01c"), Some(b"\x01c".to_vec()));
        assert_eq!(
            e.filter(b"z\x01"),
            Some(b"z".to_vec()),
            "held until the next key"
        );
        assert_eq!(e.filter(b"x"), None, "Ctrl-A x across two reads");
        assert_eq!(Escape::default().filter(b"ok\x01x"), None);
    }
}

/// The console of a VM nobody types into (`run`, detached VMs): no input, output to `output`
/// (a log file, or the pipe of a [`ConsoleTail`]).
pub fn headless(output: OwnedFd) -> Result<ConsoleIo, ConsoleError> {
    let input = std::fs::File::open("/dev/null")
        .map_err(|e| ConsoleError::Dup("input (/dev/null)", e))?
        .into();
    Ok(ConsoleIo {
        input,
        output,
        ready: ConsoleReady::default(),
        template: ConsoleReady::default(),
    })
}

/// A console log file that stays bounded whatever the guest writes: at [`LOG_FILE_BYTES`] the
/// file becomes `<file>.1` (replacing the one before) and a new one starts, so at most twice
/// that is kept. Returns the write end of a pipe for the console output; a thread appends what
/// comes through it.
pub fn capture_to_file(path: &std::path::Path) -> Result<OwnedFd, ConsoleError> {
    let open = |path: &std::path::Path| {
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
    };
    let mut file = open(path).map_err(|e| ConsoleError::Dup("output (console log file)", e))?;
    let (read, write) = nix::unistd::pipe().map_err(ConsoleError::Pipe)?;
    let path = path.to_path_buf();
    thread::Builder::new()
        .name("console-log".into())
        .spawn(move || {
            let mut read = std::fs::File::from(read);
            let mut buf = [0u8; 4096];
            let mut len = file.metadata().map(|m| m.len()).unwrap_or(0);
            while let Ok(n @ 1..) = read.read(&mut buf) {
                if len + n as u64 > LOG_FILE_BYTES {
                    let old = path.with_extension("log.1");
                    match std::fs::rename(&path, &old).and_then(|()| open(&path)) {
                        Ok(fresh) => (file, len) = (fresh, 0),
                        Err(e) => tracing::warn!("console log {}: {e}", path.display()),
                    }
                }
                if file.write_all(&buf[..n]).is_ok() {
                    len += n as u64;
                }
            }
        })
        .map_err(|e| ConsoleError::Dup("output (console log thread)", e))?;
    Ok(write)
}

/// Where a console log file starts again (see [`capture_to_file`]).
pub const LOG_FILE_BYTES: u64 = 8 << 20;

/// Keeps the last [`TAIL_BYTES`] a console wrote, to explain a VM that failed.
#[derive(Debug, Clone, Default)]
pub struct ConsoleTail(Arc<Mutex<Vec<u8>>>);

/// How much console output a [`ConsoleTail`] keeps.
pub const TAIL_BYTES: usize = 16 * 1024;

impl ConsoleTail {
    /// A pipe whose write end is the console output; a thread drains the read end.
    pub fn capture() -> Result<(ConsoleTail, OwnedFd), ConsoleError> {
        let (read, write) = nix::unistd::pipe().map_err(ConsoleError::Pipe)?;
        let tail = ConsoleTail::default();
        let keep = tail.clone();
        thread::Builder::new()
            .name("console-tail".into())
            .spawn(move || {
                let mut read = std::fs::File::from(read);
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = read.read(&mut buf) {
                    let mut kept = keep.0.lock().unwrap();
                    kept.extend_from_slice(&buf[..n]);
                    let excess = kept.len().saturating_sub(TAIL_BYTES);
                    kept.drain(..excess);
                }
            })
            .map_err(|e| ConsoleError::Dup("output (console reader thread)", e))?;
        Ok((tail, write))
    }

    /// What the console wrote last, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
