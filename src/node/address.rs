//! How people reach this node from their laptops: the SSH command, an app's git remote and
//! its URL, all from the node config (the host is the node's domain, which apps are served
//! under too). Hints that name a `gearshift VERB` are rewritten into the SSH form for users.

use super::config::Config;

/// `ssh -p PORT LOGIN@HOST` (no `-p` for port 22).
pub fn ssh(c: &Config) -> String {
    if c.ssh_port == 22 {
        format!("ssh {}@{}", c.ssh_user, c.domain)
    } else {
        format!("ssh -p {} {}@{}", c.ssh_port, c.ssh_user, c.domain)
    }
}

/// An app's git remote: `ssh://LOGIN@HOST:PORT/APP.git`.
pub fn git_remote(c: &Config, app: &str) -> String {
    format!("ssh://{}@{}:{}/{app}.git", c.ssh_user, c.domain, c.ssh_port)
}

/// `http://HOST[:PORT]/`, with the router's port when it is not 80.
pub fn http_url(c: &Config, host: &str) -> String {
    if c.http_port == 80 {
        format!("http://{host}/")
    } else {
        format!("http://{host}:{}/", c.http_port)
    }
}

/// The URL of an app's default host name, `APP.DOMAIN`.
pub fn app_url(c: &Config, app: &str) -> String {
    http_url(c, &format!("{app}.{}", c.domain))
}

/// Rewrites every `` `gearshift VERB ...` `` hint in `text` into the SSH form a user types.
pub fn for_ssh_user(c: &Config, text: &str) -> String {
    text.replace("`gearshift ", &format!("`{} ", ssh(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ssh_port: u16, http_port: u16) -> Config {
        Config {
            ssh_port,
            http_port,
            domain: "paas.example".into(),
            ssh_user: "gearshift".into(),
            ..Default::default()
        }
    }

    #[test]
    fn addresses() {
        let c = config(2222, 8080);
        assert_eq!(ssh(&c), "ssh -p 2222 gearshift@paas.example");
        assert_eq!(git_remote(&c, "shop"), "ssh://gearshift@paas.example:2222/shop.git");
        assert_eq!(app_url(&c, "shop"), "http://shop.paas.example:8080/");
        assert_eq!(
            for_ssh_user(&c, "unknown app 'x' (see `gearshift app list`)"),
            "unknown app 'x' (see `ssh -p 2222 gearshift@paas.example app list`)"
        );
        let c = config(22, 80);
        assert_eq!(ssh(&c), "ssh gearshift@paas.example");
        assert_eq!(app_url(&c, "shop"), "http://shop.paas.example/");
    }
}
