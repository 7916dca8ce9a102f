//! `coalition plugin build`: a plugin project to `target/coalition/<name>.wasm`.
//!
//! - **Rust**: `cargo build --release --lib --target wasm32-unknown-unknown`, then the core
//!   module is turned into a component in-process with `wit-component` (the SDK embeds the
//!   world in the module). No WASI: the component imports the plugin contract only.
//! - **JavaScript**: componentize-js on `plugin.js`, with every WASI feature disabled
//!   (`stdio`, `random`, `clocks`, `http`, `fetch-event`): the host offers no `wasi:http`, and a
//!   plugin's only clock and randomness are the invocation's `now-ms` and `seed`.
//! - **Python**: componentize-py on `app.py` (class `Hooks`); its WASI imports are served
//!   frozen and seeded by the host.
//!
//! The WIT comes from the project's `wit/` folder when it has one (as `new` writes it), else
//! from the copy built into this crate.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::tools::{self, run};
use crate::{Lang, WIT_TEXT, WIT_VERSION};

/// The plain WebAssembly target Rust plugins build for.
pub const RUST_TARGET: &str = "wasm32-unknown-unknown";
/// First bytes of a component (magic, then layer 1 version 0x0d); a core module has 01 00 00 00.
pub const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// The world every plugin exports.
const WORLD: &str = "plugin";

/// A built plugin.
#[derive(Debug, Clone)]
pub struct Built {
    /// The manifest's `name`.
    pub name: String,
    /// The project's language.
    pub lang: Lang,
    /// The manifest (`plugin.toml`).
    pub manifest: PathBuf,
    /// The component written.
    pub component: PathBuf,
    /// Its size in bytes.
    pub bytes: usize,
}

/// Where `build` writes the component of plugin `name` for the project in `dir`.
pub fn component_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("target")
        .join("coalition")
        .join(format!("{name}.wasm"))
}

/// The manifest's `name` and `wit`.
pub fn manifest_facts(manifest: &Path) -> Result<(String, String)> {
    let text = fs::read_to_string(manifest)
        .with_context(|| format!("while reading {}", manifest.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", manifest.display()))?;
    let field = |key: &str| {
        table
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| format!("{} has no `{key}`", manifest.display()))
    };
    Ok((field("name")?, field("wit")?))
}

/// Builds the project in `dir` (see the module doc) and returns what it wrote.
pub fn build(dir: &Path) -> Result<Built> {
    // Absolute, so that what `build` prints can be used from any folder.
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("while resolving {}", dir.display()))?;
    let lang = Lang::detect(dir)?;
    let manifest = dir.join("plugin.toml");
    let (name, wit) = manifest_facts(&manifest)?;
    ensure!(
        wit == WIT_VERSION,
        "{} targets {wit}; this kit builds {WIT_VERSION}",
        manifest.display()
    );
    let out = component_path(dir, &name);
    let out_dir = out.parent().context("component path has a parent")?;
    fs::create_dir_all(out_dir).with_context(|| format!("while creating {}", out_dir.display()))?;
    let staging = out.with_extension("wasm.partial");
    let component = match lang {
        Lang::Rust => build_rust(dir)?,
        Lang::JavaScript => {
            let tool = tools::componentize_js()?;
            run(
                Command::new(tool)
                    .current_dir(dir)
                    .arg("plugin.js")
                    .arg("--wit")
                    .arg(wit_dir(dir)?)
                    .args(["--world-name", WORLD, "--disable"])
                    .args(["stdio", "random", "clocks", "http", "fetch-event"])
                    .arg("--out")
                    .arg(&staging),
                "componentize-js plugin.js",
            )?;
            read_staged(&staging)?
        }
        Lang::Python => {
            let tool = tools::componentize_py()?;
            run(
                Command::new(tool)
                    .current_dir(dir)
                    .arg("--wit-path")
                    .arg(wit_dir(dir)?)
                    .args(["--world", WORLD, "componentize", "app", "--python-path"])
                    .arg(dir)
                    .arg("--output")
                    .arg(&staging),
                "componentize-py app",
            )?;
            read_staged(&staging)?
        }
    };
    ensure!(
        component.starts_with(&COMPONENT_HEADER),
        "the {lang} build did not produce a component"
    );
    fs::write(&staging, &component)?;
    fs::rename(&staging, &out).with_context(|| format!("while writing {}", out.display()))?;
    Ok(Built {
        name,
        lang,
        manifest,
        component: out,
        bytes: component.len(),
    })
}

