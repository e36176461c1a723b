//! `run -v HOST:GUEST:rw` copy-back: the guest sends its volume's tree as a stream
//! (contract::tree), which the host decodes and unpacks into a scratch folder, then mirrors into
//! HOST. Any bytes, cut into any chunks: no panic, nothing written outside the scratch folder
//! and HOST, and what HOST ends up with stays within the budget.
#![no_main]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandbox::agent;
use sandbox::volume::{Budget, TreeSource, Volume};

#[derive(Arbitrary, Debug)]
struct Input {
    /// The stream, in the chunks it arrives in.
    chunks: Vec<Vec<u8>>,
    /// What HOST holds before the copy-back: (name, contents).
    host_files: Vec<(u8, Vec<u8>)>,
}

struct Chunks(std::vec::IntoIter<Vec<u8>>);

impl TreeSource for Chunks {
    fn next_chunk(&mut self, _deadline: Instant) -> Result<Option<Vec<u8>>, agent::Error> {
        Ok(self.0.next())
    }
}

/// Every path under `root` (symlinks not followed) with its size, sorted.
fn listing(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            out.push((entry.path().display().to_string(), meta.len()));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

fuzz_target!(|input: Input| {
    let top = tempfile::tempdir().unwrap();
    let (host, scratch, outside) = (
        top.path().join("host"),
        top.path().join("scratch"),
        top.path().join("outside"),
    );
    for dir in [&host, &scratch, &outside] {
        fs::create_dir(dir).unwrap();
    }
    fs::write(outside.join("canary"), b"untouched").unwrap();
    for (name, contents) in input.host_files.iter().take(4) {
        fs::write(host.join(format!("f{name}")), contents).unwrap();
    }
    let before = listing(&outside);
    let volume = Volume::parse(&format!("{}:/app:rw", host.display())).unwrap();
    let budget = Budget {
        bytes: 1 << 20,
        entries: 64,
        time: Duration::from_secs(5),
    };
    let mut source = Chunks(
        input
            .chunks
            .into_iter()
            .take(64)
            .collect::<Vec<_>>()
            .into_iter(),
    );
    let _ = volume.copy_back(&budget, &mut source, &scratch);
    assert_eq!(listing(&outside), before, "nothing outside changes");
    assert_eq!(fs::read(outside.join("canary")).unwrap(), b"untouched");
    let entries = listing(&host).len() as u64;
    assert!(entries <= budget.entries + 4, "{entries} entries in HOST");
});
