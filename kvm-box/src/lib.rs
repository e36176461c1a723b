//! The KVM box: runs a shell script inside an L1 Linux VM that QEMU emulates with TCG and a CPU
//! that virtualizes: on x86-64 an AMD CPU with SVM and nested paging, whose kvm-amd Debian's
//! cloud kernel loads; on arm64 ([`BoxRun::arch`]) QEMU's `virt` machine with EL2, whose KVM
//! Debian's arm64 cloud kernel has built in. So the script gets a `/dev/kvm` with the
//! semantics of hardware virtualization, on machines whose own `/dev/kvm` cannot boot Linux
//! (docs/kvm-hosts.md).
//!
//! One [`run`] packs an initramfs (static busybox, the KVM modules, an `/init`, the script and
//! the caller's files, with their shared libraries if asked), boots L1, runs the script with
//! `sh`, and returns its output and exit status. The script's stdout and stderr go to their
//! own device (x86-64: L1's second UART; arm64: a virtio console), the kernel's console to the
//! first UART, so kernel noise never mixes into what the script prints. A box costs a few
//! seconds; batch many checks into one run with [`Script`].
//!
//! Absolute times inside the box are not hardware times (everything is emulated); compare
//! ratios between runs in the same box.
//!
//! Environment: `KVM_BOX_CACHE` (assets cache, see [`default_cache_dir`]), `KVM_BOX_QEMU`
//! and `KVM_BOX_QEMU_AARCH64` (the host QEMU for each architecture's L1), `KVM_BOX_KEEP=1`
//! (keep each run's work directory: initramfs, logs), `KVM_BOX_CPUS` (host cores the boxes
//! of one process use at once, one per L1 vCPU; default all of them: a TCG vCPU keeps a host
//! core busy, and boxes sharing a core would slow each other into their timeouts).

mod apt;
mod assets;
mod cpio;
mod elf;
mod error;
mod holder;
mod host;
mod initramfs;
mod jobs;
mod l1;
mod modules;
mod platform;
mod script;
mod sysroot;
mod watchdog;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use assets::{ensure as ensure_assets, Assets};
pub use contract::arch::Arch;
pub use elf::ElfError;
pub use error::BoxError;
pub use host::program as host_program;
pub use script::{parse_checks, shell_quote, Check, Script, DEFAULT_CHECK_TIMEOUT, HTTP_CLIENT};
pub use sysroot::{Sysroot, BASE_PACKAGES};

use initramfs::{Tree, MARK_NO_KVM, MARK_STATUS};
use platform::Platform;

pub const DEFAULT_MEMORY_MIB: u32 = 2048;
/// One vCPU: on a busy 2-core host, L1 with 2 vCPUs (MTTCG) used ~50% more host CPU and
/// booted L2 no faster. Give L1 as many vCPUs as an L2 guest has when testing L2 SMP.
pub const DEFAULT_CPUS: u8 = 1;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// L1's root is a tmpfs that may fill half of RAM; this much of that half stays free for
/// what the script writes.
const ROOT_HEADROOM_MIB: u64 = 64;
const MIB: u64 = 1 << 20;

/// A host file (or directory, copied recursively) to put into L1.
#[derive(Debug, Clone)]
pub struct BoxFile {
    pub host: PathBuf,
    /// Absolute path inside L1.
    pub guest: String,
    /// Also pack the shared libraries it needs and the dynamic loader: in a box of the host's
    /// architecture those `ldd` lists, at their host paths; in another architecture's, those
    /// its ELF names found in that architecture's [`Sysroot`] (which has [`BASE_PACKAGES`];
    /// add a program's other libraries there with [`Sysroot::ensure`]), at their paths on the
    /// target. For an executable file only.
    pub with_libs: bool,
}

impl BoxFile {
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            guest: guest.into(),
            with_libs: false,
        }
    }

    /// An executable and the shared libraries it needs.
    pub fn with_libs(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Self {
            with_libs: true,
            ..Self::new(host, guest)
        }
    }

    /// A host file at the same path in L1.
    pub fn same_path(host: impl Into<PathBuf>) -> Self {
        let host = host.into();
        let guest = host.to_string_lossy().into_owned();
        Self::new(host, guest)
    }
}

