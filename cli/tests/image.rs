//! `nodeos-vm image export`: the archive is an OCI image layout and a `docker load` archive
//! whose one layer is the root image, file for file (checked against squashfs-tools' own
//! listing). Debian's containerd imports it and runs it with runc and with our shim in
//! shim/tests/containerd.rs.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

fn export(args: &[&str]) -> Output {
    common::artifacts();
    Command::new(common::BIN)
        .args(["image", "export"])
        .args(args)
        .output()
        .expect("running nodeos-vm image export")
}

/// Exports the image as `name` into `dir`; the archive's path.
fn exported(dir: &Path, name: &str) -> PathBuf {
    let archive = dir.join("nodeos.tar");
    let out = export(&["-o", archive.to_str().unwrap(), "--name", name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("image: "), "{stdout}");
    archive
}

/// Every file of a tar archive, by name.
fn files_of(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The blob a descriptor names, its digest and size checked.
fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, descriptor: &Value) -> &'a [u8] {
    let digest = descriptor["digest"].as_str().unwrap();
    let data = &files[&format!("blobs/{}", digest.replacen(':', "/", 1))];
    assert_eq!(sha256(data), digest);
    assert_eq!(descriptor["size"].as_u64(), Some(data.len() as u64));
    data
}

#[test]
fn the_archive_is_an_oci_layout_and_a_docker_archive_of_the_root_image() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_of(&exported(dir.path(), "acme/nodeos:1"));
    let json = |name: &str| serde_json::from_slice::<Value>(&files[name]).unwrap();

    assert_eq!(json("oci-layout")["imageLayoutVersion"], "1.0.0");
    let index = json("index.json");
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let annotations = &manifests[0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        "docker.io/acme/nodeos:1"
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "1");
    let manifest: Value = serde_json::from_slice(blob(&files, &manifests[0])).unwrap();
    let config: Value = serde_json::from_slice(blob(&files, &manifest["config"])).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gzipped = blob(&files, &layers[0]);
    let mut layer = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut layer)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str(),
        Some(&*sha256(&layer))
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["User"], "node");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["node"]));

    // docker load's view of the same blobs.
    let docker = json("manifest.json");
    assert_eq!(docker[0]["RepoTags"], serde_json::json!(["acme/nodeos:1"]));
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(
        docker[0]["Config"],
        format!("blobs/{}", config_digest.replacen(':', "/", 1))
    );

    // The layer is the image: every entry squashfs-tools lists but the device nodes (a
    // container runtime makes /dev), with its owner and mode; and one file of its own, the
    // image's SHA-256, which tells the containerd shim the image is the guest's.
    let (_, rootfs) = common::artifacts();
    let mut entries = BTreeMap::new();
    let mut tar = tar::Archive::new(&layer[..]);
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("usr/lib/nodeos/image.sha256") {
            let mut mark = String::new();
            entry.read_to_string(&mut mark).unwrap();
            let image = std::fs::read(rootfs).unwrap();
            assert_eq!(mark, format!("{}\n", hex::encode(Sha256::digest(&image))));
            continue;
        }
        let header = entry.header();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path.trim_end_matches('/').to_string();
        let kind = header.entry_type();
        let owner = (header.uid().unwrap(), header.gid().unwrap());
        assert!(
            entries
                .insert(path.clone(), (kind, header.mode().unwrap(), owner))
                .is_none(),
            "{path} twice"
        );
    }
    let listing = Command::new(common::host_program("unsquashfs", "squashfs-tools"))
        .args(["-lln", "-d", ""])
        .arg(rootfs)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    let mut listed = 0;
    for line in listing.lines().filter(|l| l.contains(" /")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner) = (fields[0], fields[1]);
        let path = line[line.find(" /").unwrap() + 2..]
            .split(" -> ")
            .next()
            .unwrap();
        if path.is_empty() || mode.starts_with(['c', 'b']) {
            continue;
        }
        listed += 1;
        let (kind, bits, (uid, gid)) = entries
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the layer"));
        assert_eq!(format!("{uid}/{gid}"), owner, "{path}");
        let expected_kind = match mode.as_bytes()[0] {
            b'd' => tar::EntryType::Directory,
            b'l' => tar::EntryType::Symlink,
            _ => tar::EntryType::Regular,
        };
        assert_eq!(*kind, expected_kind, "{path}");
        if expected_kind != tar::EntryType::Symlink {
            assert_eq!(rwx(*bits), mode[1..], "{path}");
        }
    }
    assert_eq!(listed, entries.len(), "entries besides the image's");
    assert!(listed > 1000, "{listed} entries");
    assert_eq!(entries["home/node"].2, (1000, 1000));
    assert!(entries["usr/bin/node"].1 & 0o111 != 0);
    assert!(!entries.contains_key("dev/null"));
}

/// `ls -l`'s nine permission letters for mode `bits`.
fn rwx(bits: u32) -> String {
    let mut s: Vec<u8> = b"rwxrwxrwx"
        .iter()
        .enumerate()
        .map(|(i, &c)| if bits & (0o400 >> i) != 0 { c } else { b'-' })
        .collect();
    if bits & 0o1000 != 0 {
        s[8] = if s[8] == b'x' { b't' } else { b'T' };
    }
    String::from_utf8(s).unwrap()
}

#[test]
fn a_bad_name_or_folder_is_one_clear_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("nodeos.tar");
    let out = export(&["-o", archive.to_str().unwrap(), "--name", "NodeOS Image"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("\"NodeOS Image\" is not an image name"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!archive.exists());

    let missing = dir.path().join("no/such/folder/nodeos.tar");
    let out = export(&["-o", missing.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
