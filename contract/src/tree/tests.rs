use super::*;

fn path(p: &str) -> TreePath {
    TreePath::new(p).unwrap()
}

/// An owned record, to compare what was sent with what was decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Dir(TreePath, u32),
    File(TreePath, u32, u64),
    Data(u64, Vec<u8>),
    Symlink(TreePath, Vec<u8>),
    End,
}

impl From<Record<'_>> for Owned {
    fn from(r: Record<'_>) -> Owned {
        match r {
            Record::Dir { path, mode } => Owned::Dir(path, mode),
            Record::File { path, mode, size } => Owned::File(path, mode, size),
            Record::Data { offset, data } => Owned::Data(offset, data.to_vec()),
            Record::Symlink { path, target } => Owned::Symlink(path, target.to_vec()),
            Record::End => Owned::End,
        }
    }
}

impl Owned {
    fn record(&self) -> Record<'_> {
        match self {
            Owned::Dir(path, mode) => Record::Dir {
                path: path.clone(),
                mode: *mode,
            },
            Owned::File(path, mode, size) => Record::File {
                path: path.clone(),
                mode: *mode,
                size: *size,
            },
            Owned::Data(offset, data) => Record::Data {
                offset: *offset,
                data,
            },
            Owned::Symlink(path, target) => Record::Symlink {
                path: path.clone(),
                target,
            },
            Owned::End => Record::End,
        }
    }
}

fn sample() -> Vec<Owned> {
    vec![
        Owned::Dir(path("src"), 0o755),
        Owned::File(path("src/a.js"), 0o644, 3),
        Owned::Data(0, b"abc".to_vec()),
        Owned::Dir(path("src/deep"), 0o700),
        // 8 GiB with 4 KiB of data at 1 GiB: only the data travels.
        Owned::File(path("src/deep/sparse"), 0o600, 8 << 30),
        Owned::Data(1 << 30, vec![7; 4096]),
        Owned::Data((1 << 30) + 8192, vec![9; MAX_DATA]),
        Owned::File(path("empty"), 0o4755, 0),
        Owned::Symlink(path("src/link"), b"../empty".to_vec()),
        Owned::File(
            TreePath::new(&b"name with \xff bytes"[..]).unwrap(),
            0o644,
            0,
        ),
        Owned::End,
    ]
}

fn encode(records: &[Owned]) -> Vec<u8> {
    let mut e = TreeEncoder::new();
    for r in records {
        e.put(&r.record());
    }
    e.take(usize::MAX)
}

/// Decodes `stream` pushed in pieces of `piece` bytes; every record, or the first error.
fn decode(stream: &[u8], piece: usize) -> Result<Vec<Owned>, TreeError> {
    let mut d = TreeDecoder::new();
    let mut out = Vec::new();
    for chunk in stream.chunks(piece.max(1)) {
        d.push(chunk)?;
        while let Some(r) = d.next_record()? {
            out.push(Owned::from(r));
        }
    }
    d.finish()?;
    Ok(out)
}

#[test]
fn round_trip_in_any_pieces() {
    let records = sample();
    let stream = encode(&records);
    for piece in [1, 2, 7, 4096, MAX_RECORD, usize::MAX] {
        assert_eq!(
            decode(&stream, piece).unwrap(),
            records,
            "pieces of {piece}"
        );
    }
}

#[test]
fn long_data_is_split_and_empty_data_dropped() {
    let big = vec![5u8; MAX_DATA * 2 + 1];
    let mut e = TreeEncoder::new();
    e.put(&Record::File {
        path: path("f"),
        mode: 0o644,
        size: big.len() as u64 + 10,
    });
    e.put(&Record::Data {
        offset: 10,
        data: &[],
    });
    e.put(&Record::Data {
        offset: 10,
        data: &big,
    });
    e.put(&Record::End);
    let got = decode(&e.take(usize::MAX), 1000).unwrap();
    let offsets: Vec<(u64, usize)> = got
        .iter()
        .filter_map(|r| match r {
            Owned::Data(offset, data) => Some((*offset, data.len())),
            _ => None,
        })
        .collect();
    let m = MAX_DATA as u64;
    assert_eq!(
        offsets,
        [(10, MAX_DATA), (10 + m, MAX_DATA), (10 + 2 * m, 1)]
    );
}

