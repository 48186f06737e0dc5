//! Detection, as Heroku and Dokku do it: an app created without `--cartridge` gets one at its
//! first push, chosen from the files at the top of the repository.

use crate::gear::layout;
use std::path::Path;

/// Files that name a cartridge, in the order they are looked for (the first match wins).
const RULES: &[(&str, &str)] = &[
    ("requirements.txt", "python"),
    ("pyproject.toml", "python"),
    ("Pipfile", "python"),
    ("runtime.txt", "python"),
    (".python-version", "python"),
    ("package.json", "nodejs"),
    ("index.html", "static"),
];

/// The cartridge for a repository whose top-level entries are `files`, and the file that chose
/// it; else an error listing what is recognised.
pub fn detect<S: AsRef<str>>(files: &[S]) -> Result<(&'static str, &'static str), String> {
    RULES
        .iter()
        .find(|(f, _)| files.iter().any(|x| x.as_ref() == *f))
        .map(|(f, c)| (*c, *f))
        .ok_or_else(|| {
            let known: Vec<String> = RULES.iter().map(|(f, c)| format!("{f} -> {c}")).collect();
            format!(
                "cannot tell which cartridge this app needs: none of the files gearshift recognises is at the top of the repository ({}); add one, or create the app with `app create NAME --cartridge CARTRIDGE`",
                known.join(", ")
            )
        })
}

/// Where the gear of an app created without a cartridge sees every cartridge, by name.
pub const CARTRIDGES_DIR: &str = "/opt/gearshift/cartridges";

/// Where the gear notes the cartridge it detected (read by the host once the push succeeded,
/// which records it in the app).
pub const DETECTED: &str = "app-root/runtime/.gearshift-detected-cartridge";

/// The cartridge detected for this gear's app, if any (checked against what the gear sees).
pub fn detected() -> Option<String> {
    let name = std::fs::read_to_string(layout::in_home(DETECTED)).ok()?;
    let name = name.trim();
    crate::names::check_app_name(name).ok()?;
    Path::new(CARTRIDGES_DIR)
        .join(name)
        .join("manifest.toml")
        .is_file()
        .then(|| name.to_string())
}

/// For a push to an app without a cartridge: detects one from `repo`'s files, says which and
/// why, and notes it for the host.
pub fn choose(repo: &Path) -> anyhow::Result<String> {
    let files: Vec<String> = std::fs::read_dir(repo)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let (cart, file) = detect(&files).map_err(anyhow::Error::msg)?;
    if !Path::new(CARTRIDGES_DIR).join(cart).join("manifest.toml").is_file() {
        anyhow::bail!(
            "detected the {cart} cartridge (because {file}), but this node has no {cart} cartridge (see `cartridges`)"
        );
    }
    crate::state::write_atomic(&layout::in_home(DETECTED), format!("{cart}\n").as_bytes(), 0o644)?;
    Ok(format!("detected {cart} (because {file})"))
}

/// For a deployment in a gear that started before its app had a cartridge (another gear of a
/// scaled app, which takes gear 0's deployment once the push recorded what gear 0 detected):
/// uses the app's `cartridge` from every cartridge the gear sees, as gear 0 did, not detecting
/// again.
pub fn adopt(cartridge: &str) -> anyhow::Result<()> {
    // A gear started with its cartridge sees no CARTRIDGES_DIR.
    if !Path::new(CARTRIDGES_DIR)
        .join(cartridge)
        .join("manifest.toml")
        .is_file()
        || detected().as_deref() == Some(cartridge)
    {
        return Ok(());
    }
    crate::state::write_atomic(&layout::in_home(DETECTED), format!("{cartridge}\n").as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::detect;

    #[test]
    fn by_files() {
        assert_eq!(
            detect(&["app.py", "requirements.txt", "Procfile"]),
            Ok(("python", "requirements.txt"))
        );
        assert_eq!(detect(&["pyproject.toml"]), Ok(("python", "pyproject.toml")));
        assert_eq!(detect(&["Pipfile", "Pipfile.lock"]), Ok(("python", "Pipfile")));
        assert_eq!(detect(&["runtime.txt", "app.py"]), Ok(("python", "runtime.txt")));
        assert_eq!(detect(&[".python-version"]), Ok(("python", ".python-version")));
        assert_eq!(detect(&["package.json", "index.html"]), Ok(("nodejs", "package.json")));
        assert_eq!(detect(&["index.html", "style.css"]), Ok(("static", "index.html")));
        // A python app with a front-end toolchain is a python app.
        assert_eq!(
            detect(&["package.json", "requirements.txt"]),
            Ok(("python", "requirements.txt"))
        );
    }

    #[test]
    fn undetectable_lists_what_is_recognised() {
        let e = detect(&["Procfile", "main.go", "README.md"]).unwrap_err();
        for f in [
            "requirements.txt",
            "package.json -> nodejs",
            "index.html -> static",
            "--cartridge",
        ] {
            assert!(e.contains(f), "{e}");
        }
        assert!(detect::<&str>(&[]).is_err());
        // Names match exactly, not by case or as part of a path.
        assert!(detect(&["Requirements.txt", "docs/index.html"]).is_err());
    }
}
