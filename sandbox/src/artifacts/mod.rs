//! The kernel and the root image: built once from the sources in this repository, cached
//! under a key that hashes every input, and checked before each boot.

mod check;
mod installed;
mod progress;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use contract::arch::Arch;
use sha2::{Digest, Sha256};

pub use check::{check_kernel, check_rootfs, CheckError};
use progress::BuildProgress;

/// The guest binaries of this very build (see build.rs), for the host's architecture: packed
/// into its root image. Another architecture's are built with guest/build.sh.
const GUEST_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nodeos-init"));
/// How many builds of each artifact the cache keeps, the newest: another checkout or another
/// version of nodeos-vm that shares the cache may still use an older one.
const KEPT_BUILDS: usize = 3;
/// Where this binary was built from: the kernel/ and rootfs/ builders live there.
const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "the nodeos-vm sources (kernel/, rootfs/) are not in {0}; set NODEOS_VM_SRC to a checkout, \
         or pass --kernel and --rootfs"
    )]
    NoSources(PathBuf),
    #[error("no cache directory: set NODEOS_VM_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error("reading the {what} inputs at {path}")]
    ReadInput {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("using the cache directory {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("starting the {what} build ({script})")]
    Spawn {
        what: &'static str,
        script: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {what} build failed ({status}); its last lines:\n{tail}\nfull log: {log}")]
    BuildFailed {
        what: &'static str,
        status: String,
        tail: String,
        log: PathBuf,
    },
    #[error("the {what} build finished without producing {path}")]
    NoOutput { what: &'static str, path: PathBuf },
}

type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// The two things a guest boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    Kernel,
    Rootfs,
}

impl Artifact {
    pub fn name(self) -> &'static str {
        match self {
            Artifact::Kernel => "kernel",
            Artifact::Rootfs => "root image",
        }
    }

    /// The file the build writes, and the cache keeps.
    fn file_name(self, arch: Arch) -> &'static str {
        match (self, arch) {
            (Artifact::Kernel, Arch::X86_64) => "vmlinux",
            (Artifact::Kernel, Arch::Aarch64) => "Image",
            (Artifact::Rootfs, _) => "rootfs.img",
        }
    }

    /// What the cache names an `arch` build of this artifact after ([`Store::name`]).
    fn cache_name(self, arch: Arch) -> &'static str {
        match (self, arch) {
            (Artifact::Rootfs, Arch::Aarch64) => "rootfs-arm64.img",
            _ => self.file_name(arch),
        }
    }

    fn script(self) -> &'static str {
        match self {
            Artifact::Kernel => "kernel/build.sh",
            Artifact::Rootfs => "rootfs/build.sh",
        }
    }

    /// Source files, and folders whose every file is, that are inputs: what the build reads,
    /// not the documentation beside it. The host's root image has its guest binary as an input
    /// too (it is built with nodeos-vm, [`GUEST_INIT`]); another architecture's has the
    /// sources guest/build.sh builds it from.
    fn inputs(self, arch: Arch) -> &'static [&'static str] {
        match (self, arch) {
            (Artifact::Kernel, Arch::X86_64) => &[
                "kernel/build.sh",
                "kernel/patches",
                "kernel/config.fragment",
                "kernel/config-x86_64.fragment",
            ],
            (Artifact::Kernel, Arch::Aarch64) => &[
                "kernel/build.sh",
                "kernel/patches",
                "kernel/config.fragment",
                "kernel/config-arm64.fragment",
            ],
            (Artifact::Rootfs, arch) if arch == Arch::host() => &[
                "rootfs/build.sh",
                "rootfs/debs.sh",
                "rootfs/versions",
                "rootfs/etc",
                "guest/js",
            ],
            (Artifact::Rootfs, _) => &[
                "rootfs/build.sh",
                "rootfs/debs.sh",
                "rootfs/versions",
                "rootfs/etc",
                "guest/js",
                "guest/src",
                "guest/Cargo.toml",
                "guest/build.sh",
                "guest/cross-toolchain.sh",
                "contract/src",
                "contract/Cargo.toml",
                "Cargo.lock",
            ],
        }
    }

    /// Debian packages whose version is an input (the kernel source, Node's shared libraries).
    fn packages(self) -> &'static [&'static str] {
        match self {
            Artifact::Kernel => &["linux-source-6.1"],
            Artifact::Rootfs => &["libc6", "libstdc++6", "libgcc-s1"],
        }
    }

    /// Said before a first build, so nobody thinks it hangs.
    pub fn first_build_estimate(self) -> &'static str {
        match self {
            Artifact::Kernel => "about 5 minutes on 2 cores",
            Artifact::Rootfs => "about 1 minute, downloading Node.js and npm",
        }
    }
}

