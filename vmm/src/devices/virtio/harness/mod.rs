//! A driver that does whatever its input says, in any order: register reads and writes at any
//! offset and of any size, descriptors, available-ring entries and raw bytes anywhere in guest
//! memory, queue notifications, and traffic on the device's host side. After each step it
//! checks what must hold whatever a guest does:
//!
//! - the step took less than [`STEP_LIMIT`] of this thread's CPU time (CPU time, not wall
//!   time: a loaded machine may leave the thread waiting for seconds; a step blocked for good
//!   is libFuzzer's `-timeout` to catch);
//! - the transport's identity registers read right and its status is consistent;
//! - the device wrote guest memory only in used rings and in buffers the descriptors made
//!   device-writable ([`ram::check_writes`]);
//! - nothing touched host memory past guest RAM: it lies between inaccessible guard pages,
//!   with a hole inside ([`ram::GuardedRam`]).
//!
//! The fuzz targets in `fuzz/` feed it libFuzzer's input; the tests below, pseudo-random bytes.

mod devices;
mod input;
mod ram;

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

pub use self::devices::Kind;
use self::input::Input;
pub use self::ram::Writes;
use self::ram::{GuardedRam, RAM_END, REGIONS};
use super::mmio::{MmioTransport, MMIO_MAGIC, MMIO_VERSION};
use super::{NotifyRegistrar, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;
use crate::devices::legacy::IrqLine;

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Most CPU time a single step may take.
pub const STEP_LIMIT: Duration = Duration::from_secs(2);
/// Register block and config space.
const WINDOW: u64 = 0x180;
/// Passes over one queue per notification, as the device thread makes while the transport
/// says the driver added buffers meanwhile.
const MAX_PASSES: usize = 8;
const BASE: u64 = 0xd000_0000;

/// Where a session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A device fresh from reset: the input must bring it up through the registers.
    Reset,
    /// A device the driver brought up (features and queue layout from the input).
    Active,
}

/// What a session did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub steps: usize,
    /// Device work after which guest memory was checked.
    pub confined: usize,
    /// Device work on self-modifying queue structures, not checked.
    pub self_modifying: usize,
}

/// Without KVM: QueueNotify writes are not attached to ioeventfds.
pub struct NoIoeventfd;

impl NotifyRegistrar for NoIoeventfd {
    fn register(&self, _: &EventFd, _: u64, _: u32) -> io::Result<()> {
        Err(io::Error::other("no KVM here"))
    }
    fn unregister(&self, _: &EventFd, _: u64, _: u32) -> io::Result<()> {
        Ok(())
    }
}

/// A device with its transport, guest RAM and host side, kept from one session to the next
/// of the same thread: making them (a scratch disk, sockets, guarded mappings) costs far more
/// than a session.
///
/// Fields drop in this order: the transport (the device and its clone of guest memory) first,
/// then the host side, then the RAM, which unmaps only once nothing else holds it.
struct Fixture {
    t: MmioTransport,
    host: devices::Host,
    ram: GuardedRam,
}

impl Fixture {
    fn new(kind: Kind, variant: u8) -> Fixture {
        let ram = GuardedRam::new();
        let (device, host) = devices::create(kind, variant);
        let irq = IrqLine::new().expect("eventfd");
        let t = MmioTransport::new(
            device,
            ram.memory().clone(),
            irq,
            Arc::new(NoIoeventfd),
            BASE,
        )
        .expect("transport");
        Fixture { t, host, ram }
    }
}

thread_local! {
    /// Fixtures between sessions, by kind and variant. One is taken out for a session and put
    /// back only when it ended well and its host side could be put back as it was.
    static FIXTURES: RefCell<Vec<((Kind, u8), Fixture)>> = const { RefCell::new(Vec::new()) };
}

/// Runs a session on a device of `kind` as `data` says; panics when a check fails.
///
/// The device may be one an earlier session used: the session starts by resetting it through
/// the status register, as a driver does, checks that the transport reads as reset, and zeroes
/// guest RAM (and the scratch disk). A device whose host side outlives a reset (host
/// connections, a closed peer) is dropped after its session.
pub fn run(kind: Kind, data: &[u8], start: Start) -> Stats {
    let mut input = Input::new(data);
    let variant = devices::variant(kind, &mut input);
    let key = (kind, variant);
    let kept = FIXTURES.with(|f| {
        let mut f = f.borrow_mut();
        let i = f.iter().position(|(k, _)| *k == key)?;
        Some(f.swap_remove(i).1)
    });
    let mut fx = kept.unwrap_or_else(|| Fixture::new(kind, variant));
    let mut s = Session {
        t: &mut fx.t,
        ram: &fx.ram,
        stats: Stats::default(),
        poked: false,
        before: Vec::new(),
        after: Vec::new(),
    };
    s.reset();
    fx.ram.clear();
    if start == Start::Active {
        s.bring_up(&mut input);
    }
    while !input.is_empty() {
        let op = input.u8();
        let began = thread_cpu_time();
        s.step(op, &mut input, &mut fx.host);
        let took = thread_cpu_time().saturating_sub(began);
        assert!(took < STEP_LIMIT, "step {op:#x} took {took:?} of CPU time");
        s.check_status();
        s.stats.steps += 1;
    }
    let (stats, poked) = (s.stats, s.poked);
    // Quiet first: nothing the device does between sessions may reach the host side.
    s.reset();
    if fx.host.reset(poked) {
        FIXTURES.with(|f| f.borrow_mut().push((key, fx)));
    }
    stats
}

