//! `kvm-box`: run a shell script in a KVM box, for developers.
//!
//! kvm-box [--arch ARCH] [--mem MIB] [--cpus N] [--timeout SECS] [--cache DIR] [--console]
//!         [--file HOST:GUEST[:libs]]... [--module NAME]... -- SCRIPT...

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kvm_box::{BoxFile, BoxRun, Stream};

const USAGE: &str = "\
usage: kvm-box [OPTIONS] -- SCRIPT...

Runs SCRIPT (joined with spaces, run by busybox sh) in an L1 VM under QEMU TCG whose /dev/kvm
works (nested SVM on x86_64, EL2 on aarch64), and exits with the script's status (125 if the
box itself failed).

options:
  --arch ARCH                 L1's architecture: x86_64 (default) or aarch64 (arm64)
  --mem MIB                   L1's RAM (default 2048); packed files must fit in half of it
  --cpus N                    L1's vCPUs (default 1)
  --timeout SECS              kill the box after SECS (default 600)
  --file HOST:GUEST[:libs]    put HOST (file or directory) at GUEST in L1; `:libs` also packs
                              the shared libraries it needs (ldd's, or for aarch64 from the
                              arm64 sysroot in the cache)
  --module NAME               also load this module of L1's kernel (tun, vhost_vsock, ...)
  --cache DIR                 assets cache (default: $KVM_BOX_CACHE or ~/.cache/nodeos-vm)
  --console                   also print L1's kernel console (to stderr)
";

/// The status for a failure of the box rather than of the script (as `docker run` does).
const BOX_FAILED: u8 = 125;

struct Args {
    run: BoxRun,
    cache: PathBuf,
    console: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut run = BoxRun::default();
    let mut cache = kvm_box::default_cache_dir();
    let mut console = false;
    let mut script = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--arch" => {
                run.arch = value("--arch")?
                    .parse()
                    .map_err(|e| format!("--arch: {e}"))?
            }
            "--mem" => {
                run.memory_mib = value("--mem")?.parse().map_err(|e| format!("--mem: {e}"))?
            }
            "--cpus" => {
                run.cpus = value("--cpus")?
                    .parse()
                    .map_err(|e| format!("--cpus: {e}"))?
            }
            "--timeout" => {
                let secs: u64 = value("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?;
                run.timeout = Duration::from_secs(secs);
            }
            "--cache" => cache = PathBuf::from(value("--cache")?),
            "--file" => run.files.push(parse_file(&value("--file")?)?),
            "--module" => run.modules.push(value("--module")?),
            "--console" => console = true,
            "-h" | "--help" => return Err(String::new()),
            "--" => {
                script.extend(args.by_ref());
                break;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if script.is_empty() {
        return Err("no script given (after --)".into());
    }
    run.script = script.join(" ");
    Ok(Args {
        run,
        cache,
        console,
    })
}

fn parse_file(spec: &str) -> Result<BoxFile, String> {
    let (spec, with_libs) = match spec.strip_suffix(":libs") {
        Some(rest) => (rest, true),
        None => (spec, false),
    };
    let (host, guest) = spec
        .split_once(':')
        .ok_or_else(|| format!("--file {spec:?}: expected HOST:GUEST"))?;
    Ok(BoxFile {
        host: host.into(),
        guest: guest.into(),
        with_libs,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("kvm-box: {msg}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(if msg.is_empty() { 0 } else { 2 });
        }
    };
    let show_console = args.console;
    let mut sink = |stream: Stream, bytes: &[u8]| {
        let _ = match stream {
            Stream::Output => std::io::stdout()
                .write_all(bytes)
                .and_then(|_| std::io::stdout().flush()),
            Stream::Console if show_console => std::io::stderr().write_all(bytes),
            Stream::Console => Ok(()),
        };
    };
    match kvm_box::run_streaming(&args.cache, &args.run, &mut sink) {
        Ok(out) => {
            let boot = out
                .boot
                .map(|b| format!("{:.2} s", b.as_secs_f64()))
                .unwrap_or_else(|| "?".into());
            eprintln!(
                "kvm-box: status {}, L1 boot {boot}, total {:.2} s, initramfs {:.1} MiB",
                out.script_status,
                out.wall.as_secs_f64(),
                out.initramfs_bytes as f64 / (1 << 20) as f64
            );
            ExitCode::from(u8::try_from(out.script_status).unwrap_or(BOX_FAILED))
        }
        Err(err) => {
            let mut msg = format!("kvm-box: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                msg.push_str(&format!("\n  caused by: {cause}"));
                source = cause.source();
            }
            eprintln!("{msg}");
            ExitCode::from(BOX_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_specs_parse() {
        let f = parse_file("/usr/bin/qemu-system-x86_64:/usr/bin/qemu-system-x86_64:libs").unwrap();
        assert!(f.with_libs);
        assert_eq!(f.guest, "/usr/bin/qemu-system-x86_64");
        let f = parse_file("./img:/img").unwrap();
        assert!(!f.with_libs);
        assert_eq!(f.host, PathBuf::from("./img"));
        assert!(parse_file("nocolon").is_err());
    }

    #[test]
    fn arch_parses() {
        let args = ["--arch", "arm64", "--", "true"].map(String::from);
        let parsed = parse_args(args.into_iter()).ok().unwrap();
        assert_eq!(parsed.run.arch, kvm_box::Arch::Aarch64);
        let args = ["--arch", "mips", "--", "true"].map(String::from);
        assert!(parse_args(args.into_iter()).is_err());
    }

    #[test]
    fn args_parse() {
        let args = ["--mem", "1024", "--file", "a:/a", "--", "echo", "hi"].map(String::from);
        let parsed = parse_args(args.into_iter()).ok().unwrap();
        assert_eq!(parsed.run.arch, kvm_box::Arch::X86_64);
        assert_eq!(parsed.run.memory_mib, 1024);
        assert_eq!(parsed.run.script, "echo hi");
        assert_eq!(parsed.run.files.len(), 1);
    }
}
