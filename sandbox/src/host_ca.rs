//! CA certificates the host trusts, for Node and npm in the guest (behind a TLS-intercepting
//! proxy, say): those given with `--ca-file`, and, with a network, the ones the host's npm is
//! configured with ([`crate::npm_registry::host_cafile`]) and the host's `NODE_EXTRA_CA_CERTS`.
//! The host reads and checks each (PEM, at most [`MAX_BYTES`] in all), concatenates their
//! certificates (and nothing else of them: a PEM file may hold a private key too) into one file
//! on a read-only volume at [`GUEST_DIR`], and the guest's environment names it in
//! `NODE_EXTRA_CA_CERTS` (a whole bundle would not fit in a variable: execve takes 128 KiB).

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use contract::env::EnvVar;
use tempfile::TempDir;
use vmm::vm::VolumeDisk;

use crate::volume::{self, Mode, Volume};

/// Where the guest mounts the certificates' volume.
pub const GUEST_DIR: &str = "/run/nodeos/host-ca";
/// The certificates' file in the volume.
const FILE_NAME: &str = "ca.pem";
/// The most bytes of certificates a guest is given, all files together.
pub const MAX_BYTES: u64 = 4 << 20;
/// Where each certificate of a PEM file begins and ends.
const PEM_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const PEM_END: &[u8] = b"-----END CERTIFICATE-----";
/// The variable Node (and npm with it) reads extra CA certificates from.
const NODE_EXTRA_CA_CERTS: &str = "NODE_EXTRA_CA_CERTS";

/// Where a CA file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--ca-file`.
    Given,
    /// The host's npm config: `cafile`.
    NpmCafile,
    /// The host's `NODE_EXTRA_CA_CERTS`.
    NodeExtraCaCerts,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Given => "--ca-file",
            Origin::NpmCafile => "your npm config's cafile",
            Origin::NodeExtraCaCerts => "your NODE_EXTRA_CA_CERTS",
        })
    }
}

impl Origin {
    /// What the user can do about a bad file of this origin.
    fn remedy(self) -> &'static str {
        match self {
            Origin::Given => "give a file of CA certificates in PEM",
            Origin::NpmCafile | Origin::NodeExtraCaCerts => {
                "point it at a file of CA certificates in PEM, or pass --no-host-ca"
            }
        }
    }
}

/// A CA file for the guest, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    pub origin: Origin,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{origin} {}: {reason}; {}", .path.display(), .origin.remedy())]
    Read {
        origin: Origin,
        path: PathBuf,
        reason: io::Error,
    },
    #[error("{origin} {}: the file is empty; {}", .path.display(), .origin.remedy())]
    Empty { origin: Origin, path: PathBuf },
    #[error("{origin} {}: not PEM (no \"-----BEGIN CERTIFICATE-----\" in it); {} (openssl x509 -inform der converts DER)", .path.display(), .origin.remedy())]
    NotPem { origin: Origin, path: PathBuf },
    #[error("{origin} {}: the CA certificates given to the guest come to more than {} MiB; give only the CAs it needs", .path.display(), MAX_BYTES >> 20)]
    TooBig { origin: Origin, path: PathBuf },
    #[error("making a folder for the guest's CA certificates")]
    Scratch(#[source] vmm::runtime::Error),
    #[error("{}: writing the guest's CA certificates", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("packing the guest's CA certificates")]
    Pack(#[from] volume::Error),
}

/// The CA files for the guest: those `given`, then, when `host` (a guest with a network that
/// did not opt out), npm's `cafile` and `NODE_EXTRA_CA_CERTS` of this host, each once.
pub fn ca_files(given: &[PathBuf], host: bool) -> Vec<CaFile> {
    let mut files: Vec<CaFile> = given
        .iter()
        .map(|path| CaFile {
            origin: Origin::Given,
            path: path.clone(),
        })
        .collect();
    if host {
        let extra = std::env::var_os(NODE_EXTRA_CA_CERTS)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        for (origin, path) in [
            (Origin::NpmCafile, crate::npm_registry::host_cafile()),
            (Origin::NodeExtraCaCerts, extra),
        ] {
            if let Some(path) = path.filter(|p| !files.iter().any(|f| same_file(&f.path, p))) {
                tracing::info!(
                    "the guest trusts the CA certificates of {origin} {} too (--no-host-ca leaves them out)",
                    path.display()
                );
                files.push(CaFile { origin, path });
            }
        }
    }
    files
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

/// The certificates of `files`, each checked (readable, not empty, with a certificate in PEM),
/// one after the other; `None` when there are none.
pub fn bundle(files: &[CaFile]) -> Result<Option<Vec<u8>>, Error> {
    let mut bundle = Vec::new();
    for CaFile { origin, path } in files {
        let (origin, path) = (*origin, path.clone());
        let mut text = Vec::new();
        fs::File::open(&path)
            .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut text))
            .map_err(|reason| Error::Read {
                origin,
                path: path.clone(),
                reason,
            })?;
        if text.len() as u64 > MAX_BYTES {
            return Err(Error::TooBig { origin, path });
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::Empty { origin, path });
        }
        let certificates = certificates(&text);
        if certificates.is_empty() {
            return Err(Error::NotPem { origin, path });
        }
        if (bundle.len() + certificates.len()) as u64 > MAX_BYTES {
            return Err(Error::TooBig { origin, path });
        }
        bundle.extend_from_slice(&certificates);
    }
    Ok((!bundle.is_empty()).then_some(bundle))
}

