//! `nodeos-vm run [OPTIONS] -- CMD [ARGS...]`: a command in a fresh, throwaway microVM, its
//! output streamed back and its exit status ours (a CI sandbox for Node apps).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use contract::params::Shell;
use contract::status;
use sandbox::agent::{Command, Outcome};
use sandbox::booted::{ConsoleLog, Sandbox, BOOT_TIMEOUT};
use sandbox::vm_config;
use sandbox::volume::{Budget, Mode, Volume};
use vmm::runtime;
use vmm::vm::VmConfig;

use super::vm_options::{choose_backend, VmArgs};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Mount a host folder: HOST:GUEST[:ro|:rw|:rw,git]. Default: the guest may write, its
    /// changes are thrown away; ro: read-only; rw: the guest's changes are copied back
    /// afterwards, but none under .git (git would run hooks or commands a guest planted there:
    /// each refusal is said); rw,git: those too.
    #[arg(short, long = "volume", value_name = "HOST:GUEST[:MODE]")]
    volumes: Vec<String>,
    #[command(flatten)]
    exec: ExecOptions,
    /// When the command has ended, write how on stderr as one JSON line, after its own
    /// output: {"exit_status": N, "outcome": "exited"|"signaled"|"timed_out"|"not_found"|
    /// "not_executable", "code"|"signal"|"timeout_ms"|"message": ...}.
    #[arg(long)]
    json_status: bool,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// How a command runs in the guest (`run` and `exec`).
#[derive(Debug, clap::Args)]
pub struct ExecOptions {
    /// Working directory of the command in the guest (absolute).
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Set an environment variable: NAME=VALUE, or NAME to pass this host's value.
    #[arg(short, long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Pass this process's standard input to the command (otherwise it reads nothing).
    #[arg(short, long)]
    interactive: bool,
    /// Kill the command after this long: 30s, 5m, 1h, 500ms, or seconds.
    #[arg(long, value_name = "DURATION", value_parser = vm_config::duration)]
    timeout: Option<Duration>,
}

impl ExecOptions {
    /// The agent command for `argv` with these options.
    pub fn command(&self, argv: Vec<Vec<u8>>) -> anyhow::Result<Command> {
        Ok(Command {
            argv,
            env: self
                .env
                .iter()
                .map(|e| env_entry(e))
                .collect::<anyhow::Result<_>>()?,
            cwd: self.workdir.clone().map(workdir).transpose()?,
            stdin: self.interactive,
            timeout: self.timeout,
            container: None,
            tty: None,
        })
    }
}

/// How long after the command's timeout the host gives the guest to report it.
const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    args.vm.seccomp.warn_if_off();
    args.vm.jail.warn_if_off();
    let volumes = args
        .volumes
        .iter()
        .map(|v| Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    let dir = runtime::scratch_dir("run")?;
    let disks: Vec<_> = volumes
        .iter()
        .enumerate()
        .map(|(i, v)| v.disk(dir.path().join(format!("volume{i}.img"))))
        .collect();
    // Before anything is built or packed: a bad set of volumes costs nothing.
    VmConfig::check_volumes(&disks)?;
    let command = args
        .exec
        .command(args.command.into_iter().map(OsString::into_vec).collect())?;
    let backend = choose_backend(
        args.vm.backend,
        args.vm.arch,
        &args.vm.jail,
        !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )?;
    let (mut config, _held) = args.vm.config()?;
    config.shell = Shell::None;
    config.agent_socket = Some(dir.path().join("agent.sock"));
    let budgets = volumes
        .iter()
        .zip(&disks)
        .map(|(volume, disk)| volume.pack(&disk.image))
        .collect::<Result<Vec<_>, _>>()?;
    config.volumes.extend(disks.iter().cloned());
    args.vm.restore_or_boot(&backend, &mut config)?;

    let vm = Sandbox::boot(backend, config, ConsoleLog::Tail)?;
    let outcome = vm
        .wait_ready(BOOT_TIMEOUT)
        .and_then(|()| vm.exec(&command, command.timeout.map(|t| t + TIMEOUT_GRACE)));
    // The guest's changes come through its agent, while the VM still runs.
    let copied_back = outcome.is_err() || copy_back(&vm, &volumes, &budgets, dir.path());
    // A VM that failed explains more than the agent that never answered.
    let report = vm.stop();
    let outcome = match (outcome, report) {
        (Ok(outcome), Ok(_)) => outcome,
        (_, Err(e)) | (Err(e), Ok(_)) => return Err(e.into()),
    };
    let status = exit_status(&outcome, &command);
    if args.json_status {
        eprintln!("{}", json_status(&outcome, status));
    }
    if !copied_back {
        eprintln!(
            "nodeos-vm: the command's exit status was {status}; nodeos-vm exits with {} since the guest's changes were not all copied back",
            status::HOST_FAILURE
        );
        return Ok(status::HOST_FAILURE);
    }
    Ok(status)
}

