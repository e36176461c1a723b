//! The spec's `mounts` other than the root, for the container's VM. The host shares no live
//! folder with a microVM here, so a bind mount of a host file or folder is carried as a copy
//! made at create: every bind's source is packed into one ext4 disk (folders as they are,
//! owners and modes kept; each file in a folder of its own), which the guest mounts at
//! [`GUEST_MOUNTS`], and the agent binds each copy at its destination in the container's view
//! (read-only when the spec says `ro`). A writable bind's changes are copied back to its host
//! file or folder when the task's process ends, through the agent's `Export` and the strict
//! unpack of `run -v HOST:GUEST:rw` (`sandbox::volume`). `tmpfs` mounts are made by the agent,
//! with their size and mode; `/proc`, `/sys`, `/dev`, `/dev/pts` and `/dev/shm` are the
//! agent's own; anything else (`cgroup`, `mqueue`, an unknown type) is left out with a log
//! line.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use contract::mount::{Mount, MountError, MountKind, MAX_MOUNTS, TMPFS_OPTIONS};
use nix::mount::MsFlags;
use sandbox::agent::TreeExport;
use sandbox::volume::{self, Budget, Mode, Volume, COPY_BACK_TIME};

/// Where the guest mounts the disk of the binds' copies.
pub const GUEST_MOUNTS: &str = "/run/container-mounts";
/// The destinations whose file systems the agent makes itself.
const THE_AGENTS: [&str; 5] = ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"];
/// The name of a file bind's copy, in its folder on the disk.
const FILE: &str = "file";
/// Room the disk gets beyond the copies when a bind is writable (sparse), and when none is.
const WRITABLE_BYTES: u64 = 1 << 30;
const READ_ONLY_BYTES: u64 = 16 << 20;
/// The most a writable file bind (`/dev/termination-log`) copies back.
const MAX_FILE_BACK: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the spec's mount at {destination}")]
    Invalid {
        destination: String,
        #[source]
        source: MountError,
    },
    #[error("the spec's mount at {destination}: its source {}", .path.display())]
    Source {
        destination: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the spec's mount at {destination}: its source {} is neither a file nor a folder (only \
         those are copied into the microVM)",
        .path.display()
    )]
    NotFileOrFolder { destination: String, path: PathBuf },
    #[error("the spec has {0} mounts to carry; a container takes at most {MAX_MOUNTS}")]
    TooMany(usize),
    #[error("copying the spec's bind mounts: {what} {}", .path.display())]
    Stage {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("packing the spec's bind mounts into a disk")]
    Pack(#[from] volume::Error),
}

/// A bind of a host file or folder, as carried.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bind {
    host: PathBuf,
    is_dir: bool,
    writable: bool,
    /// The guest folder of its copy.
    copy: String,
}

/// What the spec's mounts become: the agent's mounts, and the host files and folders to copy
/// (in the order of the binds among them).
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    mounts: Vec<Mount>,
    binds: Vec<Bind>,
}

/// The spec's mounts, carried.
#[derive(Debug, Default)]
pub struct Carried {
    /// The disk of the binds' copies, mounted at [`GUEST_MOUNTS`]; none without binds, nor
    /// when the copies go into a running VM ([`in_folder`]).
    pub disk: Option<PathBuf>,
    /// The container's own mounts, as the agent takes them.
    pub mounts: Vec<Mount>,
    binds: Vec<Bind>,
    /// What a copy-back of a folder of the copies may take.
    budget: Option<Budget>,
}

/// Carries the spec's `mounts` (`root` excepted): checks them, and packs the sources of the
/// binds into a disk at `disk`. An error names the mount; nothing is left but `disk`.
pub fn carry(spec: &[oci_spec::runtime::Mount], disk: &Path) -> Result<Carried, Error> {
    let plan = plan(spec, &|i, _| format!("{GUEST_MOUNTS}/{i}"))?;
    if plan.binds.is_empty() {
        return Ok(Carried {
            mounts: plan.mounts,
            ..Carried::default()
        });
    }
    let budget = pack(&plan.binds, disk)?;
    Ok(Carried {
        disk: Some(disk.to_path_buf()),
        mounts: plan.mounts,
        binds: plan.binds,
        budget: Some(budget),
    })
}

