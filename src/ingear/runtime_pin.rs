//! Runtime pins, as Heroku reads them: `runtime.txt` (`python-3.11.4`) and `.python-version`
//! (`3.11`) for python, package.json `engines.node` (`>=18`, `20.x`, `^20`) for nodejs. A pin
//! chooses among the interpreters installed on the host by major.minor; none satisfies it: the
//! build fails with what is installed and how to add one.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// For a build of `repo` with cartridge `cartridge`: the interpreter its pin chooses (None:
/// no pin), with a note naming the exact version; an unsatisfiable pin fails.
pub fn resolve(cartridge: &str, repo: &Path) -> Result<Option<(Interpreter, String)>> {
    let (pin, installed) = match cartridge {
        "python" => (python_pin(repo)?, pythons as fn() -> Vec<Interpreter>),
        "nodejs" => (node_pin(repo)?, nodes as fn() -> Vec<Interpreter>),
        _ => return Ok(None),
    };
    let Some(pin) = pin else { return Ok(None) };
    let i = choose(cartridge, &pin, &installed())?;
    let lang = if cartridge == "python" { "python" } else { "node" };
    let note = format!(
        "{} asks for {}: using {lang} {} ({})",
        pin.file,
        pin.asked,
        i.version,
        i.path.display()
    );
    Ok(Some((i, note)))
}

/// An interpreter installed on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpreter {
    pub path: PathBuf,
    /// The exact version, `3.11.2`, `20.20.2`.
    pub version: String,
}

impl Interpreter {
    fn major_minor(&self) -> (u64, u64) {
        let mut p = self.version.split('.').map(|x| x.parse().unwrap_or(0));
        (p.next().unwrap_or(0), p.next().unwrap_or(0))
    }
}

/// The python interpreters installed: `/usr/bin/python3.X`, each with its exact version.
pub fn pythons() -> Vec<Interpreter> {
    let mut out: Vec<Interpreter> = std::fs::read_dir("/usr/bin")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let minor = name.strip_prefix("python3.")?;
            if minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let path = e.path();
            let version = version_of(&path, &["-c", "import platform; print(platform.python_version())"])?;
            Some(Interpreter { path, version })
        })
        .collect();
    out.sort_by_key(|i| i.major_minor());
    out
}

/// The node interpreter installed (`/usr/bin/node`), if any.
pub fn nodes() -> Vec<Interpreter> {
    let path = PathBuf::from("/usr/bin/node");
    version_of(&path, &["--version"])
        .map(|v| Interpreter {
            path,
            version: v.trim_start_matches('v').to_string(),
        })
        .into_iter()
        .collect()
}

fn version_of(path: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new(path).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A pin read from the app's files: what it asks, and where it says so.
#[derive(Debug, PartialEq)]
pub struct Pin {
    pub file: &'static str,
    pub asked: String,
}

/// The python pin of `repo`: runtime.txt first (as Heroku), then .python-version.
pub fn python_pin(repo: &Path) -> Result<Option<Pin>> {
    for file in ["runtime.txt", ".python-version"] {
        let Ok(text) = std::fs::read_to_string(repo.join(file)) else {
            continue;
        };
        let Some(line) = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
        else {
            continue;
        };
        return Ok(Some(Pin {
            file,
            asked: line.to_string(),
        }));
    }
    Ok(None)
}

/// The major.minor a python pin asks for: `python-3.11.4`, `3.11`, `3.11.4` -> (3, 11).
pub fn python_wanted(asked: &str) -> Option<(u64, u64)> {
    let v = asked.strip_prefix("python-").unwrap_or(asked);
    let mut p = v.split('.');
    let major = p.next()?.parse().ok()?;
    let minor = p.next()?.parse().ok()?;
    if p.next().is_some_and(|patch| patch.parse::<u64>().is_err()) {
        return None;
    }
    Some((major, minor))
}

/// The node pin of `repo`: package.json `engines.node`.
pub fn node_pin(repo: &Path) -> Result<Option<Pin>> {
    let Ok(text) = std::fs::read_to_string(repo.join("package.json")) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("package.json is not valid JSON: {e}"))?;
    Ok(v.pointer("/engines/node").and_then(|n| n.as_str()).map(|s| Pin {
        file: "package.json engines.node",
        asked: s.trim().to_string(),
    }))
}

