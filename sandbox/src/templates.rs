//! Template snapshots: for each backend, kernel, image and VM shape (memory, vCPUs, network or
//! not), a VM booted once to its template point — kernel up, init done, agent listening, no
//! Node.js process — and saved into the artifact cache. VMs are restored from it, then
//! activated (contract::activation) exactly as a cold-booted VM is, so nothing of a VM's own is
//! ever in a template.
//!
//! A template is keyed by a hash of everything that shapes the saved VM ([`identity`]), which
//! its snapshot also records: a restore checks it. It is written under a temporary name,
//! flushed, then renamed, so a maker killed half-way leaves nothing that is used; one process
//! makes a template while the others wait on its lock; one that does not read back whole (a
//! truncated or corrupted file, another VMM's) is made again. Where none can be made (the cache
//! read-only or full), VMs boot cold, and the reason is said once; a cache too full for any
//! template is refused before the template's boot, which would be wasted on every run.
//! Making one removes those of changed kernels or images and the least recently used beyond a
//! dozen.

use std::fs::{self, File};
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use crate::booted::BOOT_TIMEOUT;
use crate::console::{self, ConsoleTail};
use contract::arch::Arch;
use contract::params::Shell;
use contract::ports::TEMPLATE_READY;
use vmm::backend::Backend;
use vmm::runtime;
use vmm::snapshot;
use vmm::vm::{Console, NetSpec, Start, StopSignal, VmConfig, VmExit};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the snapshot folder {0}")]
    Folder(PathBuf, #[source] std::io::Error),
    #[error(
        "the snapshot folder {dir} has {} MB free; a template is made only where {} MB or more \
         are: free some space there (or pass --no-snapshot)",
        free / 1_000_000,
        needed.div_ceil(1_000_000)
    )]
    NoRoom {
        dir: PathBuf,
        free: u64,
        needed: u64,
    },
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error(transparent)]
    Config(#[from] vmm::vm::ConfigError),
    #[error("booting the VM to snapshot")]
    Boot(#[source] vmm::backend::Error),
    #[error("the VM to snapshot ended ({0:?}) before it was saved; its console said:\n{1}")]
    NotSaved(VmExit, String),
    #[error("the VM to snapshot was not saved within {0:?}")]
    TimedOut(Duration),
}

/// How many templates the cache keeps, the most recently used: one per backend and VM shape in
/// use, and some of other images or versions of nodeos-vm.
const KEPT_TEMPLATES: usize = 12;
/// The least free space in the templates' folder for a template to be made (or the most a
/// template of the VM could take, when less). A template holds what the guest wrote before its
/// template point, about 130 MB for the default VM and more for larger ones: a folder with
/// less free cannot take one.
const MIN_FREE_FOR_TEMPLATE: u64 = 256_000_000;

/// The template snapshots in a cache folder.
pub struct Templates {
    dir: PathBuf,
}

impl Templates {
    /// The templates kept in `cache` (the artifact cache).
    pub fn in_cache(cache: &Path) -> Templates {
        Templates {
            dir: cache.join("templates"),
        }
    }

    /// Makes `config` a restore of its template, made first when there is none. Where no
    /// template can be made, `config` boots cold, and why is said on stderr.
    pub fn restore(&self, backend: &Backend, config: &mut VmConfig) {
        match self.ensure(backend, config, false) {
            Ok((from, identity)) => {
                tracing::info!("restoring {}", from.display());
                config.start = Start::Restore { from, identity };
            }
            Err(e) => eprintln!(
                "nodeos-vm: booting without a snapshot: {}",
                vmm::error_chain::one_line(&e)
            ),
        }
    }

    /// The template of `config`'s VM on `backend` when it is made and reads back whole; none
    /// is made.
    pub fn made(&self, backend: &Backend, config: &VmConfig) -> Option<PathBuf> {
        let (key, identity) = key(backend, config);
        let path = self.path(&key);
        readable(&path, &identity).then_some(path)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.snap"))
    }

    /// The template of `config`'s VM on `backend`, and its identity: made now when missing
    /// or unreadable, or when `remake`.
    pub fn ensure(
        &self,
        backend: &Backend,
        config: &VmConfig,
        remake: bool,
    ) -> Result<(PathBuf, String), Error> {
        let (key, identity) = key(backend, config);
        let path = self.path(&key);
        if !remake && readable(&path, &identity) {
            mark_used(&path);
            return Ok((path, identity));
        }
        let folder = |e| Error::Folder(self.dir.clone(), e);
        fs::create_dir_all(&self.dir).map_err(folder)?;
        let lock = File::create(self.dir.join(format!("{key}.lock"))).map_err(folder)?;
        let _lock =
            Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| folder(e.into()))?;
        // Another process may have made it while this one waited.
        if remake || !readable(&path, &identity) {
            self.make(backend, config, &key, &path, &identity)?;
        }
        Ok((path, identity))
    }

    /// Boots `config`'s template and saves it as `path`.
    fn make(
        &self,
        backend: &Backend,
        config: &VmConfig,
        key: &str,
        path: &Path,
        identity: &str,
    ) -> Result<(), Error> {
        let started = Instant::now();
        if std::io::stderr().is_terminal() {
            eprintln!(
                "nodeos-vm: booting a {} MiB VM to snapshot it (once per image and VM size)",
                config.memory_mib
            );
        }
        let folder = |e| Error::Folder(self.dir.clone(), e);
        // What a maker killed half-way left (this lock is held: no one else writes them).
        for entry in fs::read_dir(&self.dir).map_err(folder)?.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(&format!(".{key}.")) {
                let _ = fs::remove_file(entry.path());
            }
        }
        self.remove_stale();
        // A save into a folder without room for it fails only after a whole boot, on every
        // run: refused before.
        let needed = MIN_FREE_FOR_TEMPLATE.min(snapshot::format::max_file_len(
            u64::from(config.memory_mib) << 20,
        ));
        let free = crate::folders::free_space(&self.dir).map_err(folder)?;
        if free < needed {
            return Err(Error::NoRoom {
                dir: self.dir.clone(),
                free,
                needed,
            });
        }
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let scratch = runtime::scratch_dir("template")?;
        let template = template_config(config, scratch.path().join("agent.sock"), &tmp, identity);
        let saved = save(backend, &template);
        match saved {
            Ok(()) => {
                fs::rename(&tmp, path).map_err(folder)?;
                File::open(&self.dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(folder)?;
                tracing::info!(
                    "made the template {} in {:.0?}",
                    path.display(),
                    started.elapsed()
                );
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Removes the templates whose kernel or image file has changed or gone since they were
    /// made (each rebuild of the image would otherwise leave its templates behind), then the
    /// least recently used beyond [`KEPT_TEMPLATES`], leaving room for the one being made
    /// (templates of other versions of nodeos-vm go that way).
    fn remove_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let snaps = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "snap"));
        let mut kept = Vec::new();
        for path in snaps {
            let header = File::open(&path).map(|f| snapshot::saved_header(&f));
            match header {
                Ok(Ok(header)) if !files_unchanged(&header.identity) => {
                    tracing::info!("removing the stale template {}", path.display());
                    remove_template(&path);
                }
                _ => kept.push(path),
            }
        }
        for path in crate::folders::beyond_newest(kept, KEPT_TEMPLATES - 1) {
            tracing::info!(
                "removing the least recently used template {}",
                path.display()
            );
            remove_template(&path);
        }
    }
}