#[test]
fn the_encoder_hands_out_chunks_in_order() {
    let stream = encode(&sample());
    let mut e = TreeEncoder::new();
    for r in sample() {
        e.put(&r.record());
    }
    let mut joined = Vec::new();
    while e.pending() > 0 {
        let chunk = e.take(1000);
        assert!(chunk.len() <= 1000);
        joined.extend(chunk);
    }
    assert_eq!(joined, stream);
}

#[test]
fn the_wire_format_is_fixed() {
    let stream = encode(&[
        Owned::Dir(path("d"), 0o755),
        Owned::File(path("d/f"), 0o644, 5),
        Owned::Data(1, b"xy".to_vec()),
        Owned::Symlink(path("l"), b"d".to_vec()),
        Owned::End,
    ]);
    let want = [
        &[1, 1, 0, 0, 0, b'd', 0xed, 1, 0, 0][..],
        &[
            2, 3, 0, 0, 0, b'd', b'/', b'f', 0xa4, 1, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
        ],
        &[3, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'x', b'y'],
        &[4, 1, 0, 0, 0, b'l', 1, 0, 0, 0, b'd'],
        &[0],
    ]
    .concat();
    assert_eq!(stream, want);
}

#[test]
fn paths_are_relative_and_normal() {
    for good in [
        "a",
        "a/b/c",
        ".hidden",
        "..a",
        "a..",
        "a b",
        &"n".repeat(MAX_NAME),
    ] {
        assert!(TreePath::new(good).is_ok(), "{good:?}");
    }
    let long = ["d"; MAX_PATH / 2 + 2].join("/");
    for (bad, why) in [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../../x", "has a '..' component"),
        ("a/../../x", "has a '..' component"),
        ("..", "has a '..' component"),
        ("./a", "has a '.' component"),
        ("a//b", "has an empty component"),
        ("a/", "has an empty component"),
        ("a\0b", "contains a NUL byte"),
        (
            &"n".repeat(MAX_NAME + 1),
            "has a component longer than 255 bytes",
        ),
        (&long, "longer than 4095 bytes"),
    ] {
        assert_eq!(
            TreePath::new(bad),
            Err(TreeError::Path {
                path: bad.as_bytes().to_vec(),
                why
            }),
            "{bad:?}"
        );
    }
    let p = path("a/b/c");
    assert_eq!(p.split_last(), (Some(&b"a/b"[..]), &b"c"[..]));
    assert_eq!(path("top").split_last(), (None, &b"top"[..]));
    assert_eq!(p.components().collect::<Vec<_>>(), [b"a", b"b", b"c"]);
    assert_eq!(TreePath::child(Some(&p), b"d").unwrap(), path("a/b/c/d"));
    assert_eq!(TreePath::child(None, b"d").unwrap(), path("d"));
    assert!(TreePath::child(Some(&p), b"..").is_err());
}

/// Raw records, written by hand as a hostile guest would.
fn raw(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut r = vec![kind];
    for f in fields {
        r.extend_from_slice(f);
    }
    r
}

