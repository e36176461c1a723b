//! Running a parsed script: lists, pipelines (a process per stage), simple commands (builtins
//! in the shell, programs in a child, or the last one in place of the shell).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use contract::status;

use super::expand::Vars;
use super::parse::{AndOr, Connector, Pipeline, RedirOp, Redirect, Script, Simple};
use super::redirect::Plan;
use super::say;
use crate::error::errno_text;
use crate::sys::{self, ExitStatus, Fork};

/// Status of a command that was not found.
pub const NOT_FOUND: i32 = status::NOT_FOUND as i32;
/// Status of a command that was found but could not be run.
pub const CANNOT_RUN: i32 = status::CANNOT_RUN as i32;
/// Status of a command whose redirections failed.
const REDIRECT_FAILED: i32 = 1;

/// The shell ends now with this status: `exit`, or a failed `exec`.
pub struct Exit(pub i32);

pub struct Shell {
    pub vars: Vars,
}

/// A simple command after expansion.
pub struct Expanded {
    pub argv: Vec<Vec<u8>>,
    pub assigns: Vec<(Vec<u8>, Vec<u8>)>,
    redirects: Vec<(i32, RedirOp, Vec<u8>)>,
}

impl Expanded {
    /// The redirections on top of `plan` (a pipeline stage's pipes); says why on failure.
    pub fn plan(&self, mut plan: Plan) -> Option<Plan> {
        for (fd, op, target) in &self.redirects {
            if let Err(why) = plan.redirect(*fd, *op, target) {
                say(&why);
                return None;
            }
        }
        Some(plan)
    }
}

/// A program ready for execve.
pub struct Program {
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl Program {
    pub fn new(argv: &[Vec<u8>], env: Vec<Vec<u8>>) -> Option<Self> {
        let c = |v: Vec<u8>| CString::new(v).ok();
        let program = Program {
            argv: argv.iter().cloned().map(c).collect::<Option<_>>()?,
            env: env.into_iter().map(c).collect::<Option<_>>()?,
        };
        Some(program)
    }

    /// Replaces this process with the program (searched in the PATH of its environment).
    /// Returns only on failure, with the status for it, having said why.
    pub fn exec(&self) -> i32 {
        default_sigpipe();
        let err = crate::exec::execvpe(&self.argv[0], &self.argv, &self.env);
        let name = self.argv[0].to_string_lossy();
        if err.raw_os_error() == Some(libc::ENOENT) {
            say(&format!("{name}: not found"));
            NOT_FOUND
        } else {
            say(&format!("{name}: {}", errno_text(&err)));
            CANNOT_RUN
        }
    }
}

/// Programs get SIGPIPE's default action, which the Rust runtime set to "ignore" in this
/// process (and an ignored signal stays ignored across execve): `yes | head -1` must end.
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no memory arguments.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// The status a shell reports for a child that ended.
fn status_of(exit: ExitStatus) -> i32 {
    match exit {
        ExitStatus::Code(code) => code,
        ExitStatus::Signal(signal) => i32::from(status::SIGNALED_BASE) + signal,
    }
}

fn wait(pid: libc::pid_t) -> i32 {
    match sys::waitpid(pid, 0) {
        Ok(Some((_, exit))) => status_of(exit),
        Ok(None) => CANNOT_RUN,
        Err(e) => {
            say(&format!("wait: {}", errno_text(&e)));
            CANNOT_RUN
        }
    }
}

impl Shell {
    /// Runs the script; its last command, when it is a program, replaces the shell.
    pub fn run(&mut self, script: &Script) -> i32 {
        let count = script.0.len();
        for (i, item) in script.0.iter().enumerate() {
            let last = i + 1 == count;
            if let Err(Exit(status)) = self.and_or(item, last) {
                return status;
            }
        }
        self.vars.status
    }

