//! Host name, the loopback interface, and eth0 where the host gave the guest a network
//! (`nodeos.net`): what a Node program expects of any machine.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use contract::params::NetConfig;

use crate::error::{Context, Error, Result};
use crate::sys::cvt;

/// The host name of a VM whose host names none (one booted from its command line).
pub const HOSTNAME: &str = "nodeos";
const LOOPBACK: &str = "lo";
/// The one NIC of a VM with a network.
const ETHERNET: &str = "eth0";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The first port the guest's unprivileged user may listen on. 0: every port, as in a
/// container (Docker's default too), so that a server on port 80 runs as `node`; there is no
/// other user in the guest to keep the low ports from.
const UNPRIVILEGED_PORT_START: (&str, &str) =
    ("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");

/// Sets the hostname, lets the user listen on every port, brings the loopback up and, given a
/// network, configures eth0 for it (with the Ethernet address given, or the device's own).
pub fn setup(hostname: &str, net: Option<(&NetConfig, Option<[u8; 6]>)>) -> Result<()> {
    set_hostname(hostname)?;
    sysctl(UNPRIVILEGED_PORT_START)?;
    let sock = inet_socket().context(|| "socket for network set-up".into())?;
    bring_up(&sock, LOOPBACK)?;
    if let Some((net, mac)) = net {
        if let Some(mac) = mac {
            set_mac(&sock, ETHERNET, mac)?;
        }
        // The host's user-mode network (passt) sends a connection to a published port to the
        // guest's Ethernet address, which it learns from the guest's first frame: eth0 says
        // who it is (a gratuitous ARP) as it comes up, so a guest that has sent nothing yet
        // is reached too.
        let arp_notify = format!("/proc/sys/net/ipv4/conf/{ETHERNET}/arp_notify");
        sysctl((&arp_notify, "1"))?;
        configure(&sock, ETHERNET, net)?;
        std::fs::write(RESOLV_CONF, resolv_conf(net)).context(|| format!("write {RESOLV_CONF}"))?;
    }
    Ok(())
}

/// Writes `value` to the kernel parameter at `path` (under /proc/sys).
fn sysctl((path, value): (&str, &str)) -> Result<()> {
    std::fs::write(path, value).context(|| format!("write {value} to {path}"))
}

fn set_hostname(name: &str) -> Result<()> {
    // SAFETY: name points to name.len() readable bytes (no NUL terminator needed).
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
        .context(|| format!("sethostname {name}"))?;
    Ok(())
}

/// A socket for the interface ioctls.
fn inet_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket has no memory arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An ifreq naming `interface`.
fn ifreq(interface: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if interface.len() >= req.ifr_name.len() {
        return Err(Error::invalid(
            format!("network interface {interface}"),
            "name too long",
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// Sets IFF_UP on an interface; for `lo` the kernel then configures 127.0.0.1/8 and ::1 itself.
fn bring_up(sock: &OwnedFd, interface: &str) -> Result<()> {
    let what = || format!("bring up network interface {interface}");
    let mut req = ifreq(interface)?;
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags inside req, which is a valid ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) }).context(what)?;
    // SAFETY: the ioctl above filled ifru_flags, the union member read and written here.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags from req, a valid ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }).context(what)?;
    Ok(())
}

/// Sets an interface's Ethernet address (while it is down).
fn set_mac(sock: &OwnedFd, interface: &str, mac: [u8; 6]) -> Result<()> {
    let mut req = ifreq(interface)?;
    let mut addr = libc::sockaddr {
        sa_family: libc::ARPHRD_ETHER,
        sa_data: [0; 14],
    };
    for (to, byte) in addr.sa_data.iter_mut().zip(mac) {
        *to = byte as libc::c_char;
    }
    req.ifr_ifru.ifru_hwaddr = addr;
    // SAFETY: SIOCSIFHWADDR reads the name and ifru_hwaddr from req, a valid ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFHWADDR, &req) }).context(|| {
        format!(
            "set {interface} Ethernet address {}",
            contract::activation::mac_text(&mac)
        )
    })?;
    Ok(())
}

/// Address, netmask, up, and the default route through the gateway.
fn configure(sock: &OwnedFd, interface: &str, net: &NetConfig) -> Result<()> {
    for (request, addr, name) in [
        (libc::SIOCSIFADDR, net.address, "address"),
        (libc::SIOCSIFNETMASK, net.netmask(), "netmask"),
    ] {
        let mut req = ifreq(interface)?;
        req.ifr_ifru.ifru_addr = sockaddr(addr);
        // SAFETY: the SIOCSIF* ioctls read the name and ifru_addr from req, a valid ifreq.
        cvt(unsafe { libc::ioctl(sock.as_raw_fd(), request, &req) })
            .context(|| format!("set {interface} {name} {addr}"))?;
    }
    bring_up(sock, interface)?;
    let mut route = RtEntry::default_route(net.gateway);
    // SAFETY: SIOCADDRT reads a struct rtentry; RtEntry has its layout, and rt_dev is null.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &mut route) })
        .context(|| format!("add the default route via {}", net.gateway))?;
    Ok(())
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; every bit pattern is a valid sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// `struct rtentry` of <linux/route.h> (the libc crate has it only for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

impl RtEntry {
    /// 0.0.0.0/0 via `gateway`.
    fn default_route(gateway: Ipv4Addr) -> Self {
        RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr(gateway),
            rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
            rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: std::ptr::null_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        }
    }
}

fn resolv_conf(net: &NetConfig) -> String {
    format!("nameserver {}\n", net.dns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtentry_has_the_kernel_layout() {
        // x86-64 <linux/route.h>: 120 bytes, rt_flags at 56, rt_dev at 88.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }

    #[test]
    fn addresses_are_in_network_order() {
        let sa = sockaddr(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(&sa.sa_data[..6], &[0, 0, 10, 0, 2, 15]);
        let net = NetConfig {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
        };
        assert_eq!(resolv_conf(&net), "nameserver 10.0.2.3\n");
    }
}