/// Says that the template at `path` was used now (its modification time): the least recently
/// used are removed first. Best effort: a read-only cache keeps its templates.
fn mark_used(path: &Path) {
    let _ = File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

fn remove_template(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("lock"));
}

/// Whether the kernel and image an [`identity`] names are still the files it names.
fn files_unchanged(identity: &str) -> bool {
    identity
        .lines()
        .filter_map(|l| {
            l.strip_prefix("kernel ")
                .or_else(|| l.strip_prefix("rootfs "))
        })
        .all(|named| {
            let path = named.rsplitn(4, ' ').nth(3).unwrap_or(named);
            file_identity(Path::new(path)) == named
        })
}

/// A file as an [`identity`] names it: path, size, modification time, inode.
fn file_identity(path: &Path) -> String {
    match fs::metadata(path) {
        Ok(m) => format!("{} {} {} {}", path.display(), m.len(), m.mtime(), m.ino()),
        Err(_) => path.display().to_string(),
    }
}

/// The VM a template of `config` saves: its kernel, image, memory, vCPUs, kernel parameters
/// and whether it has a network, nothing of its own, an agent at `socket`.
fn template_config(config: &VmConfig, socket: PathBuf, to: &Path, identity: &str) -> VmConfig {
    let mut t = VmConfig::new(
        config.kernel.clone(),
        config.rootfs.clone(),
        config.memory_mib,
        config.cpus,
    );
    t.arch = config.arch;
    t.console = Console::Pipe;
    t.shell = Shell::None;
    t.agent_socket = Some(socket);
    // A network device, of whatever kind: a restored VM attaches its own.
    t.net = config.net.as_ref().map(|_| NetSpec::USER);
    t.cmdline_extra = config.cmdline_extra.clone();
    t.seccomp = config.seccomp;
    t.start = Start::Save {
        to: to.to_path_buf(),
        at: TEMPLATE_READY,
        identity: identity.to_string(),
    };
    t
}

