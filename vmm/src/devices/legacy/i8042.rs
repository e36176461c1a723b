//! A PS/2 controller with a keyboard and no mouse: enough for Linux's i8042 and atkbd drivers to
//! probe it quickly (every command they wait on is answered at once; a missing answer costs the
//! guest a 500 ms timeout) and for `reboot=k` to reset the machine (pulse command 0xfe).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::IrqLine;
use crate::devices::bus::BusDevice;
use crate::devices::persist::{Persist, RestoreError};
use crate::vm::VmExit;

const DATA_OFFSET: u64 = 0; // port 0x60
const COMMAND_OFFSET: u64 = 4; // port 0x64

// Status register.
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;

// Controller configuration byte.
const CTR_KBD_INTERRUPT: u8 = 0x01;
const CTR_SYSTEM_FLAG: u8 = 0x04;
const CTR_AUX_DISABLED: u8 = 0x20;
const CTR_TRANSLATE: u8 = 0x40;
const CTR_DEFAULT: u8 = CTR_KBD_INTERRUPT | CTR_SYSTEM_FLAG | CTR_AUX_DISABLED | CTR_TRANSLATE;

// Controller commands.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_KBD_LOOP: u8 = 0xd2;
const CMD_AUX_LOOP: u8 = 0xd3;
const CMD_AUX_SEND: u8 = 0xd4;
const CMD_PULSE_RESET: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// AUX port test answer "clock line stuck low": Linux then treats the mouse port as absent.
const AUX_TEST_ABSENT: u8 = 0x01;
/// Output port bit 0 low holds the CPU in reset.
const OUTPUT_PORT_RESET_LOW: u8 = 0x01;
const OUTPUT_PORT_DEFAULT: u8 = 0x03;

// Keyboard commands and answers.
const KBD_ACK: u8 = 0xfa;
const KBD_CMD_GET_ID: u8 = 0xf2;
const KBD_CMD_RESET: u8 = 0xff;
const KBD_ID: [u8; 2] = [0xab, 0x83]; // MF2 keyboard
const KBD_SELF_TEST_PASSED: u8 = 0xaa;

/// The guest cannot make the output buffer grow beyond this.
const OUTPUT_MAX: usize = 16;

pub struct I8042 {
    ctr: u8,
    output_port: u8,
    last_was_command: bool,
    /// The controller command whose data byte comes next on port 0x60.
    pending_command: Option<u8>,
    output: VecDeque<u8>,
    irq: IrqLine,
}

