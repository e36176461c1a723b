//! The two ports of the guest contract (docs/guest-contract.md): the exit port, whose one-byte
//! write ends the VM with that status, and the boot timer, where init writes `I` as its first
//! action (timestamped) and `R` once its console takes input (the host then releases input).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use contract::ports::{CONSOLE_READY, INIT_STARTED, TEMPLATE_READY};

use crate::devices::bus::BusDevice;
use crate::vm::ConsoleReady;
use crate::vm::VmExit;

/// Port 0xf4: the byte written is the VM's exit status.
#[derive(Debug, Default)]
pub struct ExitPort;

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
/// signals `template` on `T`.
#[derive(Debug)]
pub struct BootTimer {
    start: Instant,
    reached: Arc<OnceLock<Duration>>,
    ready: ConsoleReady,
    template: ConsoleReady,
}

impl BootTimer {
    pub fn new(
        start: Instant,
        reached: Arc<OnceLock<Duration>>,
        ready: ConsoleReady,
        template: ConsoleReady,
    ) -> Self {
        BootTimer {
            start,
            reached,
            ready,
            template,
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
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_port_reports_the_byte() {
        let mut p = ExitPort;
        assert_eq!(p.write(0, &[42]), Some(VmExit::Guest(42)));
        assert_eq!(p.write(0, &[0, 1]), Some(VmExit::Guest(0)));
        assert_eq!(p.write(0, &[]), None);
    }

    #[test]
    fn boot_timer_keeps_the_first_init_byte() {
        let reached = Arc::new(OnceLock::new());
        let mut t = BootTimer::new(Instant::now(), reached.clone(), ConsoleReady::default());
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
        );
        let waiter = std::thread::spawn(move || ready.wait());
        std::thread::sleep(Duration::from_millis(10));
        assert!(!waiter.is_finished());
        t.write(0, b"R");
        waiter.join().unwrap();
    }
}