/// Boots `template` until it is saved, for at most [`BOOT_TIMEOUT`].
fn save(backend: &Backend, template: &VmConfig) -> Result<(), Error> {
    let (tail, output) = ConsoleTail::capture()?;
    let io = console::headless(output)?;
    let stop = StopSignal::new().map_err(|e| Error::Folder("(a stop signal)".into(), e))?;
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let timed_out = matches!(
                finished.recv_timeout(BOOT_TIMEOUT),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
            if timed_out {
                stop.stop();
            }
            timed_out
        })
    };
    let report = backend.run(template, io, &stop, None);
    drop(done);
    if watchdog.join().unwrap_or(false) {
        return Err(Error::TimedOut(BOOT_TIMEOUT));
    }
    match report.map_err(Error::Boot)?.exit {
        VmExit::Saved => Ok(()),
        other => Err(Error::NotSaved(other, tail.text())),
    }
}

/// Whether the template at `path` reads back whole, and is `identity`'s.
fn readable(path: &Path, identity: &str) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match snapshot::saved_header(&file) {
        Ok(header) => header.identity == identity,
        Err(e) => {
            tracing::warn!(
                "the template {} is unusable, made again: {e}",
                path.display()
            );
            false
        }
    }
}

/// The key a template of `config`'s VM on `backend` is named after, and its identity.
fn key(backend: &Backend, config: &VmConfig) -> (String, String) {
    let identity = identity(backend, config);
    (
        hex::encode(&Sha256::digest(identity.as_bytes())[..8]),
        identity,
    )
}

/// The VMs of the default size (`memory_mib`, 1 vCPU) whose templates `nodeos-vm build`
/// makes: without a network and with one.
pub fn default_shapes(kernel: &Path, rootfs: &Path, arch: Arch, memory_mib: u32) -> [VmConfig; 2] {
    [None, Some(NetSpec::USER)].map(|net| {
        let mut config = VmConfig::new(kernel.to_path_buf(), rootfs.to_path_buf(), memory_mib, 1);
        config.arch = arch;
        config.net = net;
        config
    })
}

/// What a template of `config` on `backend` is of, for people: "512 MiB, 1 vCPU, with a
/// network, qemu-tcg".
pub fn shape(backend: &Backend, config: &VmConfig) -> String {
    let net = if config.net.is_some() {
        ", with a network"
    } else {
        ""
    };
    let cpus = if config.cpus == 1 { "vCPU" } else { "vCPUs" };
    format!(
        "{} MiB, {} {cpus}{net}, {}",
        config.memory_mib,
        config.cpus,
        backend.name()
    )
}

