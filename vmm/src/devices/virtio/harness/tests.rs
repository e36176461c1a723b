//! Every device kind under a driver that writes pseudo-random garbage everywhere: registers,
//! descriptor tables, available rings, buffers, host traffic.

use super::*;

/// xorshift64*: the same garbage on every run, so a failure names its seed.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

const SESSIONS: u64 = 100;
const SESSION_BYTES: usize = 4096;

fn garbage_sessions(kind: Kind) {
    let mut total = Stats::default();
    for seed in 0..SESSIONS {
        let start = if seed % 2 == 0 {
            Start::Reset
        } else {
            Start::Active
        };
        let data = garbage(seed, SESSION_BYTES);
        let s = std::panic::catch_unwind(|| run(kind, &data, start))
            .unwrap_or_else(|_| panic!("{kind:?}, seed {seed}, {start:?}"));
        total.steps += s.steps;
        total.confined += s.confined;
        total.self_modifying += s.self_modifying;
    }
    // The garbage reached the device, and its work was checked.
    assert!(total.steps > 30 * SESSIONS as usize, "{total:?}");
    assert!(total.confined > 3 * SESSIONS as usize, "{total:?}");
}

#[test]
fn garbage_to_block() {
    garbage_sessions(Kind::Block);
}

#[test]
fn garbage_to_rng() {
    garbage_sessions(Kind::Rng);
}

#[test]
fn garbage_to_vsock() {
    garbage_sessions(Kind::Vsock);
}

#[test]
fn garbage_to_net() {
    garbage_sessions(Kind::Net);
}

#[test]
fn garbage_to_console() {
    garbage_sessions(Kind::Console);
}

#[test]
fn a_device_writing_outside_its_buffers_is_caught() {
    // Queue 0 of an rng brought up at desc 0x0, avail 0x100, used 0x200 (size 1), one
    // writable buffer at 0x1000; then the "device" also scribbles at 0x3000.
    let ram = GuardedRam::new();
    let irq = IrqLine::new().unwrap();
    let rng = Box::new(crate::devices::virtio::rng::Rng::new());
    let mut t =
        MmioTransport::new(rng, ram.memory().clone(), irq, Arc::new(NoIoeventfd), BASE).unwrap();
    let mut s = Session {
        t: &mut t,
        ram: &ram,
        stats: Stats::default(),
        poked: false,
        before: Vec::new(),
        after: Vec::new(),
    };
    // Size 1 (1 << 0), desc 0x0, avail 0x100, used 0x200.
    let setup = [[0u8; 8].as_slice(), &[0], &[0, 0], &[0, 1], &[0, 2]].concat();
    s.bring_up(&mut Input::new(&setup));
    assert!(s.t.is_active());
    let mem = ram.memory().clone();
    mem.write_obj(0x1000u64, GuestAddress(0)).unwrap();
    mem.write_obj(64u32, GuestAddress(8)).unwrap();
    mem.write_obj(2u16, GuestAddress(12)).unwrap(); // VRING_DESC_F_WRITE
    mem.write_obj(1u16, GuestAddress(0x102)).unwrap();
    s.device_work(|t| {
        t.process_queue(0);
    });
    assert_eq!(s.stats.confined, 1);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.device_work(|_| mem.write_obj(1u8, GuestAddress(0x3000)).unwrap())
    }));
    assert!(caught.is_err());
}
