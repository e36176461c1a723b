//! PID 1: set the machine up, start the agent and the supervisor, then become Node.js (the
//! REPL, or nsh with `nodeos.shell=nsh`), or, with `nodeos.shell=none`, stay our init and only
//! reap. With an agent, the machine is set up as the host's activation says, once it comes
//! (the agent's template point: agent/mod.rs); without, as the kernel command line says.
//!
//! Order matters: the boot-timer mark comes first (the host measures boot by it); every
//! failure before Node runs prints one line, `nodeos-init: <what failed>: <why>`, and ends the
//! VM with status 121 through the exit port. PID 1 never returns or exits (that would panic
//! the kernel).

pub mod console;
pub mod memory;
pub mod mounts;
pub mod network;
pub mod user;
pub mod warm;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use contract::env::EnvVar;
use contract::params::{ConsoleMode, GuestParams, Shell};
use contract::status;

use crate::error::{Context, Error, Result};
use crate::supervisor::{self, CONTROL_FD, CONTROL_FD_ENV};
use crate::sys::{self, cvt};
use crate::{agent, ports, poweroff};

/// Node.js and the guest's own JavaScript (rootfs/build.sh puts them there).
pub const NODE: &str = "/usr/bin/node";
pub const REPL_JS: &str = "/usr/lib/nodeos/repl.js";
/// nsh, the Node shell (`nodeos.shell=nsh`).
pub const NSH_JS: &str = "/usr/lib/nodeos/nsh/nsh.js";
/// PATH of the REPL and everything it starts: npm's global prefix first.
pub const PATH: &str = "/home/node/.npm-global/bin:/usr/local/bin:/usr/bin:/bin";
/// Node's compile cache (`NODE_COMPILE_CACHE`, in every login's environment): the code V8
/// compiled for a module, kept for the next process that loads it. On the early /run, so that
/// what the template's warm-up compiled (npm, nsh) is in every VM restored from it.
pub const COMPILE_CACHE: &str = "/run/nodeos/compile-cache";

pub fn main() -> ! {
    // A bug here must still end the VM the documented way, not panic the kernel.
    std::panic::set_hook(Box::new(|info| {
        fail(&Error::invalid("internal error", info))
    }));
    match boot() {
        Ok(never) => match never {},
        Err(err) => fail(&err),
    }
}

fn boot() -> Result<std::convert::Infallible> {
    mounts::mount_early()?;
    // As early as it can go: on arm64 the marks port is found by its name in sysfs.
    ports::mark_boot_timer();
    memory::keep_working_set()?;
    console::ensure_stdio();
    console::quiet_kernel();
    let text = std::fs::read_to_string("/proc/cmdline").context(|| "read /proc/cmdline".into())?;
    let params = parse_params(&text)?;
    let (user, groups) = user::lookup(user::USER_NAME)?;
    mounts::user_dir(COMPILE_CACHE, &user)?;
    // With an agent, everything of the VM's own comes from the host's activation: the guest
    // waits for it at its template point, where a snapshot may be taken. Without one, from the
    // command line.
    let (params, env) = match params.agent {
        Some(transport) => {
            if params.warm {
                warm::page_cache(&user, &groups);
            }
            let activated = agent::start(transport, &user, &groups)?;
            let activation = agent::read_activation(activated)?;
            (activation.params, activation.env)
        }
        None => {
            mounts::build_root(&params.upper)?;
            mounts::mount_volumes(&params.volumes)?;
            network::setup(
                network::HOSTNAME,
                params.net.as_ref().map(|net| (net, None)),
            )?;
            (params, Vec::new())
        }
    };
    // From here on the console echoes nothing and, in pipe mode, even a failure line is
    // byte-clean.
    console::setup(&params)?;
    let control = supervisor::start(poweroff::persistent_mounts(&params), &user)?;
    match params.shell {
        Shell::Repl => exec_shell(&params, REPL_JS, &user, &groups, control, &env),
        Shell::Nsh => exec_shell(&params, NSH_JS, &user, &groups, control, &env),
        Shell::None => {
            // PID 1 keeps the control pipe open, so the supervisor never sees it close.
            reap_forever(control)
        }
    }
}

