//! Before the template point: Node.js and npm run once, as the guest's user, and end, so that
//! what they read of the compressed image (the `node` binary, its libraries, npm's modules)
//! sits decompressed in the page cache of every VM restored from the template. Under TCG this
//! is most of a cold `node -e 0` (1.9 s against 0.16 s warm). No Node.js process lives on into
//! the template: each is waited for.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use super::user::{self, User};
use super::{NODE, PATH};
use crate::sys::{self, Fork};

/// What runs: Node alone, npm's command line, nsh running a command. Their modules' compiled
/// code lands in Node's compile cache ([`super::COMPILE_CACHE`]).
const RUNS: [&[&str]; 3] = [
    &["node", "-e", "0"],
    &[
        "node",
        "/usr/lib/node_modules/npm/bin/npm-cli.js",
        "--version",
    ],
    &["node", super::NSH_JS, "-c", "true"],
];

/// Runs each of [`RUNS`] as `user` to its end. Best effort: a run that fails only leaves the
/// cache colder.
pub fn page_cache(user: &User, groups: &[u32]) {
    let Ok(null) = File::options().read(true).write(true).open("/dev/null") else {
        return;
    };
    for argv in RUNS {
        match sys::fork() {
            Ok(Fork::Child) => run(argv, user, groups, null.into()),
            Ok(Fork::Parent(pid)) => {
                let _ = sys::waitpid(pid, 0);
            }
            Err(_) => return,
        }
    }
}

fn run(argv: &[&str], user: &User, groups: &[u32], null: OwnedFd) -> ! {
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors of this child only.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    let cstrings = |items: &[String]| -> Option<Vec<CString>> {
        items
            .iter()
            .map(|s| CString::new(s.as_str()).ok())
            .collect()
    };
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    // The image's own home is read-only here: nothing is written.
    let env = [
        format!("PATH={PATH}"),
        "HOME=/nonexistent".to_string(),
        format!("NODE_COMPILE_CACHE={}", super::COMPILE_CACHE),
    ];
    let (Some(argv), Some(env), Ok(node)) = (cstrings(&argv), cstrings(&env), CString::new(NODE))
    else {
        sys::exit_now(127)
    };
    sys::reset_signals();
    if user::drop_privileges(user.uid, user.gid, groups).is_err() {
        sys::exit_now(126);
    }
    let _ = crate::exec::execvpe(&node, &argv, &env);
    sys::exit_now(127)
}
