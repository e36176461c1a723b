//! `containerd-shim-nodeos-v2`: containerd's runtime v2 shim for NodeOS microVMs
//! (`ctr run --runtime io.containerd.nodeos.v2`, a Kubernetes RuntimeClass). Each container
//! runs in a microVM of its own — or, for a Kubernetes pod, its containers in the pod's — its
//! root file system packed into a disk (unpacked into the pod's), its processes started by the
//! guest agent in that root, with the spec's user, environment, working directory and mounts
//! (binds carried as copies; docs/kubernetes.md).

mod bundle;
mod mounts;
mod pod;
mod process;
mod seccomp;
mod service;
mod stats;
mod vm;

fn main() {
    let config = containerd_shim::Config {
        // The VMM and QEMU processes, and the tools that pack a root file system, are waited
        // for by who started them: the library must not reap them behind their backs.
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<service::Service>(service::RUNTIME, Some(config));
}
