//! A containerd of our own for tests and benchmarks: Debian's daemon on its own root, state
//! and socket in a temporary folder, with the NodeOS image imported, `ctr` to drive it, and
//! our shim (`containerd-shim-nodeos-v2`) on its PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The NodeOS image's name once imported.
pub const IMAGE: &str = "docker.io/library/nodeos:latest";
/// Our runtime's name.
pub const RUNTIME: &str = "io.containerd.nodeos.v2";
/// The containerd namespace of everything here.
pub const NAMESPACE: &str = "nodeos-test";
/// The most any one `ctr` command may take (a microVM's boot under TCG included).
const CTR_TIME: &str = "180";

/// A containerd of our own, with an image imported and our shim on its PATH.
pub struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
    /// Where our shim's binary is.
    shim_dir: PathBuf,
}

impl Containerd {
    /// Starts one on folders of its own, finding our shim in `shim_dir`, and imports the
    /// image `archive` into it (`IMAGE`).
    pub fn start(shim_dir: &Path, archive: &Path) -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let p = dir.path().display();
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{p}/root\"\nstate = \"{p}/state\"\n\
                 [grpc]\naddress = \"{p}/containerd.sock\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\ndisable = true\n"
            ),
        )
        .unwrap();
        let mut ours = Containerd {
            dir,
            daemon: Command::new("true").spawn().unwrap(),
            shim_dir: shim_dir.to_path_buf(),
        };
        ours.restart();
        let imported = ours.ctr_ok(&["image", "import", archive.to_str().unwrap()]);
        assert!(imported.contains(IMAGE), "{imported}");
        ours
    }

    /// Ends the daemon (SIGTERM, as a service manager does) if it runs, and starts it anew
    /// on the same folders; waits until it answers.
    pub fn restart(&mut self) {
        let _ = kill(Pid::from_raw(self.daemon.id() as i32), Signal::SIGTERM);
        let _ = self.daemon.wait();
        // containerd finds a runtime's shim on its PATH.
        let path = format!(
            "{}:{}",
            self.shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .unwrap();
        self.daemon = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while !self.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < until,
                "containerd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command
            .args([CTR_TIME, "ctr", "--address"])
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().unwrap()
    }

    /// `ctr args`, which must succeed: its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ctr {args:?}: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
    }

    /// `ctr run` of the NodeOS image in a microVM: `options` before the image, then the
    /// container's id and its command.
    pub fn run(&self, options: &[&str], id: &str, command: &[&str]) -> Output {
        let mut args = vec!["run", "--runtime", RUNTIME];
        args.extend_from_slice(options);
        args.extend_from_slice(&[IMAGE, id]);
        args.extend_from_slice(command);
        self.ctr(&args)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Its shims first (each stops its microVM as it goes), then containerd.
        for pid in processes_naming(&format!("-namespace {NAMESPACE} -id")) {
            if shim_of(pid, self.dir.path()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Whatever of its snapshots is still mounted (a failed test's container) goes too.
        let _ = Command::new("umount")
            .args(["--recursive", "--lazy"])
            .arg(self.dir.path().join("root"))
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether the shim `pid` is one of the containerd whose folder is `dir`.
fn shim_of(pid: i32, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()))
}

/// The processes whose command line (arguments joined by spaces) contains `text`.
pub fn processes_naming(text: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let joined = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if joined.contains(text) && pid != std::process::id() as i32 {
            found.push(pid);
        }
    }
    found
}
