//! The guest's memory running out. Without swap, a kernel short of memory evicts the page cache
//! of the very programs that run (Node's binary, read from the compressed root image) and reads
//! it back, again and again — for minutes under emulation, at the host's expense — before its
//! OOM killer acts. The multi-generational LRU's `min_ttl_ms` keeps the working set of the
//! last second in memory and calls the OOM killer when it cannot: the process that filled the
//! memory is killed at once (and the agent reports it).

use crate::error::{Context, Result};

/// How long a page in use stays, at least, before the OOM killer is called instead.
const MIN_TTL: (&str, &str) = ("/sys/kernel/mm/lru_gen/min_ttl_ms", "1000");

/// Sets [`MIN_TTL`] (sysfs is mounted).
pub fn keep_working_set() -> Result<()> {
    let (path, value) = MIN_TTL;
    std::fs::write(path, value).context(|| format!("write {value} to {path}"))
}