/// The `nodeos.*` parameters in the text of /proc/cmdline; a bad one is a boot failure that
/// names it (`kernel command line: nodeos.vol=...: <why>`).
fn parse_params(text: &str) -> Result<GuestParams> {
    GuestParams::parse(text).map_err(|e| Error::invalid("kernel command line", e))
}

/// `nodeos.shell=none`: PID 1 stays init, reaping whatever ends up as its child. It never
/// writes to the control pipe: the VM ends by the agent's `Poweroff` (or the host).
fn reap_forever(_control: OwnedFd) -> ! {
    loop {
        if let Err(e) = sys::waitpid(-1, 0) {
            if e.raw_os_error() == Some(libc::ECHILD) {
                // No children left (cannot really happen: the supervisor never ends).
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
    }
}

/// Drops to `user` and execs Node with `script` (repl.js or nsh), with the guest's environment
/// `extra` added. Returns only errors from before the drop; a failing exec is reported through
/// the supervisor (PID 1 can no longer use the exit port).
fn exec_shell(
    params: &GuestParams,
    script: &str,
    user: &user::User,
    groups: &[u32],
    control: OwnedFd,
    extra: &[EnvVar],
) -> Result<std::convert::Infallible> {
    // The control pipe goes to Node at a known number, inherited (not close-on-exec).
    if control.as_raw_fd() != CONTROL_FD {
        // SAFETY: dup2 onto CONTROL_FD; whatever was there (nothing of ours) is replaced.
        cvt(unsafe { libc::dup2(control.as_raw_fd(), CONTROL_FD) })
            .context(|| format!("dup2 control pipe to fd {CONTROL_FD}"))?;
        drop(control);
    } else {
        sys::set_cloexec(CONTROL_FD, false)
            .context(|| "clear close-on-exec on the control pipe".into())?;
        std::mem::forget(control); // stays open as CONTROL_FD
    }
    std::env::set_current_dir(&user.home).context(|| format!("chdir {}", user.home.display()))?;

    let mut env = user.login_env(extra);
    env.extend(
        [
            format!("NODEOS_CONSOLE={}", params.console.as_str()),
            format!("{CONTROL_FD_ENV}={CONTROL_FD}"),
            match params.console {
                ConsoleMode::Tty => "TERM=linux".to_string(),
                ConsoleMode::Pipe => "TERM=dumb".to_string(),
            },
        ]
        .map(String::into_bytes),
    );
    let env: Vec<CString> = env
        .into_iter()
        .map(|e| sys::cstring(std::ffi::OsString::from_vec(e)))
        .collect::<Result<_>>()?;
    let argv = [sys::cstring("node")?, sys::cstring(script)?];
    let node = sys::cstring(NODE)?;

    user::drop_privileges(user.uid, user.gid, groups)?;
    let err = crate::exec::execvpe(&node, &argv, &env);
    // Unprivileged now: print the line and let the supervisor end the VM.
    print_failure(&Error::sys(format!("exec {NODE}"), err));
    // SAFETY: CONTROL_FD is the control pipe's write end, open in this process.
    let control = unsafe { std::os::fd::BorrowedFd::borrow_raw(CONTROL_FD) };
    let _ = sys::write_all(control, format!("{}\n", status::BOOT_FAILURE).as_bytes());
    park()
}

/// Prints the one-line boot failure message and ends the VM with the boot-failure status.
fn fail(err: &Error) -> ! {
    print_failure(err);
    poweroff::quiet_console();
    ports::exit_vm(status::BOOT_FAILURE)
}

fn print_failure(err: &Error) {
    let line = format!("nodeos-init: {err}\n");
    let _ = sys::write_all(std::io::stderr().as_fd(), line.as_bytes());
}

/// PID 1 must never exit.
fn park() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_parameter_is_a_boot_failure_naming_it() {
        let err = parse_params("quiet nodeos.cols=0 nodeos.shell=none").unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel command line: nodeos.cols=0: must be a number 1..=65535"
        );
        assert_eq!(
            parse_params("quiet nodeos.shell=none").unwrap().shell,
            Shell::None
        );
    }
}