/// Whether version `v` (`20.20.2`) satisfies an npm range (`>=18`, `20.x`, `^20`, `~20.1`,
/// `18 || 20`, `>=18 <21`, `*`). None: a range this does not understand.
pub fn node_satisfies(range: &str, v: &str) -> Option<bool> {
    let ver = parse3(v)?;
    let mut any = false;
    for alt in range.split("||") {
        let mut all = true;
        for c in alt.split_whitespace() {
            all &= comparator(c, ver)?;
        }
        any |= all;
    }
    Some(any)
}

/// `20.1.x` -> ([20, 1, 0], how many parts were given).
fn partial(s: &str) -> Option<([u64; 3], usize)> {
    let s = s.trim_start_matches('v');
    let mut out = [0; 3];
    let mut n = 0;
    for (i, part) in s.split('.').enumerate() {
        if i > 2 {
            return None;
        }
        if matches!(part, "x" | "X" | "*") {
            break;
        }
        out[i] = part.parse().ok()?;
        n = i + 1;
    }
    Some((out, n))
}

fn parse3(v: &str) -> Option<[u64; 3]> {
    let (p, n) = partial(v.split(['-', '+']).next()?)?;
    (n >= 1).then_some(p)
}

fn comparator(c: &str, v: [u64; 3]) -> Option<bool> {
    if c == "*" || c.is_empty() {
        return Some(true);
    }
    let (op, rest) = match c.find(|ch: char| ch.is_ascii_digit() || ch == 'v' || ch == 'x' || ch == '*') {
        Some(i) => c.split_at(i),
        None => return None,
    };
    let (p, n) = partial(rest)?;
    // The end (exclusive) of the range a partial version or a caret/tilde names.
    let bump = |k: usize| -> [u64; 3] {
        let mut e = [0; 3];
        e[..k].copy_from_slice(&p[..k]);
        if k > 0 {
            e[k - 1] += 1;
        }
        e
    };
    Some(match op {
        "" | "=" if n == 0 => true,
        "" | "=" => v >= p && (n == 3 && v == p || n < 3 && v < bump(n)),
        ">=" => v >= p,
        ">" if n < 3 => v >= bump(n),
        ">" => v > p,
        "<=" if n < 3 => v < bump(n),
        "<=" => v <= p,
        "<" => v < p,
        "^" => {
            let k = if p[0] > 0 || n <= 1 {
                1
            } else if p[1] > 0 || n == 2 {
                2
            } else {
                3
            };
            v >= p && v < bump(k.min(n.max(1)))
        }
        "~" => v >= p && v < bump(if n >= 2 { 2 } else { 1 }),
        _ => return None,
    })
}