/// What `nodeos-vm run -v` needs in L1 to pack a volume and read one back: e2fsprogs' mke2fs
/// (busybox's lacks the options it uses) with its configuration, and debugfs, at their host
/// paths.
pub fn volume_tools() -> Result<Vec<BoxFile>, BoxError> {
    let mut files = vec![BoxFile::same_path("/etc/mke2fs.conf")];
    for tool in ["mke2fs", "debugfs"] {
        let path = host::program(tool, "e2fsprogs")?;
        let guest = path.to_string_lossy().into_owned();
        files.push(BoxFile::with_libs(path, guest));
    }
    Ok(files)
}

/// [`volume_tools`] for an arm64 box, and the tools that check and grow users' disks (e2fsck,
/// resize2fs): Debian's arm64 e2fsprogs from `sysroot` (which must hold it), at /usr/sbin,
/// ahead of busybox's applets on L1's PATH.
pub fn sysroot_volume_tools(sysroot: &Sysroot) -> Result<Vec<BoxFile>, BoxError> {
    let mut files = vec![BoxFile::new(
        in_sysroot(sysroot, "/etc/mke2fs.conf", "e2fsprogs")?,
        "/etc/mke2fs.conf",
    )];
    for tool in ["mke2fs", "debugfs", "e2fsck", "resize2fs"] {
        files.push(BoxFile::with_libs(
            in_sysroot(sysroot, &format!("/sbin/{tool}"), "e2fsprogs")?,
            format!("/usr/sbin/{tool}"),
        ));
    }
    Ok(files)
}

/// Debian's arm64 QEMU from `sysroot` (which must hold `qemu-system-arm`), with its libraries
/// and its data (firmware, keymaps), at the paths it has in Debian.
pub fn sysroot_qemu(sysroot: &Sysroot) -> Result<Vec<BoxFile>, BoxError> {
    let qemu = "/usr/bin/qemu-system-aarch64";
    Ok(vec![
        BoxFile::with_libs(in_sysroot(sysroot, qemu, "qemu-system-arm")?, qemu),
        BoxFile::new(
            in_sysroot(sysroot, "/usr/share/qemu", "qemu-system-arm")?,
            "/usr/share/qemu",
        ),
    ])
}

/// The file (or the folder, as it is) of `sysroot` at `guest`, which `package` brings.
fn in_sysroot(sysroot: &Sysroot, guest: &str, package: &str) -> Result<PathBuf, BoxError> {
    let folder = sysroot.path().join(guest.trim_start_matches('/'));
    let found = sysroot
        .resolve(guest)
        .or_else(|| folder.is_dir().then_some(folder));
    found.ok_or_else(|| BoxError::BadFile {
        guest: guest.to_string(),
        reason: format!(
            "not in the sysroot {} (its package: {package})",
            sysroot.path().display()
        ),
    })
}

/// This workspace's nodeos-vm built for `arch` in `profile` (`dev` or `release`), for a box of
/// that architecture: `cli/cross-build.sh`, into `<cache>/cross-<arch>-<profile>/nodeos-vm`,
/// cargo's build kept in `<cache>/cross-target` between runs.
pub fn nodeos_vm_for(cache: &Path, arch: Arch, profile: &str) -> Result<PathBuf, BoxError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/cross-build.sh");
    let out = cache.join(format!("cross-{}-{profile}", arch.name()));
    host::output(
        Command::new("bash")
            .arg(script)
            .arg(arch.name())
            .arg(&out)
            .arg(profile)
            .env("CARGO_TARGET_DIR", cache.join("cross-target")),
    )?;
    Ok(out.join("nodeos-vm"))
}

