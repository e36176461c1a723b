//! `/usr/bin/env` (a symlink to this binary): the image has no coreutils, but every npm
//! package's bin script starts with `#!/usr/bin/env node`.
//!
//! Supports what scripts use: `env [-i] [-u NAME]... [-S STRING] [NAME=VALUE]... [COMMAND [ARG]...]`;
//! without COMMAND it prints the environment.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use contract::status;

#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The environment the command gets, `NAME=VALUE` entries.
    pub env: Vec<Vec<u8>>,
    /// COMMAND ARG..., empty to print the environment.
    pub command: Vec<Vec<u8>>,
}

/// Applies env's arguments to the environment `env`.
pub fn parse(args: &[OsString], mut env: Vec<Vec<u8>>) -> Result<Invocation, String> {
    let mut args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut i = 0;
    let mut options_done = false;
    while i < args.len() {
        let arg = args[i].clone();
        if !options_done && (arg == b"-i" || arg == b"-" || arg == b"--ignore-environment") {
            env.clear();
        } else if !options_done && arg == b"--" {
            options_done = true;
        } else if !options_done
            && (arg == b"-u"
                || arg.starts_with(b"--unset=")
                || (arg.starts_with(b"-u") && arg.len() > 2))
        {
            let name = if arg == b"-u" {
                i += 1;
                args.get(i).cloned().ok_or("option -u needs a NAME")?
            } else if let Some(name) = arg.strip_prefix(b"--unset=") {
                name.to_vec()
            } else {
                arg[2..].to_vec()
            };
            env.retain(|e| !e.starts_with(&name) || e.get(name.len()) != Some(&b'='));
        } else if !options_done
            && (arg == b"-S"
                || arg.starts_with(b"--split-string=")
                || (arg.starts_with(b"-S") && arg.len() > 2))
        {
            // `#!/usr/bin/env -S node --flag` arrives as one argument "-S node --flag".
            let string = if arg == b"-S" {
                args.get(i + 1).cloned().ok_or("option -S needs a STRING")?
            } else if let Some(s) = arg.strip_prefix(b"--split-string=") {
                s.to_vec()
            } else {
                arg[2..].to_vec()
            };
            let consumed = if arg == b"-S" { 2 } else { 1 };
            let words = split_string(&string)?;
            args.splice(i..i + consumed, words);
            continue;
        } else if !options_done && arg.starts_with(b"-") && arg.len() > 1 {
            return Err(format!("unknown option {}", String::from_utf8_lossy(&arg)));
        } else if let Some(eq) = arg.iter().position(|&b| b == b'=').filter(|&eq| eq > 0) {
            let name = &arg[..=eq];
            env.retain(|e| !e.starts_with(name));
            env.push(arg.clone());
            options_done = true;
        } else {
            return Ok(Invocation {
                env,
                command: args[i..].to_vec(),
            });
        }
        i += 1;
    }
    Ok(Invocation {
        env,
        command: Vec::new(),
    })
}