/// Builds and finds the artifacts of one guest architecture.
#[derive(Debug, Clone)]
pub struct Store {
    sources: PathBuf,
    cache: PathBuf,
    arch: Arch,
}

impl Store {
    /// The store of this user: sources from `NODEOS_VM_SRC` (else the checkout this binary was
    /// built from), cache in [`folders::cache_dir`](crate::folders::cache_dir).
    pub fn from_env() -> Result<Store> {
        let sources = std::env::var_os("NODEOS_VM_SRC")
            .map(PathBuf::from)
            .unwrap_or_else(|| BUILT_FROM.into());
        let cache = crate::folders::cache_dir().ok_or(ArtifactError::NoCacheDir)?;
        Ok(Store {
            sources,
            cache,
            arch: Arch::host(),
        })
    }

    /// The same store, for guests of `arch` (the host's architecture unless told).
    pub fn for_arch(self, arch: Arch) -> Store {
        Store { arch, ..self }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// The checkout the artifacts are built from.
    pub fn sources(&self) -> &Path {
        &self.sources
    }

    /// The cached artifact for the current inputs, if it was built.
    pub fn cached(&self, artifact: Artifact) -> Result<Option<PathBuf>> {
        let path = self
            .entry(artifact, &self.key(artifact)?)
            .join(artifact.file_name(self.arch));
        Ok(path.is_file().then_some(path))
    }

    /// The artifact for the current inputs, built first when missing (or when `force`).
    pub fn ensure(&self, artifact: Artifact, force: bool) -> Result<PathBuf> {
        fs::create_dir_all(&self.cache).map_err(|e| self.cache_error(e))?;
        // Several nodeos-vm processes (parallel tests) may want the same artifact: one builds.
        let lock = File::create(self.cache.join(format!("{}.lock", self.name(artifact))))
            .map_err(|e| self.cache_error(e))?;
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| self.cache_error(e.into()))?;
        if !force {
            if let Some(path) = self.cached(artifact)? {
                return Ok(path);
            }
        }
        self.build(artifact)
    }

