//! A device's own position in a queue's available ring.
//!
//! After each pass over a queue the transport asks whether the driver made buffers available
//! that the queue has not handed out, and serves the queue again while it has. Devices with a
//! backend (net, vsock) cannot take buffers at the driver's pace: receive buffers wait for
//! data, and transmit chains for room in the backend. So it marks every available chain as seen (the
//! queue's own position moves to the end) and takes chains from this cursor, which trails it,
//! when it has work for them. The driver does not touch available-ring entries it has not got
//! back, so the ones between the cursor and the queue's position stay valid.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Error, Queue, QueueOwnedT, QueueT};

use crate::memory::GuestMemory;

#[derive(Debug, Default)]
pub(crate) struct Cursor(Wrapping<u16>);

impl Cursor {
    /// Marks every chain the driver has made available as seen, without taking any.
    pub fn see_all(&self, queue: &mut Queue, mem: &GuestMemory) -> Result<(), Error> {
        let avail = queue.avail_idx(mem, Ordering::Acquire)?;
        // The driver cannot have more chains outstanding than the queue holds.
        if (avail - self.0).0 > queue.size() {
            return Err(Error::InvalidAvailRingIndex);
        }
        queue.set_next_avail(avail.0);
        Ok(())
    }

    /// Takes the next available chain, seen or not.
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
            if self.0 == seen {
                seen_now += 1;
            }
            self.0 += 1;
        }
        queue.set_next_avail(seen_now.0);
        if let Ok(None) = chain {
            // Nothing at the cursor must mean the driver has made nothing more available: the
            // index is where the cursor is, and so is the queue's position (chains seen are
            // chains not yet taken). Otherwise the driver moved its index back over chains it
            // had made available, or the iterator stopped, without a word, at an entry it
            // cannot read (a ring not all in guest memory). Taken for "no buffers", either
            // would have the transport ask the device again for ever.
            if seen != self.0 || queue.avail_idx(mem, Ordering::Acquire)? != self.0 {
                return Err(Error::InvalidAvailRingIndex);
            }
        }
        chain
    }

    /// Puts back the chain [`pop`](Self::pop) just took: it is used for the next frame.
    pub fn unpop(&mut self) {
        self.0 -= 1;
    }

    /// Where the cursor is in the available ring, for a snapshot.
    pub fn position(&self) -> u16 {
        self.0 .0
    }

    /// A cursor at `position`, as a snapshot saved it. A position the queue cannot have makes
    /// [`pop`](Self::pop) fail, as a driver's bad index does.
    pub fn at(position: u16) -> Self {
        Cursor(Wrapping(position))
    }

    /// The queue was reset: its rings start again at 0.
    pub fn reset(&mut self) {
        self.0 = Wrapping(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_util::{self, add_chain};
    use virtio_queue::mock::MockSplitQueue;

    #[test]
    fn trails_the_queue_and_keeps_seen_chains() {
        let mem = test_util::memory();
        let vq = MockSplitQueue::new(&mem, test_util::QUEUE_SIZE);
        let mut q: Queue = vq.create_queue().unwrap();
        let mut c = Cursor::default();
        add_chain(&vq, 0, &[(0x1_0000, 16, true)]);
        add_chain(&vq, 1, &[(0x2_0000, 16, true)]);
        c.see_all(&mut q, &mem).unwrap();
        assert_eq!(q.next_avail(), 2);
        // The transport sees nothing new although the device took nothing.
        assert!(!q.enable_notification(&mem).unwrap());

        let head = |c: &mut Cursor, q: &mut Queue| c.pop(q, &mem).unwrap().map(|d| d.head_index());
        assert_eq!(head(&mut c, &mut q), Some(0));
        c.unpop();
        assert_eq!(head(&mut c, &mut q), Some(0));
        assert_eq!(q.next_avail(), 2);
        // A chain added meanwhile is taken too, and moves the queue's position along.
        add_chain(&vq, 2, &[(0x3_0000, 16, true)]);
        assert_eq!(head(&mut c, &mut q), Some(1));
        assert_eq!(head(&mut c, &mut q), Some(2));
        assert_eq!(q.next_avail(), 3);
        assert_eq!(head(&mut c, &mut q), None);
        assert_eq!(q.next_avail(), 3);
    }

    /// Found by the virtio_net fuzz target: the available ring's index is in guest memory,
    /// its entries are not. Before, `pop` said "no buffers" while the index said there were
    /// some, and the transport asked the device again, for ever.
    #[test]
    fn unreadable_avail_entries_are_an_error() {
        use vm_memory::{Bytes, GuestAddress};
        let mem = test_util::memory();
        let mut q = Queue::new(test_util::QUEUE_SIZE).unwrap();
        let end = test_util::MEM_SIZE as u64;
        // flags and idx fit in the last 4 bytes; ring[0] is past the end.
        let avail = end - 4;
        q.set_desc_table_address(Some(0x1000), Some(0));
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        q.set_used_ring_address(Some(0x2000), Some(0));
        q.set_ready(true);
        mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
        let mut c = Cursor::default();
        assert!(matches!(
            c.pop(&mut q, &mem),
            Err(Error::InvalidAvailRingIndex)
        ));
    }

    /// Found by the virtio_net fuzz target: the driver moves the available index back over
    /// chains the queue has seen. Before, `pop` said "no buffers" while the queue's position
    /// said there were some, and the transport asked the device again, for ever.
    #[test]
    fn an_avail_index_moved_back_is_an_error() {
        let mem = test_util::memory();
        let vq = MockSplitQueue::new(&mem, test_util::QUEUE_SIZE);
        let mut q: Queue = vq.create_queue().unwrap();
        let mut c = Cursor::default();
        add_chain(&vq, 0, &[(0x1_0000, 16, true)]);
        add_chain(&vq, 1, &[(0x2_0000, 16, true)]);
        c.see_all(&mut q, &mem).unwrap();
        assert!(c.pop(&mut q, &mem).unwrap().is_some());
        vq.avail().idx().store(1);
        assert!(matches!(
            c.pop(&mut q, &mem),
            Err(Error::InvalidAvailRingIndex)
        ));
    }

    #[test]
    fn an_avail_index_past_the_queue_is_an_error() {
        let mem = test_util::memory();
        let vq = MockSplitQueue::new(&mem, test_util::QUEUE_SIZE);
        let mut q: Queue = vq.create_queue().unwrap();
        vq.avail().idx().store(test_util::QUEUE_SIZE + 1);
        let mut c = Cursor::default();
        assert!(c.see_all(&mut q, &mem).is_err());
        assert!(c.pop(&mut q, &mem).is_err());
        assert_eq!(q.next_avail(), 0);
    }
}
