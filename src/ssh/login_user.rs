//! The node's one SSH login account (`ssh_user`): every user logs in as it, and their key
//! decides who they are. Gears have no host accounts; this is the only one gearshift adds.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// The login user's ids, read from /etc/passwd (the static binary avoids NSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up in /etc/passwd.
pub fn lookup(name: &str) -> Result<Option<Ids>> {
    let text = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    Ok(parse_passwd(&text, name))
}

fn parse_passwd(text: &str, name: &str) -> Option<Ids> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some(Ids {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        } else {
            None
        }
    })
}

/// The login user's ids, with an error that says how to create it.
pub fn ids(name: &str) -> Result<Ids> {
    lookup(name)?.with_context(|| format!("login user '{name}' does not exist: run `gearshift init` (or `node up`)"))
}

/// Creates the account `name` (the node's `ssh_user`) if missing (system account, /bin/sh, no
/// usable password, `home` root-owned and empty: nothing there is read by sshd); idempotent.
pub fn ensure(name: &str, home: &Path) -> Result<Ids> {
    crate::names::check_user_name(name).with_context(|| format!("ssh_user '{name}' is not a valid account name"))?;
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    if lookup(name)?.is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--shell",
                "/bin/sh",
                "--no-create-home",
                "--home-dir",
            ])
            .arg(home)
            .args(["--comment", "gearshift SSH login", name])
            .output()
            .context("cannot run useradd (install the passwd package)")?;
        if !out.status.success() {
            bail!(
                "cannot create login user '{name}': useradd: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    // '*' matches no password. Not '!': with UsePAM no, sshd refuses a '!'-locked account even
    // for key logins ("account is locked").
    let out = Command::new("usermod")
        .args(["--password", "*", name])
        .output()
        .context("cannot run usermod")?;
    if !out.status.success() {
        bail!(
            "cannot disable the password of '{name}': usermod: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    ids(name)
}

/// Removes the account (its processes are killed by `userdel --force`); missing is fine.
pub fn remove(name: &str) -> Result<()> {
    if lookup(name)?.is_none() {
        return Ok(());
    }
    let out = Command::new("userdel")
        .args(["--force", name])
        .output()
        .context("cannot run userdel")?;
    // 12: cannot remove the home directory (we never asked it to); the account is gone.
    if !out.status.success() && lookup(name)?.is_some() {
        bail!(
            "cannot remove login user '{name}': userdel: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines() {
        let t = "root:x:0:0:root:/root:/bin/bash\ngs-a:x:998:997::/x:/bin/sh\n";
        assert_eq!(parse_passwd(t, "gs-a"), Some(Ids { uid: 998, gid: 997 }));
        assert_eq!(parse_passwd(t, "gs"), None);
    }
}