/// Carries the spec's `mounts` (`root` excepted) into the guest folder `copies` of a VM that
/// runs already, where the copy of a host file or folder is named by its path (so that the
/// containers of a VM that bind the same source share one copy): checks them; the binds'
/// sources are written into it by [`Carried::append_to`], and a copy-back of one of them may
/// take `budget`.
pub fn in_folder(
    spec: &[oci_spec::runtime::Mount],
    copies: &str,
    budget: Budget,
) -> Result<Carried, Error> {
    let plan = plan(spec, &|_, host| format!("{copies}/{}", name_of(host)))?;
    Ok(Carried {
        disk: None,
        mounts: plan.mounts,
        binds: plan.binds,
        budget: Some(budget),
    })
}

/// A name for the copy of the host path `host`: 32 hex digits of its SHA-256.
fn name_of(host: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(host.as_os_str().as_encoded_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's mounts and the binds' sources, the copy of the `i`th bind (of the host path)
/// in the guest folder `copy_of(i, path)`, checked; what is left out is logged.
fn plan(
    spec: &[oci_spec::runtime::Mount],
    copy_of: &dyn Fn(usize, &Path) -> String,
) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    for mount in spec {
        let destination = mount.destination().to_string_lossy().into_owned();
        let typ = mount.typ().as_deref().unwrap_or("");
        let options = mount.options().as_deref().unwrap_or(&[]);
        let bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        let trimmed = destination.trim_end_matches('/');
        if THE_AGENTS.contains(&trimmed) {
            log::debug!("the spec's {typ} mount at {destination}: the agent makes its own");
            continue;
        }
        let has = |name: &str| options.iter().any(|o| o == name);
        let mut carried = Mount {
            destination: destination.clone().into_bytes(),
            read_only: has("ro"),
            nosuid: has("nosuid"),
            nodev: has("nodev"),
            noexec: has("noexec"),
            ..Mount::default()
        };
        if bind {
            let source = mount.source().clone().unwrap_or_default();
            let source_err = |source| Error::Source {
                destination: destination.clone(),
                path: mount.source().clone().unwrap_or_default(),
                source,
            };
            let host = fs::canonicalize(&source).map_err(source_err)?;
            let meta = fs::metadata(&host).map_err(source_err)?;
            if !meta.is_dir() && !meta.is_file() {
                return Err(Error::NotFileOrFolder {
                    destination,
                    path: host,
                });
            }
            let copy = copy_of(plan.binds.len(), &host);
            carried.kind = MountKind::Bind {
                source: if meta.is_dir() {
                    copy.clone()
                } else {
                    format!("{copy}/{FILE}")
                }
                .into_bytes(),
            };
            plan.binds.push(Bind {
                host,
                is_dir: meta.is_dir(),
                writable: !carried.read_only,
                copy,
            });
        } else if typ == "tmpfs" {
            carried.kind = MountKind::Tmpfs {
                options: tmpfs_options(&destination, options).into_bytes(),
            };
        } else {
            log::info!("the spec's {typ:?} mount at {destination} is left out: not supported");
            continue;
        }
        carried.check().map_err(|source| Error::Invalid {
            destination: destination.clone(),
            source,
        })?;
        plan.mounts.push(carried);
    }
    if plan.mounts.len() > MAX_MOUNTS {
        return Err(Error::TooMany(plan.mounts.len()));
    }
    Ok(plan)
}

/// The `tmpfs` options among a mount's `options` (`size=`, `mode=`, ...): the flags travel
/// apart, propagation and atime options mean nothing to a tmpfs of the container's own, and
/// other file system options are left out with a log line.
fn tmpfs_options(destination: &str, options: &[String]) -> String {
    const FLAGS: [&str; 20] = [
        "ro",
        "rw",
        "nosuid",
        "nodev",
        "noexec",
        "suid",
        "dev",
        "exec",
        "strictatime",
        "relatime",
        "noatime",
        "nodiratime",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
    ];
    let mut kept = Vec::new();
    for option in options {
        let name = option.split('=').next().unwrap_or("");
        if option.contains('=') && TMPFS_OPTIONS.contains(&name) {
            kept.push(option.as_str());
        } else if !FLAGS.contains(&option.as_str()) {
            log::info!("the spec's tmpfs at {destination}: option {option:?} left out");
        }
    }
    kept.join(",")
}

/// Packs the binds' sources into a fresh disk at `disk`: each is bound, in a mount namespace
/// of a thread of its own (so that nothing of it outlives the thread, nor is seen by the
/// host, even if the shim is killed), on a folder of a staging folder next to `disk`, which
/// `volume::pack_as_is` packs; what a copy-back of one of its folders may take.
fn pack(binds: &[Bind], disk: &Path) -> Result<Budget, Error> {
    let staging = disk.with_extension("staging");
    let stage_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Stage { what, path, source }
    };
    fs::create_dir(&staging).map_err(stage_err("creating", &staging))?;
    let headroom = if binds.iter().any(|b| b.writable) {
        WRITABLE_BYTES
    } else {
        READ_ONLY_BYTES
    };
    let packed = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                private_mounts().map_err(stage_err("a mount namespace for", &staging))?;
                for (i, bind) in binds.iter().enumerate() {
                    let folder = staging.join(i.to_string());
                    fs::create_dir(&folder).map_err(stage_err("creating", &folder))?;
                    let target = if bind.is_dir {
                        folder
                    } else {
                        let file = folder.join(FILE);
                        File::create(&file).map_err(stage_err("creating", &file))?;
                        file
                    };
                    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                    nix::mount::mount(Some(&bind.host), &target, None::<&str>, flags, None::<&str>)
                        .map_err(|e| Error::Stage {
                            what: "binding",
                            path: bind.host.clone(),
                            source: e.into(),
                        })?;
                }
                Ok(volume::pack_as_is(&staging, disk, headroom)?)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Stage {
                    what: "packing",
                    path: staging.clone(),
                    source: io::Error::other("the packing thread panicked"),
                })
            })
    });
    // The binds went with the thread's namespace: what is left are empty folders and files.
    if let Err(e) = fs::remove_dir_all(&staging) {
        log::warn!("removing {}: {e}", staging.display());
    }
    packed
}

