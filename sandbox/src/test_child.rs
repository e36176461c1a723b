//! Tests that run alone in a child process: this test binary run again on one test, which
//! then does what it could not among other tests (take a signal, change the environment).

use std::process::Command;

/// Set in the child.
const CHILD_ENV: &str = "NODEOS_SANDBOX_TEST_CHILD";

/// Whether this process is such a child (a child test does nothing elsewhere).
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The command that runs test `name` (its full path) alone in a child.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1");
    command
}
