//! Debian packages through apt, without installing them: the host's apt for the host's
//! architecture, or a private apt state (its own package lists, cache and empty dpkg status)
//! for another one, so that the host's dpkg architectures and configuration stay as they are.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use contract::arch::Arch;

use crate::{host, BoxError};

/// Debian 12's archive, as rootfs/debs.sh lists it.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";

/// A package at a version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Package {
    pub name: String,
    pub version: String,
}

impl Package {
    /// A directory or marker name for it: epochs (`1:1.35.0`) have a colon, kept out of names
    /// as Debian's own file names do.
    pub(crate) fn key(&self) -> String {
        format!("{}_{}", self.name, self.version.replace(':', "%3a"))
    }
}

/// apt-get and apt-cache with the options that choose their state.
#[derive(Debug, Clone)]
pub(crate) struct Apt {
    options: Vec<String>,
    /// A private state's lock file: held around each command, so that parallel boxes wait
    /// for one another's `apt-get update` instead of failing on apt's own lock.
    lock: Option<PathBuf>,
}

impl Apt {
    /// The host's apt, as configured.
    pub(crate) fn host() -> Self {
        Self {
            options: Vec::new(),
            lock: None,
        }
    }

    /// An apt for `arch`'s packages with its state in `dir` (created; about 30 MB of package
    /// lists once `update` ran).
    pub(crate) fn private(arch: Arch, dir: &Path) -> Result<Self, BoxError> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(BoxError::io("creating", &path))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, b"").map_err(BoxError::io("writing", &status))?;
        }
        let sources = dir.join("sources.list");
        if fs::read_to_string(&sources).ok().as_deref() != Some(SOURCES) {
            // Whole or not at all: another box's apt may be reading it.
            let tmp = dir.join(format!(".sources.list.{}", std::process::id()));
            fs::write(&tmp, SOURCES).map_err(BoxError::io("writing", &tmp))?;
            fs::rename(&tmp, &sources).map_err(BoxError::io("writing", &sources))?;
        }
        let path = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
        let debian = arch.debian();
        let options = [
            format!("APT::Architecture={debian}"),
            format!("APT::Architectures::={debian}"),
            format!("Dir::State::Lists={}", path("lists")),
            format!("Dir::Cache={}", path("cache")),
            format!("Dir::State::status={}", path("status")),
            format!("Dir::Etc::SourceList={}", path("sources.list")),
            format!("Dir::Etc::SourceParts={}", path("sources.list.d")),
        ];
        Ok(Self {
            options: options.into_iter().flat_map(|o| ["-o".into(), o]).collect(),
            lock: Some(dir.join("kvm-box.lock")),
        })
    }

    /// The host's apt for the host's architecture, else a private one in `dir`.
    pub(crate) fn for_arch(arch: Arch, dir: &Path) -> Result<Self, BoxError> {
        if arch == Arch::host() {
            Ok(Self::host())
        } else {
            Self::private(arch, dir)
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(&self.options);
        cmd
    }

    /// Runs `cmd` (made by [`Apt::command`]) to its end under the state's lock, if private.
    fn output(&self, cmd: &mut Command) -> Result<Output, BoxError> {
        let _held = match &self.lock {
            Some(path) => {
                let file = fs::File::create(path).map_err(BoxError::io("creating", path))?;
                file.lock().map_err(BoxError::io("locking", path))?;
                Some(file)
            }
            None => None,
        };
        host::output(cmd)
    }

    fn stdout(&self, cmd: &mut Command) -> Result<String, BoxError> {
        Ok(String::from_utf8_lossy(&self.output(cmd)?.stdout).into_owned())
    }

    /// `query`, and once more after `apt-get update` if it failed (a fresh machine or a fresh
    /// private state has no package lists).
    pub(crate) fn with_lists<T>(
        &self,
        what: &str,
        query: impl Fn() -> Result<T, BoxError>,
    ) -> Result<T, BoxError> {
        query().or_else(|first| {
            tracing::info!(error = %first, "apt does not know {what}; running apt-get update");
            self.update()?;
            query()
        })
    }

    pub(crate) fn update(&self) -> Result<(), BoxError> {
        tracing::info!("apt-get update");
        self.output(self.command("apt-get").arg("update"))?;
        Ok(())
    }

    /// The package a metapackage depends on whose name starts with `prefix`, at its candidate
    /// version.
    pub(crate) fn dependency(&self, metapackage: &str, prefix: &str) -> Result<Package, BoxError> {
        let out = self.stdout(self.command("apt-cache").args(["depends", metapackage]))?;
        let name = parse_depends(&out, prefix).ok_or_else(|| {
            BoxError::Assets(format!(
                "`apt-cache depends {metapackage}` names no {prefix} package:\n{out}"
            ))
        })?;
        self.candidate(&name)
    }

    /// `package` at the version apt would install.
    pub(crate) fn candidate(&self, package: &str) -> Result<Package, BoxError> {
        let out = self.stdout(self.command("apt-cache").args(["policy", package]))?;
        let version = parse_candidate(&out).ok_or_else(|| {
            BoxError::Assets(format!(
                "apt has no installable version of {package}:\n{out}"
            ))
        })?;
        Ok(Package {
            name: package.to_string(),
            version,
        })
    }

    /// `packages` and everything they depend on (recommendations left out), as apt would
    /// install them on a system with this state's dpkg status: for a private state, whose
    /// status is empty, the whole closure.
    pub(crate) fn closure(&self, packages: &[&str]) -> Result<Vec<Package>, BoxError> {
        let out = self.stdout(
            self.command("apt-get")
                .args(["install", "--print-uris", "-qq", "--no-install-recommends"])
                .args(packages),
        )?;
        parse_uris(&out)
    }

    /// `apt-get download` of `packages` into `dir`; returns their .debs in the same order.
    pub(crate) fn download(
        &self,
        packages: &[Package],
        dir: &Path,
    ) -> Result<Vec<PathBuf>, BoxError> {
        tracing::info!(count = packages.len(), first = ?packages.first(), "apt-get download");
        self.output(
            self.command("apt-get")
                .arg("download")
                .args(packages.iter().map(|p| format!("{}={}", p.name, p.version)))
                .current_dir(dir),
        )?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(BoxError::io("reading", dir))? {
            let entry = entry.map_err(BoxError::io("reading", dir))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        packages
            .iter()
            .map(|p| {
                let prefix = format!("{}_", p.key());
                names
                    .iter()
                    .find(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                    .map(|n| dir.join(n))
                    .ok_or_else(|| {
                        BoxError::Assets(format!(
                            "apt-get download {}={} left no .deb in {}",
                            p.name,
                            p.version,
                            dir.display()
                        ))
                    })
            })
            .collect()
    }
}

/// Unpacks a .deb's files into `into` (no maintainer scripts, nothing installed).
pub(crate) fn extract(deb: &Path, into: &Path) -> Result<(), BoxError> {
    host::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into))?;
    Ok(())
}

