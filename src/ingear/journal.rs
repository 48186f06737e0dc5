//! The deploy journal: the one record of a switch in flight, written atomically before a push
//! makes its new deployment live and cleared once the outcome is settled.
//!
//! The point of no return of a push is git's update of the deploy branch's ref: git tells the
//! client of success only after it, and never when the push's git-receive-pack died first.
//! So a switch whose journal is still there when nobody pushes any more is kept exactly when
//! the ref names its commit, and rolled back to the previous deployment otherwise.

use crate::gear::layout;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A switch in flight: the new deployment, its commit and branch, and the one it replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub commit: String,
    pub branch: String,
    /// The deployment live before the switch (none before the first deploy).
    pub previous: Option<String>,
}

/// What a leftover journal's switch becomes.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// git recorded the push: the new deployment stays live.
    Keep,
    /// git never recorded it (the client was told it failed): back to the previous deployment.
    RollBack,
}

fn path() -> PathBuf {
    layout::in_home(layout::RUNTIME).join(".gearshift-deploy-journal")
}

/// Records a switch about to happen (one atomic write).
pub fn begin(j: &Journal) -> Result<()> {
    crate::state::write_atomic(&path(), toml::to_string(j)?.as_bytes(), 0o600)
}

/// The switch in flight, if any.
pub fn read() -> Option<Journal> {
    toml::from_str(&std::fs::read_to_string(path()).ok()?).ok()
}

/// The switch's outcome is settled.
pub fn clear() {
    let _ = std::fs::remove_file(path());
}

/// Keep the switch when the deploy branch's ref (`None`: no such ref) names its commit.
pub fn verdict(j: &Journal, branch_ref: Option<&str>) -> Verdict {
    if branch_ref == Some(j.commit.as_str()) {
        Verdict::Keep
    } else {
        Verdict::RollBack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_stays_only_when_git_recorded_its_commit() {
        let j = Journal {
            id: "20260101-abcdef12".into(),
            commit: "abcdef1234".into(),
            branch: "main".into(),
            previous: Some("20251231-00000000".into()),
        };
        assert_eq!(verdict(&j, Some("abcdef1234")), Verdict::Keep);
        assert_eq!(verdict(&j, Some("0123456789")), Verdict::RollBack);
        assert_eq!(verdict(&j, None), Verdict::RollBack);
        let back: Journal = toml::from_str(&toml::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }
}