    /// `last`: nothing runs after this list, so its last command may replace the shell.
    fn and_or(&mut self, list: &AndOr, last: bool) -> Result<(), Exit> {
        self.pipeline(&list.first, last && list.rest.is_empty())?;
        for (i, (connector, pipeline)) in list.rest.iter().enumerate() {
            let runs = match connector {
                Connector::And => self.vars.status == 0,
                Connector::Or => self.vars.status != 0,
            };
            if runs {
                self.pipeline(pipeline, last && i + 1 == list.rest.len())?;
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, pipeline: &Pipeline, last: bool) -> Result<(), Exit> {
        let status = match pipeline.commands.as_slice() {
            [command] => self.simple(command, last && !pipeline.negated)?,
            commands => self.stages(commands),
        };
        self.vars.status = match (pipeline.negated, status) {
            (false, status) => status,
            (true, 0) => 1,
            (true, _) => 0,
        };
        Ok(())
    }

    fn expand(&self, command: &Simple) -> Expanded {
        let redirect = |r: &Redirect| (r.fd, r.op, self.vars.string(&r.target));
        Expanded {
            argv: self.vars.argv(&command.words),
            assigns: command
                .assigns
                .iter()
                .map(|a| (a.name.clone(), self.vars.string(&a.value)))
                .collect(),
            redirects: command.redirects.iter().map(redirect).collect(),
        }
    }

    /// A pipeline of several commands: each in its own process, joined by pipes; the status
    /// is the last one's.
    fn stages(&mut self, commands: &[Simple]) -> i32 {
        enum Stage {
            Running(libc::pid_t),
            Done(i32),
        }
        let mut stages = Vec::new();
        let mut input: Option<OwnedFd> = None;
        for (i, command) in commands.iter().enumerate() {
            let (next_input, output) = if i + 1 < commands.len() {
                match sys::pipe() {
                    Ok((read, write)) => (Some(read), Some(write)),
                    Err(e) => {
                        say(&format!("pipe: {}", errno_text(&e)));
                        stages.push(Stage::Done(CANNOT_RUN));
                        break;
                    }
                }
            } else {
                (None, None)
            };
            let mut plan = Plan::default();
            if let Some(fd) = &input {
                plan.set(0, fd.as_raw_fd());
            }
            if let Some(fd) = &output {
                plan.set(1, fd.as_raw_fd());
            }
            let expanded = self.expand(command);
            stages.push(match expanded.plan(plan) {
                Some(plan) => match sys::fork() {
                    Ok(Fork::Child) => self.child(&expanded, plan),
                    Ok(Fork::Parent(pid)) => Stage::Running(pid),
                    Err(e) => {
                        say(&format!("fork: {}", errno_text(&e)));
                        Stage::Done(CANNOT_RUN)
                    }
                },
                None => Stage::Done(REDIRECT_FAILED),
            });
            input = next_input;
        }
        drop(input);
        let mut status = 0;
        for stage in stages {
            status = match stage {
                Stage::Running(pid) => wait(pid),
                Stage::Done(status) => status,
            };
        }
        status
    }

    /// In a forked child: installs the redirections and runs the command; never returns.
    fn child(&mut self, command: &Expanded, plan: Plan) -> ! {
        let status = match plan.install() {
            Err(e) => {
                say(&format!("redirection: {}", errno_text(&e)));
                REDIRECT_FAILED
            }
            Ok(()) => match super::builtins::Builtin::find(&command.argv) {
                Some(builtin) => match self.builtin(builtin, command, Plan::default()) {
                    Ok(status) | Err(Exit(status)) => status,
                },
                None => self.program(command).map_or(CANNOT_RUN, |p| p.exec()),
            },
        };
        sys::exit_now(status)
    }

    /// The program a command runs, with its environment.
    fn program(&self, command: &Expanded) -> Option<Program> {
        let program = Program::new(&command.argv, self.vars.env(&command.assigns));
        if program.is_none() {
            say("an argument or variable contains a NUL byte");
        }
        program
    }

    /// One simple command; `last`: it may replace the shell.
    fn simple(&mut self, command: &Simple, last: bool) -> Result<i32, Exit> {
        if command.words.is_empty() {
            // Assignments and redirections only: the variables are set (each seeing the ones
            // before it), the files created.
            for assign in &command.assigns {
                let value = self.vars.string(&assign.value);
                self.vars.set(&assign.name, value);
            }
            let expanded = self.expand(command);
            return Ok(expanded
                .plan(Plan::default())
                .map_or(REDIRECT_FAILED, |_| 0));
        }
        let expanded = self.expand(command);
        if expanded.argv.is_empty() {
            // Words that expanded to nothing: only the redirections are done.
            return Ok(expanded
                .plan(Plan::default())
                .map_or(REDIRECT_FAILED, |_| 0));
        }
        let Some(plan) = expanded.plan(Plan::default()) else {
            return Ok(REDIRECT_FAILED);
        };
        if let Some(builtin) = super::builtins::Builtin::find(&expanded.argv) {
            return self.builtin(builtin, &expanded, plan);
        }
        if last {
            // Nothing runs after it: exec in place of the shell, as dash does, so that the
            // program keeps the shell's pid and signals sent to the shell reach it.
            if let Err(e) = plan.install() {
                say(&format!("redirection: {}", errno_text(&e)));
                return Ok(REDIRECT_FAILED);
            }
            return Ok(self.program(&expanded).map_or(CANNOT_RUN, |p| p.exec()));
        }
        match sys::fork() {
            Ok(Fork::Child) => self.child(&expanded, plan),
            Ok(Fork::Parent(pid)) => {
                drop(plan);
                Ok(wait(pid))
            }
            Err(e) => {
                say(&format!("fork: {}", errno_text(&e)));
                Ok(CANNOT_RUN)
            }
        }
    }
}
