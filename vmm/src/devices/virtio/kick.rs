//! The eventfd a device raises when it queues work for the driver outside
//! `VirtioDevice::process_backend` (a vsock control reply, a virtio-console control message),
//! so that the device thread, which watches the device's backend descriptor, comes back for it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::eventfd::EventFd;

pub struct Kick {
    evt: EventFd,
    /// Raised and not cleared since: the counter is non-zero.
    raised: bool,
}

impl Kick {
    pub fn new() -> io::Result<Kick> {
        Ok(Kick {
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            raised: false,
        })
    }

    /// Makes the eventfd readable, once until [`clear`](Self::clear).
    pub fn raise(&mut self) {
        if !self.raised {
            self.raised = self.evt.write(1).is_ok();
        }
    }

    /// Makes it unreadable again: the device is doing the work now, or was reset.
    pub fn clear(&mut self) {
        if self.raised {
            let _ = self.evt.read();
            self.raised = false;
        }
    }
}

impl AsRawFd for Kick {
    fn as_raw_fd(&self) -> RawFd {
        self.evt.as_raw_fd()
    }
}