/// One box run.
#[derive(Debug, Clone)]
pub struct BoxRun {
    /// L1's architecture: x86-64 (the default) or arm64.
    pub arch: Arch,
    pub files: Vec<BoxFile>,
    /// Run by busybox `sh` in `/root`, stdin `/dev/null`. `/tmp` is a tmpfs; the root is one too.
    pub script: String,
    /// L1's RAM; the packed files must fit in half of it (see [`BoxError::TooBig`]).
    pub memory_mib: u32,
    pub cpus: u8,
    /// arm64: L1's interrupt controller a GICv2 (as a Raspberry Pi's), whose KVM gives its
    /// guests a vGICv2, instead of a GICv3. Ignored on x86-64.
    pub gic_v2: bool,
    /// Modules of L1's kernel to load after its own (`tun`, `vhost_vsock`, `vhost_net`, ...),
    /// with their dependencies.
    pub modules: Vec<String>,
    /// For the whole run, L1's boot included; QEMU is killed after it.
    pub timeout: Duration,
}

impl BoxRun {
    pub fn new(script: impl Into<String>) -> Self {
        Self {
            arch: Arch::X86_64,
            files: Vec::new(),
            script: script.into(),
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            gic_v2: false,
            modules: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn file(mut self, file: BoxFile) -> Self {
        self.files.push(file);
        self
    }

    pub fn arch(mut self, arch: Arch) -> Self {
        self.arch = arch;
        self
    }
}

impl Default for BoxRun {
    fn default() -> Self {
        Self::new("")
    }
}

#[derive(Debug, Clone)]
pub struct BoxOutput {
    /// The script's stdout and stderr (their own tty in L1, in raw mode: bytes as written).
    pub output: String,
    /// L1's kernel console and `/init`'s own lines (first UART).
    pub console: String,
    pub script_status: i32,
    /// From QEMU's start to the script's start (L1 boot, module loads); `None` if not seen.
    pub boot: Option<Duration>,
    /// From QEMU's start to its exit.
    pub wall: Duration,
    pub initramfs_bytes: u64,
}

impl BoxOutput {
    /// The sections a [`Script`]'s checks printed, by name.
    pub fn checks(&self) -> std::collections::BTreeMap<String, Check> {
        parse_checks(&self.output)
    }
}

/// Which of L1's ttys a chunk of live output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The kernel's console and `/init`'s messages.
    Console,
    /// The script's stdout and stderr.
    Output,
}

/// `KVM_BOX_CACHE`, else `nodeos-vm` in the user's cache folder (`dirs`:
/// `$XDG_CACHE_HOME` when it is an absolute path, else `~/.cache`), else
/// `/var/tmp/nodeos-vm`. Assets land in its `kvm-box/` (x86-64's: about 105 MB) and
/// `kvm-box/arm64/` (about 90 MB, with the arm64 apt state and sysroot).
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("KVM_BOX_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|dir| dir.join("nodeos-vm")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp/nodeos-vm"))
}

/// Runs `run` in a box and waits for it; see the crate docs.
pub fn run(cache_dir: &Path, run: &BoxRun) -> Result<BoxOutput, BoxError> {
    run_streaming(cache_dir, run, &mut |_, _| {})
}

/// How many times a box whose L1 stalls for good is run.
const STALLED_TRIES: u32 = 4;