/// The certificates of a PEM text, each from its BEGIN line to its END line, a newline after
/// each; nothing else (keys, comments).
fn certificates(mut text: &[u8]) -> Vec<u8> {
    let find = |text: &[u8], marker: &[u8]| text.windows(marker.len()).position(|w| w == marker);
    let mut certificates = Vec::new();
    while let Some(begin) = find(text, PEM_BEGIN) {
        text = &text[begin..];
        let Some(end) = find(text, PEM_END).map(|end| end + PEM_END.len()) else {
            break;
        };
        certificates.extend_from_slice(&text[..end]);
        certificates.push(b'\n');
        text = &text[end..];
    }
    certificates
}

/// The certificates packed for a guest: the read-only volume holding them and the variable
/// naming their file. The volume's image lives as long as this.
#[derive(Debug)]
pub struct GuestCa {
    pub disk: VolumeDisk,
    pub env: EnvVar,
    _dir: TempDir,
}

impl GuestCa {
    /// Packs `bundle` into a read-only volume, in a scratch folder of its own.
    pub fn pack(bundle: &[u8]) -> Result<GuestCa, Error> {
        let dir = vmm::runtime::scratch_dir("ca").map_err(Error::Scratch)?;
        let folder = dir.path().join("host-ca");
        let file = folder.join(FILE_NAME);
        fs::create_dir(&folder)
            .and_then(|()| fs::write(&file, bundle))
            .map_err(|source| Error::Write {
                path: file.clone(),
                source,
            })?;
        let volume = Volume {
            host: folder,
            guest: GUEST_DIR.to_string(),
            mode: Mode::ReadOnly,
        };
        let disk = volume.disk(dir.path().join("host-ca.img"));
        volume.pack(&disk.image)?;
        let env = EnvVar::new(NODE_EXTRA_CA_CERTS, format!("{GUEST_DIR}/{FILE_NAME}"))
            .expect("a valid variable");
        Ok(GuestCa {
            disk,
            env,
            _dir: dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_child;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

    fn given(dir: &Path, name: &str, body: &[u8]) -> CaFile {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        CaFile {
            origin: Origin::Given,
            path,
        }
    }

    #[test]
    fn pem_files_are_checked_and_concatenated() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            given(dir.path(), "a.pem", CERT.as_bytes()),
            given(dir.path(), "b.pem", format!("# b\n{CERT}\n").as_bytes()),
        );
        assert_eq!(
            bundle(&[a, b]).unwrap().unwrap(),
            format!("{CERT}\n{CERT}\n").as_bytes()
        );
        // A client's key beside its certificate stays on the host.
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
        let with_key = given(
            dir.path(),
            "client.pem",
            format!("{key}{CERT}\n{key}").as_bytes(),
        );
        assert_eq!(
            bundle(&[with_key]).unwrap().unwrap(),
            format!("{CERT}\n").as_bytes()
        );
        assert!(bundle(&[]).unwrap().is_none());

        let bad = |file: CaFile| bundle(&[file]).unwrap_err().to_string();
        let empty = bad(given(dir.path(), "empty.pem", b" \n"));
        assert!(empty.contains("empty.pem: the file is empty"), "{empty}");
        let der = bad(given(dir.path(), "ca.der", b"\x30\x82\x01\x0a"));
        assert!(der.contains("ca.der: not PEM"), "{der}");
        let key = bad(given(
            dir.path(),
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\n",
        ));
        assert!(key.contains("not PEM"), "{key}");
        let missing = bad(CaFile {
            origin: Origin::NpmCafile,
            path: dir.path().join("missing.pem"),
        });
        assert!(
            missing.starts_with("your npm config's cafile ")
                && missing.contains("missing.pem: No such file")
                && missing.ends_with("or pass --no-host-ca"),
            "{missing}"
        );
        let folder = bad(CaFile {
            origin: Origin::Given,
            path: dir.path().to_path_buf(),
        });
        assert!(folder.contains("Is a directory"), "{folder}");
    }

    /// Run alone in a child whose environment the parent test sets: the host's npm `cafile`
    /// (a link to the file given), its `NODE_EXTRA_CA_CERTS`, and the file given.
    #[test]
    fn child_with_host_ca_files() {
        if !test_child::is_child() {
            return;
        }
        let var = |name| PathBuf::from(std::env::var_os(name).unwrap());
        let file = |origin, name| CaFile {
            origin,
            path: var(name),
        };
        let given = file(Origin::Given, "NODEOS_SANDBOX_TEST_CA");
        let (npm, node) = (
            file(Origin::NpmCafile, "npm_config_cafile"),
            file(Origin::NodeExtraCaCerts, "NODE_EXTRA_CA_CERTS"),
        );
        assert_eq!(
            ca_files(std::slice::from_ref(&given.path), false),
            std::slice::from_ref(&given)
        );
        // npm's cafile is the file given: once.
        assert_eq!(
            ca_files(std::slice::from_ref(&given.path), true),
            [given, node.clone()]
        );
        assert_eq!(ca_files(&[], true), [npm, node]);
    }

    #[test]
    fn host_ca_files_come_from_npm_and_node_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let (given, link, extra) = (
            dir.path().join("given.pem"),
            dir.path().join("link.pem"),
            dir.path().join("extra.pem"),
        );
        fs::write(&given, CERT).unwrap();
        fs::write(&extra, CERT).unwrap();
        std::os::unix::fs::symlink(&given, &link).unwrap();
        let out = test_child::command("host_ca::tests::child_with_host_ca_files")
            .env("NODEOS_SANDBOX_TEST_CA", &given)
            .env("npm_config_cafile", &link)
            .env("NODE_EXTRA_CA_CERTS", &extra)
            .env_remove("NPM_CONFIG_CAFILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn at_most_four_mib_in_all() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("{}\n", "A".repeat(63));
        let half = format!(
            "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----",
            line.repeat((MAX_BYTES / 2) as usize / line.len())
        );
        let (a, b) = (
            given(dir.path(), "a.pem", half.as_bytes()),
            given(dir.path(), "b.pem", half.as_bytes()),
        );
        assert!(bundle(std::slice::from_ref(&a)).is_ok());
        let too_big = bundle(&[a, b]).unwrap_err().to_string();
        assert!(
            too_big
                .contains("b.pem: the CA certificates given to the guest come to more than 4 MiB"),
            "{too_big}"
        );
        let huge = given(
            dir.path(),
            "huge.pem",
            format!("{half}\n{half}\n").as_bytes(),
        );
        assert!(matches!(bundle(&[huge]), Err(Error::TooBig { .. })));
    }
}
