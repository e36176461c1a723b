//! The user-mode network plan: the addresses of a VM with `--net`, the same on both backends
//! (passt and QEMU's user networking are both set up to them), so the guest and the host's
//! rewriting of loopback URLs agree.

use std::net::Ipv4Addr;

use crate::params::NetConfig;

/// The guest's address on `eth0`.
pub const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The prefix length of the guest's network (10.0.2.0/24).
pub const PREFIX: u8 = 24;
/// The default gateway, which is also the host's loopback as seen from the guest where the
/// user opened it (`--net user,host-loopback`): a host service on 127.0.0.1:PORT is then
/// 10.0.2.2:PORT in the guest.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The DNS forwarder the guest's /etc/resolv.conf names.
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// What the host puts in `nodeos.net=` for a VM with user-mode networking.
pub const USER_NET: NetConfig = NetConfig {
    address: GUEST_ADDRESS,
    prefix: PREFIX,
    gateway: GATEWAY,
    dns: DNS,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_one_network() {
        assert_eq!(USER_NET.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        let mask = u32::from(USER_NET.netmask());
        for addr in [GATEWAY, DNS] {
            assert_eq!(u32::from(addr) & mask, u32::from(GUEST_ADDRESS) & mask);
            assert_ne!(addr, GUEST_ADDRESS);
        }
        let params = crate::params::GuestParams {
            net: Some(USER_NET),
            ..Default::default()
        };
        assert_eq!(params.validate(), Ok(()));
        assert_eq!(
            params.to_string(),
            "nodeos.net=10.0.2.15/24,10.0.2.2,10.0.2.3"
        );
    }
}
