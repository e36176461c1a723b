//! The guard between a `--net` guest and passt (vmm::devices::virtio::net::guard): any frame,
//! under any loopback policy and published ports. Nothing panics; nothing addressed to the
//! host's loopback (127.0.0.0/8, 0.0.0.0/8) passes; nothing to the gateway passes unless the
//! policy opens it or it is a published port's TCP answer (no SYN without ACK); a refusal is a
//! well-formed TCP reset from the gateway back to the frame's sender.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::net::guard::{Guard, Verdict};
use vmm::vm::{HostLoopback, PublishedPort};

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

fuzz_target!(|input: (Policy, Vec<u16>, Vec<u8>)| {
    let (policy, guest_ports, frame) = input;
    let closed = matches!(policy, Policy::Closed);
    let published: Vec<PublishedPort> = guest_ports
        .iter()
        .map(|&guest_port| PublishedPort {
            host: "127.0.0.1:8080".parse().unwrap(),
            guest_port,
        })
        .collect();
    let guard = Guard::new(
        match policy {
            Policy::Closed => HostLoopback::Closed,
            Policy::TcpPorts(ports) => HostLoopback::TcpPorts(ports),
            Policy::All => HostLoopback::All,
        },
        &published,
    );
    let ipv4 = frame.get(12..14) == Some(&[0x08, 0x00][..]);
    match guard.check(&frame) {
        Verdict::Pass if ipv4 => {
            let destination = &frame[DESTINATION];
            assert!(!matches!(destination[0], 0 | 127), "{frame:?}");
            if closed && destination == GATEWAY {
                // Only a published port's answer: TCP, from that port, no SYN without ACK.
                let header = usize::from(frame[14] & 0x0f) * 4;
                let tcp = &frame[14 + header..];
                assert_eq!(frame[23], 6, "{frame:?}");
                assert!(guest_ports.contains(&u16::from_be_bytes([tcp[0], tcp[1]])));
                assert_ne!(tcp[13] & 0x12, 0x02, "{frame:?}");
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
