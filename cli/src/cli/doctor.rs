//! `nodeos-vm doctor`: what this host offers and what `start` would use.

use sandbox::artifacts::{Artifact, Store};
use sandbox::vm_config;
use vmm::backend::detect::{self, KvmSupport};
use vmm::memory::huge_pages::{self, Pool};

pub fn run() -> anyhow::Result<()> {
    match detect::probe() {
        KvmSupport::Usable => println!("kvm: usable (hardware virtualization)\nauto backend: kvm"),
        KvmSupport::Unusable(why) => println!("kvm: unusable: {why}\nauto backend: qemu (TCG)"),
    }
    println!("{}", huge_pages_line(Pool::read()));
    let store = Store::from_env()?;
    println!("cache: {}", store.cache_dir().display());
    for artifact in [Artifact::Kernel, Artifact::Rootfs] {
        match store.cached(artifact)? {
            Some(path) => println!("{}: built, {}", artifact.name(), path.display()),
            None => println!("{}: not built yet (`nodeos-vm build`)", artifact.name()),
        }
    }
    Ok(())
}

/// Whether cold-booted VMs of the default size get 2 MiB huge pages (vmm::memory::huge_pages).
fn huge_pages_line(pool: std::io::Result<Pool>) -> String {
    let mib = vm_config::memory_mib(vm_config::DEFAULT_MEMORY).unwrap_or(512);
    let per_vm = huge_pages::pages_for(u64::from(mib) << 20);
    match pool {
        Err(e) => format!("huge pages: none ({e}): VMs use transparent huge pages"),
        Ok(pool) if pool.guests_of(mib) > 0 => format!(
            "huge pages: {} free 2 MiB pages, enough for {} VMs of {mib} MiB; more VMs use \
             transparent huge pages",
            pool.available(),
            pool.guests_of(mib)
        ),
        Ok(pool) => format!(
            "huge pages: {} free 2 MiB pages, too few for a VM of {mib} MiB, which takes {per_vm}: VMs use \
             transparent huge pages; to set some aside for, say, 4 VMs: \
             echo {} > /proc/sys/vm/nr_hugepages",
            pool.available(),
            pool.total + 4 * per_vm - pool.available()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_line_says_how_many_vms_fit_or_how_to_reserve() {
        let pool = |total, free, reserved| {
            Ok(Pool {
                total,
                free,
                reserved,
            })
        };
        let line = huge_pages_line(pool(1024, 1024, 0));
        assert!(line.contains("enough for 4 VMs of 512 MiB"), "{line}");
        let line = huge_pages_line(pool(300, 300, 100));
        assert!(
            line.contains("200 free") && line.contains("echo 1124 > /proc/sys/vm/nr_hugepages"),
            "{line}"
        );
        let line = huge_pages_line(Err(std::io::ErrorKind::NotFound.into()));
        assert!(line.contains("transparent huge pages"), "{line}");
    }
}