impl I8042 {
    pub fn new(irq: IrqLine) -> Self {
        I8042 {
            ctr: CTR_DEFAULT,
            output_port: OUTPUT_PORT_DEFAULT,
            last_was_command: false,
            pending_command: None,
            output: VecDeque::new(),
            irq,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM_FLAG | STATUS_UNLOCKED;
        if !self.output.is_empty() {
            s |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            s |= STATUS_LAST_WAS_COMMAND;
        }
        s
    }

    /// A controller answer: replaces whatever was waiting, as on real hardware. Polled by the
    /// driver, so no interrupt.
    fn answer(&mut self, byte: u8) {
        self.output.clear();
        self.output.push_back(byte);
    }

    /// Bytes from the keyboard: delivered with IRQ 1 when the guest enabled it.
    fn queue_keyboard_bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            if self.output.len() < OUTPUT_MAX {
                self.output.push_back(*b);
            }
        }
        self.raise_keyboard_irq();
    }

    fn raise_keyboard_irq(&self) {
        if self.ctr & CTR_KBD_INTERRUPT != 0 && !self.output.is_empty() {
            self.irq.trigger();
        }
    }

    fn command(&mut self, cmd: u8) -> Option<VmExit> {
        match cmd {
            CMD_READ_CTR => self.answer(self.ctr),
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLED,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLED,
            CMD_AUX_TEST => self.answer(AUX_TEST_ABSENT),
            CMD_SELF_TEST => self.answer(SELF_TEST_OK),
            CMD_KBD_TEST => self.answer(PORT_TEST_OK),
            CMD_KBD_DISABLE | CMD_KBD_ENABLE => {}
            CMD_READ_OUTPUT_PORT => self.answer(self.output_port),
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT_PORT | CMD_KBD_LOOP | CMD_AUX_LOOP | CMD_AUX_SEND => {
                self.pending_command = Some(cmd)
            }
            CMD_PULSE_RESET => return Some(VmExit::Reset),
            _ => tracing::trace!("i8042: ignored command {cmd:#x}"),
        }
        None
    }

    fn data(&mut self, value: u8) -> Option<VmExit> {
        match self.pending_command.take() {
            Some(CMD_WRITE_CTR) => self.ctr = value,
            Some(CMD_WRITE_OUTPUT_PORT) => {
                self.output_port = value;
                if value & OUTPUT_PORT_RESET_LOW == 0 {
                    return Some(VmExit::Reset);
                }
            }
            Some(CMD_KBD_LOOP) => self.queue_keyboard_bytes(&[value]),
            // Loopback through the missing mouse port: the answer lacks the AUX status bit,
            // which tells Linux there is no mouse port.
            Some(CMD_AUX_LOOP) => self.answer(value),
            // Bytes sent to the missing mouse go nowhere.
            Some(CMD_AUX_SEND) => {}
            // A command to the keyboard itself.
            _ => match value {
                KBD_CMD_GET_ID => self.queue_keyboard_bytes(&[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
                KBD_CMD_RESET => self.queue_keyboard_bytes(&[KBD_ACK, KBD_SELF_TEST_PASSED]),
                _ => self.queue_keyboard_bytes(&[KBD_ACK]),
            },
        }
        None
    }
}

/// The i8042's state: its configuration byte, output port, the command whose data byte comes
/// next, and the bytes waiting for the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    pub ctr: u8,
    pub output_port: u8,
    pub last_was_command: bool,
    pub pending_command: Option<u8>,
    pub output: Vec<u8>,
}

impl Persist for I8042 {
    type State = I8042State;
    /// Its interrupt line.
    type Args = IrqLine;

    fn save(&self) -> I8042State {
        I8042State {
            ctr: self.ctr,
            output_port: self.output_port,
            last_was_command: self.last_was_command,
            pending_command: self.pending_command,
            output: self.output.iter().copied().collect(),
        }
    }

