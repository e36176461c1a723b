//! The guest console: a 16550A UART on COM1 (`vm-superio`), wired to the host's console fds.
//!
//! Output: every byte the guest transmits is written to the console output at once.
//! Input: a thread reads the console input into a bounded buffer, which is fed to the UART's
//! 64-byte receive FIFO as the guest drains it; when the buffer is full the thread stops
//! reading, so the host writer blocks instead of input being dropped. EOF on the input only
//! means no more input: the VM keeps running.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};
use vm_superio::serial::NoEvents;

use super::IrqLine;
use crate::devices::bus::BusDevice;
use crate::devices::persist::{Persist, RestoreError};
use crate::devices::{lock, Lifecycle};
use crate::vm::VmExit;

/// Host input held for the guest beyond the UART's FIFO.
pub const INPUT_BUFFER_MAX: usize = 64 << 10;
/// The UART's receive FIFO (16550A).
const FIFO_SIZE: usize = 64;
const DATA_REGISTER: u64 = 0;

/// COM1 with its pending input.
pub struct Serial<W: Write> {
    uart: vm_superio::Serial<IrqLine, NoEvents, W>,
    pending: VecDeque<u8>,
}

impl<W: Write> Serial<W> {
    pub fn new(irq: IrqLine, out: W) -> Self {
        Serial {
            uart: vm_superio::Serial::new(irq, out),
            pending: VecDeque::new(),
        }
    }

    /// How many more input bytes [`push_input`](Self::push_input) takes now.
    pub fn input_room(&self) -> usize {
        INPUT_BUFFER_MAX - self.pending.len()
    }

    /// Queues host input for the guest; returns how many bytes were taken (at most the room).
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(self.input_room());
        self.pending.extend(&bytes[..taken]);
        self.fill_fifo();
        taken
    }

    /// Moves pending input into the receive FIFO as far as it has room.
    fn fill_fifo(&mut self) {
        let n = self
            .uart
            .fifo_capacity()
            .min(self.pending.len())
            .min(FIFO_SIZE);
        if n == 0 {
            return;
        }
        let mut chunk = [0u8; FIFO_SIZE];
        for (dst, src) in chunk.iter_mut().zip(self.pending.iter()) {
            *dst = *src;
        }
        // In loopback mode the UART takes nothing; the bytes stay pending.
        if let Ok(taken) = self.uart.enqueue_raw_bytes(&chunk[..n]) {
            self.pending.drain(..taken);
        }
    }

    pub fn writer(&self) -> &W {
        self.uart.writer()
    }
}

impl<W: Write + Send> BusDevice for Serial<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.uart.read(offset as u8);
        }
        if offset == DATA_REGISTER {
            self.fill_fifo();
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmExit> {
        if let Some(value) = data.first() {
            if let Err(e) = self.uart.write(offset as u8, *value) {
                tracing::trace!("serial output lost: {e:?}");
            }
        }
        None
    }
}

/// The serial port's state: vm-superio's 16550A registers and receive FIFO, and the host input
/// waiting for room in the FIFO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    /// The receive FIFO.
    pub fifo: Vec<u8>,
    pub pending: Vec<u8>,
}

impl<W: Write> Persist for Serial<W> {
    type State = SerialState;
    /// The interrupt line and the console output.
    type Args = (IrqLine, W);

    fn save(&self) -> SerialState {
        let uart = self.uart.state();
        SerialState {
            baud_divisor_low: uart.baud_divisor_low,
            baud_divisor_high: uart.baud_divisor_high,
            interrupt_enable: uart.interrupt_enable,
            interrupt_identification: uart.interrupt_identification,
            line_control: uart.line_control,
            line_status: uart.line_status,
            modem_control: uart.modem_control,
            modem_status: uart.modem_status,
            scratch: uart.scratch,
            fifo: uart.in_buffer,
            pending: self.pending.iter().copied().collect(),
        }
    }

    /// vm-superio raises the interrupt line again for a FIFO with data or an empty transmitter,
    /// when the guest enabled those interrupts.
    fn restore((irq, out): (IrqLine, W), state: &SerialState) -> Result<Self, RestoreError> {
        let too_long = |what, len, max| RestoreError::TooLong { what, len, max };
        if state.fifo.len() > FIFO_SIZE {
            return Err(too_long("serial receive FIFO", state.fifo.len(), FIFO_SIZE));
        }
        if state.pending.len() > INPUT_BUFFER_MAX {
            return Err(too_long(
                "serial pending input",
                state.pending.len(),
                INPUT_BUFFER_MAX,
            ));
        }
        let uart = vm_superio::serial::SerialState {
            baud_divisor_low: state.baud_divisor_low,
            baud_divisor_high: state.baud_divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.fifo.clone(),
        };
        let uart = match vm_superio::Serial::from_state(&uart, irq, NoEvents, out) {
            Ok(uart) => uart,
            // Checked above; IrqLine's trigger cannot fail.
            Err(_) => return Err(too_long("serial receive FIFO", state.fifo.len(), FIFO_SIZE)),
        };
        Ok(Serial {
            uart,
            pending: state.pending.iter().copied().collect(),
        })
    }
}

