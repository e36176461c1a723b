//! The VM holder: a small static program that `/init` starts before the script, which keeps one
//! KVM VM open in L1 for the whole run (`holder/kvm_hold.c`).
//!
//! Why: L1's kernel turns its static keys for KVM on when the first VM (or local APIC) is made
//! and off when the last one goes — `preempt_notifier_key`, whose branch sits in the scheduler's
//! context switch, among them — and patches its own text each time, through a breakpoint
//! (`int3`) it writes first and removes last. QEMU's TCG now and then keeps running its
//! translation of the `int3` after the patch has removed it: the CPU that took it finds no
//! breakpoint in memory any more, steps back onto the instruction, and takes it again, for
//! good, while the other CPU waits for it with interrupts off. The whole box then spins at full
//! speed and never ends (seen in the x86-64 box about once in a hundred VMs started one after
//! the other; the CPUs' registers, read from QEMU's monitor, were in `exc_int3` on
//! `__schedule`'s preempt-notifier branch). With one VM held, the keys never change after the
//! holder has started, so no VM of the script makes L1 patch itself.
//!
//! arm64 patches a branch with one aligned instruction write, which TCG handles: only the
//! x86-64 box needs the holder ([`crate::platform::Platform::holds_a_vm`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::platform::Platform;
use crate::{assets, host, BoxError};

const SOURCE: &str = include_str!("holder/kvm_hold.c");
/// Its name in the cache and in L1.
pub(crate) const NAME: &str = "kvm-hold";

/// The holder for `platform`'s box, compiled once into the cache (keyed by its source) with the
/// host's C compiler as a static program; `None` where the box needs none.
pub(crate) fn ensure(cache_dir: &Path, platform: &Platform) -> Result<Option<PathBuf>, BoxError> {
    if !platform.holds_a_vm {
        return Ok(None);
    }
    let root = platform.asset_dir(cache_dir);
    fs::create_dir_all(&root).map_err(BoxError::io("creating", &root))?;
    let version = hex::encode(&Sha256::digest(SOURCE.as_bytes())[..8]);
    let key = format!("{NAME}-{version}");
    let dir = assets::cached(&root, &key, |stage| {
        let source = stage.join("kvm_hold.c");
        fs::write(&source, SOURCE).map_err(BoxError::io("writing", &source))?;
        let cc = host::program("cc", "gcc")?;
        host::output(
            Command::new(cc)
                .args(["-static", "-O2", "-o"])
                .arg(stage.join(NAME))
                .arg(&source),
        )
        .map_err(|e| {
            BoxError::Assets(format!(
                "compiling the box's VM holder (a static C program: libc6-dev has the static \
                 C library): {e}"
            ))
        })?;
        Ok(())
    })?;
    Ok(Some(dir.join(NAME)))
}
