//! What a guest with user-mode networking may send to passt: the host's loopback is out of its
//! reach unless the user opened it ([`HostLoopback`]). Every frame from the guest goes through
//! [`Guard::check`] before passt sees it (passt.rs's relay), whatever the backend.
//!
//! passt's own `--no-map-gw` is not enough: passt (0.0~git20230309 at least) connects to
//! whatever address a frame names, so a frame to 127.0.0.1 or 0.0.0.0 reaches the host's
//! loopback with or without it. Only a guest that forges frames sends those (a guest kernel
//! never routes them out of eth0), and the guest is not trusted, so:
//! - IPv4 to 0.0.0.0/8 or 127.0.0.0/8 is dropped, always;
//! - IPv4 to the gateway (contract::net::GATEWAY, the host's loopback when mapped) passes as
//!   [`HostLoopback`] says; a TCP segment to a port that is not open is answered with a reset,
//!   so the guest's connection is refused at once, and anything else to it is dropped;
//! - but the guest's side of a connection made to a published port ([`PublishedPort`]) passes:
//!   passt presents a connection from the host's loopback (or from the host's own address) as
//!   one from the gateway, so the guest answers the gateway from the published port. What
//!   passes so is every TCP segment from a published port but a SYN without ACK: passt opens a
//!   connection to the host only for that one (`tcp_tap_handler`), and takes any other segment
//!   for a connection it already has (one from a host client to the published port) or
//!   ignores it, so nothing of the loopback opens through a published port;
//! - likewise the guest's answers from a published UDP port: passt presents a datagram from the
//!   host's loopback as one from the gateway's port the host client sent it from, and forwards
//!   what the guest sends back there to that client. UDP has no connection to tell an answer
//!   from a datagram of the guest's own, so the guard keeps one: the (published port, gateway
//!   port) pairs that datagrams from passt came through ([`Guard::saw_from_passt`]), for
//!   [`UDP_FLOW_IDLE`] after the last datagram either way; a datagram from a published port to
//!   the gateway passes only on such a pair, so the guest reaches no other port of the host's
//!   loopback through one;
//! - ARP passes, and so does other IPv4; every other EtherType (IPv6 among them: passt runs
//!   IPv4 only) is dropped.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use contract::net::GATEWAY;

use super::ETH_HLEN;
use crate::vm::{HostLoopback, Protocol, PublishedPort};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
/// An IPv4 header without options.
const IPV4_HLEN: usize = 20;
/// A TCP header without options.
const TCP_HLEN: usize = 20;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// A UDP header.
const UDP_HLEN: usize = 8;
/// How long a UDP flow through a published port stays open without a datagram: passt's own
/// (`UDP_CONN_TIMEOUT`).
pub const UDP_FLOW_IDLE: Duration = Duration::from_secs(180);
/// Most UDP flows through published ports kept at once; past it the stalest goes.
const MAX_UDP_FLOWS: usize = 4096;
/// IPv4's More Fragments flag and fragment offset.
const FRAGMENT_MASK: u16 = 0x3fff;
const DONT_FRAGMENT: u16 = 0x4000;
const TTL: u8 = 64;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// What becomes of one frame from the guest.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// On to passt.
    Pass,
    /// Nowhere.
    Drop,
    /// Nowhere, and this frame (a TCP reset from the gateway) goes back to the guest.
    Refuse(Vec<u8>),
}

/// The policy on the host's loopback for one VM.
#[derive(Debug, Clone)]
pub struct Guard {
    host_loopback: HostLoopback,
    /// The guest's TCP ports that connections from the host reach (`published`'s).
    published_tcp: Vec<u16>,
    /// The guest's UDP ports that datagrams from the host reach (`published`'s).
    published_udp: Vec<u16>,
    /// (the guest's published UDP port, the gateway's port) of each flow a datagram from passt
    /// opened, and when a datagram last went through it.
    udp_flows: HashMap<(u16, u16), Instant>,
}

impl Guard {
    pub fn new(host_loopback: HostLoopback, published: &[PublishedPort]) -> Guard {
        let ports = |protocol| {
            published
                .iter()
                .filter(|p| p.protocol == protocol)
                .map(|p| p.guest_port)
                .collect()
        };
        Guard {
            host_loopback,
            published_tcp: ports(Protocol::Tcp),
            published_udp: ports(Protocol::Udp),
            udp_flows: HashMap::new(),
        }
    }

