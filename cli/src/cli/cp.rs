//! `nodeos-vm cp`: files between the host and a detached VM (`start --detach`), through its
//! agent (`sandbox::guest_copy`): into the VM as its user, out of it unpacked strictly, never
//! overwriting a host file.

use std::path::PathBuf;

use anyhow::bail;

use sandbox::guest_copy;

use super::vms;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  nodeos-vm cp ./app 3f2a9c:/home/node/app\n  \
                        nodeos-vm cp 3f2a9c:/home/node/app/out.json ."
)]
pub struct CpArgs {
    /// What to copy: a host path, or ID:PATH, a detached VM's ID (or a unique prefix of it)
    /// and an absolute path in that VM.
    src: String,
    /// Where to: a host path, or ID:PATH. A folder that exists gets the copy inside it; a host
    /// path that exists otherwise is never overwritten.
    dst: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Side<'a> {
    Host(&'a str),
    Vm { id: &'a str, path: &'a str },
}

/// `ID:/PATH` (an ID is hex) names a VM's path; anything else, a host path (`./a:/b` for a
/// host path that would look like one).
fn side(text: &str) -> Side<'_> {
    match text.split_once(':') {
        Some((id, path))
            if !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && path.starts_with('/') =>
        {
            Side::Vm { id, path }
        }
        _ => Side::Host(text),
    }
}

pub fn run(args: CpArgs) -> anyhow::Result<u8> {
    match (side(&args.src), side(&args.dst)) {
        (Side::Host(host), Side::Vm { id, path }) => {
            let socket = vms::agent_socket(id)?;
            let made = guest_copy::copy_in(&socket, &PathBuf::from(host), path)?;
            eprintln!("copied {host} to {id}:{made}");
        }
        (Side::Vm { id, path }, Side::Host(host)) => {
            let socket = vms::agent_socket(id)?;
            let copied = guest_copy::copy_out(&socket, path, &PathBuf::from(host))?;
            for refused in &copied.refused {
                eprintln!(
                    "nodeos-vm: not copied: the symlink {} -> {} ({})",
                    refused.path,
                    String::from_utf8_lossy(&refused.target),
                    refused.why
                );
            }
            eprintln!("copied {id}:{path} to {}", copied.path.display());
        }
        (Side::Vm { .. }, Side::Vm { .. }) => {
            bail!("both sides name a VM: copy to the host first, then into the other VM")
        }
        (Side::Host(_), Side::Host(_)) => {
            bail!("neither side names a VM: give one as ID:/PATH (IDs from `nodeos-vm ps`)")
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_told_apart() {
        assert_eq!(
            side("3f2a:/home/node"),
            Side::Vm {
                id: "3f2a",
                path: "/home/node"
            }
        );
        assert_eq!(side("./a:/b"), Side::Host("./a:/b"));
        assert_eq!(side("notes:/x"), Side::Host("notes:/x"));
        assert_eq!(side("3f2a:relative"), Side::Host("3f2a:relative"));
        assert_eq!(side("/tmp/x"), Side::Host("/tmp/x"));
    }
}
