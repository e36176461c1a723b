//! A Kubernetes pod's containers in one microVM, as Kata Containers runs them. containerd's
//! CRI marks each container's spec: `io.kubernetes.cri.container-type` is `sandbox` for the
//! pod's own container (the `pause` one) and `container` for its members, and
//! `io.kubernetes.cri.sandbox-id` names the pod's sandbox container. The shim serving a pod's
//! sandbox serves its members too (containerd starts one shim per group: the pod's id, from
//! `Shim::start_shim`), and the sandbox's microVM is the pod's: it has one more disk, the
//! pod's, mounted at [`GUEST_POD`]. A member's root file system is unpacked into a folder of
//! its own there, while the VM runs, by the guest's root through the agent (owners and modes
//! kept), and so are the copies of its binds' sources, one per source in the VM; its processes
//! run in that root. The pod's containers share its kernel, its network (one `localhost`), its
//! memory and vCPUs, and the copies of what they bind alike (an emptyDir); each has its own
//! root, mounts, user and processes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use containerd_shim::protos::api::Mount;
use oci_spec::runtime::Spec;
use sandbox::guest_copy::{self, TarInError};
use sandbox::volume::{self, Budget, COPY_BACK_TIME};

use crate::bundle::{self, Bundle, Root};
use crate::mounts::{self, Carried};

/// Where the guest mounts the pod's disk.
pub const GUEST_POD: &str = "/run/pod";
/// Its folders: of its members' root file systems (by container id), and of the copies of
/// their binds' sources (by host path).
const CONTAINERS: &str = "containers";
const BINDS: &str = "binds";
/// The annotations containerd's CRI gives each container of a pod.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The pod disk's room for its members' files (sparse: what they do not use costs the host
/// nothing).
const POD_BYTES: u64 = 16 << 30;
/// What a copy-back of a member's writable bind may take.
const COPY_BACK: Budget = Budget {
    bytes: POD_BYTES,
    entries: 1 << 20,
    time: COPY_BACK_TIME,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(transparent)]
    Mounts(#[from] mounts::Error),
    #[error("unpacking the container's files into its pod's microVM")]
    Unpack(#[from] TarInError),
    #[error("making the pod's disk")]
    Disk(#[from] volume::Error),
}

/// What a container is to its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A container of its own (`ctr run`): its VM is its alone.
    Alone,
    /// A pod's sandbox container: its VM is the pod's, whose id is its own.
    Sandbox,
    /// A member of the pod whose sandbox container this names: it runs in that pod's VM.
    Member(String),
}

impl Role {
    /// A container's role, from its spec's annotations.
    pub fn of(spec: &Spec) -> Role {
        let annotations = spec.annotations().as_ref();
        let get = |key| annotations.and_then(|a| a.get(key)).map(String::as_str);
        match (get(CONTAINER_TYPE), get(SANDBOX_ID)) {
            (Some("sandbox"), _) => Role::Sandbox,
            (Some("container"), Some(pod)) if !pod.is_empty() => Role::Member(pod.to_string()),
            _ => Role::Alone,
        }
    }

    /// The id of the shim the container `id` belongs to: its pod's, or its own.
    pub fn grouping<'a>(&'a self, id: &'a str) -> &'a str {
        match self {
            Role::Member(pod) => pod,
            Role::Alone | Role::Sandbox => id,
        }
    }
}

/// Makes the pod's disk, an empty ext4 image, at `disk`.
pub fn make_disk(disk: &Path) -> Result<(), Error> {
    Ok(volume::create_empty(disk, POD_BYTES, "nodeos-pod")?)
}

/// The folder of the member `id`'s root file system in its pod's VM.
fn root_of(id: &str) -> String {
    format!("{GUEST_POD}/{CONTAINERS}/{id}")
}

/// Carries the member `id` of `bundle` into its pod's running VM, whose agent is behind
/// `socket`: its spec's mounts, the copies of its binds' sources into the pod's folder of
/// copies (where the VM's containers that bind the same source share one: an emptyDir two
/// containers of a pod mount is one folder in the VM, as on a node), but those of the sources
/// in `in_vm` (there already; those it copies are added); and its root file system
/// (`bundle`'s, with the snapshotter's `mounts` mounted on it) unpacked into a folder of its
/// own — unless it is the guest's image `guest_rootfs`, which the VM runs on already. Where
/// its root is, and its mounts.
pub fn carry_in(
    socket: &Path,
    (id, bundle): (&str, &Bundle),
    mounts: &[Mount],
    guest_rootfs: &Path,
    in_vm: &Mutex<HashSet<PathBuf>>,
) -> Result<(Root, Carried), Error> {
    let spec_mounts = bundle.spec.mounts().as_deref().unwrap_or_default();
    let copies = format!("{GUEST_POD}/{BINDS}");
    let carried = mounts::in_folder(spec_mounts, &copies, COPY_BACK)?;
    let root = bundle.root();
    let there = in_vm.lock().unwrap().clone();
    let mut appended = Vec::new();
    let in_guest = bundle::with_root(&root, mounts, guest_rootfs, |is_guest| {
        // The archive's folders are made by the guest's tar, on the way to what is in them.
        guest_copy::extract_as_root(socket, GUEST_POD, |tar| {
            appended = carried
                .append_to(tar, GUEST_POD, &there)
                .map_err(std::io::Error::other)?;
            if !is_guest {
                tar.append_dir_all(format!("{CONTAINERS}/{id}"), &root)?;
            }
            Ok(())
        })?;
        Ok::<_, Error>(if is_guest {
            Root::Guest
        } else {
            Root::InPod(root_of(id))
        })
    })?;
    in_vm.lock().unwrap().extend(appended);
    Ok((in_guest, carried))
}

/// Removes the root file system [`carry_in`] put in the pod's VM for the member `id` (the
/// copies of binds stay for the VM's other containers).
pub fn remove(socket: &Path, id: &str) {
    if let Err(e) = guest_copy::remove_as_root(socket, &root_of(id)) {
        log::warn!(
            "removing {id}'s files from its pod's microVM: {}",
            vmm::error_chain::one_line(&e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": annotations
        }))
        .unwrap()
    }

    #[test]
    fn the_cri_annotations_say_which_pod_a_container_is_in() {
        let sandbox = spec(serde_json::json!({
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": "pod1"
        }));
        assert_eq!(Role::of(&sandbox), Role::Sandbox);
        assert_eq!(Role::of(&sandbox).grouping("pod1"), "pod1");
        let member = spec(serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "pod1"
        }));
        assert_eq!(Role::of(&member), Role::Member("pod1".into()));
        assert_eq!(Role::of(&member).grouping("app"), "pod1");
        for alone in [
            serde_json::json!({}),
            serde_json::json!({"io.kubernetes.cri.container-type": "container"}),
            serde_json::json!({"io.kubernetes.cri.container-type": "container",
                               "io.kubernetes.cri.sandbox-id": ""}),
            serde_json::json!({"io.kubernetes.cri.container-type": "other",
                               "io.kubernetes.cri.sandbox-id": "pod1"}),
        ] {
            let spec = spec(alone);
            assert_eq!(Role::of(&spec), Role::Alone);
            assert_eq!(Role::of(&spec).grouping("c"), "c");
        }
    }
}