struct Session<'r> {
    t: &'r mut MmioTransport,
    ram: &'r GuardedRam,
    stats: Stats,
    /// The input played the host side.
    poked: bool,
    /// Guest RAM around device work, kept for their allocations.
    before: Vec<u8>,
    after: Vec<u8>,
}

impl Session<'_> {
    fn step(&mut self, op: u8, input: &mut Input, host: &mut devices::Host) {
        match op % 9 {
            0 => {
                let (offset, len) = access(input);
                let value = input.u64().to_le_bytes();
                self.t.write(offset, &value[..len]);
            }
            1 => {
                let (offset, len) = access(input);
                let mut data = [0u8; 8];
                self.t.read(offset, &mut data[..len]);
                self.check_read(offset, &data[..len]);
            }
            2 => self.descriptor(input),
            3 => self.make_available(input),
            4 => {
                let addr = address(input);
                let len = input.u8();
                let data = input.bytes(len.into());
                let _ = self.ram.memory().write_slice(data, GuestAddress(addr));
            }
            5 => {
                // One past the last queue too.
                let queue = usize::from(input.u8()) % (self.t.queues().len() + 1);
                self.device_work(|t| {
                    for _ in 0..MAX_PASSES {
                        if !t.process_queue(queue) {
                            break;
                        }
                    }
                });
            }
            6 => {
                self.poked = true;
                host.poke(input);
                self.device_work(|t| {
                    t.process_backend();
                });
            }
            7 => self.bring_up(input),
            _ => {
                let queue = input.u8();
                self.reg(VIRTIO_MMIO_QUEUE_NOTIFY, u32::from(queue));
            }
        }
    }

    fn reg(&mut self, offset: u32, value: u32) {
        self.t.write(u64::from(offset), &value.to_le_bytes());
    }

    fn read_reg(&mut self, offset: u32) -> u32 {
        let mut data = [0u8; 4];
        self.t.read(u64::from(offset), &mut data);
        u32::from_le_bytes(data)
    }

    /// Writes 0 to the status register, and checks that the device reads as fresh from
    /// reset: no status, inactive, no interrupt pending, every queue not ready and at its
    /// largest size.
    fn reset(&mut self) {
        self.reg(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(self.read_reg(VIRTIO_MMIO_STATUS), 0, "status after reset");
        assert!(!self.t.is_active(), "active after reset");
        assert_eq!(
            self.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS),
            0,
            "interrupt pending after reset"
        );
        for queue in 0..self.t.queues().len() as u32 {
            self.reg(VIRTIO_MMIO_QUEUE_SEL, queue);
            assert_eq!(
                self.read_reg(VIRTIO_MMIO_QUEUE_READY),
                0,
                "queue {queue} ready after reset"
            );
            let q = &self.t.queues()[queue as usize];
            assert_eq!(q.size(), q.max_size(), "queue {queue} size after reset");
        }
        self.reg(VIRTIO_MMIO_QUEUE_SEL, 0);
    }

    /// What Linux does from reset to DRIVER_OK, with the input's features and queue layout.
    fn bring_up(&mut self, input: &mut Input) {
        self.reg(VIRTIO_MMIO_STATUS, 0);
        let mut status = VIRTIO_CONFIG_S_ACKNOWLEDGE;
        self.reg(VIRTIO_MMIO_STATUS, status);
        status |= VIRTIO_CONFIG_S_DRIVER;
        self.reg(VIRTIO_MMIO_STATUS, status);
        let mut offered = 0u64;
        for sel in [1u32, 0] {
            self.reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
            offered = offered << 32 | u64::from(self.read_reg(VIRTIO_MMIO_DEVICE_FEATURES));
        }
        let features = (input.u64() & offered) | VIRTIO_F_VERSION_1;
        for sel in [0u32, 1] {
            self.reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            self.reg(VIRTIO_MMIO_DRIVER_FEATURES, (features >> (32 * sel)) as u32);
        }
        status |= VIRTIO_CONFIG_S_FEATURES_OK;
        self.reg(VIRTIO_MMIO_STATUS, status);
        let low_ram = REGIONS[0].1 as u32;
        for queue in 0..self.t.queues().len() as u32 {
            self.reg(VIRTIO_MMIO_QUEUE_SEL, queue);
            let max = self.read_reg(VIRTIO_MMIO_QUEUE_NUM_MAX);
            let size = (1u32 << (input.u8() % 9)).min(max);
            self.reg(VIRTIO_MMIO_QUEUE_NUM, size);
            let mut place = |align: u32| (u32::from(input.u16()) % low_ram) & !(align - 1);
            let (desc, avail, used) = (place(16), place(2), place(4));
            self.reg(VIRTIO_MMIO_QUEUE_DESC_LOW, desc);
            self.reg(VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail);
            self.reg(VIRTIO_MMIO_QUEUE_USED_LOW, used);
            self.reg(VIRTIO_MMIO_QUEUE_READY, 1);
        }
        status |= VIRTIO_CONFIG_S_DRIVER_OK;
        self.reg(VIRTIO_MMIO_STATUS, status);
    }

    /// Writes a descriptor into a queue's table, every field from the input.
    fn descriptor(&mut self, input: &mut Input) {
        let Some(Ring { desc, size, .. }) = self.pick_queue(input) else {
            return;
        };
        let index = input.u16() % size;
        let addr = address(input);
        let len = match input.u8() {
            0..=0xbf => u32::from(input.u16() % 0x800),
            0xc0..=0xef => input.u16().into(),
            _ => input.u32(),
        };
        let flags = input.u16();
        let next = match input.u8() {
            0..=0xef => input.u16() % size,
            _ => input.u16(),
        };
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        let at = desc + 16 * u64::from(index);
        let _ = self.ram.memory().write_slice(&raw, GuestAddress(at));
    }

    /// Puts a head index in the next slot of a queue's available ring and publishes it (or
    /// sets the ring's index to anything).
    fn make_available(&mut self, input: &mut Input) {
        let Some(Ring { avail, size, .. }) = self.pick_queue(input) else {
            return;
        };
        let mem = self.ram.memory();
        let idx_at = GuestAddress(avail + 2);
        let idx: u16 = mem.read_obj(idx_at).unwrap_or(0);
        let head = match input.u8() {
            0..=0xef => input.u16() % size,
            _ => input.u16(),
        };
        let slot = avail + 4 + 2 * u64::from(idx % size);
        let _ = mem.write_obj(head, GuestAddress(slot));
        let new_idx = match input.u8() {
            0..=0xef => idx.wrapping_add(1),
            _ => input.u16(),
        };
        let _ = mem.write_obj(new_idx, idx_at);
    }

    /// Where the driver put one of the queues.
    fn pick_queue(&self, input: &mut Input) -> Option<Ring> {
        let queues = self.t.queues();
        let q = &queues[usize::from(input.u8()) % queues.len()];
        let ring = Ring {
            desc: q.desc_table(),
            avail: q.avail_ring(),
            size: q.size(),
        };
        (ring.size > 0).then_some(ring)
    }

    /// Lets the device work, and checks where it wrote.
    fn device_work(&mut self, work: impl FnOnce(&mut MmioTransport)) {
        self.ram.snapshot_into(&mut self.before);
        work(self.t);
        self.ram.snapshot_into(&mut self.after);
        match ram::check_writes(self.t.queues(), &self.before, &self.after) {
            Ok(Writes::Confined) => self.stats.confined += 1,
            Ok(Writes::SelfModifying) => self.stats.self_modifying += 1,
            Err(e) => panic!("{e}"),
        }
    }

    fn check_read(&self, offset: u64, data: &[u8]) {
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let value = u32::from_le_bytes(data.try_into().unwrap());
        let expected = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.t.device_type(),
            VIRTIO_MMIO_STATUS => self.t.status(),
            _ => value,
        };
        assert_eq!(value, expected, "register {offset:#x}");
    }

    fn check_status(&mut self) {
        let status = self.t.status();
        if self.t.is_active() {
            assert_ne!(
                status & VIRTIO_CONFIG_S_DRIVER_OK,
                0,
                "active without DRIVER_OK"
            );
            assert_eq!(
                status & VIRTIO_CONFIG_S_NEEDS_RESET,
                0,
                "active but needs reset"
            );
        }
        let interrupts = self.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS);
        assert_eq!(
            interrupts & !(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG),
            0
        );
    }
}

/// A queue's descriptor table and available ring, and its size.
struct Ring {
    desc: u64,
    avail: u64,
    size: u16,
}

/// A register access: any offset in the window, 1, 2, 4 or 8 bytes; mostly 4 bytes aligned.
fn access(input: &mut Input) -> (u64, usize) {
    let b = input.u8();
    let offset = u64::from(input.u16()) % WINDOW;
    match b {
        0..=0xbf => (offset & !3, 4),
        _ => (offset, [1, 2, 4, 8][usize::from(b & 3)]),
    }
}

/// A guest address: mostly in or around guest RAM, sometimes anywhere.
fn address(input: &mut Input) -> u64 {
    match input.u8() {
        0..=0xef => u64::from(input.u32()) % (RAM_END + 0x1000),
        _ => input.u64(),
    }
}

#[cfg(test)]
mod tests;
