//! The pinned tools that turn JavaScript and Python into components, installed on first use.
//!
//! Neither is installed by hand: the first JavaScript or Python build installs its tool into a
//! cache folder ([`tools_dir`]), one folder per tool and version, under an exclusive file lock
//! so that two builds at once install it once. componentize-js comes with its whole npm
//! dependency tree pinned by the lockfile shipped inside this crate (`npm ci`); componentize-py
//! has no dependencies and is pinned by version (`pip install componentize-py==…`) into its own
//! virtual environment.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// componentize-js, on npm as `@bytecodealliance/componentize-js`.
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// componentize-py, on PyPI.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// Overrides where tools are installed.
pub const TOOLS_DIR_ENV: &str = "COALITION_TOOLS_DIR";

/// The npm project that pins componentize-js and its dependencies.
const JS_PACKAGE_JSON: &str = include_str!("../tools/componentize-js/package.json");
/// Its lockfile: every transitive package with its integrity hash.
const JS_PACKAGE_LOCK: &str = include_str!("../tools/componentize-js/package-lock.json");
/// Written last into a tool's folder: the install finished.
const COMPLETE_MARKER: &str = ".coalition-complete";

/// Where tools are installed: `$COALITION_TOOLS_DIR`, else `$XDG_CACHE_HOME/coalition/tools`,
/// else `~/.cache/coalition/tools`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(TOOLS_DIR_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(cache).join("coalition/tools");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/coalition/tools"),
        None => std::env::temp_dir().join("coalition-tools"),
    }
}

/// Where the offline `coalition plugin` commands keep compiled components: `artifacts/`
/// beside [`tools_dir`] (content-addressed, so every project can share it).
pub fn artifacts_dir() -> PathBuf {
    tools_dir().with_file_name("artifacts")
}

/// The `componentize-js` executable, installed first if needed.
pub fn componentize_js() -> Result<PathBuf> {
    let dir = tools_dir().join(format!("componentize-js-{COMPONENTIZE_JS_VERSION}"));
    install_once(&dir, |dir| {
        fs::write(dir.join("package.json"), JS_PACKAGE_JSON)?;
        fs::write(dir.join("package-lock.json"), JS_PACKAGE_LOCK)?;
        run(
            Command::new("npm").current_dir(dir).args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ]),
            "npm ci (componentize-js); JavaScript plugins need Node.js 18 or later with npm",
        )
    })?;
    Ok(dir.join("node_modules/.bin/componentize-js"))
}

/// The `componentize-py` executable, installed first if needed.
pub fn componentize_py() -> Result<PathBuf> {
    let dir = tools_dir().join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    install_once(&dir, |dir| {
        run(
            Command::new(python()).arg("-m").arg("venv").arg(dir),
            "python3 -m venv; Python plugins need Python 3.10 or later with venv",
        )?;
        run(
            Command::new(dir.join("bin/pip")).args([
                "install",
                "--quiet",
                "--no-input",
                "--disable-pip-version-check",
                &format!("componentize-py=={COMPONENTIZE_PY_VERSION}"),
            ]),
            "pip install componentize-py",
        )
    })?;
    Ok(dir.join("bin/componentize-py"))
}

/// The Python interpreter that creates the virtual environment.
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs `install` into `dir` unless a finished install is there, holding an exclusive lock on
/// `<dir>.lock` so that concurrent builds install once; a half-finished install is redone.
fn install_once(dir: &Path, install: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if dir.join(COMPLETE_MARKER).exists() {
        return Ok(());
    }
    let parent = dir.parent().context("a tool folder has a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("while creating {}", parent.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("while creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("while locking {}", lock_path.display()))?;
    if dir.join(COMPLETE_MARKER).exists() {
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("while clearing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    eprintln!("installing {} (once)", dir.display());
    install(dir)?;
    fs::write(dir.join(COMPLETE_MARKER), "")?;
    Ok(())
}

/// Runs a command, failing with `what` and its status. Its output goes to stderr: the
/// `coalition` commands print their answer, and only that, on stdout.
pub(crate) fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("could not start: {what}"))?;
    if !status.success() {
        bail!("failed ({status}): {what}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockfile_pins_the_version_the_constant_names() {
        let lock: serde_json::Value = serde_json::from_str(JS_PACKAGE_LOCK).expect("lockfile");
        let pinned = &lock["packages"]["node_modules/@bytecodealliance/componentize-js"];
        assert_eq!(pinned["version"], COMPONENTIZE_JS_VERSION);
        assert!(pinned["integrity"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha512-")));
        let package: serde_json::Value = serde_json::from_str(JS_PACKAGE_JSON).expect("json");
        assert_eq!(
            package["dependencies"]["@bytecodealliance/componentize-js"], COMPONENTIZE_JS_VERSION,
            "an exact version, not a range"
        );
    }

    #[test]
    fn a_finished_install_is_not_redone_and_a_broken_one_is() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("tool-1.0");
        let mut runs = 0;
        install_once(&dir, |d| {
            runs += 1;
            fs::write(d.join("bin"), "x").map_err(Into::into)
        })
        .expect("install");
        install_once(&dir, |_| {
            runs += 1;
            Ok(())
        })
        .expect("cached");
        assert_eq!(runs, 1);
        fs::remove_file(dir.join(COMPLETE_MARKER)).expect("break it");
        assert!(install_once(&dir, |_| bail!("network down")).is_err());
        assert!(!dir.join(COMPLETE_MARKER).exists());
        install_once(&dir, |_| Ok(())).expect("redone");
        assert!(dir.join(COMPLETE_MARKER).exists());
    }
}
