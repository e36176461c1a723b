//! The driver side of a live virtio-console device (the arm64 guest's marks port), all from
//! the input: control messages, descriptor tables, available rings and their indices, buffers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::harness::{run, Kind, Start};

fuzz_target!(|data: &[u8]| {
    run(Kind::Console, data, Start::Active);
});
