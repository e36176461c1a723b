//! `nodeos-vm doctor`: what this host offers and what `start` would use.

use std::path::PathBuf;

use contract::arch::Arch;
use sandbox::artifacts::{Artifact, Store};
use sandbox::templates::{self, Templates};
use sandbox::vm_config;
use vmm::backend::detect::{self, KvmSupport};
use vmm::backend::qemu;
use vmm::jail::IdRange;
use vmm::memory::huge_pages::{self, Pool};

use super::vm_options::{choose_backend, ArchChoice, BackendChoice, JailArgs};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// One JSON object (kvm_usable, kvm_unusable_why, auto_backend, huge_pages_free,
    /// default_vms_on_huge_pages, cache, kernel, root_image: a path, null when not built, or
    /// {"unknown": why}; templates: for each VM shape `nodeos-vm build` makes a template of,
    /// its shape and its file or null, or {"none": why}; emulated: for each other guest
    /// architecture, its emulator's path or null, its kernel and root image) instead of lines.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let kvm = detect::probe();
    let pool = Pool::read();
    let default_mib = vm_config::memory_mib(vm_config::DEFAULT_MEMORY).unwrap_or(512);
    let (free_pages, vms_on_huge_pages) = match &pool {
        Ok(pool) => (Some(pool.available()), pool.guests_of(default_mib)),
        Err(_) => (None, 0),
    };
    let huge_pages = huge_pages_line(pool);
    let store = Store::from_env()?;
    // Without the sources (a binary copied elsewhere), what is built cannot be told: said so.
    let cached = |artifact| {
        store
            .cached(artifact)
            .map_err(|e| vmm::error_chain::one_line(&e))
    };
    let (kernel, rootfs) = (cached(Artifact::Kernel), cached(Artifact::Rootfs));
    let templates = default_templates(&store, &kernel, &rootfs);
    // The other architectures' guests: under QEMU's emulation, their own kernel and image.
    let emulated: Vec<_> = Arch::ALL
        .into_iter()
        .filter(|&arch| arch != Arch::host())
        .map(|arch| {
            let store = store.clone().for_arch(arch);
            let cached = |artifact| {
                store
                    .cached(artifact)
                    .map_err(|e| vmm::error_chain::one_line(&e))
            };
            Emulated {
                arch,
                emulator: qemu::emulator_path(arch),
                kernel: cached(Artifact::Kernel),
                rootfs: cached(Artifact::Rootfs),
            }
        })
        .collect();
    if args.json {
        let path = |p: &Result<Option<std::path::PathBuf>, String>| match p {
            Ok(path) => serde_json::json!(path),
            Err(why) => serde_json::json!({ "unknown": why }),
        };
        let (usable, why) = match &kvm {
            KvmSupport::Usable => (true, None),
            KvmSupport::Unusable(why) => (false, Some(why.clone())),
        };
        let report = serde_json::json!({
            "kvm_usable": usable,
            "kvm_unusable_why": why,
            "auto_backend": if usable { "kvm" } else { "qemu-tcg" },
            "huge_pages_free": free_pages,
            "default_vms_on_huge_pages": vms_on_huge_pages,
            "cache": store.cache_dir(),
            "kernel": path(&kernel),
            "root_image": path(&rootfs),
            "templates": match &templates {
                Ok(made) => serde_json::json!(made
                    .iter()
                    .map(|(shape, path)| serde_json::json!({ "shape": shape, "path": path }))
                    .collect::<Vec<_>>()),
                Err(why) => serde_json::json!({ "none": why }),
            },
            "emulated": emulated.iter().map(|e| (e.arch.name().to_string(), serde_json::json!({
                "emulator": e.emulator,
                "kernel": path(&e.kernel),
                "root_image": path(&e.rootfs),
            }))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{report}");
        return Ok(());
    }
    match kvm {
        KvmSupport::Usable => println!("kvm: usable (hardware virtualization)\nauto backend: kvm"),
        KvmSupport::Unusable(why) => println!("kvm: unusable: {why}\nauto backend: qemu (TCG)"),
    }
    println!("{huge_pages}");
    println!("cache: {}", store.cache_dir().display());
    print_artifacts("", kernel, rootfs, "nodeos-vm build");
    match templates {
        Ok(made) => {
            for (shape, path) in made {
                match path {
                    Some(path) => {
                        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                        println!(
                            "snapshot: made, {} ({:.1} MB) ({shape})",
                            path.display(),
                            size as f64 / 1e6
                        );
                    }
                    None => println!(
                        "snapshot: not made yet ({shape}): the first VM of that shape makes it, \
                         or `nodeos-vm build`"
                    ),
                }
            }
        }
        Err(why) => println!("snapshot: none ({why})"),
    }
    for e in emulated {
        let (program, package) = qemu::emulator(e.arch);
        match &e.emulator {
            Some(path) => println!(
                "{} guests (--arch {}): QEMU's emulation, {}",
                e.arch,
                e.arch,
                path.display()
            ),
            None => println!(
                "{} guests (--arch {}): QEMU's emulation, {program} not installed (as root it \
                 is installed on first use; else `sudo apt-get install {package}`)",
                e.arch, e.arch
            ),
        }
        let build = format!("nodeos-vm build --arch {}", e.arch);
        print_artifacts(&format!("{} ", e.arch), e.kernel, e.rootfs, &build);
    }
    Ok(())
}

/// The templates VMs of the default size restore from on the auto backend: for each shape
/// `nodeos-vm build` makes one of, the shape and its file when made (none is made here); or
/// why they are not known.
fn default_templates(
    store: &Store,
    kernel: &Result<Option<PathBuf>, String>,
    rootfs: &Result<Option<PathBuf>, String>,
) -> Result<Vec<(String, Option<PathBuf>)>, String> {
    let (Ok(Some(kernel)), Ok(Some(rootfs))) = (kernel, rootfs) else {
        return Err("the kernel and root image are not built yet, or not known here".into());
    };
    let jail = JailArgs {
        no_jail: false,
        jail_id_base: IdRange::default(),
    };
    let backend = choose_backend(BackendChoice::Auto, ArchChoice::host(), &jail, true)
        .map_err(|e| format!("{e:#}"))?;
    let memory = vm_config::memory_mib(vm_config::DEFAULT_MEMORY).map_err(|e| e.to_string())?;
    let cache = Templates::in_cache(store.cache_dir());
    Ok(
        templates::default_shapes(kernel, rootfs, Arch::host(), memory)
            .iter()
            .map(|config| {
                (
                    templates::shape(&backend, config),
                    cache.made(&backend, config),
                )
            })
            .collect(),
    )
}

/// Another architecture's guests as this host runs them.
struct Emulated {
    arch: Arch,
    emulator: Option<std::path::PathBuf>,
    kernel: Result<Option<std::path::PathBuf>, String>,
    rootfs: Result<Option<std::path::PathBuf>, String>,
}

/// A line for each of the kernel and root image, named after `prefix`: built (where), not yet
/// (and the `build` command that builds them), or unknown (why).
fn print_artifacts(
    prefix: &str,
    kernel: Result<Option<std::path::PathBuf>, String>,
    rootfs: Result<Option<std::path::PathBuf>, String>,
    build: &str,
) {
    for (artifact, path) in [(Artifact::Kernel, kernel), (Artifact::Rootfs, rootfs)] {
        let name = artifact.name();
        match path {
            Ok(Some(path)) => println!("{prefix}{name}: built, {}", path.display()),
            Ok(None) => println!("{prefix}{name}: not built yet (`{build}`)"),
            Err(why) => println!("{prefix}{name}: unknown: {why}"),
        }
    }
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
