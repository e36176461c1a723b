//! The PL031 RTC on MMIO (arm64): the guest's wall clock at boot, read from the host's clock
//! (vm-superio's PL031; its registers are 32 bits wide, other accesses read as zero).

use vm_superio::rtc_pl031::NoEvents;
use vm_superio::Rtc;

use crate::devices::bus::BusDevice;
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