/// The console output: writes go straight to the fd. A write blocked on a full pipe or tty
/// gives up once the VM is stopping, so a stalled reader cannot keep a vCPU from stopping.
pub struct ConsoleWriter {
    fd: OwnedFd,
    stopping: Arc<AtomicBool>,
}

impl ConsoleWriter {
    pub fn new(fd: OwnedFd, stopping: Arc<AtomicBool>) -> Self {
        ConsoleWriter { fd, stopping }
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: writes from a valid buffer of buf.len() bytes to an fd we own.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                // A non-blocking fd that is full: wait a little for the reader.
                Some(libc::EAGAIN) => {
                    let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
                    match poll(&mut fds, PollTimeout::from(100u8)) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => return Err(err),
            }
            if self.stopping.load(Ordering::Acquire) {
                return Err(io::Error::other("VM stopping: console output abandoned"));
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds the console input to `serial` until the VM stops; holds still while it is paused.
/// Meant for its own thread.
pub fn forward_input<W: Write>(
    input: &OwnedFd,
    serial: &Mutex<Serial<W>>,
    lifecycle: &dyn Lifecycle,
) {
    // SAFETY: both eventfds outlive this function, which is the only user of the borrows.
    let (stop_fd, pause_fd) = unsafe {
        (
            BorrowedFd::borrow_raw(lifecycle.stop_evt().as_raw_fd()),
            BorrowedFd::borrow_raw(lifecycle.pause_evt().as_raw_fd()),
        )
    };
    let mut buf = [0u8; 4096];
    let mut eof = false;
    loop {
        let room = lock(serial).input_room();
        let mut fds = [
            PollFd::new(stop_fd, PollFlags::POLLIN),
            PollFd::new(pause_fd, PollFlags::POLLIN),
            PollFd::new(input.as_fd(), PollFlags::POLLIN),
        ];
        let (watched, wait) = if eof {
            (2, PollTimeout::NONE)
        } else if room == 0 {
            // The guest is not reading: look again shortly, without reading the input.
            (2, PollTimeout::from(10u8))
        } else {
            (3, PollTimeout::NONE)
        };
        match poll(&mut fds[..watched], wait) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("console input: poll failed: {e}");
                return;
            }
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[0]) {
            return;
        }
        if ready(&fds[1]) {
            lifecycle.park();
            continue;
        }
        if watched < 3 || !ready(&fds[2]) {
            continue;
        }
        let want = room.min(buf.len());
        // SAFETY: reads at most `want` <= buf.len() bytes into buf.
        let n = unsafe { libc::read(input.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
        match n {
            0 => eof = true,
            n if n > 0 => {
                let taken = lock(serial).push_input(&buf[..n as usize]);
                debug_assert_eq!(taken, n as usize);
            }
            _ => {
                let err = io::Error::last_os_error();
                if !matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
                    tracing::debug!("console input closed: {err}");
                    eof = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::VmControl;
    use std::os::fd::FromRawFd;
    use std::thread;
    use std::time::{Duration, Instant};

    const LSR: u64 = 5;
    const IER: u64 = 1;
    const LSR_DATA_READY: u8 = 1;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 just returned these two fds, owned by no one else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn drain(serial: &mut Serial<Vec<u8>>) -> Vec<u8> {
        let mut got = Vec::new();
        let mut b = [0u8];
        loop {
            serial.read(LSR, &mut b);
            if b[0] & LSR_DATA_READY == 0 {
                return got;
            }
            serial.read(DATA_REGISTER, &mut b);
            got.push(b[0]);
        }
    }

    #[test]
    fn output_goes_to_the_writer() {
        let mut s = Serial::new(IrqLine::new().unwrap(), Vec::new());
        for b in b"hello\n" {
            assert_eq!(s.write(DATA_REGISTER, &[*b]), None);
        }
        assert_eq!(s.writer(), b"hello\n");
    }

    #[test]
    fn input_beyond_the_fifo_is_kept_in_order() {
        let irq = IrqLine::new().unwrap();
        let irq_fd = irq.0.try_clone().unwrap();
        let mut s = Serial::new(irq, Vec::new());
        s.write(IER, &[1]); // receive interrupt on
        let input: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        assert_eq!(s.push_input(&input), input.len());
        assert!(irq_fd.read().unwrap() > 0, "receive interrupt raised");
        assert_eq!(drain(&mut s), input);
    }

    #[test]
    fn input_buffer_is_bounded() {
        let mut s = Serial::new(IrqLine::new().unwrap(), Vec::new());
        let big = vec![b'x'; INPUT_BUFFER_MAX + 100];
        assert_eq!(s.push_input(&big), INPUT_BUFFER_MAX);
        assert_eq!(s.input_room(), FIFO_SIZE, "the FIFO took its share");
        assert_eq!(drain(&mut s).len(), INPUT_BUFFER_MAX);
        assert_eq!(s.input_room(), INPUT_BUFFER_MAX);
    }

    #[test]
    fn state_round_trips() {
        use crate::devices::persist::through_json;
        const LCR: u64 = 3;
        const SCRATCH: u64 = 7;
        let mut s = Serial::new(IrqLine::new().unwrap(), Vec::new());
        s.write(LCR, &[0x1b]);
        s.write(SCRATCH, &[0x5a]);
        s.write(IER, &[1]);
        let input: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        s.push_input(&input);
        let state = through_json(&s.save());
        assert_eq!(
            (state.fifo.len(), state.pending.len()),
            (FIFO_SIZE, 300 - FIFO_SIZE)
        );

        let irq = IrqLine::new().unwrap();
        let irq_fd = irq.0.try_clone().unwrap();
        let mut restored = Serial::restore((irq, Vec::new()), &state).unwrap();
        assert_eq!(restored.save(), state);
        assert!(
            irq_fd.read().unwrap() > 0,
            "data waiting: the interrupt again"
        );
        let mut b = [0u8];
        restored.read(SCRATCH, &mut b);
        assert_eq!(b[0], 0x5a);
        assert_eq!(drain(&mut restored), drain(&mut s));

        let mut bad = state.clone();
        bad.fifo = vec![0; FIFO_SIZE + 1];
        let err = Serial::restore((IrqLine::new().unwrap(), Vec::new()), &bad).err();
        assert!(matches!(err, Some(RestoreError::TooLong { .. })), "{err:?}");
    }

    #[test]
    fn forwards_a_pipe_until_stopped() {
        let (rx, tx) = pipe();
        let serial = Arc::new(Mutex::new(Serial::new(IrqLine::new().unwrap(), Vec::new())));
        let control = Arc::new(VmControl::new(1).unwrap());
        let (s2, c2) = (serial.clone(), control.clone());
        let t = thread::spawn(move || forward_input(&rx, &s2, &*c2));

        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let input = input.clone();
            thread::spawn(move || {
                let mut f = std::fs::File::from(tx);
                f.write_all(&input).unwrap();
                // Dropping f closes the pipe: EOF for the forwarder, which keeps running.
            })
        };
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < input.len() && Instant::now() < deadline {
            got.extend(drain(&mut lock(&serial)));
            thread::yield_now();
        }
        writer.join().unwrap();
        assert_eq!(got.len(), input.len());
        assert!(got == input, "input arrives whole and in order");
        thread::sleep(Duration::from_millis(20));
        assert!(!t.is_finished(), "EOF does not stop the forwarder");
        control.stop(Ok(VmExit::Stopped));
        t.join().unwrap();
    }

    #[test]
    fn input_waits_while_the_vm_is_paused() {
        let (rx, tx) = pipe();
        let serial = Arc::new(Mutex::new(Serial::new(IrqLine::new().unwrap(), Vec::new())));
        let control = Arc::new(VmControl::new(1).unwrap());
        let (s2, c2) = (serial.clone(), control.clone());
        let t = thread::spawn(move || forward_input(&rx, &s2, &*c2));
        control.pause().unwrap();
        let mut tx = std::fs::File::from(tx);
        tx.write_all(b"held").unwrap();
        thread::sleep(Duration::from_millis(50));
        assert_eq!(drain(&mut lock(&serial)), b"", "nothing moves while paused");
        control.resume().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < 4 && Instant::now() < deadline {
            got.extend(drain(&mut lock(&serial)));
            thread::yield_now();
        }
        assert_eq!(got, b"held");
        control.stop(Ok(VmExit::Stopped));
        t.join().unwrap();
    }

    #[test]
    fn console_writer_writes_and_gives_up_when_stopping() {
        let (rx, tx) = pipe();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut w = ConsoleWriter::new(tx, stopping.clone());
        w.write_all(b"abc").unwrap();
        let mut buf = [0u8; 3];
        let mut r = std::fs::File::from(rx);
        std::io::Read::read_exact(&mut r, &mut buf).unwrap();
        assert_eq!(&buf, b"abc");
        drop(r);
        // A closed reader: the error is reported, not retried forever.
        assert!(w.write_all(b"x").is_err());
    }
}
