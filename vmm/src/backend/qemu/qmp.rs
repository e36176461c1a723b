//! QEMU's machine protocol (QMP), the little of it snapshots need: one command at a time over
//! a socket pair handed to QEMU (`-chardev socket,fd=N -mon chardev=...,mode=control`), with
//! descriptors passed alongside a command (`getfd`). Events are read past and dropped.

use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Value};

/// The longest QEMU may take to answer one command.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest answer line read (QEMU's answers here are a few hundred bytes).
const MAX_LINE: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QEMU's monitor: {0}")]
    Io(#[from] io::Error),
    #[error("QEMU's monitor closed its connection")]
    Closed,
    #[error("QEMU's monitor said {0:?}, which is not QMP")]
    Garbled(String),
    #[error("QEMU refused {command}: {message}")]
    Refused { command: String, message: String },
}

/// A QMP connection, past its greeting and capabilities negotiation.
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Reads QEMU's greeting on `stream` and enters command mode.
    pub fn open(stream: UnixStream) -> Result<Qmp, QmpError> {
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut qmp = Qmp { stream, reader };
        let greeting = qmp.line()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Garbled(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments`; returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.send(command, arguments, None)
    }

    /// Gives QEMU `fd` under `name` (QMP `getfd`), for a later `fd:<name>`.
    pub fn pass_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.send("getfd", json!({ "fdname": name }), Some(fd))
            .map(drop)
    }

    fn send(
        &mut self,
        command: &str,
        arguments: Value,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let mut line = json!({ "execute": command, "arguments": arguments }).to_string();
        line.push('\n');
        match fd {
            None => self.stream.write_all(line.as_bytes())?,
            Some(fd) => {
                let fds = [fd.as_raw_fd()];
                let sent = sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &[IoSlice::new(line.as_bytes())],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)?;
                // The descriptor went with the first byte; the rest of a short send follows.
                self.stream.write_all(&line.as_bytes()[sent..])?;
            }
        }
        loop {
            let answer = self.line()?;
            if let Some(value) = answer.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = answer.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_string(),
                    message: error
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                        .to_string(),
                });
            }
            // An event: not what we wait for.
        }
    }

    /// The next message, one JSON object per line.
    fn line(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        let read = Read::take(&mut self.reader, MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if read == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_slice(&line)
            .map_err(|_| QmpError::Garbled(String::from_utf8_lossy(&line).trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// A stand-in monitor: greets, then answers each command with `answers` in turn, and
    /// reports the commands it got.
    fn monitor(answers: Vec<&'static str>) -> (UnixStream, std::thread::JoinHandle<String>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            let mut theirs = theirs;
            theirs
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut got = String::new();
            let mut reader = BufReader::new(theirs.try_clone().unwrap());
            for answer in answers {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                got.push_str(&line);
                theirs.write_all(answer.as_bytes()).unwrap();
            }
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            got + &rest
        });
        (ours, thread)
    }

    #[test]
    fn commands_get_their_answers_past_events() {
        let (stream, monitor) = monitor(vec![
            "{\"return\": {}}\n",
            "{\"event\": \"STOP\"}\n{\"return\": {\"status\": \"paused\"}}\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no such fd\"}}\n",
        ]);
        let mut qmp = Qmp::open(stream).unwrap();
        let status = qmp.execute("query-status", json!({})).unwrap();
        assert_eq!(status["status"], "paused");
        let err = qmp.execute("migrate", json!({"uri": "fd:x"})).unwrap_err();
        assert_eq!(err.to_string(), "QEMU refused migrate: no such fd");
        drop(qmp);
        let got = monitor.join().unwrap();
        assert!(
            got.starts_with("{\"arguments\":{},\"execute\":\"qmp_capabilities\"}\n"),
            "{got}"
        );
        assert!(got.contains("\"execute\":\"query-status\""), "{got}");
    }

    #[test]
    fn a_monitor_that_is_not_qmp_is_an_error() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs
            .write_all(b"QEMU 7.2 monitor - type 'help'\n")
            .unwrap();
        assert!(matches!(Qmp::open(ours), Err(QmpError::Garbled(_))));
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        assert!(matches!(Qmp::open(ours), Err(QmpError::Closed)));
    }

    #[test]
    fn a_passed_descriptor_arrives_with_its_command() {
        use nix::sys::socket::{recvmsg, ControlMessageOwned};
        use std::os::fd::{FromRawFd, RawFd};
        use std::os::unix::fs::MetadataExt;

        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let inode = file.metadata().unwrap().ino();
        let monitor = std::thread::spawn(move || {
            theirs.write_all(b"{\"QMP\": {}}\n").unwrap();
            // Each command is one message: the client waits for each answer.
            let mut received = Vec::new();
            for _ in 0..2 {
                let mut buf = [0u8; 512];
                let mut space = nix::cmsg_space!([RawFd; 1]);
                let mut iov = [io::IoSliceMut::new(&mut buf)];
                let msg = recvmsg::<()>(
                    theirs.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::empty(),
                )
                .unwrap();
                let fd = msg.cmsgs().unwrap().find_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                });
                // SAFETY: a descriptor just received, ours alone.
                received.push(fd.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) }));
                theirs.write_all(b"{\"return\": {}}\n").unwrap();
            }
            received
        });
        let mut qmp = Qmp::open(ours).unwrap();
        qmp.pass_fd("snap", file.as_fd()).unwrap();
        let received = monitor.join().unwrap();
        assert!(received[0].is_none(), "nothing with qmp_capabilities");
        let passed = received[1].as_ref().expect("a descriptor with getfd");
        assert_eq!(passed.metadata().unwrap().ino(), inode);
    }
}
