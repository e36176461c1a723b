//! Helpers shared by the box tests.

use std::path::PathBuf;

pub fn cache() -> PathBuf {
    kvm_box::default_cache_dir()
}
