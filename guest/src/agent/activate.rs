//! The host's `Activate` (contract::activation): what turns a guest waiting at its template
//! point — cold booted a moment ago or restored from a snapshot, it cannot tell — into one VM.
//! Done by the agent, as root, before any command or shell runs:
//! 1. the wall clock is set from the host's;
//! 2. the kernel's RNG gets the host's entropy and is reseeded at once (`RNDADDENTROPY`,
//!    `RNDRESEEDCRNG`), so no two VMs restored from one snapshot draw the same numbers;
//! 3. each disk the VM uses is attached: a snapshot's disk slots were empty (capacity 0) when
//!    the guest probed them, so a slot that still reads empty is unbound from virtio_blk and
//!    bound again, and the driver reads its capacity anew;
//! 4. the root is built on the VM's upper layer, its volumes mounted, its hostname set and its
//!    network set up (init::mounts, init::network, as from a kernel command line).

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use contract::activation::Activation;
use contract::params::Upper;

use crate::error::{Context, Error, Result};
use crate::init::{mounts, network};
use crate::sys::cvt;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
const VIRTIO_BLK_DRIVER: &str = "/sys/bus/virtio/drivers/virtio_blk";

/// Makes this guest the VM `activation` describes.
pub fn apply(activation: &Activation) -> Result<()> {
    set_clock(activation.clock)?;
    reseed(&activation.entropy)?;
    let params = &activation.params;
    let disks = match &params.upper {
        Upper::Disk(device) => Some(device.as_str()),
        Upper::Tmpfs => None,
    };
    for device in disks
        .into_iter()
        .chain(params.volumes.iter().map(|v| v.device.as_str()))
    {
        attach(device)?;
    }
    mounts::build_root(&params.upper)?;
    mounts::mount_volumes(&params.volumes)?;
    network::setup(
        &activation.hostname,
        params.net.as_ref().map(|net| (net, Some(activation.mac))),
    )
}

/// Sets the wall clock (also on the host's `SetClock`, after a pause: handler.rs).
pub(super) fn set_clock((secs, nanos): (u64, u32)) -> Result<()> {
    let time = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    // SAFETY: `time` is a valid timespec for the duration of the call.
    cvt(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) })
        .map(drop)
        .context(|| "set the clock".into())
}

/// Credits `entropy` to the kernel's pool and reseeds its CRNG from it at once.
fn reseed(entropy: &[u8]) -> Result<()> {
    let what = || "reseed the kernel's RNG".to_string();
    let random = fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .context(what)?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(entropy);
    let fd = random.as_raw_fd();
    // SAFETY: `info` is a rand_pool_info with `entropy.len()` bytes of buffer, alive during the
    // call, which only reads it.
    cvt(unsafe { libc::ioctl(fd, RNDADDENTROPY, info.as_ptr()) }).context(what)?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    cvt(unsafe { libc::ioctl(fd, RNDRESEEDCRNG) })
        .map(drop)
        .context(what)
}

/// Makes the block device `device` (`/dev/vdX`) show its disk: when it reads empty, its
/// virtio device is bound to virtio_blk again, which reads the capacity anew.
fn attach(device: &str) -> Result<()> {
    let name = device.trim_start_matches("/dev/");
    let block = Path::new("/sys/block").join(name);
    if sectors(&block)? > 0 {
        return Ok(());
    }
    let link = fs::read_link(block.join("device"))
        .context(|| format!("find the virtio device of {device}"))?;
    let virtio = link
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(format!("the virtio device of {device}"), link.display()))?
        .to_string();
    for action in ["unbind", "bind"] {
        fs::write(Path::new(VIRTIO_BLK_DRIVER).join(action), &virtio)
            .context(|| format!("{action} {virtio} ({device}) to virtio_blk"))?;
    }
    match sectors(&block)? {
        0 => Err(Error::invalid(
            format!("attach {device}"),
            "the host gave it no capacity",
        )),
        _ => Ok(()),
    }
}

/// The size of the disk at `/sys/block/<name>`, in sectors.
fn sectors(block: &Path) -> Result<u64> {
    let path = block.join("size");
    let text = fs::read_to_string(&path).context(|| format!("read {}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| Error::invalid(format!("{}", path.display()), e))
}
