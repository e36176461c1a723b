//! What the sandbox API and `nodeos-vm cp` take from clients and guests about guest files:
//! paths (a client's), a folder's listing and a failed operation's status and stderr (a
//! guest's). A path taken is absolute and plain; a listing gives names that are one plain
//! component each, in order; nothing panics.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandbox::agent::Outcome;
use sandbox::guest_files::{check_path, outcome, parse_listing};

#[derive(Arbitrary, Debug)]
enum Case {
    Path(String),
    Listing(Vec<u8>),
    Ended { code: i32, stderr: Vec<u8> },
}

fuzz_target!(|case: Case| match case {
    Case::Path(path) => {
        if let Ok(plain) = check_path(&path) {
            assert!(plain.starts_with('/') && plain.len() <= 4095 && !plain.contains('\0'));
            assert!(plain == "/" || !plain.ends_with('/'));
            if plain != "/" {
                for part in plain[1..].split('/') {
                    assert!(!part.is_empty() && part != "." && part != "..", "{plain:?}");
                }
            }
        }
    }
    Case::Listing(output) => {
        let entries = parse_listing(&output);
        for pair in entries.windows(2) {
            assert!(pair[0].name <= pair[1].name);
        }
        for entry in &entries {
            assert!(!matches!(entry.name.as_str(), "" | "." | ".."));
            assert!(!entry.name.contains(['/', '\0']));
        }
    }
    Case::Ended { code, stderr } => {
        let result = outcome(&Outcome::Exited(code), &stderr);
        assert_eq!(result.is_ok(), code == 0);
    }
});
