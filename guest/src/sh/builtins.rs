//! The builtins: what must run inside the shell (`cd`, `exit`, `export`, `unset`, `exec`) and
//! what the image has no program for (`echo`, `true`, `false`, `:`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::parse::is_name;
use super::redirect::Plan;
use super::run::{Exit, Expanded, Program, Shell, CANNOT_RUN};
use super::{say, write_fd};
use crate::error::errno_text;

/// Status of a builtin used wrongly.
const USAGE: i32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Cd,
    Colon,
    Echo,
    Exec,
    Exit,
    Export,
    False,
    True,
    Unset,
}

impl Builtin {
    /// The builtin `argv[0]` names, if any.
    pub fn find(argv: &[Vec<u8>]) -> Option<Self> {
        Some(match argv.first()?.as_slice() {
            b"cd" => Builtin::Cd,
            b":" => Builtin::Colon,
            b"echo" => Builtin::Echo,
            b"exec" => Builtin::Exec,
            b"exit" => Builtin::Exit,
            b"export" => Builtin::Export,
            b"false" => Builtin::False,
            b"true" => Builtin::True,
            b"unset" => Builtin::Unset,
            _ => return None,
        })
    }
}

/// A builtin's standard output and error, as its redirections make them.
struct Io(Plan);

impl Io {
    fn out(&self, bytes: &[u8]) -> i32 {
        let written = match self.0.fd(1) {
            Some(fd) => write_fd(fd, bytes),
            None => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
        };
        match written {
            Ok(()) => 0,
            Err(e) => {
                self.err(&format!("write error: {}", errno_text(&e)));
                1
            }
        }
    }

    fn err(&self, message: &str) {
        if let Some(fd) = self.0.fd(2) {
            let _ = write_fd(fd, format!("sh: {message}\n").as_bytes());
        }
    }
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

impl Shell {
    /// Runs a builtin with its redirections in `plan`.
    pub fn builtin(
        &mut self,
        builtin: Builtin,
        command: &Expanded,
        plan: Plan,
    ) -> Result<i32, Exit> {
        let args = &command.argv[1..];
        let io = Io(plan);
        Ok(match builtin {
            Builtin::Colon | Builtin::True => 0,
            Builtin::False => 1,
            Builtin::Echo => io.out(&echo(args)),
            Builtin::Cd => self.cd(args, &io),
            Builtin::Export => self.export(args, &io),
            Builtin::Unset => self.unset(args, &io),
            Builtin::Exit => return Err(Exit(self.exit_status(args, &io))),
            Builtin::Exec => return self.exec(args, &command.assigns, io.0),
        })
    }

    fn cd(&mut self, args: &[Vec<u8>], io: &Io) -> i32 {
        let args: Vec<&Vec<u8>> = args
            .iter()
            .skip_while(|a| matches!(a.as_slice(), b"-L" | b"-P" | b"--"))
            .collect();
        let (dir, print) = match args.as_slice() {
            [] => (self.vars.get(b"HOME").map(<[u8]>::to_vec), false),
            [dash] if dash.as_slice() == b"-" => {
                (self.vars.get(b"OLDPWD").map(<[u8]>::to_vec), true)
            }
            [dir] => (Some(dir.to_vec()), false),
            _ => {
                io.err("cd: too many arguments");
                return 1;
            }
        };
        let Some(dir) = dir else {
            io.err(if print {
                "cd: OLDPWD not set"
            } else {
                "cd: HOME not set"
            });
            return 1;
        };
        let old = self.vars.get(b"PWD").map(<[u8]>::to_vec).or_else(|| {
            std::env::current_dir()
                .ok()
                .map(|d| d.into_os_string().into_encoded_bytes())
        });
        if let Err(e) = std::env::set_current_dir(OsStr::from_bytes(&dir)) {
            io.err(&format!("cd: {}: {}", lossy(&dir), errno_text(&e)));
            return 1;
        }
        if let Some(old) = old {
            self.vars.set(b"OLDPWD", old);
        }
        let Ok(cwd) = std::env::current_dir() else {
            return 0;
        };
        let mut cwd = cwd.into_os_string().into_encoded_bytes();
        self.vars.set(b"PWD", cwd.clone());
        if print {
            cwd.push(b'\n');
            return io.out(&cwd);
        }
        0
    }