/// Reads and removes what a tool wrote.
fn read_staged(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("the tool wrote no {}", path.display()))?;
    let _ = fs::remove_file(path);
    Ok(bytes)
}

/// The project's `wit/`, or the built-in WIT written under `target/coalition/wit/`.
fn wit_dir(dir: &Path) -> Result<PathBuf> {
    let own = dir.join("wit");
    if own.is_dir() {
        return Ok(own);
    }
    let built_in = dir.join("target").join("coalition").join("wit");
    fs::create_dir_all(&built_in)?;
    fs::write(built_in.join("plugin.wit"), WIT_TEXT)?;
    Ok(built_in)
}

/// The cargo that runs us, or the one on PATH.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Builds a Rust project to a core module and turns it into a component.
fn build_rust(dir: &Path) -> Result<Vec<u8>> {
    ensure_rust_target(RUST_TARGET)?;
    let cargo_toml = dir.join("Cargo.toml");
    let target_dir = dir.join("target");
    run(
        Command::new(cargo())
            .current_dir(dir)
            // A caller's target settings must not redirect or retarget a partner's build.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .args(["build", "--release", "--lib", "--target", RUST_TARGET])
            .arg("--manifest-path")
            .arg(&cargo_toml)
            .arg("--target-dir")
            .arg(&target_dir),
        "cargo build --release --target wasm32-unknown-unknown",
    )?;
    let module = target_dir
        .join(RUST_TARGET)
        .join("release")
        .join(format!("{}.wasm", lib_name(&cargo_toml)?));
    let core = fs::read(&module).with_context(|| format!("while reading {}", module.display()))?;
    componentize(&core)
}

/// Core module → component; the world comes from the custom section the SDK embeds.
pub fn componentize(core_module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(core_module)?
        .validate(true)
        .encode()
}

/// The library's file stem: `[lib] name`, else the package name with `-` as `_`.
fn lib_name(cargo_toml: &Path) -> Result<String> {
    let text = fs::read_to_string(cargo_toml)?;
    let table: toml::Table = toml::from_str(&text)?;
    let lib = table
        .get("lib")
        .and_then(|l| l.get("name"))
        .and_then(|n| n.as_str());
    let package = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    match (lib, package) {
        (Some(lib), _) => Ok(lib.to_owned()),
        (None, Some(package)) => Ok(package.replace('-', "_")),
        (None, None) => bail!("{} has no [package] name", cargo_toml.display()),
    }
}

/// Adds a rustup target when rustup is there and lacks it (a toolchain without rustup must
/// have it already).
pub fn ensure_rust_target(target: &str) -> Result<()> {
    let Ok(listed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|line| line.trim() == target)
    {
        return Ok(());
    }
    run(
        Command::new("rustup").args(["target", "add", target]),
        "rustup target add",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lib_name_prefers_the_lib_section() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("Cargo.toml");
        fs::write(&path, "[package]\nname = \"book-bonus\"\n").expect("write");
        assert_eq!(lib_name(&path).expect("name"), "book_bonus");
        fs::write(&path, "[package]\nname = \"a\"\n[lib]\nname = \"b\"\n").expect("write");
        assert_eq!(lib_name(&path).expect("name"), "b");
    }

    #[test]
    fn a_manifest_for_another_contract_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("app.py"), "").expect("write");
        fs::write(
            dir.path().join("plugin.toml"),
            "name = \"x\"\nversion = \"1.0.0\"\nwit = \"coalition:plugin@9.0.0\"\n",
        )
        .expect("write");
        let err = build(dir.path()).expect_err("unknown contract");
        assert!(err.to_string().contains("coalition:plugin@9.0.0"), "{err}");
    }
}
