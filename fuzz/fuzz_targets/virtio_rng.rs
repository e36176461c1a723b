//! The driver side of a live virtio-rng device, all from the input: descriptor tables
//! (addresses, lengths, flags, next), available rings and their indices, buffers, host traffic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::harness::{run, Kind, Start};

fuzz_target!(|data: &[u8]| {
    run(Kind::Rng, data, Start::Active);
});
