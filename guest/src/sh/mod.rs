//! `/bin/sh` (a symlink to this binary): a minimal non-interactive POSIX-ish shell.
//!
//! npm runs package.json scripts with `sh -c SCRIPT`, and Node's `exec()`/`execSync()` run
//! `/bin/sh -c COMMAND`; the image has no other shell. Supported: `sh -c STRING [NAME [ARGS...]]`
//! and `sh FILE [ARGS...]`, with simple commands (quoting, `$VAR`/`${VAR}`/`${VAR:-word}`,
//! `$0`..`$9`, `$@`, `$#`, `$?`, `$$`, `~`, globbing, `NAME=value` prefixes and assignments),
//! `;`, `&&`, `||`, `!`, pipelines, the redirections `<`, `>`, `>>`, `N>&M`, and the builtins
//! `cd`, `exit`, `export`, `unset`, `exec`, `echo`, `true`, `false`, `:`. Anything else
//! (`if`, `for`, `$(...)`, backquotes, `&`, here-documents, ...) is refused with
//! `sh: unsupported syntax: ...` and status 2 before any of the script runs.
//!
//! As dash does, the script's last command replaces the shell when it is a program, so
//! `sh -c "node x.js"` leaves node with the shell's pid, and signals sent to it reach node.

mod builtins;
mod expand;
mod parse;
mod redirect;
mod run;
#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::exec::current_env;
use crate::sys;

/// Status for a script that cannot be parsed or a bad invocation (as dash).
const SYNTAX: i32 = 2;

/// Runs `script` with `$0` = `arg0`, the positional parameters `params` and the environment
/// `env` (`NAME=value` entries); returns the shell's exit status, unless the last command
/// replaced this process.
pub fn run(script: &[u8], arg0: Vec<u8>, params: Vec<Vec<u8>>, env: Vec<Vec<u8>>) -> i32 {
    let script = match parse::parse(script) {
        Ok(script) => script,
        Err(e) => {
            say(&e.to_string());
            return SYNTAX;
        }
    };
    let mut shell = run::Shell {
        vars: expand::Vars::new(arg0, params, env),
    };
    shell.run(&script)
}

/// `sh ARGS...`, `arg0` being how it was called (`$0` for `-c` without NAME).
pub fn main(arg0: &OsStr, args: &[OsString]) -> ! {
    let bytes = |a: &OsString| a.clone().into_vec();
    let env = current_env().into_iter().map(|c| c.into_bytes()).collect();
    let mut i = 0;
    let mut command = false;
    while let Some(arg) = args.get(i).map(|a| a.as_bytes()) {
        match arg {
            b"-c" => command = true,
            b"--" => {
                i += 1;
                break;
            }
            _ if arg.starts_with(b"-") && arg.len() > 1 => {
                say(&format!(
                    "unsupported option {} (only `sh -c STRING [NAME [ARGS...]]` and `sh FILE [ARGS...]`)",
                    String::from_utf8_lossy(arg)
                ));
                sys::exit_now(SYNTAX);
            }
            _ => break,
        }
        i += 1;
    }
    let status = match (command, args.get(i)) {
        (true, None) => {
            say("-c needs a command string");
            SYNTAX
        }
        (true, Some(script)) => {
            let name = args
                .get(i + 1)
                .map_or_else(|| arg0.as_bytes().to_vec(), bytes);
            let params = args.iter().skip(i + 2).map(bytes).collect();
            run(script.as_bytes(), name, params, env)
        }
        (false, Some(file)) => match std::fs::read(file) {
            Ok(script) => {
                let params = args.iter().skip(i + 1).map(bytes).collect();
                run(&script, bytes(file), params, env)
            }
            Err(e) => {
                say(&format!(
                    "cannot open {}: {}",
                    file.to_string_lossy(),
                    crate::error::errno_text(&e)
                ));
                run::NOT_FOUND
            }
        },
        (false, None) => {
            say("there is no interactive shell yet: use `sh -c STRING` or `sh FILE`");
            SYNTAX
        }
    };
    sys::exit_now(status)
}

/// Writes all of `bytes` to descriptor `fd`, which may be closed (then EBADF).
fn write_fd(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = sys::retry(|| {
            // SAFETY: bytes is a valid readable slice of bytes.len() bytes; write only reads it
            // (and fails with EBADF if fd is not open).
            sys::cvt_size(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) })
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// `sh: MESSAGE` on the shell's standard error (straight to descriptor 2: this also runs in
/// forked children, where Rust's locked stderr must not be used).
fn say(message: &str) {
    let _ = write_fd(2, format!("sh: {message}\n").as_bytes());
}