/// Gives the calling thread a mount namespace of its own, whose mounts reach no other.
fn private_mounts() -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    let flags = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)?;
    Ok(())
}

impl Carried {
    /// Adds the spec's masked and read-only `paths` ([`Bundle::protected_paths`]) after the
    /// container's own mounts.
    ///
    /// [`Bundle::protected_paths`]: crate::bundle::Bundle::protected_paths
    pub fn protect(&mut self, paths: Vec<Mount>) -> Result<(), Error> {
        self.mounts.extend(paths);
        if self.mounts.len() > MAX_MOUNTS {
            return Err(Error::TooMany(self.mounts.len()));
        }
        Ok(())
    }

    /// Appends the binds' sources to `tar`, which is extracted in the guest folder `at`,
    /// except those in `skip` (their copies are there already): folders as they are (owners,
    /// modes, symlinks as links), each file in a folder of its own (made by the guest's tar on
    /// the way). The host paths it appended.
    pub fn append_to<W: io::Write>(
        &self,
        tar: &mut tar::Builder<W>,
        at: &str,
        skip: &HashSet<PathBuf>,
    ) -> Result<Vec<PathBuf>, Error> {
        let mut appended: Vec<PathBuf> = Vec::new();
        for bind in &self.binds {
            if skip.contains(&bind.host) || appended.contains(&bind.host) {
                continue;
            }
            let name = bind
                .copy
                .strip_prefix(at)
                .and_then(|name| name.strip_prefix('/'))
                .expect("the copies are below where the archive is extracted");
            let done = if bind.is_dir {
                tar.append_dir_all(name, &bind.host)
            } else {
                tar.append_path_with_name(&bind.host, format!("{name}/{FILE}"))
            };
            done.map_err(|source| Error::Stage {
                what: "reading",
                path: bind.host.clone(),
                source,
            })?;
            appended.push(bind.host.clone());
        }
        Ok(appended)
    }

