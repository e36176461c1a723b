//! Where the device is in its receive queue, apart from what the transport believes.
//!
//! The transport re-checks a queue after each notification and serves it again while the
//! driver has buffers the device has not taken (`Queue::next_avail` behind the available
//! index). Receive buffers are taken only when there is something to put in them, so the
//! queue's `next_avail` marks what the device has *seen* (notifications about it are settled)
//! and this cursor what it has *taken*.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Error, Queue, QueueOwnedT, QueueT};

use crate::memory::GuestMemory;

#[derive(Debug, Default)]
pub struct RxCursor(Wrapping<u16>);

impl RxCursor {
    /// Marks every buffer the driver has made available as seen, without taking any.
    pub fn see_all(&self, queue: &mut Queue, mem: &GuestMemory) -> Result<(), Error> {
        let avail = queue.avail_idx(mem, Ordering::Acquire)?;
        // The driver cannot have more buffers outstanding than the queue holds.
        if (avail - self.0).0 > queue.size() {
            return Err(Error::InvalidAvailRingIndex);
        }
        queue.set_next_avail(avail.0);
        Ok(())
    }

    /// Takes the next available buffer, seen or not.
    pub fn pop<'m>(
        &mut self,
        queue: &mut Queue,
        mem: &'m GuestMemory,
    ) -> Result<Option<DescriptorChain<&'m GuestMemory>>, Error> {
        let seen = Wrapping(queue.next_avail());
        queue.set_next_avail(self.0 .0);
        let chain = queue.iter(mem).map(|mut chains| chains.next());
        let mut seen_now = seen;
        if let Ok(Some(_)) = chain {
            // Taking a buffer not seen yet sees it too.
            if self.0 == seen {
                seen_now += 1;
            }
            self.0 += 1;
        }
        queue.set_next_avail(seen_now.0);
        chain
    }

    /// Puts back the buffer [`pop`](Self::pop) just took.
    pub fn undo(&mut self) {
        self.0 -= 1;
    }

    pub fn reset(&mut self) {
        self.0 = Wrapping(0);
    }
}
