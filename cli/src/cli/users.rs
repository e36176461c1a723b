//! `nodeos-vm users ls` and `users rm NAME`: the user environments of `--user NAME`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::SystemTime;

use anyhow::bail;

use sandbox::users::Users;

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// List the users with an environment: disk size, space used on the host, whether a VM has it.
    Ls {
        /// A JSON array (name, size_bytes, used_bytes, in_use, last_used: seconds since the
        /// epoch or null) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user's environment: everything they wrote, their npm packages, their history.
    Rm {
        name: String,
        /// Do not ask first.
        #[arg(short, long)]
        yes: bool,
    },
}

pub fn run(command: UsersCommand) -> anyhow::Result<u8> {
    let users = Users::from_env()?;
    match command {
        UsersCommand::Ls { json: true } => {
            let list: Vec<_> = users
                .list()?
                .into_iter()
                .map(|u| {
                    serde_json::json!({
                        "name": u.name,
                        "size_bytes": u.size_bytes,
                        "used_bytes": u.used_bytes,
                        "in_use": u.in_use,
                        "last_used": u.last_used.and_then(|t| {
                            t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
                        }),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(list));
            Ok(0)
        }
        UsersCommand::Ls { json: false } => {
            println!(
                "{:<32}  {:>8}  {:>8}  {:<7}  LAST USED",
                "NAME", "SIZE", "USED", "STATE"
            );
            for u in users.list()? {
                println!(
                    "{:<32}  {:>8}  {:>8}  {:<7}  {}",
                    u.name,
                    human(u.size_bytes),
                    human(u.used_bytes),
                    if u.in_use { "in use" } else { "idle" },
                    u.last_used.map(ago).unwrap_or_else(|| "-".into())
                );
            }
            Ok(0)
        }
        UsersCommand::Rm { name, yes } => {
            sandbox::users::check_name(&name)?;
            let Some(user) = users.list()?.into_iter().find(|u| u.name == name) else {
                bail!("user {name:?} has no environment here (`nodeos-vm users ls` lists them)");
            };
            if !yes
                && !confirm(&format!(
                    "Delete user {name:?} and everything they stored ({} on this host)?",
                    human(user.used_bytes)
                ))?
            {
                eprintln!("nodeos-vm: nothing deleted");
                return Ok(1);
            }
            users.remove(&name)?;
            eprintln!("nodeos-vm: deleted user {name:?}");
            Ok(0)
        }
    }
}

/// Asks on the terminal; without one, the caller must say --yes.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("not deleting without a terminal to ask on; add --yes to delete");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn ago(time: SystemTime) -> String {
    let secs = time.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(64 << 20), "64.0 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