/// Copies each `:rw` volume's changes back from the guest (`Volume::copy_back`), saying on
/// stderr, one line each, what was refused and what failed. Whether every one was copied.
fn copy_back(vm: &Sandbox, volumes: &[Volume], budgets: &[Budget], dir: &Path) -> bool {
    let mut copied = true;
    for (i, (volume, budget)) in volumes.iter().zip(budgets).enumerate() {
        if !matches!(volume.mode, Mode::ReadWrite { .. }) {
            continue;
        }
        let scratch = dir.join(format!("volume{i}.out"));
        let result = std::fs::create_dir(&scratch)
            .context("creating a folder to unpack a volume")
            .and_then(|()| {
                Ok(volume.copy_back(budget, &mut vm.export(&volume.guest), &scratch)?)
            });
        match result {
            Ok(refusals) => {
                for refusal in refusals {
                    eprintln!("nodeos-vm: {refusal}");
                }
            }
            Err(e) => {
                eprintln!("nodeos-vm: error: {e:#}");
                copied = false;
            }
        }
    }
    copied
}

/// Our exit status for the command's outcome; says on stderr what a status alone cannot.
pub fn exit_status(outcome: &Outcome, command: &Command) -> u8 {
    let name = String::from_utf8_lossy(&command.argv[0]);
    match outcome {
        Outcome::Exited(code) => (*code & 0xff) as u8,
        Outcome::Signaled(signal) => status::SIGNALED_BASE.saturating_add(*signal as u8),
        Outcome::TimedOut(after) => {
            eprintln!(
                "nodeos-vm: {name} timed out after {}; it was killed",
                humanize(*after)
            );
            status::TIMED_OUT
        }
        Outcome::NotFound(message) => {
            eprintln!("nodeos-vm: {message}");
            status::NOT_FOUND
        }
        Outcome::NotExecutable(message) => {
            eprintln!("nodeos-vm: {message}");
            status::CANNOT_RUN
        }
    }
}

/// `run --json-status`'s line for `outcome`, whose exit status is `status`.
fn json_status(outcome: &Outcome, status: u8) -> serde_json::Value {
    let (kind, detail) = match outcome {
        Outcome::Exited(code) => ("exited", serde_json::json!({ "code": code })),
        Outcome::Signaled(signal) => ("signaled", serde_json::json!({ "signal": signal })),
        Outcome::TimedOut(after) => (
            "timed_out",
            serde_json::json!({ "timeout_ms": after.as_millis() as u64 }),
        ),
        Outcome::NotFound(message) => ("not_found", serde_json::json!({ "message": message })),
        Outcome::NotExecutable(message) => {
            ("not_executable", serde_json::json!({ "message": message }))
        }
    };
    let mut line = serde_json::json!({ "exit_status": status, "outcome": kind });
    if let (Some(line), Some(detail)) = (line.as_object_mut(), detail.as_object()) {
        line.extend(detail.clone());
    }
    line
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `NAME=VALUE`, or `NAME` for this host's value.
pub fn env_entry(given: &str) -> anyhow::Result<Vec<u8>> {
    let (name, value) = match given.split_once('=') {
        Some((name, value)) => (name, value.to_string()),
        None => (
            given,
            std::env::var(given).with_context(|| {
                format!("--env {given}: no such variable here; write --env {given}=VALUE")
            })?,
        ),
    };
    if name.is_empty() || name.contains('\0') || value.contains('\0') {
        bail!("--env {given:?}: expected NAME=VALUE with a non-empty NAME");
    }
    Ok(format!("{name}={value}").into_bytes())
}

pub fn workdir(dir: String) -> anyhow::Result<Vec<u8>> {
    if !dir.starts_with('/') || dir.contains('\0') {
        bail!("--workdir {dir:?}: must be an absolute path in the guest, like /app");
    }
    Ok(dir.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries() {
        assert_eq!(env_entry("A=b=c").unwrap(), b"A=b=c");
        assert_eq!(env_entry("A=").unwrap(), b"A=");
        std::env::set_var("NODEOS_VM_TEST_ENV", "v");
        assert_eq!(
            env_entry("NODEOS_VM_TEST_ENV").unwrap(),
            b"NODEOS_VM_TEST_ENV=v"
        );
        assert!(env_entry("=x").is_err());
        assert!(env_entry("NODEOS_VM_SURELY_UNSET_VAR").is_err());
    }

    #[test]
    fn json_statuses() {
        assert_eq!(
            json_status(&Outcome::Exited(3), 3).to_string(),
            r#"{"code":3,"exit_status":3,"outcome":"exited"}"#
        );
        assert_eq!(
            json_status(&Outcome::Signaled(9), 137).to_string(),
            r#"{"exit_status":137,"outcome":"signaled","signal":9}"#
        );
        let line = json_status(&Outcome::NotFound("nope: not found".into()), 127);
        assert_eq!(line["outcome"], "not_found");
        assert_eq!(line["message"], "nope: not found");
    }

    #[test]
    fn workdirs() {
        assert_eq!(workdir("/app".into()).unwrap(), b"/app");
        assert!(workdir("app".into()).is_err());
    }
}
