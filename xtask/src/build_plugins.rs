//! `cargo xtask build-plugins`: builds the guest workspace (`plugins/`) and writes one
//! component and one manifest per plugin into `target/plugins/`:
//!
//! ```text
//! target/plugins/<name>.wasm   the component (name = `name` in plugin.toml)
//! target/plugins/<name>.toml   a copy of the plugin's plugin.toml
//! target/plugins/corrupt.wasm  a truncated real component followed by garbage (test fixture)
//! target/plugins/corrupt.toml  a valid manifest for it
//! ```
//!
//! JavaScript and Python guests (`plugins/js/*`, `plugins/python/*`, each a project with a
//! `plugin.toml`) are built by the partner kit (`coalition-kit`), as `coalition plugin build`
//! builds them, with its pinned componentize-js and componentize-py installed under
//! `target/tools/` on first use.
//!
//! A guest is any crate under `plugins/`, `plugins/hostile/` or `plugins/changed/` with a
//! `plugin.toml` beside its `Cargo.toml`. A later version of an existing plugin (same manifest
//! `name`, under `changed/`) names its output stem with `[package.metadata.coalition] artifact`.
//! A guest builds for `wasm32-unknown-unknown` and is turned into a component with
//! `wit-component`, unless its Cargo.toml sets `[package.metadata.coalition] target =
//! "wasm32-wasip2"`, in which case rustc already links a component.
//!
//! The same key serves a fixture that is the next release of another fixture (same plugin
//! name, e.g. `settle-trap-fixed` is `settle-trap` 1.0.1).
//!
//! Outputs are rewritten only when their bytes change, so a second run with nothing changed
//! takes about as long as two no-op `cargo build`s and does not disturb tests watching the files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::paths;

/// The plain target: no WASI imports, half the size of a WASI build and twice as fast to build.
const PLAIN_TARGET: &str = "wasm32-unknown-unknown";
/// The WASI target, for the fixture proving WASI guests get a frozen clock and seeded random.
const WASI_TARGET: &str = "wasm32-wasip2";
/// Targets every guest build needs; a fresh machine has neither.
const REQUIRED_TARGETS: [&str; 2] = [PLAIN_TARGET, WASI_TARGET];
/// Folders of the guest workspace that hold JavaScript and Python plugin projects.
const FOREIGN_DIRS: [&str; 2] = ["js", "python"];
/// Folders of the guest workspace that hold plugin crates.
const GUEST_DIRS: [&str; 3] = ["", "hostile", "changed"];
/// The component the corrupt fixture is cut from.
const CORRUPT_SOURCE: &str = "coffee-bonus";
/// Name of the corrupt fixture.
const CORRUPT_NAME: &str = "corrupt";

/// Flags of `build-plugins`.
#[derive(clap::Args, Default)]
pub struct Args {
    /// Where to write components and manifests [default: target/plugins under the repo root].
    #[arg(long, env = paths::PLUGINS_DIR_ENV)]
    pub out_dir: Option<PathBuf>,
}

/// One guest crate with a manifest.
pub(crate) struct Guest {
    /// The output file stem: `name` from plugin.toml, or `[package.metadata.coalition]
    /// artifact` for a later version of a plugin kept beside the first (e.g. `changed/`).
    name: String,
    /// Cargo package name.
    pub(crate) package: String,
    /// Rust target triple.
    target: &'static str,
    /// The WIT package its manifest names (`wit`), for example `coalition:plugin@0.2.0`.
    pub(crate) wit: String,
    manifest_path: PathBuf,
}

/// The guests' package names grouped by WIT version, oldest first. A guest built against a newer
/// version enables the SDK's feature for it, and cargo unifies features across the packages of
/// one invocation: each group is built (and natively tested) by a cargo invocation of its own,
/// so the feature never reaches another version's guests.
pub(crate) fn by_wit_version<'a>(
    guests: impl IntoIterator<Item = &'a Guest>,
) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for guest in guests {
        groups
            .entry(guest.wit.as_str())
            .or_default()
            .push(guest.package.as_str());
    }
    groups
}

