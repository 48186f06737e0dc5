//! The commands a deploy runs around its switch, as Heroku and Dokku run them: app.json's
//! `scripts.dokku.predeploy` and the Procfile's `release:` in the new deployment after the
//! build and before the switch (a failure rejects the push, nothing switches), and
//! `scripts.dokku.postdeploy` after it, then Heroku's `scripts.postdeploy` when the push made the
//! app's first deployment (Heroku runs it once, after the app is set up). Each runs once per push (not in the other gears of a
//! scaled app, which receive the deployment already built), through `/bin/sh -c`, in the
//! deployment, with the app's environment.

use super::appjson::AppJson;
use super::procfile::Process;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// One command to run: what the pusher sees it called, and the shell command.
#[derive(Debug, PartialEq)]
pub struct Script {
    pub label: &'static str,
    pub command: String,
}

/// What runs before the switch, in order: predeploy, then release (Dokku's order).
pub fn before_switch(app: &AppJson, procfile: &[Process]) -> Vec<Script> {
    let predeploy = app.scripts.dokku.predeploy.clone().map(|command| Script {
        label: "app.json predeploy",
        command,
    });
    let release = procfile.iter().find(|p| p.name == "release").map(|p| Script {
        label: "release",
        command: p.command.clone(),
    });
    predeploy.into_iter().chain(release).collect()
}

/// What runs after the switch; `first`: nothing was live before it.
pub fn after_switch(app: &AppJson, first: bool) -> Vec<Script> {
    let dokku = app.scripts.dokku.postdeploy.clone().map(|command| Script {
        label: "app.json postdeploy",
        command,
    });
    let heroku = app.scripts.postdeploy.as_ref().filter(|_| first).map(|s| Script {
        label: "app.json postdeploy (first deploy)",
        command: s.command().to_string(),
    });
    dokku.into_iter().chain(heroku).collect()
}

/// Runs `script` in `repo` with `env`; its output goes to the pusher.
pub fn run(script: &Script, repo: &Path, env: &[(String, String)]) -> Result<()> {
    let st = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script.command)
        .env_clear()
        .envs(env.iter().cloned())
        .current_dir(repo)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run the {} command", script.label))?;
    if !st.success() {
        let how = st
            .code()
            .map(|c| format!("exit code {c}"))
            .unwrap_or_else(|| format!("{st}"));
        bail!("the {} command `{}` failed with {how}", script.label, script.command);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predeploy_then_release_before_and_postdeploy_after() {
        let app =
            super::super::appjson::parse(r#"{"scripts": {"dokku": {"predeploy": "a", "postdeploy": "c"}}}"#).unwrap();
        let procs = super::super::procfile::parse("web: w\nrelease: b\n").unwrap();
        let got: Vec<(&str, String)> = before_switch(&app, &procs)
            .into_iter()
            .map(|s| (s.label, s.command))
            .collect();
        assert_eq!(got, [("app.json predeploy", "a".into()), ("release", "b".into())]);
        assert_eq!(after_switch(&app, false)[0].command, "c");
        let both = super::super::appjson::parse(r#"{"scripts": {"postdeploy": "seed", "dokku": {"postdeploy": "c"}}}"#)
            .unwrap();
        let cmds = |first| -> Vec<String> { after_switch(&both, first).into_iter().map(|s| s.command).collect() };
        assert_eq!(cmds(true), ["c", "seed"]);
        assert_eq!(cmds(false), ["c"]);
        assert!(before_switch(&AppJson::default(), &[]).is_empty());
    }

    #[test]
    fn a_failing_command_says_which_and_how() {
        let s = Script {
            label: "release",
            command: "exit 3".into(),
        };
        let e = format!("{:#}", run(&s, Path::new("/"), &[]).unwrap_err());
        assert_eq!(e, "the release command `exit 3` failed with exit code 3");
        run(
            &Script {
                label: "release",
                command: "true".into(),
            },
            Path::new("/"),
            &[],
        )
        .unwrap();
    }
}