    fn build(&self, artifact: Artifact) -> Result<PathBuf> {
        let script = self.sources.join(artifact.script());
        if !script.is_file() {
            return Err(ArtifactError::NoSources(self.sources.clone()));
        }
        let work = tempfile::Builder::new()
            .prefix(&format!("build-{}-", self.name(artifact)))
            .tempdir_in(&self.cache)
            .map_err(|e| self.cache_error(e))?;
        let out = work.path().join("out");
        fs::create_dir(&out).map_err(|e| self.cache_error(e))?;
        let log_path = self.cache.join(format!("{}.log", self.name(artifact)));
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(&out);
        match artifact {
            Artifact::Kernel => {
                cmd.arg(self.arch.linux());
            }
            Artifact::Rootfs => {
                let guest = work.path().join("guest");
                fs::create_dir(&guest).map_err(|e| self.cache_error(e))?;
                // Another architecture's guest binary: built by rootfs/build.sh (guest/build.sh)
                // into the empty folder, in a cargo target folder the cache keeps.
                if self.arch == Arch::host() {
                    write_executable(&guest.join("nodeos-init"), GUEST_INIT)
                        .map_err(|e| self.cache_error(e))?;
                }
                cmd.arg(&guest)
                    .arg(self.arch.debian())
                    .env("CARGO_TARGET_DIR", self.cache.join("guest-target"));
            }
        }
        cmd.env("DOWNLOAD_DIR", self.cache.join("downloads"));

        let started = Instant::now();
        run_logged(
            artifact,
            self.name(artifact),
            cmd,
            &script,
            &log_path,
            &self.cache,
        )?;

        let built = out.join(artifact.file_name(self.arch));
        if !built.is_file() {
            return Err(ArtifactError::NoOutput {
                what: artifact.name(),
                path: built,
            });
        }
        // The build may have installed the packages it reads: key it by what it really used.
        let entry = self.entry(artifact, &self.key(artifact)?);
        if entry.exists() {
            fs::remove_dir_all(&entry).map_err(|e| self.cache_error(e))?;
        }
        fs::rename(&out, &entry).map_err(|e| self.cache_error(e))?;
        tracing::info!("built the {} in {:.0?}", artifact.name(), started.elapsed());
        self.remove_older_builds(artifact, &entry);
        Ok(entry.join(artifact.file_name(self.arch)))
    }

    /// Removes the builds of `artifact` older than the [`KEPT_BUILDS`] newest, `current` (just
    /// built) among them: each change of its inputs would otherwise leave one more behind.
    fn remove_older_builds(&self, artifact: Artifact, current: &Path) {
        let prefix = format!("{}-", self.name(artifact));
        crate::folders::remove_older(&self.cache, &prefix, current, KEPT_BUILDS - 1);
    }

    /// What the cache's entries (`NAME-KEY/`), lock, log and progress file of `artifact` are
    /// named after, for this store's architecture.
    fn name(&self, artifact: Artifact) -> &'static str {
        artifact.cache_name(self.arch)
    }

    fn entry(&self, artifact: Artifact, key: &str) -> PathBuf {
        self.cache.join(format!("{}-{key}", self.name(artifact)))
    }

    /// A hash of everything the artifact is built from.
    pub fn key(&self, artifact: Artifact) -> Result<String> {
        let mut hasher = Sha256::new();
        hash_field(&mut hasher, self.arch.name().as_bytes());
        for input in artifact.inputs(self.arch) {
            let mut files = Vec::new();
            list_files(&self.sources.join(input), &mut files).map_err(|source| {
                ArtifactError::ReadInput {
                    what: artifact.name(),
                    path: self.sources.join(input),
                    source,
                }
            })?;
            files.sort();
            for file in files {
                let data = fs::read(&file).map_err(|source| ArtifactError::ReadInput {
                    what: artifact.name(),
                    path: file.clone(),
                    source,
                })?;
                let rel = file.strip_prefix(&self.sources).unwrap_or(&file);
                hash_field(&mut hasher, rel.as_os_str().as_encoded_bytes());
                hash_field(&mut hasher, &data);
            }
        }
        let packages = artifact.packages();
        for (package, version) in packages.iter().zip(installed::versions(packages)) {
            hash_field(&mut hasher, package.as_bytes());
            hash_field(&mut hasher, version.as_bytes());
        }
        if artifact == Artifact::Rootfs && self.arch == Arch::host() {
            hash_field(&mut hasher, GUEST_INIT);
        }
        Ok(hex::encode(&hasher.finalize()[..8]))
    }

    fn cache_error(&self, source: io::Error) -> ArtifactError {
        ArtifactError::Cache {
            path: self.cache.clone(),
            source,
        }
    }
}

/// Length-prefixed, so that no two different input sets hash alike.
fn hash_field(hasher: &mut Sha256, data: &[u8]) {
    hasher.update((data.len() as u64).to_le_bytes());
    hasher.update(data);
}

/// `path` itself when it is a file, else every file under it.
fn list_files(path: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    if !fs::metadata(path)?.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn write_executable(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)?
        .write_all(data)
}