/// Splits `-S`'s string into words: whitespace separates, '...' and "..." quote, backslash
/// escapes the next character (outside single quotes).
pub fn split_string(s: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut word = Vec::new();
    let mut in_word = false;
    let mut quote: Option<u8> = None;
    let mut bytes = s.iter().copied();
    while let Some(b) = bytes.next() {
        match (quote, b) {
            (Some(q), b) if b == q => quote = None,
            (Some(b'\''), b) => word.push(b),
            (_, b'\\') => {
                let next = bytes.next().ok_or("-S: backslash at the end")?;
                word.push(match next {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'_' => b' ',
                    other => other,
                });
                in_word = true;
            }
            (Some(_), b) => word.push(b),
            (None, b'\'' | b'"') => {
                quote = Some(b);
                in_word = true;
            }
            (None, b' ' | b'\t' | b'\n') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, b) => {
                word.push(b);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("-S: unterminated quote".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Status of env's own failures (bad arguments, output that cannot be written), as GNU env
/// gives them: 125, the number nodeos-vm also gives its own failures.
const ENV_FAILED: i32 = status::HOST_FAILURE as i32;

pub fn main(args: &[OsString]) -> ! {
    let env: Vec<Vec<u8>> = crate::exec::current_env()
        .into_iter()
        .map(CString::into_bytes)
        .collect();
    let invocation = match parse(args, env) {
        Ok(invocation) => invocation,
        Err(why) => {
            eprintln!("env: {why}");
            crate::sys::exit_now(ENV_FAILED);
        }
    };
    if invocation.command.is_empty() {
        let mut out = Vec::new();
        for entry in &invocation.env {
            out.extend_from_slice(entry);
            out.push(b'\n');
        }
        let code =
            if crate::sys::write_all(std::os::fd::AsFd::as_fd(&std::io::stdout()), &out).is_ok() {
                0
            } else {
                ENV_FAILED
            };
        crate::sys::exit_now(code);
    }
    let to_c = |v: &Vec<u8>| CString::new(v.clone()).ok();
    let (Some(argv), Some(env)) = (
        invocation
            .command
            .iter()
            .map(to_c)
            .collect::<Option<Vec<_>>>(),
        invocation.env.iter().map(to_c).collect::<Option<Vec<_>>>(),
    ) else {
        eprintln!("env: argument contains a NUL byte");
        crate::sys::exit_now(ENV_FAILED);
    };
    let err = crate::exec::execvpe(&argv[0], &argv, &env);
    let name = OsString::from_vec(invocation.command[0].clone());
    eprintln!(
        "env: '{}': {}",
        name.to_string_lossy(),
        crate::error::errno_text(&err)
    );
    let code = if err.raw_os_error() == Some(libc::ENOENT) {
        status::NOT_FOUND
    } else {
        status::CANNOT_RUN
    };
    crate::sys::exit_now(i32::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn b(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn shebang_form() {
        let inv = parse(
            &os(&[
                "node",
                "/usr/lib/node_modules/npm/bin/npm-cli.js",
                "install",
            ]),
            b(&["PATH=/usr/bin"]),
        )
        .unwrap();
        assert_eq!(
            inv.command,
            b(&[
                "node",
                "/usr/lib/node_modules/npm/bin/npm-cli.js",
                "install"
            ])
        );
        assert_eq!(inv.env, b(&["PATH=/usr/bin"]));
    }

    #[test]
    fn split_string_shebang() {
        let inv = parse(&os(&["-S node --no-warnings", "/x.js", "a b"]), vec![]).unwrap();
        assert_eq!(inv.command, b(&["node", "--no-warnings", "/x.js", "a b"]));
        let inv = parse(&os(&["-S", "A=1 node 'x y'"]), vec![]).unwrap();
        assert_eq!(inv.env, b(&["A=1"]));
        assert_eq!(inv.command, b(&["node", "x y"]));
    }

    #[test]
    fn assignments_unset_and_ignore() {
        let start = b(&["A=1", "AB=2", "C=3"]);
        let inv = parse(&os(&["-u", "A", "C=4", "D=5"]), start.clone()).unwrap();
        assert_eq!(inv.env, b(&["AB=2", "C=4", "D=5"]));
        assert!(inv.command.is_empty());
        let inv = parse(&os(&["-i", "X=1", "prog"]), start).unwrap();
        assert_eq!(inv.env, b(&["X=1"]));
        assert_eq!(inv.command, b(&["prog"]));
    }

    #[test]
    fn option_like_words_after_the_command_are_the_commands() {
        let inv = parse(&os(&["node", "-e", "1"]), vec![]).unwrap();
        assert_eq!(inv.command, b(&["node", "-e", "1"]));
        assert!(parse(&os(&["-x"]), vec![]).is_err());
    }

    #[test]
    fn split_string_quoting() {
        assert_eq!(
            split_string(br#"a "b c" 'd\e' f\ g"#).unwrap(),
            b(&["a", "b c", "d\\e", "f g"])
        );
        assert!(split_string(b"'open").is_err());
        assert_eq!(split_string(b"  ").unwrap(), Vec::<Vec<u8>>::new());
    }
}
