//! Register reads and writes at any offset and size, with guest memory writes, notifications
//! and queue processing in between, on each kind of device (the first byte picks it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::harness::{run, Kind, Start};

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, rest)) = data.split_first() {
        run(
            Kind::ALL[usize::from(kind) % Kind::ALL.len()],
            rest,
            Start::Reset,
        );
    }
});