    fn export(&mut self, args: &[Vec<u8>], io: &Io) -> i32 {
        if args.is_empty() || args == [b"-p".to_vec()] {
            let mut out = Vec::new();
            for (name, var) in self.vars.map.iter().filter(|(_, v)| v.exported) {
                out.extend_from_slice(b"export ");
                out.extend_from_slice(name);
                if let Some(value) = &var.value {
                    out.extend_from_slice(b"='");
                    for &b in value {
                        if b == b'\'' {
                            out.extend_from_slice(b"'\\''");
                        } else {
                            out.push(b);
                        }
                    }
                    out.push(b'\'');
                }
                out.push(b'\n');
            }
            return io.out(&out);
        }
        let mut status = 0;
        for arg in args {
            let (name, value) = match arg.iter().position(|&b| b == b'=') {
                Some(eq) => (&arg[..eq], Some(arg[eq + 1..].to_vec())),
                None => (&arg[..], None),
            };
            if !is_name(name) {
                io.err(&format!("export: {}: bad variable name", lossy(name)));
                status = 1;
                continue;
            }
            if let Some(value) = value {
                self.vars.set(name, value);
            }
            self.vars.export(name);
        }
        status
    }

    fn unset(&mut self, args: &[Vec<u8>], io: &Io) -> i32 {
        let mut status = 0;
        for arg in args {
            match arg.as_slice() {
                b"-v" => continue,
                // There are no functions to unset.
                b"-f" => return 0,
                name if is_name(name) => self.vars.unset(name),
                name => {
                    io.err(&format!("unset: {}: bad variable name", lossy(name)));
                    status = 1;
                }
            }
        }
        status
    }

    fn exit_status(&self, args: &[Vec<u8>], io: &Io) -> i32 {
        let Some(arg) = args.first() else {
            return self.vars.status;
        };
        match lossy(arg).parse::<i32>() {
            Ok(n) => n & 0xff,
            Err(_) => {
                io.err(&format!("exit: Illegal number: {}", lossy(arg)));
                USAGE
            }
        }
    }

    /// `exec [COMMAND [ARGS...]]`: the redirections stay; the command replaces the shell.
    fn exec(
        &mut self,
        args: &[Vec<u8>],
        assigns: &[(Vec<u8>, Vec<u8>)],
        plan: Plan,
    ) -> Result<i32, Exit> {
        let args = match args.first() {
            Some(first) if first.as_slice() == b"--" => &args[1..],
            _ => args,
        };
        if let Err(e) = plan.install() {
            say(&format!("exec: {}", errno_text(&e)));
            return Err(Exit(1));
        }
        if args.is_empty() {
            return Ok(0);
        }
        let status = match Program::new(args, self.vars.env(assigns)) {
            Some(program) => program.exec(),
            None => {
                say("exec: an argument or variable contains a NUL byte");
                CANNOT_RUN
            }
        };
        Err(Exit(status))
    }
}

/// `echo [-n] ARGS...`, with the escapes dash's echo knows (`\n`, `\t`, `\c`, `\0NNN`, ...).
fn echo(args: &[Vec<u8>]) -> Vec<u8> {
    let (newline, args) = match args.first() {
        Some(first) if first.as_slice() == b"-n" => (false, &args[1..]),
        _ => (true, args),
    };
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        if !unescape(arg, &mut out) {
            return out;
        }
    }
    if newline {
        out.push(b'\n');
    }
    out
}

/// Appends `arg` with echo's escapes replaced; false at `\c` (stop all output there).
fn unescape(arg: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < arg.len() {
        if arg[i] != b'\\' || i + 1 == arg.len() {
            out.push(arg[i]);
            i += 1;
            continue;
        }
        let escape = arg[i + 1];
        i += 2;
        let byte = match escape {
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'\\' => b'\\',
            b'c' => return false,
            b'0' => {
                let mut value: u8 = 0;
                for _ in 0..3 {
                    match arg.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value.wrapping_mul(8).wrapping_add(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                value
            }
            other => {
                out.push(b'\\');
                other
            }
        };
        out.push(byte);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn sh_echo() {
        assert_eq!(echo(&b(&["a", "b"])), b"a b\n");
        assert_eq!(echo(&b(&["-n", "a"])), b"a");
        assert_eq!(echo(&b(&[])), b"\n");
        assert_eq!(echo(&b(&["a\\tb\\n", "\\x"])), b"a\tb\n \\x\n");
        assert_eq!(echo(&b(&["a\\cb", "c"])), b"a");
        assert_eq!(echo(&b(&["\\0101\\0", "x\\"])), b"A\0 x\\\n");
        assert_eq!(echo(&b(&["-e", "-n"])), b"-e -n\n");
    }

    #[test]
    fn sh_builtins_are_found_by_name() {
        assert_eq!(Builtin::find(&b(&["cd", "x"])), Some(Builtin::Cd));
        assert_eq!(Builtin::find(&b(&[":"])), Some(Builtin::Colon));
        assert_eq!(Builtin::find(&b(&["node"])), None);
        assert_eq!(Builtin::find(&[]), None);
    }
}
