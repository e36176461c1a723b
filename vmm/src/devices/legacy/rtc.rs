//! The PL031 RTC on MMIO (arm64): the guest's wall clock at boot, read from the host's clock
//! (vm-superio's PL031; its registers are 32 bits wide, other accesses read as zero).

use serde::{Deserialize, Serialize};
use vm_superio::rtc_pl031::{NoEvents, RtcState};
use vm_superio::Rtc;

use crate::devices::bus::BusDevice;
use crate::devices::persist::{Persist, RestoreError};
use crate::vm::VmExit;

#[derive(Debug)]
pub struct Pl031(Rtc<NoEvents>);

impl Pl031 {
    pub fn new() -> Self {
        Pl031(Rtc::new())
    }
}

impl Default for Pl031 {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for Pl031 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u16::try_from(offset), <&mut [u8; 4]>::try_from(&mut *data)) {
            (Ok(offset), Ok(word)) => self.0.read(offset, word),
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmExit> {
        if let (Ok(offset), Ok(word)) = (u16::try_from(offset), <&[u8; 4]>::try_from(data)) {
            self.0.write(offset, word);
        }
        None
    }
}

/// What the guest set of the RTC: its registers, and the offset of its clock from the host's
/// (so that a restored RTC keeps following the host's clock, as a booted one does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pl031State {
    pub lr: u32,
    pub offset: i64,
    pub mr: u32,
    pub imsc: u32,
    pub ris: u32,
}

impl Persist for Pl031 {
    type State = Pl031State;
    type Args = ();

    fn save(&self) -> Pl031State {
        let RtcState {
            lr,
            offset,
            mr,
            imsc,
            ris,
        } = self.0.state();
        Pl031State {
            lr,
            offset,
            mr,
            imsc,
            ris,
        }
    }

    fn restore((): (), s: &Pl031State) -> Result<Self, RestoreError> {
        let state = RtcState {
            lr: s.lr,
            offset: s.offset,
            mr: s.mr,
            imsc: s.imsc,
            ris: s.ris,
        };
        Ok(Pl031(Rtc::from_state(&state, NoEvents)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::persist::through_json;

    #[test]
    fn a_restored_rtc_keeps_the_offset_the_guest_set() {
        let mut rtc = Pl031::new();
        // RTCLR at 0x08: the guest sets its clock to 1000 s after the epoch.
        rtc.write(0x08, &1000u32.to_le_bytes());
        // RTCIMSC at 0x10.
        rtc.write(0x10, &1u32.to_le_bytes());
        let state = through_json(&rtc.save());
        let mut back = Pl031::restore((), &state).unwrap();
        assert_eq!(back.save(), rtc.save());
        let mut now = [0u8; 4];
        back.read(0, &mut now);
        let seconds = u32::from_le_bytes(now);
        assert!((1000..1010).contains(&seconds), "RTCDR reads {seconds}");
    }
}
