//! The behaviours of `nodeos-vm start` that every backend must show, written once and run
//! both on this host (tests/start.rs) and inside the KVM box (tests/kvm_box/).
//!
//! A case is one or more boots, each `nodeos-vm start <args>` with `input` piped to the REPL,
//! and a check of what came back. In `args`, `{kernel}`, `{rootfs}` and `{truncated_rootfs}`
//! stand for paths the runner provides.

pub struct Boot {
    pub args: &'static [&'static str],
    pub input: &'static str,
}

pub struct Outcome {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub struct Case {
    pub name: &'static str,
    pub boots: &'static [Boot],
    pub check: fn(&[Outcome]) -> Result<(), String>,
}

const fn boot(args: &'static [&'static str], input: &'static str) -> Boot {
    Boot { args, input }
}

/// The non-empty lines of a REPL's output, after checking the VM ended with status 0.
fn repl_lines(o: &Outcome) -> Result<Vec<&str>, String> {
    if o.status != Some(0) {
        return Err(format!(
            "status {:?}\nstdout: {}\nstderr: {}",
            o.status, o.stdout, o.stderr
        ));
    }
    Ok(o.stdout
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect())
}

fn expect_lines(o: &Outcome, want: &[&str]) -> Result<(), String> {
    let got = repl_lines(o)?;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "expected lines {want:?}, got {got:?}\nstderr: {}",
            o.stderr
        ))
    }
}

/// A nodeos-vm error: status 125 and a message on stderr.
fn expect_error(o: &Outcome, message: &str) -> Result<(), String> {
    if o.status == Some(125) && o.stderr.contains(message) {
        Ok(())
    } else {
        Err(format!(
            "expected status 125 and {message:?}; got {:?}: {}",
            o.status, o.stderr
        ))
    }
}

const OVERLAY_PROBE: &str = "const fs = require('fs')\n\
    fs.readFileSync('/proc/mounts','utf8').split('\\n').find(l => l.split(' ')[1] === '/').split(' ')[2]\n\
    (() => { try { fs.writeFileSync('/run/nodeos/lower/usr/x', '1'); return 'written' } catch (e) { return e.code } })()\n\
    fs.existsSync('/home/node/kept')\n\
    fs.writeFileSync('/home/node/kept', 'data'); fs.readFileSync('/home/node/kept', 'utf8')\n";

const ZOMBIE_PROBE: &str = "const cp = require('child_process')\n\
    cp.execFileSync('node', ['-e', \"require('child_process').spawn('node', ['-e', 'setTimeout(() => {}, 200)'], {detached: true, stdio: 'ignore'}).unref()\"])\n\
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3000)\n\
    require('fs').readdirSync('/proc').filter(p => /^\\d+$/.test(p)).filter(p => { try { return require('fs').readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1][0] === 'Z' } catch { return false } }).length\n";

pub const PINNED_NODE: &str = include_str!("../../../rootfs/versions");

fn pinned_node() -> String {
    PINNED_NODE
        .lines()
        .find_map(|l| l.strip_prefix("NODE_VERSION="))
        .expect("NODE_VERSION in rootfs/versions")
        .trim_matches('"')
        .to_string()
}