/// Builds every guest and writes the components and manifests.
pub fn run(args: &Args) -> Result<()> {
    let workspace = paths::guest_workspace();
    let out_dir = args.out_dir.clone().unwrap_or_else(paths::plugins_out_dir);
    ensure_targets()?;
    let guests = discover(&workspace)?;
    ensure!(
        !guests.is_empty(),
        "no plugin.toml found under {}",
        workspace.display()
    );

    let target_dir = workspace.join("target");
    for target in REQUIRED_TARGETS {
        let groups = by_wit_version(guests.iter().filter(|g| g.target == target));
        for packages in groups.values() {
            cargo_build(&workspace, &target_dir, target, packages)?;
        }
    }

    fs::create_dir_all(&out_dir)
        .with_context(|| format!("while creating {}", out_dir.display()))?;
    println!("components in {}:", out_dir.display());
    let mut components = BTreeMap::new();
    for guest in &guests {
        let artifact = target_dir
            .join(guest.target)
            .join("release")
            .join(format!("{}.wasm", guest.package.replace('-', "_")));
        let bytes = fs::read(&artifact)
            .with_context(|| format!("while reading {} of {}", artifact.display(), guest.name))?;
        let component = if guest.target == PLAIN_TARGET {
            coalition_kit::build::componentize(&bytes)
                .with_context(|| format!("while componentizing {}", guest.name))?
        } else {
            ensure!(
                bytes.starts_with(&coalition_kit::build::COMPONENT_HEADER),
                "{} ({}) is not a component",
                artifact.display(),
                guest.target
            );
            bytes
        };
        let manifest = fs::read(&guest.manifest_path)
            .with_context(|| format!("while reading {}", guest.manifest_path.display()))?;
        let imports = describe_imports(&component)
            .with_context(|| format!("while decoding the component of {}", guest.name))?;
        let origin = format!("{:<22} {imports}", guest.target);
        write_output(&out_dir, &guest.name, &component, &manifest, &origin)?;
        components.insert(guest.name.clone(), (component, manifest));
    }

    build_foreign_guests(&workspace, &out_dir)?;

    let (source, source_manifest) = components.get(CORRUPT_SOURCE).with_context(|| {
        format!("the corrupt fixture is cut from {CORRUPT_SOURCE}, which is missing")
    })?;
    let corrupt = corrupt_component(source);
    ensure!(
        wit_component::decode(&corrupt).is_err(),
        "the corrupt fixture decodes as a component; cut it differently"
    );
    let corrupt_manifest = corrupt_manifest(source_manifest)?;
    write_output(
        &out_dir,
        CORRUPT_NAME,
        &corrupt,
        &corrupt_manifest,
        "truncated + garbage",
    )?;
    Ok(())
}

/// Installs missing rustup targets, saying so.
fn ensure_targets() -> Result<()> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let installed = match output {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Ok(output) => bail!(
            "`rustup target list --installed` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) => {
            // Without rustup (a distro toolchain) the targets may still be there: let cargo say.
            println!("rustup not found ({err}); assuming {REQUIRED_TARGETS:?} are installed");
            return Ok(());
        }
    };
    for target in REQUIRED_TARGETS {
        if installed.lines().any(|line| line.trim() == target) {
            continue;
        }
        println!("installing missing target: rustup target add {target}");
        let status = Command::new("rustup")
            .args(["target", "add", target])
            .status()
            .context("while running rustup target add")?;
        ensure!(
            status.success(),
            "`rustup target add {target}` failed ({status})"
        );
    }
    Ok(())
}

