use super::*;

const BASE: &str =
    "console=ttyS0 reboot=t panic=-1 quiet root=/dev/vda rootfstype=squashfs ro init=/sbin/init";

fn vol(device: &str, mount_point: &str, read_only: bool) -> Volume {
    Volume::new(device, mount_point, read_only).unwrap()
}

#[test]
fn defaults_without_nodeos_parameters() {
    assert_eq!(GuestParams::parse(BASE).unwrap(), GuestParams::default());
    assert_eq!(GuestParams::default().console, ConsoleMode::Tty);
    assert_eq!(GuestParams::default().upper, Upper::Tmpfs);
    assert_eq!(GuestParams::default().to_string(), "");
}

#[test]
fn all_parameters() {
    let text = format!(
        "{BASE} virtio_mmio.device=4K@0xd0000000:5 nodeos.console=pipe nodeos.cols=120 nodeos.rows=40 nodeos.upper=/dev/vdb nodeos.shell=repl\n"
    );
    let params = GuestParams::parse(&text).unwrap();
    assert_eq!(
        params,
        GuestParams {
            console: ConsoleMode::Pipe,
            cols: Some(120),
            rows: Some(40),
            upper: Upper::Disk("/dev/vdb".into()),
            shell: Shell::Repl,
            agent: None,
            warm: false,
            volumes: Vec::new(),
            net: None,
        }
    );
}

#[test]
fn environment_entries_are_not_parameters() {
    // The guest's environment comes over the agent link (crate::env): an old host's
    // `nodeos.env` is an unknown word, ignored.
    let params = GuestParams::parse("nodeos.env=TOKEN=secret nodeos.shell=none").unwrap();
    assert_eq!(
        params,
        GuestParams {
            shell: Shell::None,
            ..GuestParams::default()
        }
    );
}

#[test]
fn agent_shell_volumes_and_network() {
    let params = GuestParams::parse(
        "nodeos.agent=serial nodeos.shell=none nodeos.vol=/dev/vdc:/data:rw \
         nodeos.vol=/dev/vdd:/mnt/my%20files%3a%25:ro nodeos.net=10.0.2.15/24,10.0.2.2,10.0.2.3",
    )
    .unwrap();
    assert_eq!(params.agent, Some(AgentTransport::Serial));
    assert_eq!(params.shell, Shell::None);
    assert_eq!(
        params.volumes,
        vec![
            Volume {
                device: "/dev/vdc".into(),
                mount_point: "/data".into(),
                read_only: false,
            },
            Volume {
                device: "/dev/vdd".into(),
                mount_point: "/mnt/my files:%".into(),
                read_only: true,
            },
        ]
    );
    let net = params.net.unwrap();
    assert_eq!(
        net,
        NetConfig {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
        }
    );
    assert_eq!(net, crate::net::USER_NET);
    assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(
        GuestParams::parse("nodeos.agent=vsock").unwrap().agent,
        Some(AgentTransport::Vsock)
    );
    let mask = |prefix| NetConfig { prefix, ..net }.netmask();
    assert_eq!(mask(0), Ipv4Addr::new(0, 0, 0, 0));
    assert_eq!(mask(32), Ipv4Addr::new(255, 255, 255, 255));
    assert_eq!(mask(20), Ipv4Addr::new(255, 255, 240, 0));
    // Mount points are text: a non-UTF-8 one is refused, not mangled.
    assert!(GuestParams::parse("nodeos.vol=/dev/vdb:/x%ff:rw").is_err());
}

#[test]
fn shell_values() {
    for (value, shell) in [
        ("repl", Shell::Repl),
        ("nsh", Shell::Nsh),
        ("none", Shell::None),
    ] {
        let params = GuestParams::parse(&format!("{BASE} nodeos.shell={value}")).unwrap();
        assert_eq!(params.shell, shell, "{value}");
    }
    assert_eq!(GuestParams::parse(BASE).unwrap().shell, Shell::Repl);
}

