//! The Procfile, read as Heroku and Dokku (procfile-util) read it: one `type: command` a line,
//! `#` comment lines and blank lines skipped. A command is given to `/bin/sh -c` whole, so an
//! inline `#` is a comment exactly where the shell says so (`web: gunicorn app:app # 2 workers`).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// One process type: its name (`web`, `worker`, `release` ...) and its shell command.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub name: String,
    pub command: String,
}

/// Parses a Procfile's text; errors name the line and what to write instead.
pub fn parse(text: &str) -> Result<Vec<Process>> {
    let mut out: Vec<Process> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, command)) = line.split_once(':') else {
            bail!("Procfile line {n}: {line:?} is not `type: command` (comment lines start with #)");
        };
        let (name, command) = (name.trim(), command.trim());
        // procfile-util's (Dokku's) names.
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            bail!(
                "Procfile line {n}: {name:?} is not a process type name (letters, digits, - and _, like web or worker)"
            );
        }
        if command.is_empty() {
            bail!("Procfile line {n}: the {name}: line has no command");
        }
        if out.iter().any(|p| p.name == name) {
            bail!("Procfile line {n}: a second {name}: line (one line per process type)");
        }
        out.push(Process {
            name: name.into(),
            command: command.into(),
        });
    }
    Ok(out)
}

/// The Procfile of deployment `repo`: `None` without one.
pub fn read(repo: &Path) -> Result<Option<Vec<Process>>> {
    let path = repo.join("Procfile");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).context("the Procfile is not UTF-8 text")?;
            parse(&text).map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The command of process type `name` in deployment `repo`'s Procfile, if it has one.
pub fn command(repo: &Path, name: &str) -> Result<Option<String>> {
    Ok(read(repo)?.and_then(|ps| ps.into_iter().find(|p| p.name == name).map(|p| p.command)))
}

/// argv running `command` as Heroku does: through the shell, which it replaces.
pub fn shell_argv(command: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), format!("exec {command}")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap().into_iter().map(|p| (p.name, p.command)).collect()
    }

    #[test]
    fn comments_blank_lines_and_five_types() {
        let text = "# processes\n\nweb: gunicorn app:app --bind 0.0.0.0:$PORT # two workers\r\n  worker:python worker.py\nclock: python clock.py\n\t# indented comment\nrelease: python manage.py migrate\nurgent-jobs_2: ./jobs.sh --queue a:b\n";
        assert_eq!(
            names(text),
            [
                ("web", "gunicorn app:app --bind 0.0.0.0:$PORT # two workers"),
                ("worker", "python worker.py"),
                ("clock", "python clock.py"),
                ("release", "python manage.py migrate"),
                ("urgent-jobs_2", "./jobs.sh --queue a:b"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let e = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(
            e("web: a\njust words\n").contains("line 2"),
            "{}",
            e("web: a\njust words\n")
        );
        assert!(e("web:\n").contains("has no command"));
        assert!(e("web: a\nweb: b\n").contains("a second web: line"));
        assert!(e("my worker: a\n").contains("not a process type name"));
        assert!(e("a.b: a\n").contains("not a process type name"));
    }

    #[test]
    fn the_shell_keeps_or_drops_an_inline_hash() {
        let out = |cmd: &str| {
            let argv = shell_argv(cmd);
            let o = std::process::Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
            String::from_utf8(o.stdout).unwrap()
        };
        assert_eq!(out("echo a#b # c"), "a#b\n");
    }
}