/// Every crate with a `plugin.toml` in the guest workspace, sorted by name.
pub(crate) fn discover(workspace: &Path) -> Result<Vec<Guest>> {
    let mut guests = Vec::new();
    for dir in GUEST_DIRS {
        let parent = workspace.join(dir);
        if !parent.is_dir() {
            continue;
        }
        let entries =
            fs::read_dir(&parent).with_context(|| format!("while listing {}", parent.display()))?;
        for entry in entries {
            let crate_dir = entry?.path();
            let manifest_path = crate_dir.join("plugin.toml");
            if manifest_path.is_file() {
                guests.push(read_guest(&crate_dir, manifest_path)?);
            }
        }
    }
    guests.sort_by(|a, b| a.name.cmp(&b.name));
    for pair in guests.windows(2) {
        ensure!(
            pair[0].name != pair[1].name,
            "two plugins are named {}",
            pair[0].name
        );
    }
    ensure!(
        guests.iter().all(|g| g.name != CORRUPT_NAME),
        "{CORRUPT_NAME} is reserved for the corrupt fixture"
    );
    Ok(guests)
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    let text =
        fs::read_to_string(path).with_context(|| format!("while reading {}", path.display()))?;
    text.parse()
        .with_context(|| format!("while parsing {}", path.display()))
}

fn read_guest(crate_dir: &Path, manifest_path: PathBuf) -> Result<Guest> {
    let manifest = read_toml(&manifest_path)?;
    let name = manifest
        .get("name")
        .and_then(toml::Value::as_str)
        .with_context(|| format!("{}: `name` must be a string", manifest_path.display()))?
        .to_owned();
    let kebab = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ensure!(
        kebab,
        "{}: name {name:?} is not kebab-case",
        manifest_path.display()
    );
    for key in ["version", "wit", "description", "hooks", "brands", "limits"] {
        ensure!(
            manifest.contains_key(key),
            "{}: `{key}` is missing",
            manifest_path.display()
        );
    }

    let wit = manifest
        .get("wit")
        .and_then(toml::Value::as_str)
        .with_context(|| format!("{}: `wit` must be a string", manifest_path.display()))?
        .to_owned();
    let cargo_path = crate_dir.join("Cargo.toml");
    let cargo = read_toml(&cargo_path)?;
    let package = cargo.get("package").and_then(toml::Value::as_table);
    let package_name = package
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .with_context(|| format!("{}: no package.name", cargo_path.display()))?
        .to_owned();
    let coalition_meta = package
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("coalition"));
    let name = match coalition_meta
        .and_then(|c| c.get("artifact"))
        .and_then(toml::Value::as_str)
    {
        Some(artifact) => artifact.to_owned(),
        None => name,
    };
    let target = match coalition_meta
        .and_then(|c| c.get("target"))
        .and_then(toml::Value::as_str)
    {
        None => PLAIN_TARGET,
        Some(WASI_TARGET) => WASI_TARGET,
        Some(PLAIN_TARGET) => PLAIN_TARGET,
        Some(other) => bail!("{}: unsupported target {other}", cargo_path.display()),
    };
    Ok(Guest {
        name,
        package: package_name,
        target,
        wit,
        manifest_path,
    })
}

fn cargo_build(workspace: &Path, target_dir: &Path, target: &str, packages: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--target", target]);
    for package in packages {
        command.args(["--package", package]);
    }
    println!("building {} guest(s) for {target}", packages.len());
    let status = command
        .status()
        .context("while running cargo build for the guests")?;
    ensure!(
        status.success(),
        "cargo build of the guests for {target} failed ({status})"
    );
    Ok(())
}

/// Builds the JavaScript and Python guests (`plugins/js/*`, `plugins/python/*`) with the
/// partner kit, exactly as `coalition plugin build` does; one whose sources are older than its
/// output in `out_dir` is not rebuilt (componentize-js and componentize-py take 10–25 s each).
fn build_foreign_guests(workspace: &Path, out_dir: &Path) -> Result<()> {
    paths::use_repo_tools();
    for lang_dir in FOREIGN_DIRS {
        let parent = workspace.join(lang_dir);
        if !parent.is_dir() {
            continue;
        }
        let mut dirs: Vec<PathBuf> = fs::read_dir(&parent)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|d| d.join("plugin.toml").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let (name, _) = coalition_kit::build::manifest_facts(&dir.join("plugin.toml"))?;
            let output = out_dir.join(format!("{name}.wasm"));
            if newer_than_sources(&output, &dir)? {
                println!("  {name:<22} up to date ({lang_dir})");
                continue;
            }
            println!("building {name} ({lang_dir}) with the partner kit");
            let built = coalition_kit::build(&dir)
                .with_context(|| format!("while building {}", dir.display()))?;
            let component = fs::read(&built.component)?;
            let manifest = fs::read(&built.manifest)?;
            let imports = describe_imports(&component)
                .with_context(|| format!("while decoding the component of {name}"))?;
            let origin = format!("{:<22} {imports}", built.lang.as_str());
            write_output(out_dir, &name, &component, &manifest, &origin)?;
        }
    }
    Ok(())
}

