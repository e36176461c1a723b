//! The guard between a `--net` guest and passt (vmm::devices::virtio::net::guard): any frame
//! from the guest, after any frame from passt, under any loopback policy and published TCP and
//! UDP ports. Nothing panics; nothing addressed to the host's loopback (127.0.0.0/8, 0.0.0.0/8)
//! passes; nothing to the gateway passes unless the policy opens it, or it is a published TCP
//! port's answer (no SYN without ACK), or a published UDP port's answer to the gateway port
//! passt's frame came from; a refusal is a well-formed TCP reset from the gateway back to the
//! frame's sender.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::net::guard::{Guard, Verdict};
use std::time::Instant;
use vmm::vm::{HostLoopback, Protocol, PublishedPort};

#[derive(Arbitrary, Debug)]
enum Policy {
    Closed,
    TcpPorts(Vec<u16>),
    All,
}

/// Where an IPv4 frame's destination address is: after Ethernet's 14 bytes, 16 into the
/// IPv4 header.
const DESTINATION: std::ops::Range<usize> = 30..34;
const GATEWAY: [u8; 4] = [10, 0, 2, 2];

/// A frame's IPv4 protocol, and the ports of its TCP or UDP header (no IPv4 options).
fn ports(frame: &[u8]) -> Option<(u8, u16, u16)> {
    let header = 14 + usize::from(frame.get(14)? & 0x0f) * 4;
    let port = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    Some((*frame.get(23)?, port(header)?, port(header + 2)?))
}

fuzz_target!(|input: (Policy, Vec<(u16, bool)>, Vec<u8>, Vec<u8>)| {
    let (policy, guest_ports, from_passt, frame) = input;
    let closed = matches!(policy, Policy::Closed);
    let published: Vec<PublishedPort> = guest_ports
        .iter()
        .map(|&(guest_port, udp)| PublishedPort {
            host: "127.0.0.1:8080".parse().unwrap(),
            guest_port,
            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
        })
        .collect();
    let published_as = |protocol: Protocol, port: u16| {
        published
            .iter()
            .any(|p| p.protocol == protocol && p.guest_port == port)
    };
    let mut guard = Guard::new(
        match policy {
            Policy::Closed => HostLoopback::Closed,
            Policy::TcpPorts(ports) => HostLoopback::TcpPorts(ports),
            Policy::All => HostLoopback::All,
        },
        &published,
    );
    let now = Instant::now();
    guard.saw_from_passt(&from_passt, now);
    let ipv4 = frame.get(12..14) == Some(&[0x08, 0x00][..]);
    match guard.check(&frame, now) {
        Verdict::Pass if ipv4 => {
            let destination = &frame[DESTINATION];
            assert!(!matches!(destination[0], 0 | 127), "{frame:?}");
            if closed && destination == GATEWAY {
                let (protocol, source, target) = ports(&frame).expect("a parsed header");
                match protocol {
                    // A published port's answer: from that port, no SYN without ACK.
                    6 => {
                        let header = usize::from(frame[14] & 0x0f) * 4;
                        assert!(published_as(Protocol::Tcp, source), "{frame:?}");
                        assert_ne!(frame[14 + header + 13] & 0x12, 0x02, "{frame:?}");
                    }
                    // An answer on the flow passt's datagram opened: from the gateway's port
                    // to the published one.
                    17 => {
                        assert!(published_as(Protocol::Udp, source), "{frame:?}");
                        assert_eq!(from_passt.get(26..30), Some(&GATEWAY[..]));
                        assert_eq!(ports(&from_passt), Some((17, target, source)));
                    }
                    other => panic!("protocol {other} passed to the gateway: {frame:?}"),
                }
            }
        }
        Verdict::Pass | Verdict::Drop => {}
        Verdict::Refuse(reset) => {
            assert!(ipv4);
            // Ethernet + IPv4 + TCP headers, no payload, from the gateway to the sender.
            assert_eq!(reset.len(), 54);
            assert_eq!(&reset[26..30], &GATEWAY[..]);
            assert_eq!(&reset[DESTINATION], &frame[26..30]);
            assert_ne!(reset[47] & 0x04, 0, "the RST flag");
        }
    }
});
