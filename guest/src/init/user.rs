//! The unprivileged user the REPL runs as: read from /etc/passwd and /etc/group (the binary is
//! statically linked, so there is no NSS: the files are parsed here), and the switch to it.

use std::path::PathBuf;

use contract::env::EnvVar;

use crate::error::{Context, Error, Result};
use crate::sys::cvt;

/// The user PID 1 becomes.
pub const USER_NAME: &str = "node";
pub const PASSWD_PATH: &str = "/etc/passwd";
pub const GROUP_PATH: &str = "/etc/group";

/// One /etc/passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

impl User {
    /// A login's environment for this user (`HOME`, `USER`, `LOGNAME`, `PATH`, `LANG`,
    /// `NODE_COMPILE_CACHE`), then `extra` (the guest's environment, which the host sends the
    /// agent) on top, as `NAME=VALUE`.
    pub fn login_env(&self, extra: &[EnvVar]) -> Vec<Vec<u8>> {
        let mut env: Vec<Vec<u8>> = [
            format!("HOME={}", self.home.display()),
            format!("USER={}", self.name),
            format!("LOGNAME={}", self.name),
            format!("PATH={}", super::PATH),
            "LANG=C.UTF-8".to_string(),
            format!("NODE_COMPILE_CACHE={}", super::COMPILE_CACHE),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        for var in extra {
            let prefix = format!("{}=", var.name());
            env.retain(|e| !e.starts_with(prefix.as_bytes()));
            env.push(var.entry());
        }
        env
    }
}

/// Finds `name` in the text of /etc/passwd (`name:x:uid:gid:gecos:home:shell`).
pub fn find_user(passwd: &str, name: &str) -> Result<User> {
    for (n, line) in passwd.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            continue;
        }
        let bad = |why: &str| Error::invalid(format!("{PASSWD_PATH} line {}", n + 1), why);
        if fields.len() != 7 {
            return Err(bad("must have 7 fields"));
        }
        let uid = fields[2].parse().map_err(|_| bad("bad uid"))?;
        let gid = fields[3].parse().map_err(|_| bad("bad gid"))?;
        if !fields[5].starts_with('/') {
            return Err(bad("home is not an absolute path"));
        }
        return Ok(User {
            name: name.to_string(),
            uid,
            gid,
            home: PathBuf::from(fields[5]),
            shell: fields[6].to_string(),
        });
    }
    Err(Error::invalid(
        format!("user {name}"),
        format!("not in {PASSWD_PATH}"),
    ))
}

/// The gid of group `name` in the text of /etc/group (`name:x:gid:members`).
pub fn find_group_id(group: &str, name: &str) -> Option<u32> {
    group
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() == 4 && fields[0] == name)
        .and_then(|fields| fields[2].parse().ok())
}

/// The groups `user` belongs to: its primary group, then each group that lists it as a member.
pub fn groups_of(group: &str, user: &User) -> Vec<u32> {
    let mut gids = vec![user.gid];
    for line in group.lines() {
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        if fields.len() != 4 || !fields[3].split(',').any(|member| member == user.name) {
            continue;
        }
        if let Ok(gid) = fields[2].parse() {
            if !gids.contains(&gid) {
                gids.push(gid);
            }
        }
    }
    gids
}

/// Reads `user`'s entry from /etc/passwd and its groups from /etc/group (a missing
/// /etc/group just means no supplementary groups).
pub fn lookup(name: &str) -> Result<(User, Vec<u32>)> {
    let passwd = std::fs::read_to_string(PASSWD_PATH).context(|| format!("read {PASSWD_PATH}"))?;
    let user = find_user(&passwd, name)?;
    let group = std::fs::read_to_string(GROUP_PATH).unwrap_or_default();
    let groups = groups_of(&group, &user);
    Ok((user, groups))
}

/// Switches this process to `uid`/`gid` with supplementary `groups`, for good (real, effective
/// and saved ids), and checks that root cannot be regained.
pub fn drop_privileges(uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
    // SAFETY: groups is a valid array of groups.len() gid_t values.
    cvt(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })
        .context(|| format!("setgroups {groups:?}"))?;
    // SAFETY: setresgid/setresuid have no memory arguments.
    cvt(unsafe { libc::setresgid(gid, gid, gid) }).context(|| format!("setgid {gid}"))?;
    // SAFETY: as above.
    cvt(unsafe { libc::setresuid(uid, uid, uid) }).context(|| format!("setuid {uid}"))?;
    // SAFETY: as above; this must fail now that all three uids are unprivileged.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(Error::invalid(
            format!("setuid {uid}"),
            "root could be regained",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# comment
nobody:x:65534:65534:nobody:/nonexistent:/usr/bin/false
node:x:1000:1000:Node.js:/home/node:/usr/bin/node
";
    const GROUP: &str = "\
nogroup:x:65534:
tty:x:5:
node:x:1000:
audio:x:29:node,other
video:x:44:other
";

    #[test]
    fn finds_the_node_user() {
        let user = find_user(PASSWD, "node").unwrap();
        assert_eq!(
            user,
            User {
                name: "node".into(),
                uid: 1000,
                gid: 1000,
                home: PathBuf::from("/home/node"),
                shell: "/usr/bin/node".into()
            }
        );
    }

    #[test]
    fn missing_user_and_bad_lines_are_errors() {
        assert_eq!(
            find_user(PASSWD, "root").unwrap_err().to_string(),
            "user root: not in /etc/passwd"
        );
        assert!(find_user("node:x:1000:1000\n", "node")
            .unwrap_err()
            .to_string()
            .contains("7 fields"));
        assert!(find_user("node:x:abc:1000::/home/node:/bin/sh\n", "node")
            .unwrap_err()
            .to_string()
            .contains("bad uid"));
        assert!(find_user("node:x:1:1::home:/bin/sh\n", "node")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        // A name that is a prefix of another must not match it.
        assert!(find_user("nodejs:x:1:1::/h:/s\n", "node").is_err());
    }

    #[test]
    fn groups_are_primary_then_memberships() {
        let user = find_user(PASSWD, "node").unwrap();
        assert_eq!(groups_of(GROUP, &user), vec![1000, 29]);
        assert_eq!(find_group_id(GROUP, "tty"), Some(5));
        assert_eq!(find_group_id(GROUP, "wheel"), None);
    }
}