/// Whether `output` exists and is newer than every source file of the project in `dir`.
fn newer_than_sources(output: &Path, dir: &Path) -> Result<bool> {
    let Ok(built) = fs::metadata(output).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            let file_name = entry.file_name();
            if ["target", "node_modules", "__pycache__"].contains(&file_name.to_str().unwrap_or(""))
            {
                continue;
            }
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if entry.metadata()?.modified()? > built {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Summarises what the component imports beyond the plugin contract (`coalition:plugin/*`):
/// WASI for the WASI fixture, the forbidden interface for its fixture, nothing for the others.
fn describe_imports(component: &[u8]) -> Result<String> {
    let decoded = wit_component::decode(component)?;
    let wit_component::DecodedWasm::Component(resolve, world) = &decoded else {
        bail!("a WIT package, not a component");
    };
    let foreign: Vec<String> = resolve.worlds[*world]
        .imports
        .keys()
        .map(|key| resolve.name_world_key(key))
        .filter(|name| !name.starts_with("coalition:plugin/"))
        .collect();
    let wasi = foreign
        .iter()
        .filter(|name| name.starts_with("wasi:"))
        .count();
    let other: Vec<&str> = foreign
        .iter()
        .filter(|name| !name.starts_with("wasi:"))
        .map(String::as_str)
        .collect();
    Ok(match (wasi, other.is_empty()) {
        (0, true) => "imports: coalition:plugin only".to_owned(),
        (0, false) => format!("imports also: {}", other.join(", ")),
        (n, true) => format!("imports also: {n} wasi interfaces"),
        (n, false) => format!("imports also: {n} wasi interfaces, {}", other.join(", ")),
    })
}

/// Half of a real component, then bytes that are no valid section: fails to parse, not to link.
fn corrupt_component(source: &[u8]) -> Vec<u8> {
    let mut bytes = source[..source.len() / 2].to_vec();
    for _ in 0..64 {
        bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    }
    bytes.extend_from_slice(b"not a component");
    bytes
}

fn corrupt_manifest(source_manifest: &[u8]) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(source_manifest).context("manifest is not UTF-8")?;
    let mut manifest: toml::Table = text
        .parse()
        .context("while parsing the corrupt source manifest")?;
    manifest.insert("name".into(), CORRUPT_NAME.into());
    manifest.insert(
        "description".into(),
        "TEST FIXTURE: a valid manifest beside a corrupt binary (a truncated component followed \
         by garbage). Loading it must fail cleanly."
            .into(),
    );
    let body = toml::to_string(&manifest).context("while writing the corrupt manifest")?;
    Ok(
        format!(
            "# Written by `cargo xtask build-plugins`; see xtask/src/build_plugins.rs.\n{body}"
        )
        .into_bytes(),
    )
}

fn write_output(
    out_dir: &Path,
    name: &str,
    component: &[u8],
    manifest: &[u8],
    origin: &str,
) -> Result<()> {
    let wasm_path = out_dir.join(format!("{name}.wasm"));
    let wasm_changed = write_if_changed(&wasm_path, component)?;
    write_if_changed(&out_dir.join(format!("{name}.toml")), manifest)?;
    println!(
        "  {name:<18} {:>9} bytes {:>5} KiB  {origin}{}",
        component.len(),
        component.len().div_ceil(1024),
        if wasm_changed { "" } else { "  (unchanged)" }
    );
    Ok(())
}

/// Writes `bytes` unless the file already holds them; returns whether it wrote.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    // Write then rename, so a test reading the file never sees half a component.
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    fs::write(&tmp, bytes).with_context(|| format!("while writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("while renaming to {}", path.display()))?;
    Ok(true)
}
