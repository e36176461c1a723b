//! An existing TAP interface of the host: each read or write of its descriptor is one raw
//! Ethernet frame (`IFF_NO_PI`: no packet information in front).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{Link, ETH_HLEN, MAX_FRAME};

const TUN_DEVICE: &str = "/dev/net/tun";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TAP interface name {0:?} is empty, longer than 15 bytes or not a plain name")]
    Name(String),
    #[error(
        "TAP interface {0} does not exist; create it with \
         `sudo ip tuntap add {0} mode tap user $USER && sudo ip link set {0} up`"
    )]
    Missing(String),
    #[error("cannot open {TUN_DEVICE} for TAP interface {name} (is the tun module loaded?)")]
    Open {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot attach to TAP interface {name}; it must be a TAP (not TUN) interface your user \
         may use: `sudo ip tuntap add {name} mode tap user $USER`"
    )]
    Attach {
        name: String,
        #[source]
        source: io::Error,
    },
}

pub struct Tap {
    file: File,
    name: String,
    /// One frame read, and its length until consumed. One byte more than the largest frame
    /// tells a frame that did not fit.
    rx: Box<[u8]>,
    rx_len: Option<usize>,
    /// A frame the interface could not take yet.
    tx: Vec<u8>,
    /// A write failure was reported; later ones are not, the interface is likely down.
    warned: bool,
}

impl Tap {
    /// Attaches to the TAP interface `name`, which must exist.
    pub fn open(name: &str) -> Result<Self, Error> {
        let plain = name.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || !plain {
            return Err(Error::Name(name.into()));
        }
        // TUNSETIFF would create a missing interface (as root), one that vanishes with us.
        if !Path::new("/sys/class/net").join(name).exists() {
            return Err(Error::Missing(name.into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_DEVICE)
            .map_err(|source| Error::Open {
                name: name.into(),
                source,
            })?;
        // SAFETY: ifreq is plain data, for which all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is and outlives the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(Error::Attach {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tap::attached(file, name))
    }

    /// The interface `name` through `file`, a non-blocking descriptor of `/dev/net/tun` already
    /// attached to it (by [`open`](Self::open), maybe in another process).
    pub fn attached(file: File, name: &str) -> Self {
        Tap {
            file,
            name: name.into(),
            rx: vec![0; MAX_FRAME + 1].into_boxed_slice(),
            rx_len: None,
            tx: Vec::with_capacity(MAX_FRAME),
            warned: false,
        }
    }

    /// The descriptor, attached to the interface.
    pub fn into_file(self) -> File {
        self.file
    }
}

impl Link for Tap {
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn recv(&mut self) -> io::Result<Option<&[u8]>> {
        while self.rx_len.is_none() {
            match self.file.read(&mut self.rx) {
                Ok(n) if (ETH_HLEN..=MAX_FRAME).contains(&n) => self.rx_len = Some(n),
                Ok(n) => tracing::debug!("virtio-net: {}: dropped a {n}-byte frame", self.name),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.rx_len.map(|n| &self.rx[..n]))
    }

    fn consume(&mut self) {
        self.rx_len = None;
    }

    fn can_queue(&self) -> bool {
        self.tx.is_empty()
    }

    fn queue(&mut self, frame: &[u8]) {
        if self.tx.is_empty() {
            self.tx.extend_from_slice(frame);
        } else {
            tracing::debug!("virtio-net: {}: frame dropped, one is waiting", self.name);
        }
    }

    fn flush(&mut self) -> io::Result<bool> {
        while !self.tx.is_empty() {
            match self.file.write(&self.tx) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(_) => {}
                // EIO while the interface is down, for one: the frame is lost, as on a wire.
                Err(e) => {
                    if !std::mem::replace(&mut self.warned, true) {
                        tracing::warn!("virtio-net: cannot send on {}: {e}", self.name);
                    }
                }
            }
            self.tx.clear();
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_and_missing_interfaces_are_clear_errors() {
        for name in ["", "a-name-far-too-long", "../x", "a b"] {
            let err = Tap::open(name).err().unwrap();
            assert!(matches!(err, Error::Name(_)), "{name}: {err}");
        }
        let err = Tap::open("nodeosnone0").err().unwrap();
        assert!(matches!(err, Error::Missing(_)));
        assert!(err
            .to_string()
            .contains("ip tuntap add nodeosnone0 mode tap"));
    }

    /// Frames both ways through a real TAP interface, when we may create one.
    #[test]
    fn frames_through_a_tap_interface() {
        let name = "nodeostest0";
        let ok = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["tuntap", "add", name, "mode", "tap"]) {
            println!("skipped: cannot create a TAP interface here (not root, or no ip)");
            return;
        }
        struct Remove(&'static str);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["tuntap", "del", self.0, "mode", "tap"])
                    .status();
            }
        }
        let _remove = Remove(name);
        let mut tap = Tap::open(name).unwrap();
        assert!(ok(&["link", "set", name, "up"]));
        assert!(ok(&["addr", "add", "10.213.97.1/24", "dev", name]));
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&super::super::DEFAULT_MAC);
        frame.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        frame.extend_from_slice(&[0u8; 46]);
        assert!(tap.can_queue());
        tap.queue(&frame);
        assert!(tap.flush().unwrap());
        assert!(tap.can_queue());
        // A datagram to a neighbour on the interface: the host asks who has it, on the TAP.
        let udp = std::net::UdpSocket::bind("10.213.97.1:0").unwrap();
        udp.send_to(b"x", "10.213.97.2:9").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no ARP request on {name}"
            );
            match tap.recv().unwrap() {
                Some(f) if f[12..14] == [0x08, 0x06] => {
                    assert_eq!(f[38..42], [10, 213, 97, 2], "who has 10.213.97.2");
                    break;
                }
                Some(_) => tap.consume(),
                None => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
}