    /// Copies the changes of the writable binds back from the VM whose agent is behind
    /// `socket` (the task's process has ended; the VM still runs), unpacking in folders made
    /// in `scratch`. What fails or is refused is logged: containerd has no one to tell.
    pub fn copy_back(&self, socket: &Path, scratch: &Path) {
        let Some(budget) = self.budget else {
            return;
        };
        for (i, bind) in self.binds.iter().enumerate() {
            if !bind.writable {
                continue;
            }
            let out = scratch.join(format!("copy-back-{i}"));
            let done = fs::create_dir(&out)
                .map_err(|e| format!("creating {}: {e}", out.display()))
                .and_then(|()| copy_back_one(bind, &bind.copy, socket, &out, budget));
            match done {
                Ok(()) => log::info!("copied the changes back to {}", bind.host.display()),
                Err(why) => log::warn!(
                    "the changes to {} in the container were not copied back: {why}",
                    bind.host.display()
                ),
            }
            if let Err(e) = fs::remove_dir_all(&out) {
                log::warn!("removing {}: {e}", out.display());
            }
        }
    }
}

/// Copies the writable bind `bind`'s changes back from its copy `guest` in the VM, unpacking
/// in the empty folder `out`.
fn copy_back_one(
    bind: &Bind,
    guest: &str,
    socket: &Path,
    out: &Path,
    budget: Budget,
) -> Result<(), String> {
    let mut export = TreeExport::new(socket, guest);
    if bind.is_dir {
        let volume = Volume {
            host: bind.host.clone(),
            guest: guest.to_string(),
            mode: Mode::ReadWrite { git: false },
        };
        let refusals = volume
            .copy_back(&budget, &mut export, out)
            .map_err(|e| vmm::error_chain::one_line(&e))?;
        for refusal in refusals {
            log::warn!("{refusal}");
        }
        return Ok(());
    }
    let budget = Budget {
        bytes: MAX_FILE_BACK,
        entries: 4,
        time: COPY_BACK_TIME,
    };
    volume::unpack_tree(&mut export, out, &budget).map_err(|e| vmm::error_chain::one_line(&e))?;
    let copy = out.join(FILE);
    let meta = fs::symlink_metadata(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
    if !meta.is_file() {
        return Err(format!("{guest}/{FILE} is no longer a file"));
    }
    let mut from = File::open(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
    // The host file itself, never a symlink put in its place; not made if it has gone.
    let mut to = OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&bind.host)
        .map_err(|e| format!("opening {}: {e}", bind.host.display()))?;
    io::copy(&mut from, &mut to).map_err(|e| format!("writing {}: {e}", bind.host.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_mounts(mounts: serde_json::Value) -> Vec<oci_spec::runtime::Mount> {
        serde_json::from_value(mounts).unwrap()
    }

    fn plan_here(spec: &[oci_spec::runtime::Mount]) -> Result<Plan, Error> {
        plan(spec, &|i, _| format!("{GUEST_MOUNTS}/{i}"))
    }

    #[test]
    fn binds_and_tmpfses_are_carried_the_agents_own_and_the_rest_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("folder");
        fs::create_dir(&folder).unwrap();
        let file = dir.path().join("hosts");
        fs::write(&file, "127.0.0.1 localhost\n").unwrap();
        let plan = plan_here(&spec_mounts(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/shm", "type": "bind", "source": folder,
             "options": ["rbind", "rw"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["ro"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k", "huge=always"]},
            {"destination": "/etc/hosts", "type": "bind", "source": file,
             "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/var/run/secrets", "source": folder,
             "options": ["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"]}
        ])))
        .unwrap();
        let tmpfs = Mount {
            destination: b"/run".to_vec(),
            kind: MountKind::Tmpfs {
                options: b"mode=755,size=65536k".to_vec(),
            },
            nosuid: true,
            ..Mount::default()
        };
        let hosts = Mount {
            destination: b"/etc/hosts".to_vec(),
            kind: MountKind::Bind {
                source: b"/run/container-mounts/0/file".to_vec(),
            },
            ..Mount::default()
        };
        let secrets = Mount {
            destination: b"/var/run/secrets".to_vec(),
            kind: MountKind::Bind {
                source: b"/run/container-mounts/1".to_vec(),
            },
            read_only: true,
            nosuid: true,
            nodev: true,
            noexec: true,
        };
        let canonical = |p: &Path| fs::canonicalize(p).unwrap();
        assert_eq!(
            plan,
            Plan {
                mounts: vec![tmpfs, hosts, secrets],
                binds: vec![
                    Bind {
                        host: canonical(&file),
                        is_dir: false,
                        writable: true,
                        copy: "/run/container-mounts/0".into(),
                    },
                    Bind {
                        host: canonical(&folder),
                        is_dir: true,
                        writable: false,
                        copy: "/run/container-mounts/1".into(),
                    },
                ],
            }
        );
    }

    #[test]
    fn in_a_running_vm_the_copy_of_a_source_is_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        fs::create_dir(&one).unwrap();
        fs::create_dir(&two).unwrap();
        let budget = Budget {
            bytes: 1,
            entries: 1,
            time: COPY_BACK_TIME,
        };
        let carried = in_folder(
            &spec_mounts(serde_json::json!([
                {"destination": "/a", "type": "bind", "source": one, "options": ["rbind"]},
                {"destination": "/b", "type": "bind", "source": two, "options": ["rbind", "ro"]},
                {"destination": "/c", "type": "bind", "source": one, "options": ["rbind", "ro"]}
            ])),
            "/run/pod/binds",
            budget,
        )
        .unwrap();
        let copies: Vec<&str> = carried.binds.iter().map(|b| &b.copy[..]).collect();
        // One source, one copy; each mount has its own flags.
        assert_eq!(copies[0], copies[2]);
        assert_ne!(copies[0], copies[1]);
        assert!(copies[1].starts_with("/run/pod/binds/") && copies[1].len() == 15 + 32);
        assert_eq!(
            carried
                .mounts
                .iter()
                .map(|m| m.read_only)
                .collect::<Vec<_>>(),
            [false, true, true]
        );
        // The sources appended once each, those there already not at all.
        let mut tar = tar::Builder::new(Vec::new());
        let skip = HashSet::from([fs::canonicalize(&two).unwrap()]);
        let appended = carried.append_to(&mut tar, "/run/pod", &skip).unwrap();
        assert_eq!(appended, [fs::canonicalize(&one).unwrap()]);
        let archive = tar.into_inner().unwrap();
        let mut entries = tar::Archive::new(&archive[..]);
        let names: Vec<String> = entries
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, [format!("{}/", &copies[0]["/run/pod/".len()..])]);
    }

    #[test]
    fn a_source_that_cannot_be_copied_or_a_bad_destination_is_one_clear_error() {
        let err = plan_here(&spec_mounts(serde_json::json!([
            {"destination": "/data", "type": "bind", "source": "/nonexistent/x",
             "options": ["rbind", "ro"]}
        ])))
        .unwrap_err();
        assert_eq!(
            vmm::error_chain::one_line(&err),
            "the spec's mount at /data: its source /nonexistent/x: No such file or directory \
             (os error 2)"
        );
        let err = plan_here(&spec_mounts(serde_json::json!([
            {"destination": "/null", "type": "bind", "source": "/dev/null", "options": ["bind"]}
        ])))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the spec's mount at /null: its source /dev/null is neither a file nor a folder \
             (only those are copied into the microVM)"
        );
        let err = plan_here(&spec_mounts(serde_json::json!([
            {"destination": "/a/../b", "type": "tmpfs", "source": "tmpfs"}
        ])))
        .unwrap_err();
        assert_eq!(
            vmm::error_chain::one_line(&err),
            "the spec's mount at /a/../b: the mount's destination \"/a/../b\" has a '.', '..' \
             or empty component"
        );
        let many: Vec<serde_json::Value> = (0..=MAX_MOUNTS)
            .map(|i| serde_json::json!({"destination": format!("/t{i}"), "type": "tmpfs"}))
            .collect();
        let err = plan_here(&spec_mounts(serde_json::Value::Array(many))).unwrap_err();
        assert!(matches!(err, Error::TooMany(65)), "{err}");
    }

    #[test]
    fn without_binds_there_is_no_disk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("mounts.img");
        let carried = carry(
            &spec_mounts(serde_json::json!([
                {"destination": "/scratch", "type": "tmpfs", "options": ["size=1m"]}
            ])),
            &disk,
        )
        .unwrap();
        assert_eq!(carried.disk, None);
        assert_eq!(carried.mounts.len(), 1);
        assert!(!disk.exists());
    }
}
