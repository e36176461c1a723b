//! Our VMM on real KVM semantics, in the KVM boxes (kvm-box/): `x86_64` in the x86-64 box,
//! `arm64` in the arm64 one. Each box is an L1 Linux under QEMU's TCG with one vCPU, about one
//! host core's work for minutes; the first test that needs either box starts both, so the two
//! run side by side instead of one after the other.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod arm64;
mod x86_64;

use std::sync::Once;
use std::thread;

/// Starts the runs of both boxes on threads of their own, once, when this binary runs all its
/// tests (given no filter: a filtered run starts only the box its tests ask for). A run that
/// fails there is run again by the next test that asks for its checks (each file's `OnceLock`
/// stays empty when its initialisation panics), as when a test starts it.
fn start_both_boxes() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        if std::env::args().skip(1).any(|arg| !arg.starts_with('-')) {
            return;
        }
        thread::spawn(|| {
            x86_64::box_checks();
        });
        thread::spawn(|| {
            arm64::box_checks();
        });
    });
}