    /// Takes note of `frame`, an Ethernet frame passt sends the guest: a UDP datagram from the
    /// gateway to a published UDP port opens (or keeps open) the way back for the guest's
    /// answers.
    pub fn saw_from_passt(&mut self, frame: &[u8], now: Instant) {
        if self.published_udp.is_empty() {
            return;
        }
        let Some(ip) = frame.get(ETH_HLEN..).and_then(Ipv4::parse) else {
            return;
        };
        if ip.source != GATEWAY || ip.protocol != PROTO_UDP || ip.fragmented {
            return;
        }
        let Some(udp) = Udp::parse(ip.payload) else {
            return;
        };
        if !self.published_udp.contains(&udp.destination_port) {
            return;
        }
        if self.udp_flows.len() >= MAX_UDP_FLOWS {
            self.udp_flows
                .retain(|_, last| now.duration_since(*last) < UDP_FLOW_IDLE);
        }
        if self.udp_flows.len() >= MAX_UDP_FLOWS {
            let stalest = self.udp_flows.iter().min_by_key(|(_, last)| **last);
            if let Some((&flow, _)) = stalest {
                self.udp_flows.remove(&flow);
            }
        }
        self.udp_flows
            .insert((udp.destination_port, udp.source_port), now);
    }

    /// What becomes of `frame`, an Ethernet frame the guest sent.
    pub fn check(&mut self, frame: &[u8], now: Instant) -> Verdict {
        let Some(ethertype) = frame.get(12..ETH_HLEN) else {
            return Verdict::Drop;
        };
        match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
            ETHERTYPE_ARP => Verdict::Pass,
            ETHERTYPE_IPV4 => self.check_ipv4(frame, now),
            _ => Verdict::Drop,
        }
    }

    fn check_ipv4(&mut self, frame: &[u8], now: Instant) -> Verdict {
        let Some(ip) = Ipv4::parse(&frame[ETH_HLEN..]) else {
            return Verdict::Drop;
        };
        let to_this_host = matches!(ip.destination.octets()[0], 0 | 127);
        if to_this_host {
            return Verdict::Drop;
        }
        if ip.destination != GATEWAY {
            return Verdict::Pass;
        }
        let tcp_ports = match &self.host_loopback {
            HostLoopback::All => return Verdict::Pass,
            HostLoopback::Closed => &[][..],
            HostLoopback::TcpPorts(ports) => ports.as_slice(),
        };
        // Where passt would read the TCP or UDP header: also in a fragment, so never one of
        // those.
        if ip.fragmented {
            return Verdict::Drop;
        }
        if ip.protocol == PROTO_UDP {
            return match Udp::parse(ip.payload) {
                Some(udp) if self.answers_a_udp_flow(&udp, now) => Verdict::Pass,
                _ => Verdict::Drop,
            };
        }
        if ip.protocol != PROTO_TCP {
            return Verdict::Drop;
        }
        let Some(tcp) = Tcp::parse(ip.payload) else {
            return Verdict::Drop;
        };
        if tcp_ports.contains(&tcp.destination_port) || self.answers_a_published_port(&tcp) {
            Verdict::Pass
        } else if tcp.flags & TCP_RST != 0 {
            // Never answer a reset (RFC 9293, 3.10.7.1).
            Verdict::Drop
        } else {
            Verdict::Refuse(reset(frame, &ip, &tcp))
        }
    }

    /// Whether `tcp` is the guest's side of a connection to one of its published ports: from
    /// such a port, and anything but the SYN that would open a connection of its own.
    fn answers_a_published_port(&self, tcp: &Tcp) -> bool {
        let opens = tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        self.published_tcp.contains(&tcp.source_port) && !opens
    }

    /// Whether `udp` goes back on a flow a datagram from passt opened through a published UDP
    /// port, still open: then it stays open longer.
    fn answers_a_udp_flow(&mut self, udp: &Udp, now: Instant) -> bool {
        match self
            .udp_flows
            .get_mut(&(udp.source_port, udp.destination_port))
        {
            Some(last) if now.duration_since(*last) < UDP_FLOW_IDLE => {
                *last = now;
                true
            }
            _ => false,
        }
    }
}

