//! L1's kernel modules: its platform's (kvm-amd on x86-64; virtio-mmio and the virtio console
//! on arm64, whose KVM is built in), and whatever else a run asks for (`tun`, `vhost_vsock`,
//! ...), each with the modules it depends on, in an order `insmod` can load.
//!
//! Dependencies come from each module's `.modinfo` (`depends=a,b`), so neither `depmod` on the
//! host nor `modprobe` in L1 is needed.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{host, BoxError};

/// A kernel's `lib/modules/<version>` tree, indexed by module name.
pub(crate) struct ModuleTree {
    /// Module name (`-` spelled `_`) to its file.
    files: HashMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    /// Where compressed modules are decompressed to, once.
    plain_dir: PathBuf,
}

impl ModuleTree {
    pub(crate) fn open(root: &Path, plain_dir: &Path) -> Result<Self, BoxError> {
        let mut files = HashMap::new();
        index(&root.join("kernel"), &mut files)?;
        let builtin = fs::read_to_string(root.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| module_name(Path::new(l)))
            .collect();
        Ok(Self {
            files,
            builtin,
            plain_dir: plain_dir.to_path_buf(),
        })
    }

    /// `(name, uncompressed .ko)` for `names` and everything they depend on, dependencies
    /// first, each once. Built-in modules are skipped.
    pub(crate) fn load_order(&self, names: &[String]) -> Result<Vec<(String, PathBuf)>, BoxError> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            self.visit(&normalize(name), &mut seen, &mut order, &mut Vec::new())?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        path: &mut Vec<String>,
    ) -> Result<(), BoxError> {
        if seen.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(BoxError::Assets(format!(
                "module dependency cycle: {} -> {name}",
                path.join(" -> ")
            )));
        }
        let Some(file) = self.files.get(name) else {
            let via = if path.is_empty() {
                String::new()
            } else {
                format!(" (needed by {})", path.join(" -> "))
            };
            return Err(BoxError::Assets(format!(
                "L1's kernel has no module {name}{via}"
            )));
        };
        let plain = self.plain(name, file)?;
        let bytes = fs::read(&plain).map_err(BoxError::io("reading", &plain))?;
        path.push(name.to_string());
        for dep in modinfo_depends(&bytes) {
            self.visit(&normalize(&dep), seen, order, path)?;
        }
        path.pop();
        seen.insert(name.to_string());
        order.push((name.to_string(), plain));
        Ok(())
    }

    /// The module as plain ELF (busybox insmod loads only that), decompressed once if needed.
    fn plain(&self, name: &str, file: &Path) -> Result<PathBuf, BoxError> {
        let (tool, package) = match file.extension().and_then(|e| e.to_str()) {
            Some("xz") => ("xz", "xz-utils"),
            Some("zst") => ("zstd", "zstd"),
            _ => return Ok(file.to_path_buf()),
        };
        let dest = self.plain_dir.join(format!("{name}.ko"));
        if !dest.exists() {
            fs::create_dir_all(&self.plain_dir)
                .map_err(BoxError::io("creating", &self.plain_dir))?;
            let tmp = self
                .plain_dir
                .join(format!(".{name}.ko.{}", std::process::id()));
            let out = fs::File::create(&tmp).map_err(BoxError::io("creating", &tmp))?;
            let tool = host::program(tool, package)?;
            host::output(Command::new(tool).arg("-dc").arg(file).stdout(out))?;
            fs::rename(&tmp, &dest).map_err(BoxError::io("writing", &dest))?;
        }
        Ok(dest)
    }
}

fn index(dir: &Path, files: &mut HashMap<String, PathBuf>) -> Result<(), BoxError> {
    for entry in fs::read_dir(dir).map_err(BoxError::io("reading", dir))? {
        let entry = entry.map_err(BoxError::io("reading", dir))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(BoxError::io("reading", &path))?
            .is_dir()
        {
            index(&path, files)?;
        } else if let Some(name) = module_name(&path) {
            files.insert(name, path);
        }
    }
    Ok(())
}

/// `kernel/arch/x86/kvm/kvm-amd.ko[.xz]` -> `kvm_amd`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))?;
    Some(normalize(stem))
}

/// The kernel treats `-` and `_` in module names alike.
fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated `key=value` strings).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &ko[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_module(dir: &Path, rel: &str, depends: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = b"\x7fELF junk\0license=GPL\0".to_vec();
        bytes.extend_from_slice(format!("depends={depends}\0name=x\0").as_bytes());
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn dependencies_load_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_module(root, "kernel/virt/lib/irqbypass.ko", "");
        fake_module(root, "kernel/arch/x86/kvm/kvm.ko", "irqbypass");
        fake_module(root, "kernel/arch/x86/kvm/kvm-amd.ko", "kvm");
        fake_module(root, "kernel/drivers/vhost/vhost_vsock.ko", "vhost,vsock");
        fake_module(root, "kernel/drivers/vhost/vhost.ko", "");
        fs::write(
            root.join("modules.builtin"),
            "kernel/net/vmw_vsock/vsock.ko\n",
        )
        .unwrap();
        let tree = ModuleTree::open(root, &root.join("plain")).unwrap();

        let names =
            |order: Vec<(String, PathBuf)>| order.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        let order = tree
            .load_order(&["kvm-amd".into(), "vhost_vsock".into(), "kvm".into()])
            .unwrap();
        assert_eq!(
            names(order),
            ["irqbypass", "kvm", "kvm_amd", "vhost", "vhost_vsock"]
        );
        let err = tree.load_order(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("no module nope"), "{err}");
    }

    #[test]
    fn modinfo_without_depends() {
        assert!(modinfo_depends(b"\0license=GPL\0depends=\0").is_empty());
        assert!(modinfo_depends(b"nothing here").is_empty());
        assert_eq!(modinfo_depends(b"x\0depends=a,b\0"), ["a", "b"]);
    }
}