/// [`run`], passing output to `sink` as it arrives (polled every few tens of milliseconds).
/// A box whose L1 stalls for good (an emulator fault, see the crate's README) is run again from
/// the start, [`STALLED_TRIES`] times in all, its output passed to `sink` anew, each try with
/// `run.timeout`.
pub fn run_streaming(
    cache_dir: &Path,
    run: &BoxRun,
    sink: &mut dyn FnMut(Stream, &[u8]),
) -> Result<BoxOutput, BoxError> {
    let platform = Platform::of(run.arch);
    let qemu = host::qemu(platform)?;
    let assets = assets::ensure(cache_dir, run.arch)?;

    let module_tree = modules::ModuleTree::open(&assets.module_dir, &assets.plain_module_dir)?;
    let mut wanted: Vec<String> = platform.modules.iter().map(|m| m.to_string()).collect();
    wanted.extend(run.modules.iter().cloned());
    let load_order = module_tree.load_order(&wanted)?;

    let sysroot = if run.arch != Arch::host() && run.files.iter().any(|f| f.with_libs) {
        Some(Sysroot::ensure(cache_dir, run.arch, BASE_PACKAGES)?)
    } else {
        None
    };
    let holder = holder::ensure(cache_dir, platform)?;
    let mut tree = Tree::base(
        &assets,
        platform,
        &load_order,
        holder.as_deref(),
        &run.script,
    )?;
    for file in &run.files {
        tree.add(file, sysroot.as_ref())?;
    }
    let work = tempfile::Builder::new()
        .prefix("kvm-box.")
        .tempdir()
        .map_err(BoxError::io(
            "creating a work directory in",
            std::env::temp_dir(),
        ))?;
    let initrd = work.path().join("initramfs.cpio");
    let initramfs_bytes = tree.write_cpio(&initrd)?;
    let limit_mib = (u64::from(run.memory_mib) / 2).saturating_sub(ROOT_HEADROOM_MIB);
    if initramfs_bytes / MIB > limit_mib {
        return Err(BoxError::TooBig {
            size_mib: initramfs_bytes / MIB,
            limit_mib,
            memory_mib: run.memory_mib,
        });
    }
    tracing::debug!(initramfs_bytes, kernel = %assets.kernel_version, arch = %run.arch, "booting L1");

    let _slot = jobs::acquire(run.cpus);
    let l1 = l1::L1 {
        platform,
        qemu: &qemu,
        kernel: &assets.vmlinuz,
        initrd: &initrd,
        memory_mib: run.memory_mib,
        cpus: run.cpus,
        gic_v2: run.gic_v2,
        work_dir: work.path(),
    };
    let mut result = l1.run(run.timeout, sink);
    for _ in 1..STALLED_TRIES {
        if !result
            .as_ref()
            .is_ok_and(|r| matches!(r.ended, l1::Ended::Stalled))
        {
            break;
        }
        // L1 is fresh each time: nothing of the try before is left.
        eprintln!("kvm-box: L1 stalled (QEMU used no CPU for {:?}: an emulator fault); running the box again from the start", watchdog::STALL);
        result = l1.run(run.timeout, sink);
    }
    if std::env::var_os("KVM_BOX_KEEP").is_some_and(|v| v != "0") {
        let kept = work.keep();
        eprintln!("kvm-box: kept the work directory {}", kept.display());
    }
    let result = result?;

    let qemu_status = match result.ended {
        l1::Ended::TimedOut => {
            return Err(BoxError::Timeout {
                timeout: run.timeout,
                console: result.console,
                output: result.output,
            })
        }
        l1::Ended::Stalled => {
            return Err(BoxError::Stalled {
                tries: STALLED_TRIES,
                console: result.console,
                output: result.output,
            })
        }
        l1::Ended::Exited(status) => status,
    };
    if result.console.lines().any(|l| l == MARK_NO_KVM) {
        return Err(BoxError::NoKvm {
            console: result.console,
        });
    }
    let Some(script_status) = status_marker(&result.console) else {
        return Err(BoxError::NoMarker {
            qemu_status: qemu_status.to_string(),
            qemu_stderr: relevant_stderr(&result.qemu_stderr),
            console: result.console,
            output: result.output,
        });
    };
    Ok(BoxOutput {
        output: result.output,
        console: result.console,
        script_status,
        boot: result.ready_after,
        wall: result.wall,
        initramfs_bytes,
    })
}

fn status_marker(text: &str) -> Option<i32> {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(MARK_STATUS))
        .and_then(|s| s.trim().parse().ok())
}

/// QEMU's stderr without the warnings every x86-64 run prints (features TCG does not emulate).
fn relevant_stderr(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains("TCG doesn't support requested feature"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_marker_is_found() {
        assert_eq!(
            status_marker("KVM-BOX-READY\n[ 3.1] kvm: noise\nKVM-BOX-STATUS 3\n"),
            Some(3)
        );
        assert_eq!(status_marker("KVM-BOX-READY\n"), None);
    }
}