fn bytes(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn file(p: &str, size: u64) -> Vec<u8> {
    raw(
        kind::FILE,
        &[
            &bytes(p.as_bytes()),
            &0o644u32.to_le_bytes(),
            &size.to_le_bytes(),
        ],
    )
}

fn data(offset: u64, d: &[u8]) -> Vec<u8> {
    raw(kind::DATA, &[&offset.to_le_bytes(), &bytes(d)])
}

#[test]
fn malformed_streams_are_errors() {
    let end = vec![kind::END];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown type", vec![9]),
        (
            "dotdot path",
            raw(kind::DIR, &[&bytes(b"../../x"), &0o755u32.to_le_bytes()]),
        ),
        (
            "absolute path",
            raw(kind::DIR, &[&bytes(b"/etc"), &0o755u32.to_le_bytes()]),
        ),
        (
            "mode with type bits",
            raw(kind::DIR, &[&bytes(b"d"), &0o40755u32.to_le_bytes()]),
        ),
        ("data first", data(0, b"x")),
        ("empty data", [file("f", 4), data(0, b"")].concat()),
        (
            "overlapping data",
            [file("f", 10), data(0, b"abc"), data(2, b"x")].concat(),
        ),
        (
            "data going back",
            [file("f", 10), data(5, b"abc"), data(0, b"x")].concat(),
        ),
        (
            "data past the size",
            [file("f", 2), data(0, b"abc")].concat(),
        ),
        (
            "offset overflow",
            [file("f", u64::MAX), data(u64::MAX, b"a")].concat(),
        ),
        (
            "data after a directory",
            [
                file("f", 2),
                raw(kind::DIR, &[&bytes(b"d"), &0o755u32.to_le_bytes()]),
                data(0, b"a"),
            ]
            .concat(),
        ),
        (
            "empty target",
            raw(kind::SYMLINK, &[&bytes(b"l"), &bytes(b"")]),
        ),
        (
            "NUL in target",
            raw(kind::SYMLINK, &[&bytes(b"l"), &bytes(b"a\0")]),
        ),
        ("no end", file("f", 0)),
        ("bytes after the end", [end.clone(), end.clone()].concat()),
        ("empty stream", Vec::new()),
    ];
    for (what, stream) in &cases {
        for piece in [1, usize::MAX] {
            assert!(
                decode(stream, piece).is_err(),
                "{what} in pieces of {piece}"
            );
        }
    }
    // After the end, even a later push is refused.
    let mut d = TreeDecoder::new();
    d.push(&end).unwrap();
    assert_eq!(d.next_record().unwrap(), Some(Record::End));
    assert_eq!(d.next_record().unwrap(), None);
    assert!(d.push(&[1]).is_err());
}

#[test]
fn lengths_are_checked_before_the_bytes_arrive() {
    // A path length of 4 GiB, with nothing after it: refused at once, not waited for.
    let mut d = TreeDecoder::new();
    d.push(&[kind::DIR, 0xff, 0xff, 0xff, 0xff]).unwrap();
    assert!(matches!(
        d.next_record(),
        Err(TreeError::Record(DecodeError::TooLong {
            field: "path",
            ..
        }))
    ));
    let mut d = TreeDecoder::new();
    d.push(&file("f", 1 << 40)).unwrap();
    d.next_record().unwrap().unwrap();
    let mut big = vec![kind::DATA];
    big.extend_from_slice(&0u64.to_le_bytes());
    big.extend_from_slice(&(MAX_DATA as u32 + 1).to_le_bytes());
    d.push(&big).unwrap();
    assert!(matches!(
        d.next_record(),
        Err(TreeError::Record(DecodeError::TooLong {
            field: "data",
            ..
        }))
    ));
    let mut d = TreeDecoder::new();
    d.push(&raw(
        kind::SYMLINK,
        &[&bytes(b"l"), &(MAX_TARGET as u32 + 1).to_le_bytes()],
    ))
    .unwrap();
    assert!(matches!(
        d.next_record(),
        Err(TreeError::Record(DecodeError::TooLong {
            field: "target",
            ..
        }))
    ));
}

#[test]
fn errors_say_what_is_wrong() {
    let err = decode(&raw(kind::DIR, &[&bytes(b"../../x"), &[0; 4]]), 64).unwrap_err();
    assert_eq!(err.to_string(), "path \"../../x\": has a '..' component");
    let err = decode(&[file("f", 2), data(0, b"abc")].concat(), 64).unwrap_err();
    assert_eq!(
        err.to_string(),
        "file data: 3 bytes at offset 0 go past the file's size, 2"
    );
    let err = decode(&file("f", 0), 64).unwrap_err();
    assert_eq!(err.to_string(), "tree stream stops before its end record");
}

/// Every truncation and every one-byte change of a valid stream decodes to records or to an
/// error, never a panic.
#[test]
fn no_mutation_panics() {
    let stream = encode(
        &sample()[..4]
            .iter()
            .cloned()
            .chain([Owned::End])
            .collect::<Vec<_>>(),
    );
    for cut in 0..stream.len() {
        assert!(decode(&stream[..cut], 3).is_err(), "cut at {cut}");
    }
    for i in 0..stream.len() {
        for value in [0, 1, 2, 3, 4, 0x7f, 0xff] {
            let mut s = stream.clone();
            s[i] = value;
            let _ = decode(&s, 5);
        }
    }
}
