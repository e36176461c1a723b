//! The two ports of the guest contract (docs/guest-contract.md): the exit port, whose one-byte
//! write ends the VM with that status, and the boot timer, where init writes `I` as its first
//! action (timestamped) and `R` once its console takes input (the host then releases input).
//! A VM that is to be saved (`Start::Save`) is saved when the byte its spec names comes.
//! On arm64, which has no I/O ports, both come as one byte stream on the marks port
//! ([`MarksPort`], behind a virtio-console port).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[cfg(any(target_arch = "aarch64", test))]
use contract::ports::EXIT_MARK;
use contract::ports::{CONSOLE_READY, INIT_STARTED, TEMPLATE_READY};

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;
use crate::kvm::VmControl;
use crate::vm::ConsoleReady;
use crate::vm::VmExit;

/// Port 0xf4: the byte written is the VM's exit status.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Default)]
pub struct ExitPort;

#[cfg(target_arch = "x86_64")]
impl BusDevice for ExitPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<VmExit> {
        // A wider write than the contract's one byte still ends the VM: its low byte counts.
        data.first().map(|status| VmExit::Guest(*status))
    }
}

/// Port 0x3f0: records the time since `start` at the first `I`; opens the console on `R`;
/// signals `template` on `T`; signals the save trigger on its byte.
#[derive(Debug)]
pub struct BootTimer {
    start: Instant,
    reached: Arc<OnceLock<Duration>>,
    ready: ConsoleReady,
    template: ConsoleReady,
    save: Option<SaveTrigger>,
}

/// The byte at which the VM is saved: the vCPU that writes it asks for a pause (and so parks
/// right after the write) and wakes the save (crate::snapshot::save) through `evt`.
pub struct SaveTrigger {
    pub at: u8,
    pub evt: EventFd,
    pub control: Arc<VmControl>,
}

impl std::fmt::Debug for SaveTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveTrigger").field("at", &self.at).finish()
    }
}

impl BootTimer {
    pub fn new(
        start: Instant,
        reached: Arc<OnceLock<Duration>>,
        ready: ConsoleReady,
        template: ConsoleReady,
        save: Option<SaveTrigger>,
    ) -> Self {
        BootTimer {
            start,
            reached,
            ready,
            template,
            save,
        }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<VmExit> {
        match data.first() {
            Some(&INIT_STARTED) => {
                let elapsed = self.start.elapsed();
                if self.reached.set(elapsed).is_ok() {
                    tracing::debug!("guest init reached after {elapsed:?}");
                }
            }
            Some(&CONSOLE_READY) => self.ready.signal(),
            Some(&TEMPLATE_READY) => self.template.signal(),
            _ => {}
        }
        if let (Some(save), Some(&byte)) = (&self.save, data.first()) {
            if byte == save.at {
                // A VM already pausing or stopping is left to that.
                if save.control.request_pause().is_ok() {
                    let _ = save.evt.write(1);
                }
            }
        }
        None
    }
}

/// The marks port's byte stream (arm64): the boot timer's bytes as they are, and
/// [`EXIT_MARK`] followed by the status byte, which ends the VM with that status.
#[cfg(any(target_arch = "aarch64", test))]
pub struct MarksPort {
    timer: BootTimer,
    control: Arc<VmControl>,
    /// The next byte is the exit status.
    status_next: bool,
}

#[cfg(any(target_arch = "aarch64", test))]
impl MarksPort {
    pub fn new(timer: BootTimer, control: Arc<VmControl>) -> Self {
        MarksPort {
            timer,
            control,
            status_next: false,
        }
    }
}

#[cfg(any(target_arch = "aarch64", test))]
impl crate::devices::virtio::console::PortSink for MarksPort {
    fn receive(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if std::mem::take(&mut self.status_next) {
                self.control.stop(Ok(VmExit::Guest(byte)));
            } else if byte == EXIT_MARK {
                self.status_next = true;
            } else {
                self.timer.write(0, &[byte]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::console::PortSink;

    #[test]
    fn the_marks_port_times_init_and_ends_the_vm_with_the_status_after_its_mark() {
        let reached = Arc::new(OnceLock::new());
        let ready = ConsoleReady::default();
        let timer = BootTimer::new(
            Instant::now(),
            reached.clone(),
            ready.clone(),
            ConsoleReady::default(),
            None,
        );
        let control = Arc::new(VmControl::new(1).unwrap());
        let mut port = MarksPort::new(timer, control.clone());
        port.receive(b"I");
        assert!(reached.get().is_some());
        // The status may come in a write of its own; an `I` as the status is a status.
        port.receive(b"RX");
        assert!(ready.is_signalled());
        assert!(!control.is_stopping());
        port.receive(b"I");
        assert!(control.is_stopping());
        assert_eq!(
            control.take_outcome().unwrap().unwrap(),
            VmExit::Guest(b'I')
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn exit_port_reports_the_byte() {
        let mut p = ExitPort;
        assert_eq!(p.write(0, &[42]), Some(VmExit::Guest(42)));
        assert_eq!(p.write(0, &[0, 1]), Some(VmExit::Guest(0)));
        assert_eq!(p.write(0, &[]), None);
    }

    #[test]
    fn boot_timer_keeps_the_first_init_byte() {
        let reached = Arc::new(OnceLock::new());
        let mut t = BootTimer::new(
            Instant::now(),
            reached.clone(),
            ConsoleReady::default(),
            ConsoleReady::default(),
            None,
        );
        t.write(0, b"x");
        assert!(reached.get().is_none(), "only `I` marks init");
        assert_eq!(t.write(0, b"I"), None);
        let first = *reached.get().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        t.write(0, b"I");
        assert_eq!(*reached.get().unwrap(), first);
    }

    #[test]
    fn boot_timer_opens_the_console() {
        let ready = ConsoleReady::default();
        let mut t = BootTimer::new(
            Instant::now(),
            Arc::new(OnceLock::new()),
            ready.clone(),
            ConsoleReady::default(),
            None,
        );
        let waiter = std::thread::spawn(move || ready.wait());
        std::thread::sleep(Duration::from_millis(10));
        assert!(!waiter.is_finished());
        t.write(0, b"R");
        waiter.join().unwrap();
    }

    #[test]
    fn boot_timer_triggers_the_save_at_its_byte() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let control = Arc::new(VmControl::new(0).unwrap());
        let save = SaveTrigger {
            at: b'T',
            evt: evt.try_clone().unwrap(),
            control: control.clone(),
        };
        let mut t = BootTimer::new(
            Instant::now(),
            Arc::new(OnceLock::new()),
            ConsoleReady::default(),
            ConsoleReady::default(),
            Some(save),
        );
        t.write(0, b"I");
        t.write(0, b"R");
        assert!(evt.read().is_err(), "not at other bytes");
        assert_eq!(control.state(), crate::kvm::control::RunState::Running);
        assert_eq!(t.write(0, b"T"), None, "the VM ends once saved");
        assert_eq!(evt.read().unwrap(), 1);
        assert_eq!(
            control.state(),
            crate::kvm::control::RunState::Paused,
            "paused at once (this VM has no parties)"
        );
    }
}
