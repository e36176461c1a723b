//! virtio-rng: fills each device-writable buffer with bytes from the host's `getrandom`, so the
//! guest's entropy pool is seeded at boot and nothing in it (Node's crypto) waits for entropy.

use std::io::Write;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::{DescriptorChain, Writer};

use super::{VirtioDevice, VirtioState, RING_FEATURES, VIRTIO_F_VERSION_1};
use crate::devices::persist::{Persist, RestoreError};
use crate::memory::GuestMemory;

pub const QUEUE_SIZE: u16 = 256;
/// Most bytes given per request: the driver asks again for more.
const MAX_REQUEST: usize = 64 << 10;

pub struct Rng {
    buf: Vec<u8>,
}

impl Rng {
    pub fn new() -> Self {
        Rng {
            buf: vec![0; MAX_REQUEST],
        }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

/// virtio-rng has no state of its own (its buffer is scratch): the transport's is all there is.
impl Persist for Rng {
    type State = ();
    type Args = ();

    fn save(&self) {}

    fn restore((): (), (): &()) -> Result<Self, RestoreError> {
        Ok(Rng::new())
    }
}

/// Fills `buf` from the kernel's CSPRNG.
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most rest.len() bytes into rest.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | RING_FEATURES
    }

    fn save_state(&self) -> Option<VirtioState> {
        Some(VirtioState::Rng)
    }

    fn restore_state(&mut self, state: &VirtioState) -> Result<(), RestoreError> {
        match state {
            VirtioState::Rng => Ok(()),
            other => Err(RestoreError::DeviceKind {
                saved: other.kind(),
                device: self.device_type(),
            }),
        }
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    /// Fills the chain's writable buffers with random bytes (at most [`MAX_REQUEST`]).
    fn serve(
        &mut self,
        _index: usize,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> u32 {
        match Writer::new(mem, chain) {
            Ok(mut writer) => {
                let n = writer.available_bytes().min(MAX_REQUEST);
                let chunk = &mut self.buf[..n];
                match fill_random(chunk).and_then(|()| writer.write_all(chunk)) {
                    Ok(()) => n as u32,
                    Err(e) => {
                        tracing::warn!("virtio-rng: {e}");
                        0
                    }
                }
            }
            Err(_) => {
                tracing::debug!("virtio-rng: buffer outside guest memory");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_util::{self, add_chain, used, used_idx};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn fills_writable_buffers() {
        let mem = test_util::memory();
        let vq = MockSplitQueue::new(&mem, test_util::QUEUE_SIZE);
        add_chain(&vq, 0, &[(0x1_0000, 64, true), (0x2_0000, 64, true)]);
        add_chain(&vq, 2, &[(0x3_0000, 16, false)]); // nothing to fill
        add_chain(&vq, 3, &[(0x4000_0000, 16, true)]); // outside memory
        let mut q: Queue = vq.create_queue().unwrap();
        let mut rng = Rng::new();
        assert!(rng.process_queue(0, &mut q, &mem).unwrap());
        assert_eq!(used_idx(&vq), 3);
        assert_eq!(used(&vq, 0), (0, 128));
        assert_eq!(used(&vq, 1), (2, 0));
        assert_eq!(used(&vq, 2), (3, 0));
        let mut a = [0u8; 64];
        mem.read_slice(&mut a, GuestAddress(0x2_0000)).unwrap();
        assert!(a.iter().any(|b| *b != 0), "random bytes written");
    }

    #[test]
    fn large_requests_are_capped() {
        let mem = test_util::memory();
        let vq = MockSplitQueue::new(&mem, test_util::QUEUE_SIZE);
        add_chain(&vq, 0, &[(0x1_0000, 0xe_0000, true)]);
        let mut q: Queue = vq.create_queue().unwrap();
        Rng::new().process_queue(0, &mut q, &mem).unwrap();
        assert_eq!(used(&vq, 0), (0, MAX_REQUEST as u32));
    }
}
