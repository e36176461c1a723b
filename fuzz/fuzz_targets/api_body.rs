//! What clients send `nodeos-vm serve`: app names, deploy options (the raw query string),
//! invoke bodies, and packages. A package must unpack inside its folder and nowhere else,
//! whatever its entries' names, types, modes and contents.
#![no_main]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Component, Path};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serve::fuzzing::{check_name, invoke_event, unpack, Options};

#[derive(Arbitrary, Debug)]
enum Case {
    Name(String),
    Query(String),
    Invoke(Vec<u8>),
    /// A tarball of these entries, gzipped.
    Package(Vec<Entry>),
    /// These bytes as the tarball, gzipped.
    Tar(Vec<u8>),
    /// These bytes as the gzipped tarball.
    Raw(Vec<u8>),
}

/// A tar entry with every header field as a hostile client could write it.
#[derive(Arbitrary, Debug)]
struct Entry {
    name: Vec<u8>,
    link: Vec<u8>,
    kind: u8,
    mode: u32,
    data: Vec<u8>,
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        let old = header.as_old_mut();
        let n = e.name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&e.name[..n]);
        let n = e.link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&e.link[..n]);
        header.set_entry_type(tar::EntryType::new(e.kind));
        header.set_mode(e.mode);
        header.set_size(e.data.len() as u64);
        header.set_cksum();
        builder.append(&header, &e.data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

thread_local! {
    /// The folder every input unpacks in (in memory where /dev/shm is there): making a
    /// temporary folder per input costs more than the rest of the input.
    static ROOT: tempfile::TempDir = {
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        tempfile::Builder::new().prefix("api_body").tempdir_in(parent).unwrap()
    };
}

/// Unpacks `tgz` into a folder beside another, and checks that nothing appeared or changed
/// outside the first and that no links were made in it.
fn check_unpack(tgz: &[u8]) {
    ROOT.with(|root| check_unpack_in(tgz, root.path()));
}

fn check_unpack_in(tgz: &[u8], root: &Path) {
    // Empty, as a fresh folder is: what an earlier input left (it passed the checks below,
    // so only `dest` and `outside`).
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        fs::remove_dir_all(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    }
    let (dest, outside) = (root.join("dest"), root.join("outside"));
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("sentinel"), b"untouched").unwrap();
    let result = unpack(tgz, &dest);
    let mut top: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(top, ["dest", "outside"]);
    let beside: Vec<_> = fs::read_dir(&outside).unwrap().collect();
    assert_eq!(beside.len(), 1);
    assert_eq!(fs::read(outside.join("sentinel")).unwrap(), b"untouched");
    assert_no_links(&dest);
    if let Ok(manifest) = result {
        for (name, value) in manifest.env {
            assert!(!name.is_empty() && !name.contains(['=', '\0']) && !value.contains('\0'));
        }
    }
}

fn assert_no_links(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        assert!(kind.is_dir() || kind.is_file(), "{:?}", entry.path());
        if kind.is_dir() {
            assert_no_links(&entry.path());
        }
    }
}

fuzz_target!(|case: Case| match case {
    Case::Name(name) => {
        if check_name(&name).is_ok() {
            let mut parts = Path::new(&name).components();
            assert!(matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none());
            assert!(name.len() <= 63);
        }
    }
    Case::Query(query) => {
        let Ok(pairs) = serde_urlencoded::from_str::<HashMap<String, String>>(&query) else {
            return;
        };
        if let Ok(o) = Options::from_query(&pairs) {
            assert!(o.max >= 1 && o.min <= o.max, "{o:?}");
            assert!(o.memory_mib >= 128 && (1..=32).contains(&o.cpus), "{o:?}");
            assert!(!o.timeout.is_zero() && !o.idle.is_zero(), "{o:?}");
        }
    }
    Case::Invoke(body) => {
        let _ = invoke_event(&body);
    }
    Case::Package(entries) => check_unpack(&gzip(&tar(&entries))),
    Case::Tar(tar) => check_unpack(&gzip(&tar)),
    Case::Raw(tgz) => check_unpack(&tgz),
});