/// The UDP ports.
struct Udp {
    source_port: u16,
    destination_port: u16,
}

impl Udp {
    fn parse(datagram: &[u8]) -> Option<Udp> {
        let header = datagram.get(..UDP_HLEN)?;
        Some(Udp {
            source_port: u16::from_be_bytes([header[0], header[1]]),
            destination_port: u16::from_be_bytes([header[2], header[3]]),
        })
    }
}

/// The IPv4 fields the guard looks at.
struct Ipv4<'a> {
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    fragmented: bool,
    /// What follows the header, up to the packet's total length.
    payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    fn parse(packet: &'a [u8]) -> Option<Ipv4<'a>> {
        let header = packet.get(..IPV4_HLEN)?;
        let header_len = usize::from(header[0] & 0x0f) * 4;
        if header[0] >> 4 != 4 || header_len < IPV4_HLEN {
            return None;
        }
        let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let payload = packet.get(header_len..total_len)?;
        let address =
            |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
        Some(Ipv4 {
            source: address(12),
            destination: address(16),
            protocol: header[9],
            fragmented: u16::from_be_bytes([header[6], header[7]]) & FRAGMENT_MASK != 0,
            payload,
        })
    }
}

/// The TCP fields a reset needs.
struct Tcp {
    source_port: u16,
    destination_port: u16,
    sequence: u32,
    acknowledgment: u32,
    flags: u8,
    /// Bytes of data after the header and its options.
    data_len: u32,
}

impl Tcp {
    fn parse(segment: &[u8]) -> Option<Tcp> {
        let header = segment.get(..TCP_HLEN)?;
        let header_len = usize::from(header[12] >> 4) * 4;
        if header_len < TCP_HLEN || header_len > segment.len() {
            return None;
        }
        let word = |at: usize| {
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        Some(Tcp {
            source_port: u16::from_be_bytes([header[0], header[1]]),
            destination_port: u16::from_be_bytes([header[2], header[3]]),
            sequence: word(4),
            acknowledgment: word(8),
            flags: header[13],
            data_len: (segment.len() - header_len) as u32,
        })
    }
}

/// The reset that refuses `tcp` (in `ip`, in `frame`), from the gateway to the guest, as a
/// closed port's (RFC 9293, 3.10.7.1): with the segment's acknowledgment as its sequence
/// number, or acknowledging the segment when it had none.
fn reset(frame: &[u8], ip: &Ipv4<'_>, tcp: &Tcp) -> Vec<u8> {
    let (sequence, acknowledgment, flags) = if tcp.flags & TCP_ACK != 0 {
        (tcp.acknowledgment, 0, TCP_RST)
    } else {
        let length = tcp.data_len
            + u32::from(tcp.flags & TCP_SYN != 0)
            + u32::from(tcp.flags & TCP_FIN != 0);
        (0, tcp.sequence.wrapping_add(length), TCP_RST | TCP_ACK)
    };

    let mut segment = [0u8; TCP_HLEN];
    segment[0..2].copy_from_slice(&tcp.destination_port.to_be_bytes());
    segment[2..4].copy_from_slice(&tcp.source_port.to_be_bytes());
    segment[4..8].copy_from_slice(&sequence.to_be_bytes());
    segment[8..12].copy_from_slice(&acknowledgment.to_be_bytes());
    segment[12] = ((TCP_HLEN / 4) as u8) << 4;
    segment[13] = flags;
    let mut pseudo_header = [0u8; 12];
    pseudo_header[0..4].copy_from_slice(&ip.destination.octets());
    pseudo_header[4..8].copy_from_slice(&ip.source.octets());
    pseudo_header[9] = PROTO_TCP;
    pseudo_header[10..12].copy_from_slice(&(TCP_HLEN as u16).to_be_bytes());
    let sum = checksum(&[&pseudo_header, &segment]);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());

