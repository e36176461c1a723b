//! The channel multiplexer with the input as what its peer sends on the link: frames for
//! channels opened or not, to ports served or not, in any order. It must end with the link
//! (or refuse the link with an error) and write only well-formed frames back.
#![no_main]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::OnceLock;

use contract::hybrid::host_listener_path;
use contract::mux::{self, Role, FRAME_HEADER, MAX_DATA};
use contract::AGENT_PORT;
use libfuzzer_sys::fuzz_target;

/// Most link bytes per run: they must fit in the socket's buffer, written before the run.
const MAX_INPUT: usize = 64 << 10;

/// The multiplexer's listener for local clients, and a local server on [`AGENT_PORT`] that
/// the peer's OPEN frames can reach.
struct Local {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
    server: UnixListener,
}

fn local() -> &'static Local {
    static LOCAL: OnceLock<Local> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mux");
        let listener = UnixListener::bind(&path).unwrap();
        let server = UnixListener::bind(host_listener_path(&path, AGENT_PORT)).unwrap();
        server.set_nonblocking(true).unwrap();
        Local {
            _dir: dir,
            path,
            listener,
            server,
        }
    })
}

/// Checks that `out` is a sequence of whole, well-formed link frames.
fn check_frames(mut out: &[u8]) {
    while !out.is_empty() {
        assert!(out.len() >= FRAME_HEADER, "a partial frame header: {out:?}");
        let op = out[4];
        let len = u32::from_le_bytes(out[5..9].try_into().unwrap()) as usize;
        assert!((1..=6).contains(&op), "op {op}");
        assert!(
            len <= MAX_DATA && out.len() >= FRAME_HEADER + len,
            "length {len}"
        );
        out = &out[FRAME_HEADER + len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&role, link_in)) = data.split_first() else {
        return;
    };
    let role = if role & 1 == 0 {
        Role::Host
    } else {
        Role::Guest
    };
    let local = local();
    let (ours, mut peer) = UnixStream::pair().unwrap();
    peer.write_all(&link_in[..link_in.len().min(MAX_INPUT)])
        .unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    let listener = local.listener.try_clone().unwrap();
    // An error is the multiplexer refusing a peer that broke the protocol.
    let _ = mux::run(ours.into(), listener, local.path.clone(), role, None);
    let mut out = Vec::new();
    peer.read_to_end(&mut out).unwrap();
    check_frames(&out);
    // Connections the peer opened to the local server end with the run.
    while local.server.accept().is_ok() {}
});