/// Runs a build script with its output in a log file and its progress on the terminal.
fn run_logged(
    artifact: Artifact,
    name: &str,
    mut cmd: Command,
    script: &Path,
    log_path: &Path,
    cache: &Path,
) -> Result<()> {
    let spawn_error = |source| ArtifactError::Spawn {
        what: artifact.name(),
        script: script.to_path_buf(),
        source,
    };
    let mut log = File::create(log_path).map_err(|source| ArtifactError::Cache {
        path: cache.to_path_buf(),
        source,
    })?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers = [
        forward_lines(child.stdout.take().expect("piped"), tx.clone()),
        forward_lines(child.stderr.take().expect("piped"), tx),
    ];
    let mut progress = BuildProgress::start(artifact, name, cache);
    let mut tail = std::collections::VecDeque::new();
    for line in rx {
        let _ = writeln!(log, "{line}");
        progress.line(&line);
        if tail.len() == 20 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait().map_err(spawn_error)?;
    if !status.success() {
        progress.fail();
        return Err(ArtifactError::BuildFailed {
            what: artifact.name(),
            status: status.to_string(),
            tail: Vec::from(tail).join("\n"),
            log: log_path.to_path_buf(),
        });
    }
    progress.finish();
    Ok(())
}

fn forward_lines(
    stream: impl io::Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_kernel_key_follows_what_its_build_reads_for_its_architecture_alone() {
        let sources = tempfile::tempdir().unwrap();
        let file = |path: &str, text: &str| {
            let path = sources.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        for path in [
            "kernel/build.sh",
            "kernel/patches/a.patch",
            "kernel/config.fragment",
            "kernel/config-x86_64.fragment",
            "kernel/config-arm64.fragment",
            "kernel/README.md",
        ] {
            file(path, path);
        }
        let store = |arch| Store {
            sources: sources.path().into(),
            cache: sources.path().into(),
            arch,
        };
        let keys =
            || [Arch::X86_64, Arch::Aarch64].map(|arch| store(arch).key(Artifact::Kernel).unwrap());
        let before = keys();
        assert_ne!(before[0], before[1]);
        file("kernel/README.md", "documentation changed");
        assert_eq!(keys(), before, "documentation is no input");
        file("kernel/config-arm64.fragment", "CONFIG_X=y");
        let after = keys();
        assert_eq!(
            after[0], before[0],
            "arm64's fragment is no input of x86's kernel"
        );
        assert_ne!(after[1], before[1]);
        file("kernel/config.fragment", "CONFIG_Y=y");
        let common = keys();
        assert_ne!(common[0], after[0]);
        assert_ne!(common[1], after[1]);
    }

    #[test]
    fn a_new_build_removes_all_but_the_newest_builds_of_its_artifact() {
        let cache = tempfile::tempdir().unwrap();
        let store = Store {
            sources: cache.path().into(),
            cache: cache.path().into(),
            arch: Arch::X86_64,
        };
        let day = Duration::from_secs(86_400);
        let build = |name: &str, age: u32| {
            let dir = cache.path().join(name);
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("rootfs.img"), name).unwrap();
            File::open(&dir)
                .unwrap()
                .set_modified(SystemTime::now() - day * age)
                .unwrap();
            dir
        };
        let current = build("rootfs.img-new", 0);
        let kept = [build("rootfs.img-b", 1), build("rootfs.img-c", 2)];
        let removed = [build("rootfs.img-d", 3), build("rootfs.img-e", 9)];
        let other = [build("vmlinux-old", 9), build("build-rootfs.img-x", 9)];
        fs::write(cache.path().join("rootfs.img.log"), "log").unwrap();

        store.remove_older_builds(Artifact::Rootfs, &current);
        for dir in kept.iter().chain(&other).chain([&current]) {
            assert!(dir.is_dir(), "{} removed", dir.display());
        }
        for dir in &removed {
            assert!(!dir.exists(), "{} kept", dir.display());
        }
        assert!(cache.path().join("rootfs.img.log").is_file());
    }
}
