//! Which versions of Debian packages are installed, read from dpkg's database in one pass:
//! the packages an artifact is built from are part of its key, and the key is computed before
//! every boot, where one `dpkg-query` process per package cost tens of milliseconds.

use std::fs;

/// dpkg's record of every package it knows (deb822 paragraphs).
const STATUS: &str = "/var/lib/dpkg/status";

/// The installed version of each of `packages`, in their order, or `absent`: what
/// `dpkg-query -W -f='${Version}'` prints for it (the versions of all its installed
/// architectures, one after the other). Without a dpkg database, every package is absent.
pub fn versions(packages: &[&str]) -> Vec<String> {
    versions_in(&fs::read_to_string(STATUS).unwrap_or_default(), packages)
}

fn versions_in(status: &str, packages: &[&str]) -> Vec<String> {
    let mut found = vec![String::new(); packages.len()];
    for paragraph in status.split("\n\n") {
        let (mut name, mut version, mut installed) = (None, None, false);
        for line in paragraph.lines() {
            if let Some(value) = line.strip_prefix("Package:") {
                name = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("Version:") {
                version = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("Status:") {
                installed = value.split_whitespace().last() == Some("installed");
            }
        }
        let slot = name.and_then(|name| packages.iter().position(|p| *p == name));
        if let (Some(slot), Some(version), true) = (slot, version, installed) {
            found[slot].push_str(version);
        }
    }
    found
        .into_iter()
        .map(|version| {
            if version.is_empty() {
                "absent".into()
            } else {
                version
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u9
Description: GNU C Library
 with a continuation line
 Version: 0.0-not-a-field

Package: linux-source-6.1
Status: deinstall ok config-files
Version: 6.1.1-1

Package: libgcc-s1
Status: install ok installed
Multi-Arch: same
Version: 12.2.0-14
Architecture: amd64

Package: libgcc-s1
Status: install ok installed
Architecture: i386
Version: 12.2.0-14
";

    #[test]
    fn versions_are_those_of_installed_packages_in_the_order_asked() {
        assert_eq!(
            versions_in(
                STATUS,
                &["linux-source-6.1", "libc6", "libgcc-s1", "libstdc++6"]
            ),
            ["absent", "2.36-9+deb12u9", "12.2.0-1412.2.0-14", "absent"]
        );
        assert_eq!(versions_in("", &["libc6"]), ["absent"]);
    }

    #[test]
    fn versions_match_dpkg_query_on_this_host() {
        let packages = ["libc6", "dpkg", "no-such-package-here"];
        let ours = versions(&packages);
        for (package, ours) in packages.iter().zip(ours) {
            let theirs = std::process::Command::new("dpkg-query")
                .args(["-W", "-f=${Version}", package])
                .output()
                .expect("dpkg-query runs on Debian");
            let theirs = if theirs.status.success() {
                String::from_utf8(theirs.stdout).unwrap()
            } else {
                "absent".into()
            };
            assert_eq!(ours, theirs, "{package}");
        }
    }
}