pub const CASES: &[Case] = &[
    Case {
        name: "repl_is_pid_1",
        boots: &[boot(&[], "process.pid\n")],
        check: |o| expect_lines(&o[0], &["1"]),
    },
    Case {
        name: "unprivileged_user_and_no_root_account",
        boots: &[boot(
            &[],
            "process.getuid()\nprocess.getgid()\n\
             require('fs').readFileSync('/etc/passwd','utf8').split('\\n').some(l => l.split(':')[0] === 'root' || l.split(':')[2] === '0')\n",
        )],
        check: |o| expect_lines(&o[0], &["1000", "1000", "false"]),
    },
    Case {
        name: "overlay_root_over_a_read_only_image_and_ephemeral_writes",
        boots: &[boot(&[], OVERLAY_PROBE), boot(&[], OVERLAY_PROBE)],
        check: |o| {
            expect_lines(&o[0], &["undefined", "'overlay'", "'EROFS'", "false", "'data'"])?;
            // A fresh VM starts from the image again: the first VM's file is gone.
            expect_lines(&o[1], &["undefined", "'overlay'", "'EROFS'", "false", "'data'"])
        },
    },
    Case {
        name: "node_is_the_pinned_version",
        boots: &[boot(&[], "require('child_process').execFileSync('node', ['--version'], {encoding: 'utf8'}).trim()\n")],
        check: |o| expect_lines(&o[0], &[&format!("'v{}'", pinned_node())]),
    },
    Case {
        name: "two_vcpus",
        boots: &[boot(&["--cpus", "2"], "require('os').cpus().length\n")],
        check: |o| expect_lines(&o[0], &["2"]),
    },
    Case {
        name: "exit_statuses",
        boots: &[boot(&[], ".exit\n"), boot(&[], ""), boot(&[], "process.exit(3)\n"), boot(&[], "1+1\n")],
        check: |o| {
            let got: Vec<_> = o.iter().map(|o| o.status).collect();
            if got != [Some(0), Some(0), Some(3), Some(0)] {
                return Err(format!("statuses {got:?} (.exit, EOF, process.exit(3), 1+1 then EOF)"));
            }
            match o.iter().find(|o| o.stdout.contains("Kernel panic") || o.stderr.contains("Kernel panic")) {
                Some(o) => Err(format!("kernel panic text: {}", o.stdout)),
                None => Ok(()),
            }
        },
    },
    Case {
        name: "no_zombies_under_pid_1",
        boots: &[boot(&[], ZOMBIE_PROBE)],
        check: |o| {
            let lines = repl_lines(&o[0])?;
            match lines.last() {
                Some(&"0") => Ok(()),
                _ => Err(format!("zombie count line missing or non-zero: {lines:?}")),
            }
        },
    },
    Case {
        name: "missing_kernel_error",
        boots: &[boot(&["--kernel", "/nonexistent/vmlinux"], "")],
        check: |o| expect_error(&o[0], "/nonexistent/vmlinux does not exist"),
    },
    Case {
        name: "truncated_image_error",
        boots: &[boot(&["--rootfs", "{truncated_rootfs}"], "")],
        check: |o| expect_error(&o[0], "truncated or corrupt"),
    },
    Case {
        name: "bad_memory_errors",
        boots: &[boot(&["--memory", "100000G"], ""), boot(&["--memory", "12"], ""), boot(&["--memory", "lots"], "")],
        check: |o| {
            expect_error(&o[0], "this host has only")?;
            expect_error(&o[1], "at least")?;
            expect_error(&o[2], "is not a size")
        },
    },
];

pub fn case(name: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// Substitutes the runner's paths into a boot's arguments.
pub fn args(boot: &Boot, kernel: &str, rootfs: &str, truncated_rootfs: &str) -> Vec<String> {
    boot.args
        .iter()
        .map(|a| {
            a.replace("{kernel}", kernel)
                .replace("{rootfs}", rootfs)
                .replace("{truncated_rootfs}", truncated_rootfs)
        })
        .collect()
}

#[test]
fn every_case_has_a_test() {
    let listed = include_str!("mod.rs");
    for case in CASES {
        assert!(
            listed.contains(&format!("            {},", case.name))
                || listed.contains(&format!("            {});", case.name)),
            "{} is not in case_tests!",
            case.name
        );
    }
}

/// Runs the case `name` on this host, each boot `nodeos-vm start OPTIONS ARGS` with `kernel`
/// and `rootfs` for the case's; panics with the check's complaint.
pub fn start_here(
    name: &str,
    options: &[&str],
    kernel: &std::path::Path,
    rootfs: &std::path::Path,
) {
    let case = case(name);
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.img");
    let image = std::fs::read(rootfs).unwrap();
    std::fs::write(&truncated, &image[..image.len() / 2]).unwrap();
    let outcomes: Vec<Outcome> = case
        .boots
        .iter()
        .map(|boot| {
            let args = args(
                boot,
                kernel.to_str().unwrap(),
                rootfs.to_str().unwrap(),
                truncated.to_str().unwrap(),
            );
            let args: Vec<&str> = options
                .iter()
                .copied()
                .chain(args.iter().map(String::as_str))
                .collect();
            let out = super::start_with(&args, boot.input);
            Outcome {
                status: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .collect();
    if let Err(why) = (case.check)(&outcomes) {
        panic!("{name}: {why}");
    }
}