/// The interpreter a pin chooses among `installed`, or an error naming what is installed and
/// how to add one. `cartridge`: python or nodejs.
pub fn choose(cartridge: &str, pin: &Pin, installed: &[Interpreter]) -> Result<Interpreter> {
    let have = if installed.is_empty() {
        "none".to_string()
    } else {
        installed
            .iter()
            .map(|i| format!("{} ({})", i.version, i.path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match cartridge {
        "python" => {
            let Some((major, minor)) = python_wanted(&pin.asked) else {
                bail!(
                    "{} says {:?}, which is not a python version: write it as python-3.11.4 (runtime.txt) or 3.11 (.python-version)",
                    pin.file,
                    pin.asked
                );
            };
            // The newest patch release wins if several interpreters share major.minor.
            if let Some(i) = installed.iter().rev().find(|i| i.major_minor() == (major, minor)) {
                return Ok(i.clone());
            }
            bail!(
                "{} asks for python {major}.{minor}, which this node does not have (installed: {have}); ask the node's admin to add it (`apt-get install python{major}.{minor}` / `dnf install python{major}.{minor}`), or change {}",
                pin.file,
                pin.file
            )
        }
        "nodejs" => {
            let mut unknown = false;
            for i in installed.iter().rev() {
                match node_satisfies(&pin.asked, &i.version) {
                    Some(true) => return Ok(i.clone()),
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            if unknown {
                bail!(
                    "{} is {:?}, a range gearshift does not understand: use forms like >=18, 20.x, ^20, ~20.1 or 18 || 20",
                    pin.file,
                    pin.asked
                );
            }
            bail!(
                "{} asks for node {:?}, which this node does not have (installed: {have}); ask the node's admin to add a matching major from NodeSource (https://github.com/nodesource/distributions: `curl -fsSL https://deb.nodesource.com/setup_22.x | bash - && apt-get install nodejs`), or change engines.node",
                pin.file,
                pin.asked
            )
        }
        _ => bail!(
            "{} pins a runtime, but the {cartridge} cartridge has no choice of interpreter",
            pin.file
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp(path: &str, version: &str) -> Interpreter {
        Interpreter {
            path: path.into(),
            version: version.into(),
        }
    }

    #[test]
    fn python_versions() {
        assert_eq!(python_wanted("python-3.11.4"), Some((3, 11)));
        assert_eq!(python_wanted("3.11"), Some((3, 11)));
        assert_eq!(python_wanted("3.12.0"), Some((3, 12)));
        for bad in ["python-3", "ruby-3.2.1", "3", "", "3.x", "3.11.4a"] {
            assert_eq!(python_wanted(bad), None, "{bad}");
        }
    }

    #[test]
    fn python_choice_by_major_minor() {
        let installed = [
            interp("/usr/bin/python3.11", "3.11.2"),
            interp("/usr/bin/python3.12", "3.12.1"),
        ];
        let pin = |s: &str| Pin {
            file: "runtime.txt",
            asked: s.into(),
        };
        assert_eq!(
            choose("python", &pin("python-3.11.4"), &installed).unwrap().version,
            "3.11.2"
        );
        assert_eq!(choose("python", &pin("3.12"), &installed).unwrap().version, "3.12.1");
        let e = choose("python", &pin("python-3.13.0"), &installed)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3.11.2 (/usr/bin/python3.11), 3.12.1") && e.contains("apt-get install python3.13"),
            "{e}"
        );
        assert!(choose("python", &pin("python3.11"), &installed).is_err());
    }

    #[test]
    fn npm_ranges() {
        let yes = [
            ">=18", "20.x", "^20", "20", "~20.20", ">=18 <21", "16 || 20", "*", "", "v20", "20.20.2", "^20.1.0",
        ];
        for r in yes {
            assert_eq!(node_satisfies(r, "20.20.2"), Some(true), "{r}");
        }
        let no = [
            ">=22", "18.x", "^18", "~20.1", "<20", ">20", "16 || 18", "20.21.x", "^0.20",
        ];
        for r in no {
            assert_eq!(node_satisfies(r, "20.20.2"), Some(false), "{r}");
        }
        assert_eq!(node_satisfies("lts/*", "20.20.2"), None);
        assert_eq!(node_satisfies("^0.2.3", "0.2.9"), Some(true));
        assert_eq!(node_satisfies("^0.2.3", "0.3.0"), Some(false));
    }

    #[test]
    fn node_choice_names_nodesource() {
        let installed = [interp("/usr/bin/node", "20.20.2")];
        let pin = |s: &str| Pin {
            file: "package.json engines.node",
            asked: s.into(),
        };
        assert_eq!(choose("nodejs", &pin("^20"), &installed).unwrap().version, "20.20.2");
        let e = choose("nodejs", &pin(">=22"), &installed).unwrap_err().to_string();
        assert!(e.contains("20.20.2 (/usr/bin/node)") && e.contains("NodeSource"), "{e}");
        assert!(choose("nodejs", &pin("lts/*"), &installed)
            .unwrap_err()
            .to_string()
            .contains("does not understand"));
    }
}