    let mut header = [0u8; IPV4_HLEN];
    header[0] = 0x45;
    header[2..4].copy_from_slice(&((IPV4_HLEN + TCP_HLEN) as u16).to_be_bytes());
    header[6..8].copy_from_slice(&DONT_FRAGMENT.to_be_bytes());
    header[8] = TTL;
    header[9] = PROTO_TCP;
    header[12..16].copy_from_slice(&ip.destination.octets());
    header[16..20].copy_from_slice(&ip.source.octets());
    let sum = checksum(&[&header]);
    header[10..12].copy_from_slice(&sum.to_be_bytes());

    let mut out = Vec::with_capacity(ETH_HLEN + IPV4_HLEN + TCP_HLEN);
    // Back to the guest's MAC address, from the one it sent to (the gateway's).
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&segment);
    out
}

/// The Internet checksum (RFC 1071) of `parts` one after the other, each of even length.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = parts
        .iter()
        .flat_map(|part| part.chunks(2))
        .map(|word| u32::from(u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const GATEWAY_MAC: [u8; 6] = [0x02, 0xfc, 0x00, 0x00, 0x00, 0x01];
    const GUEST: [u8; 4] = [10, 0, 2, 15];

    /// An Ethernet frame with `ethertype` around `payload`, guest to gateway.
    fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = GATEWAY_MAC.to_vec();
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An IPv4 packet from the guest to `dst` of protocol `proto`, flags and fragment offset
    /// `fragment`.
    fn ipv4(dst: [u8; 4], proto: u8, fragment: u16, payload: &[u8]) -> Vec<u8> {
        ipv4_between(GUEST, dst, proto, fragment, payload)
    }

    fn ipv4_between(
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        fragment: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((IPV4_HLEN + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        p.extend_from_slice(&fragment.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let sum = checksum(&[&p]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// A TCP segment from guest port 40000 to `port`, sequence 1000, acknowledging `ack`.
    fn tcp(port: u16, flags: u8, ack: u32, data: &[u8]) -> Vec<u8> {
        let mut s = 40000u16.to_be_bytes().to_vec();
        s.extend_from_slice(&port.to_be_bytes());
        s.extend_from_slice(&1000u32.to_be_bytes());
        s.extend_from_slice(&ack.to_be_bytes());
        s.extend_from_slice(&[5 << 4, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        s.extend_from_slice(data);
        s
    }

    fn tcp_frame(dst: [u8; 4], port: u16, flags: u8) -> Vec<u8> {
        ethernet(
            ETHERTYPE_IPV4,
            &ipv4(dst, PROTO_TCP, DONT_FRAGMENT, &tcp(port, flags, 0, &[])),
        )
    }

    fn gateway() -> [u8; 4] {
        GATEWAY.octets()
    }

    /// A TCP segment from the guest's port `sport` to the gateway's `port`.
    fn from_port(sport: u16, port: u16, flags: u8) -> Vec<u8> {
        let mut segment = tcp(port, flags, 0, &[]);
        segment[0..2].copy_from_slice(&sport.to_be_bytes());
        ethernet(
            ETHERTYPE_IPV4,
            &ipv4(gateway(), PROTO_TCP, DONT_FRAGMENT, &segment),
        )
    }

    #[test]
    fn the_hosts_loopback_is_never_a_destination() {
        for host_loopback in [
            HostLoopback::Closed,
            HostLoopback::TcpPorts(vec![80]),
            HostLoopback::All,
        ] {
            let mut guard = Guard::new(host_loopback, &[]);
            for dst in [[127, 0, 0, 1], [127, 1, 2, 3], [0, 0, 0, 0], [0, 1, 2, 3]] {
                assert_eq!(
                    guard.check(&tcp_frame(dst, 80, TCP_SYN), Instant::now()),
                    Verdict::Drop,
                    "{dst:?}"
                );
                let udp = ethernet(ETHERTYPE_IPV4, &ipv4(dst, 17, 0, &[0; 8]));
                assert_eq!(guard.check(&udp, Instant::now()), Verdict::Drop, "{dst:?}");
            }
        }
    }

    #[test]
    fn other_destinations_and_arp_pass_other_ethertypes_do_not() {
        let mut guard = Guard::new(HostLoopback::Closed, &[]);
        for dst in [
            [93, 184, 216, 34],
            [192, 0, 2, 2],
            [10, 0, 2, 3],
            [255, 255, 255, 255],
        ] {
            assert_eq!(
                guard.check(&tcp_frame(dst, 80, TCP_SYN), Instant::now()),
                Verdict::Pass,
                "{dst:?}"
            );
        }
        assert_eq!(
            guard.check(&ethernet(ETHERTYPE_ARP, &[0; 28]), Instant::now()),
            Verdict::Pass
        );
        let ipv6 = ethernet(0x86dd, &[0x60; 60]);
        assert_eq!(guard.check(&ipv6, Instant::now()), Verdict::Drop);
        assert_eq!(guard.check(&GATEWAY_MAC, Instant::now()), Verdict::Drop);
    }

    /// A UDP datagram from port `sport` to `dport` (checksum 0: none), with `data`.
    fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut d = sport.to_be_bytes().to_vec();
        d.extend_from_slice(&dport.to_be_bytes());
        d.extend_from_slice(&((UDP_HLEN + data.len()) as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(data);
        d
    }

    #[test]
    fn a_published_udp_port_answers_only_the_flows_passt_opened() {
        let published = [PublishedPort {
            host: "127.0.0.1:5353".parse().unwrap(),
            guest_port: 53,
            protocol: Protocol::Udp,
        }];
        let mut guard = Guard::new(HostLoopback::Closed, &published);
        let answer = |sport, dport| {
            ethernet(
                ETHERTYPE_IPV4,
                &ipv4(gateway(), PROTO_UDP, 0, &udp(sport, dport, b"pong")),
            )
        };
        let query = |sport, dport| {
            let packet = ipv4_between(gateway(), GUEST, PROTO_UDP, 0, &udp(sport, dport, b"q"));
            ethernet(ETHERTYPE_IPV4, &packet)
        };
        let start = Instant::now();
        // Nothing came in yet: the guest reaches no port of the host's loopback from it.
        assert_eq!(guard.check(&answer(53, 40000), start), Verdict::Drop);
        // A host client's datagram, as passt presents it, opens the way back to its port.
        guard.saw_from_passt(&query(40000, 53), start);
        assert_eq!(guard.check(&answer(53, 40000), start), Verdict::Pass);
        // To another port of the gateway, or from another port of the guest's: still nothing;
        // nor as a fragment.
        assert_eq!(guard.check(&answer(53, 40001), start), Verdict::Drop);
        assert_eq!(guard.check(&answer(54, 40000), start), Verdict::Drop);
        let fragment = ipv4(gateway(), PROTO_UDP, 0x2000, &udp(53, 40000, b"x"));
        assert_eq!(
            guard.check(&ethernet(ETHERTYPE_IPV4, &fragment), start),
            Verdict::Drop
        );
        // A datagram to a port that is not published, or not from the gateway, opens nothing.
        guard.saw_from_passt(&query(40002, 80), start);
        assert_eq!(guard.check(&answer(80, 40002), start), Verdict::Drop);
        let elsewhere = ipv4_between([1, 1, 1, 1], GUEST, PROTO_UDP, 0, &udp(40003, 53, b"q"));
        guard.saw_from_passt(&ethernet(ETHERTYPE_IPV4, &elsewhere), start);
        assert_eq!(guard.check(&answer(53, 40003), start), Verdict::Drop);
        // Answers keep the flow open; idle for UDP_FLOW_IDLE, it closes.
        let later = start + UDP_FLOW_IDLE - Duration::from_secs(1);
        assert_eq!(guard.check(&answer(53, 40000), later), Verdict::Pass);
        let idle = later + UDP_FLOW_IDLE;
        assert_eq!(guard.check(&answer(53, 40000), idle), Verdict::Drop);
        // However many clients, the flows kept are bounded, the stalest going first.
        for (i, port) in (1000..1000 + MAX_UDP_FLOWS as u16 + 1).enumerate() {
            guard.saw_from_passt(&query(port, 53), idle + Duration::from_millis(i as u64));
        }
        assert!(guard.udp_flows.len() <= MAX_UDP_FLOWS);
        let now = idle + Duration::from_secs(10);
        assert_eq!(guard.check(&answer(53, 1000), now), Verdict::Drop);
        assert_eq!(guard.check(&answer(53, 1001), now), Verdict::Pass);
    }

    #[test]
    fn malformed_ipv4_is_dropped() {
        let mut guard = Guard::new(HostLoopback::All, &[]);
        let good = ipv4([1, 1, 1, 1], PROTO_TCP, 0, &tcp(80, TCP_SYN, 0, &[]));
        assert_eq!(
            guard.check(&ethernet(ETHERTYPE_IPV4, &good), Instant::now()),
            Verdict::Pass
        );
        let mut bad_version = good.clone();
        bad_version[0] = 0x65;
        let mut short_header = good.clone();
        short_header[0] = 0x44;
        let mut too_long = good.clone();
        too_long[2..4].copy_from_slice(&1500u16.to_be_bytes());
        for bad in [bad_version, short_header, too_long, good[..19].to_vec()] {
            assert_eq!(
                guard.check(&ethernet(ETHERTYPE_IPV4, &bad), Instant::now()),
                Verdict::Drop
            );
        }
    }

    #[test]
    fn a_closed_gateway_refuses_tcp_and_drops_the_rest() {
        let mut guard = Guard::new(HostLoopback::Closed, &[]);
        assert!(matches!(
            guard.check(&tcp_frame(gateway(), 4873, TCP_SYN), Instant::now()),
            Verdict::Refuse(_)
        ));
        assert_eq!(
            guard.check(&tcp_frame(gateway(), 4873, TCP_RST), Instant::now()),
            Verdict::Drop
        );
        let udp = ethernet(ETHERTYPE_IPV4, &ipv4(gateway(), 17, 0, &[0; 8]));
        assert_eq!(guard.check(&udp, Instant::now()), Verdict::Drop);
        let icmp = ethernet(
            ETHERTYPE_IPV4,
            &ipv4(gateway(), 1, 0, &[8, 0, 0, 0, 0, 0, 0, 0]),
        );
        assert_eq!(guard.check(&icmp, Instant::now()), Verdict::Drop);
        // A fragment is never read as a TCP header, even one that looks like an open port's.
        let mut open = Guard::new(HostLoopback::TcpPorts(vec![4873]), &[]);
        let fragment = ipv4(gateway(), PROTO_TCP, 0x2000, &tcp(4873, TCP_SYN, 0, &[]));
        assert_eq!(
            open.check(&ethernet(ETHERTYPE_IPV4, &fragment), Instant::now()),
            Verdict::Drop
        );
    }

    #[test]
    fn open_ports_pass_others_are_refused() {
        let mut guard = Guard::new(HostLoopback::TcpPorts(vec![4873, 8080]), &[]);
        for port in [4873, 8080] {
            assert_eq!(
                guard.check(&tcp_frame(gateway(), port, TCP_SYN), Instant::now()),
                Verdict::Pass
            );
            assert_eq!(
                guard.check(&tcp_frame(gateway(), port, TCP_ACK), Instant::now()),
                Verdict::Pass
            );
        }
        assert!(matches!(
            guard.check(&tcp_frame(gateway(), 22, TCP_SYN), Instant::now()),
            Verdict::Refuse(_)
        ));
        let udp = ethernet(ETHERTYPE_IPV4, &ipv4(gateway(), 17, 0, &[0; 8]));
        assert_eq!(guard.check(&udp, Instant::now()), Verdict::Drop);
        let mut all = Guard::new(HostLoopback::All, &[]);
        assert_eq!(
            all.check(&tcp_frame(gateway(), 22, TCP_SYN), Instant::now()),
            Verdict::Pass
        );
        assert_eq!(all.check(&udp, Instant::now()), Verdict::Pass);
    }

    #[test]
    fn a_published_port_answers_the_gateway_and_opens_nothing() {
        let published = [PublishedPort {
            host: "127.0.0.1:8080".parse().unwrap(),
            guest_port: 80,
            protocol: Protocol::Tcp,
        }];
        for host_loopback in [HostLoopback::Closed, HostLoopback::TcpPorts(vec![4873])] {
            let mut guard = Guard::new(host_loopback, &published);
            // The guest's side of a connection from the host: its SYN-ACK, ACKs, data, FIN
            // and resets.
            for flags in [
                TCP_SYN | TCP_ACK,
                TCP_ACK,
                TCP_ACK | TCP_FIN,
                TCP_RST,
                TCP_RST | TCP_ACK,
            ] {
                assert_eq!(
                    guard.check(&from_port(80, 51000, flags), Instant::now()),
                    Verdict::Pass,
                    "{flags:#x}"
                );
            }
            // A connection of the guest's own, from the published port or any other: refused.
            assert!(matches!(
                guard.check(&from_port(80, 22, TCP_SYN), Instant::now()),
                Verdict::Refuse(_)
            ));
            assert!(matches!(
                guard.check(&from_port(81, 51000, TCP_ACK), Instant::now()),
                Verdict::Refuse(_)
            ));
            // Nor does anything but TCP pass from it.
            let mut udp = [0u8; 8];
            udp[0..2].copy_from_slice(&80u16.to_be_bytes());
            let udp = ethernet(ETHERTYPE_IPV4, &ipv4(gateway(), 17, 0, &udp));
            assert_eq!(guard.check(&udp, Instant::now()), Verdict::Drop);
        }
        // The loopback itself is still no destination.
        let mut guard = Guard::new(HostLoopback::Closed, &published);
        let mut segment = tcp(51000, TCP_ACK, 0, &[]);
        segment[0..2].copy_from_slice(&80u16.to_be_bytes());
        let to_loopback = ethernet(
            ETHERTYPE_IPV4,
            &ipv4([127, 0, 0, 1], PROTO_TCP, DONT_FRAGMENT, &segment),
        );
        assert_eq!(guard.check(&to_loopback, Instant::now()), Verdict::Drop);
    }

    #[test]
    fn the_reset_answers_the_segment_with_valid_checksums() {
        let mut guard = Guard::new(HostLoopback::Closed, &[]);
        // A SYN with 3 bytes of data: acknowledged as 1000 + 1 + 3.
        let syn = ethernet(
            ETHERTYPE_IPV4,
            &ipv4(
                gateway(),
                PROTO_TCP,
                DONT_FRAGMENT,
                &tcp(4873, TCP_SYN, 0, b"abc"),
            ),
        );
        let Verdict::Refuse(rst) = guard.check(&syn, Instant::now()) else {
            panic!("not refused");
        };
        assert_eq!(rst.len(), ETH_HLEN + IPV4_HLEN + TCP_HLEN);
        assert_eq!(
            (&rst[0..6], &rst[6..12]),
            (&GUEST_MAC[..], &GATEWAY_MAC[..])
        );
        let ip = &rst[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
        assert_eq!(checksum(&[ip]), 0, "IPv4 header checksum");
        assert_eq!((&ip[12..16], &ip[16..20]), (&gateway()[..], &GUEST[..]));
        assert_eq!(ip[9], PROTO_TCP);
        let tcp_hdr = &rst[ETH_HLEN + IPV4_HLEN..];
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, PROTO_TCP, 0, TCP_HLEN as u8]);
        assert_eq!(checksum(&[&pseudo, tcp_hdr]), 0, "TCP checksum");
        assert_eq!(u16::from_be_bytes([tcp_hdr[0], tcp_hdr[1]]), 4873);
        assert_eq!(u16::from_be_bytes([tcp_hdr[2], tcp_hdr[3]]), 40000);
        assert_eq!(&tcp_hdr[4..8], &0u32.to_be_bytes());
        assert_eq!(&tcp_hdr[8..12], &1004u32.to_be_bytes());
        assert_eq!(tcp_hdr[13], TCP_RST | TCP_ACK);

        // A segment with an acknowledgment: the reset takes it as its sequence number.
        let ack = ethernet(
            ETHERTYPE_IPV4,
            &ipv4(gateway(), PROTO_TCP, 0, &tcp(4873, TCP_ACK, 77, &[])),
        );
        let Verdict::Refuse(rst) = guard.check(&ack, Instant::now()) else {
            panic!("not refused");
        };
        let tcp_hdr = &rst[ETH_HLEN + IPV4_HLEN..];
        assert_eq!(&tcp_hdr[4..8], &77u32.to_be_bytes());
        assert_eq!(tcp_hdr[13], TCP_RST);
    }
}