/// The first `Depends: <prefix>...` of `apt-cache depends` output.
fn parse_depends(out: &str, prefix: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|dep| dep.starts_with(prefix) && !dep.starts_with('<'))
        .map(String::from)
}

fn parse_candidate(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| !v.is_empty() && *v != "(none)")
        .map(String::from)
}

/// The packages of `apt-get install --print-uris -qq` lines:
/// `'http://.../libc6_2.36-9_arm64.deb' libc6_2.36-9_arm64.deb 2324660 MD5Sum:...`.
fn parse_uris(out: &str) -> Result<Vec<Package>, BoxError> {
    out.lines()
        .filter(|l| l.starts_with('\''))
        .map(|line| {
            let file = line.split_whitespace().nth(1).unwrap_or_default();
            let mut parts = file.strip_suffix(".deb").unwrap_or(file).split('_');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(name), Some(version), Some(_arch), None) if !name.is_empty() => Ok(Package {
                    name: name.to_string(),
                    version: version.replace("%3a", ":"),
                }),
                _ => Err(BoxError::Assets(format!(
                    "unexpected line from apt-get --print-uris: {line}"
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_and_candidate_parse() {
        let depends = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(depends, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            parse_depends("x\n  Depends: <virtual>\n", "linux-image-"),
            None
        );

        let policy = "busybox-static:\n  Installed: (none)\n  Candidate: 1:1.35.0-4+deb12u1+b1\n  Version table:\n";
        assert_eq!(
            parse_candidate(policy).as_deref(),
            Some("1:1.35.0-4+deb12u1+b1")
        );
        assert_eq!(
            parse_candidate("p:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        let busybox = Package {
            name: "busybox-static".into(),
            version: "1:1.35.0".into(),
        };
        assert_eq!(busybox.key(), "busybox-static_1%3a1.35.0");
    }

    #[test]
    fn print_uris_parse() {
        let out = "'http://deb.debian.org/debian/pool/main/a/audit/libaudit-common_1%3a3.0.9-1_all.deb' libaudit-common_1%3a3.0.9-1_all.deb 10448 MD5Sum:c1f1\n\
                   'http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.36-9%2bdeb12u14_arm64.deb' libc6_2.36-9+deb12u14_arm64.deb 2324660 MD5Sum:9665\n";
        let packages = parse_uris(out).unwrap();
        assert_eq!(
            packages,
            [
                Package {
                    name: "libaudit-common".into(),
                    version: "1:3.0.9-1".into()
                },
                Package {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u14".into()
                },
            ]
        );
        assert!(parse_uris("'http://x/y.deb' nonsense 1 MD5Sum:0\n").is_err());
    }
}