#[test]
fn last_value_wins_and_unknown_keys_are_ignored() {
    let params = GuestParams::parse(
        "nodeos.console=pipe nodeos.console=tty nodeos.future=1 nodeos.upper=tmpfs",
    )
    .unwrap();
    assert_eq!(params.console, ConsoleMode::Tty);
    assert_eq!(params.upper, Upper::Tmpfs);
}

#[test]
fn bad_values_are_errors_naming_the_parameter() {
    for bad in [
        "nodeos.console=serial",
        "nodeos.cols=0",
        "nodeos.rows=-3",
        "nodeos.cols=99999",
        "nodeos.upper=vdb",
        "nodeos.upper=/dev/",
        "nodeos.upper=/dev/../etc",
        "nodeos.upper=/dev/vd%62",
        "nodeos.shell=bash",
        "nodeos.agent=tcp",
        "nodeos.agent=",
        "nodeos.vol=/dev/vdc:/data",
        "nodeos.vol=/dev/vdc:/data:rw:x",
        "nodeos.vol=/dev/vdc:/data:rx",
        "nodeos.vol=/dev/sda:/data:rw",
        "nodeos.vol=/dev/vd:/data:rw",
        "nodeos.vol=/dev/vd1:/data:rw",
        "nodeos.vol=/dev/vdc:data:rw",
        "nodeos.vol=/dev/vdc:/:rw",
        "nodeos.vol=/dev/vdc://:rw",
        "nodeos.vol=/dev/vdc:/a/../etc:rw",
        "nodeos.vol=/dev/vdc:/a/./etc:rw",
        "nodeos.vol=/dev/vdc:/a/%2e%2e/etc:rw",
        "nodeos.vol=/dev/vdc:/a%2:rw",
        "nodeos.vol=/dev/vdc:/a%zz:rw",
        "nodeos.vol=/dev/vdc:/a%00b:rw",
        "nodeos.net=10.0.2.15/24,10.0.2.2",
        "nodeos.net=10.0.2.15,10.0.2.2,10.0.2.3",
        "nodeos.net=10.0.2.15/33,10.0.2.2,10.0.2.3",
        "nodeos.net=10.0.2.256/24,10.0.2.2,10.0.2.3",
        "nodeos.net=10.0.2.15/24,gw,10.0.2.3",
        "nodeos.net=10.0.2.15/24,10.0.2.2,10.0.2.3,1.1.1.1",
        "nodeos.net=::1/64,::2,::3",
    ] {
        let err = GuestParams::parse(&format!("{BASE} {bad} quiet")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("{bad}: ")), "{text}");
        assert!(text.len() > bad.len() + 2, "no reason given: {text}");
    }
}

