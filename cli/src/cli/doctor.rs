//! `nodeos-vm doctor`: what this host offers and what `start` would use.

use sandbox::artifacts::{Artifact, Store};
use vmm::backend::detect::{self, KvmSupport};

pub fn run() -> anyhow::Result<()> {
    match detect::probe() {
        KvmSupport::Usable => println!("kvm: usable (hardware virtualization)\nauto backend: kvm"),
        KvmSupport::Unusable(why) => println!("kvm: unusable: {why}\nauto backend: qemu (TCG)"),
    }
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