/// Everything that shapes a template of `config`'s VM on `backend`: the VMM build, the
/// backend (and its QEMU's build), the kernel and image files, memory, vCPUs, the kernel
/// parameters added, and whether it has a network.
pub fn identity(backend: &Backend, config: &VmConfig) -> String {
    format!(
        "nodeos-vm template\nvmm {}\nbackend {}\nkernel {}\nrootfs {}\nmemory {} MiB\ncpus {}\n\
         network {}\nkernel parameters {}\n",
        snapshot::VMM_VERSION,
        backend.snapshot_identity(config.arch),
        file_identity(&config.kernel),
        file_identity(&config.rootfs),
        config.memory_mib,
        config.cpus,
        config.net.is_some(),
        config.cmdline_extra.trim(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn making_a_template_keeps_the_most_recently_used() {
        let cache = tempfile::tempdir().unwrap();
        let templates = Templates::in_cache(cache.path());
        fs::create_dir(&templates.dir).unwrap();
        let day = Duration::from_secs(86_400);
        let snaps: Vec<PathBuf> = (0..KEPT_TEMPLATES as u32 + 2)
            .map(|age| {
                let path = templates.dir.join(format!("{age:02}.snap"));
                fs::write(path.with_extension("lock"), "").unwrap();
                let file = File::create(&path).unwrap();
                file.set_modified(std::time::SystemTime::now() - day * (age + 1))
                    .unwrap();
                path
            })
            .collect();
        // The oldest is restored from: it is the most recently used now.
        mark_used(snaps.last().unwrap());
        templates.remove_stale();
        let left = |path: &PathBuf| path.exists() && path.with_extension("lock").exists();
        let kept: Vec<bool> = snaps.iter().map(left).collect();
        let mut expected = vec![true; KEPT_TEMPLATES - 2];
        expected.extend([false, false, false, true]);
        assert_eq!(kept, expected);
    }

    #[test]
    fn a_template_of_changed_files_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, rootfs) = (dir.path().join("my vmlinux"), dir.path().join("rootfs.img"));
        fs::write(&kernel, "k").unwrap();
        fs::write(&rootfs, "r").unwrap();
        let backend = Backend::Qemu {
            accel: vmm::backend::qemu::Accel::Tcg,
            jail: None,
            vmm: vmm::backend::process::VmmProgram::new("/bin/true".into(), vec![], vec![]),
        };
        let id = identity(&backend, &VmConfig::new(kernel, rootfs.clone(), 512, 1));
        assert!(files_unchanged(&id), "{id}");
        fs::write(&rootfs, "rebuilt").unwrap();
        assert!(!files_unchanged(&id));
        fs::remove_file(&rootfs).unwrap();
        assert!(!files_unchanged(&id));
    }

    #[test]
    fn a_templates_identity_follows_its_shape_only() {
        let backend = Backend::Qemu {
            accel: vmm::backend::qemu::Accel::Tcg,
            jail: None,
            vmm: vmm::backend::process::VmmProgram::new("/bin/true".into(), vec![], vec![]),
        };
        let config = VmConfig::new("/k".into(), "/r".into(), 512, 1);
        let base = identity(&backend, &config);
        let mut other = config.clone();
        other.env = vec![contract::env::EnvVar::new("A", "1").unwrap()];
        other.console = Console::Tty { cols: 80, rows: 24 };
        other.shell = Shell::Nsh;
        assert_eq!(
            identity(&backend, &other),
            base,
            "what activation sets is not shape"
        );
        for change in [
            |c: &mut VmConfig| c.memory_mib = 1024,
            |c: &mut VmConfig| c.cpus = 2,
            |c: &mut VmConfig| c.net = Some(NetSpec::USER),
            |c: &mut VmConfig| c.cmdline_extra = "loglevel=7".into(),
            |c: &mut VmConfig| c.rootfs = "/r2".into(),
        ] {
            let mut c = config.clone();
            change(&mut c);
            assert_ne!(identity(&backend, &c), base);
        }
    }
}