    /// Raises no interrupt: one pending is in KVM's interrupt controller's state.
    fn restore(irq: IrqLine, state: &I8042State) -> Result<Self, RestoreError> {
        if state.output.len() > OUTPUT_MAX {
            return Err(RestoreError::TooLong {
                what: "i8042 output buffer",
                len: state.output.len(),
                max: OUTPUT_MAX,
            });
        }
        Ok(I8042 {
            ctr: state.ctr,
            output_port: state.output_port,
            last_was_command: state.last_was_command,
            pending_command: state.pending_command,
            output: state.output.iter().copied().collect(),
            irq,
        })
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(first) = data.first_mut() else {
            return;
        };
        match offset {
            DATA_OFFSET => {
                *first = self.output.pop_front().unwrap_or(0);
                // More keyboard bytes waiting: interrupt again.
                self.raise_keyboard_irq();
            }
            COMMAND_OFFSET => *first = self.status(),
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmExit> {
        let value = *data.first()?;
        match offset {
            DATA_OFFSET => {
                self.last_was_command = false;
                self.data(value)
            }
            COMMAND_OFFSET => {
                self.last_was_command = true;
                self.command(value)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> I8042 {
        I8042::new(IrqLine::new().unwrap())
    }

    fn read(d: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8];
        d.read(offset, &mut b);
        b[0]
    }

    /// Linux's `__i8042_command`: write the command, its parameters, then wait for answers.
    fn command(d: &mut I8042, cmd: u8, params: &[u8], answers: usize) -> Option<Vec<u8>> {
        assert_eq!(d.write(COMMAND_OFFSET, &[cmd]), None);
        for p in params {
            d.write(DATA_OFFSET, &[*p]);
        }
        let mut out = Vec::new();
        for _ in 0..answers {
            if read(d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL == 0 {
                return None; // Linux would wait 500 ms here and give up
            }
            out.push(read(d, DATA_OFFSET));
        }
        Some(out)
    }

    #[test]
    fn reset_command_resets() {
        let mut d = dev();
        assert_eq!(
            d.write(COMMAND_OFFSET, &[CMD_PULSE_RESET]),
            Some(VmExit::Reset)
        );
        let mut d = dev();
        assert_eq!(d.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]), None);
        assert_eq!(d.write(DATA_OFFSET, &[0xfe]), Some(VmExit::Reset));
    }

    #[test]
    fn linux_probe_gets_answers() {
        let mut d = dev();
        assert_eq!(
            read(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL,
            0,
            "nothing to flush"
        );
        assert_eq!(
            command(&mut d, CMD_SELF_TEST, &[], 1),
            Some(vec![SELF_TEST_OK])
        );
        let ctr = command(&mut d, CMD_READ_CTR, &[], 1).unwrap()[0];
        assert_eq!(ctr, CTR_DEFAULT);
        command(&mut d, CMD_WRITE_CTR, &[ctr & !CTR_KBD_INTERRUPT], 0).unwrap();
        assert_eq!(
            command(&mut d, CMD_READ_CTR, &[], 1),
            Some(vec![ctr & !CTR_KBD_INTERRUPT])
        );
        // No mouse: the loop answer has no AUX bit, the port test fails.
        d.write(COMMAND_OFFSET, &[CMD_AUX_LOOP]);
        d.write(DATA_OFFSET, &[0x5a]);
        assert_eq!(
            read(&mut d, COMMAND_OFFSET) & (STATUS_OUTPUT_FULL | 0x20),
            STATUS_OUTPUT_FULL
        );
        assert_eq!(
            command(&mut d, CMD_AUX_TEST, &[], 1),
            Some(vec![AUX_TEST_ABSENT])
        );
        assert_eq!(
            command(&mut d, CMD_KBD_TEST, &[], 1),
            Some(vec![PORT_TEST_OK])
        );
    }

    #[test]
    fn keyboard_commands_are_acked_with_an_interrupt() {
        let irq = IrqLine::new().unwrap();
        let irq_fd = irq.0.try_clone().unwrap();
        let mut d = I8042::new(irq);
        d.write(DATA_OFFSET, &[KBD_CMD_GET_ID]);
        assert!(irq_fd.read().unwrap() > 0);
        assert_eq!(read(&mut d, DATA_OFFSET), KBD_ACK);
        assert_eq!(read(&mut d, DATA_OFFSET), 0xab);
        assert_eq!(read(&mut d, DATA_OFFSET), 0x83);
        assert_eq!(read(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        d.write(DATA_OFFSET, &[0xed]); // set LEDs
        assert_eq!(read(&mut d, DATA_OFFSET), KBD_ACK);
    }

    #[test]
    fn state_round_trips() {
        use crate::devices::persist::through_json;
        let mut d = dev();
        command(
            &mut d,
            CMD_WRITE_CTR,
            &[CTR_DEFAULT & !CTR_KBD_INTERRUPT],
            0,
        )
        .unwrap();
        d.write(DATA_OFFSET, &[KBD_CMD_GET_ID]); // three bytes for the guest
        d.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]); // its data byte comes next
        let state = through_json(&d.save());
        let mut restored = I8042::restore(IrqLine::new().unwrap(), &state).unwrap();
        assert_eq!(restored.save(), state);
        for offset in [
            COMMAND_OFFSET,
            DATA_OFFSET,
            DATA_OFFSET,
            DATA_OFFSET,
            COMMAND_OFFSET,
        ] {
            assert_eq!(read(&mut restored, offset), read(&mut d, offset));
        }
        assert_eq!(restored.write(DATA_OFFSET, &[0xfe]), Some(VmExit::Reset));

        let mut bad = state;
        bad.output = vec![0; OUTPUT_MAX + 1];
        assert!(matches!(
            I8042::restore(IrqLine::new().unwrap(), &bad),
            Err(RestoreError::TooLong { .. })
        ));
    }

    #[test]
    fn output_is_bounded() {
        let mut d = dev();
        for _ in 0..1000 {
            d.write(DATA_OFFSET, &[0xf4]);
        }
        assert_eq!(d.output.len(), OUTPUT_MAX);
    }
}