#[test]
fn quotes_group_words() {
    assert_eq!(split_words(r#"a="b c" d  "e""#), vec!["a=b c", "d", "e"]);
    assert_eq!(split_words("  \n"), Vec::<String>::new());
    assert_eq!(split_words(r#"x="""#), vec!["x="]);
}

/// A value with every parameter away from its default, and awkward text where text is free.
fn rich() -> GuestParams {
    GuestParams {
        console: ConsoleMode::Pipe,
        cols: Some(1),
        rows: Some(u16::MAX),
        upper: Upper::disk("/dev/vdb").unwrap(),
        shell: Shell::Nsh,
        agent: Some(AgentTransport::Serial),
        warm: true,
        volumes: vec![
            vol("/dev/vdc", "/data", false),
            vol("/dev/vdd", "/mnt/my files:%/ü/\"q\"/tab\there", true),
            vol("/dev/vdaa", "/x.y/.hidden/a..b/", false),
        ],
        net: Some(crate::net::USER_NET),
    }
}

#[test]
fn display_writes_only_what_differs_from_the_defaults() {
    let params = GuestParams {
        console: ConsoleMode::Pipe,
        volumes: vec![vol("/dev/vdc", "/my app/ü:%", true)],
        ..GuestParams::default()
    };
    assert_eq!(
        params.to_string(),
        "nodeos.console=pipe nodeos.vol=/dev/vdc:/my%20app/%C3%BC%3A%25:ro"
    );
    let params = GuestParams {
        cols: Some(120),
        rows: Some(40),
        upper: Upper::disk("/dev/vdb").unwrap(),
        shell: Shell::None,
        agent: Some(AgentTransport::Vsock),
        net: Some(crate::net::USER_NET),
        ..GuestParams::default()
    };
    assert_eq!(
        params.to_string(),
        "nodeos.cols=120 nodeos.rows=40 nodeos.upper=/dev/vdb nodeos.shell=none \
         nodeos.agent=vsock nodeos.net=10.0.2.15/24,10.0.2.2,10.0.2.3"
    );
}

#[test]
fn what_the_host_writes_the_guest_reads_back() {
    let samples = [
        GuestParams::default(),
        rich(),
        GuestParams {
            shell: Shell::None,
            agent: Some(AgentTransport::Vsock),
            ..GuestParams::default()
        },
    ];
    for params in samples {
        assert_eq!(params.validate(), Ok(()));
        let text = params.to_string();
        assert_eq!(GuestParams::parse(&text), Ok(params.clone()), "{text}");
        // Among the kernel's own words too, and every word is plain ASCII without quotes.
        let line = format!("{BASE} {text} virtio_mmio.device=4K@0xd0000000:5");
        assert_eq!(GuestParams::parse(&line), Ok(params), "{line}");
        assert!(
            text.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
            "{text}"
        );
        assert!(!text.contains('"'), "{text}");
    }
}

#[test]
fn constructors_refuse_what_the_guest_would() {
    for (device, mount_point) in [
        ("/dev/sda", "/data"),
        ("/dev/vd", "/data"),
        ("/dev/vdc:", "/data"),
        ("/dev/vdC", "/data"),
        ("/dev/vdc", "data"),
        ("/dev/vdc", ""),
        ("/dev/vdc", "/"),
        ("/dev/vdc", "///"),
        ("/dev/vdc", "/a/.."),
        ("/dev/vdc", "/./a"),
        ("/dev/vdc", "/a\0b"),
    ] {
        let err = Volume::new(device, mount_point, false).unwrap_err();
        assert!(err.to_string().starts_with("nodeos.vol="), "{err}");
    }
    for device in [
        "tmpfs",
        "/dev/",
        "vdb",
        "/dev/../x",
        "/dev/vd b",
        "/dev/vdb%",
    ] {
        let err = Upper::disk(device).unwrap_err();
        assert!(err.to_string().starts_with("nodeos.upper="), "{err}");
    }
}

#[test]
fn validate_catches_values_built_by_hand() {
    let bad = [
        GuestParams {
            cols: Some(0),
            ..GuestParams::default()
        },
        GuestParams {
            upper: Upper::Disk("/dev/vdb data".into()),
            ..GuestParams::default()
        },
        GuestParams {
            volumes: vec![Volume {
                device: "/dev/vdc".into(),
                mount_point: "/../etc".into(),
                read_only: false,
            }],
            ..GuestParams::default()
        },
        GuestParams {
            net: Some(NetConfig {
                prefix: 33,
                ..crate::net::USER_NET
            }),
            ..GuestParams::default()
        },
    ];
    for params in bad {
        let err = params.validate().unwrap_err();
        // What validate refuses, the guest refuses or reads back as something else.
        assert_ne!(GuestParams::parse(&params.to_string()), Ok(params.clone()));
        assert!(err.to_string().starts_with("nodeos."), "{err}");
    }
}

#[test]
fn errors_name_the_word_and_why() {
    let err = GuestParams::parse("nodeos.cols=wide").unwrap_err();
    assert_eq!(
        err.to_string(),
        "nodeos.cols=wide: must be a number 1..=65535"
    );
    let err: Box<dyn std::error::Error> = Box::new(err);
    assert!(err.source().is_none());
}

#[test]
fn a_template_is_warmed_when_asked() {
    let params = GuestParams::parse("nodeos.agent=vsock nodeos.warm").unwrap();
    assert!(params.warm);
    assert_eq!(params.to_string(), "nodeos.agent=vsock nodeos.warm");
    assert!(!GuestParams::parse("nodeos.agent=vsock").unwrap().warm);
    let err = GuestParams::parse("nodeos.warm=1").unwrap_err();
    assert_eq!(err.to_string(), "nodeos.warm=1: takes no value");
}
