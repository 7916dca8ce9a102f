//! `cargo xtask partner-check`: a partner outside this repository can depend on the SDK by
//! version and build a working plugin.
//!
//! 1. `cargo package -p coalition-sdk` (which also builds the packaged crate on its own, so the
//!    WIT and everything else it needs travel inside it);
//! 2. copies `examples/partner-bookstore` (which depends on `coalition-sdk = "0.1"`) to a fresh
//!    directory under the system's temp dir, outside the repository, and points its
//!    `[patch.crates-io]` at the packaged crate, as a partner would at a registry;
//! 3. runs its native tests and builds it with plain `cargo build --release --target
//!    wasm32-wasip2`, which links a component by itself (no repository tooling involved);
//! 4. checks the component with `coalition plugin check` — the same runtime and checks as the
//!    server's upload.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::{paths, test::cargo};

/// Runs the check; prints one summary line.
pub fn run() -> Result<()> {
    let root = paths::repo_root();
    let version = sdk_version(&root)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    run_step(
        "cargo package -p coalition-sdk",
        Command::new(cargo()).current_dir(&root).args([
            "package",
            "-p",
            "coalition-sdk",
            "--allow-dirty",
        ]),
    )?;
    let packaged = target_dir
        .join("package")
        .join(format!("coalition-sdk-{version}"));
    ensure!(
        packaged.join("Cargo.toml").exists(),
        "no unpacked crate at {}",
        packaged.display()
    );

    let outside = std::env::temp_dir().join(format!("coalition-partner-{}", std::process::id()));
    if outside.exists() {
        fs::remove_dir_all(&outside)?;
    }
    copy_dir(&root.join("examples/partner-bookstore"), &outside)?;
    let manifest_path = outside.join("Cargo.toml");
    let mut cargo_toml = fs::read_to_string(&manifest_path)?;
    cargo_toml.push_str(&format!(
        "\n# Added by the check: the SDK as packaged for crates.io.\n[patch.crates-io]\n\
         coalition-sdk = {{ path = {:?} }}\n",
        packaged.display().to_string()
    ));
    fs::write(&manifest_path, cargo_toml)?;

    let result = build_and_check(&root, &outside);
    let _ = fs::remove_dir_all(&outside);
    let (bytes, report) = result?;
    println!(
        "partner-check: coalition-sdk {version} packaged; bookstore-weekend built outside the \
         repository against it ({bytes} bytes), native tests passed, `coalition plugin check`: {report}"
    );
    Ok(())
}

fn build_and_check(root: &Path, outside: &Path) -> Result<(usize, String)> {
    let target = outside.join("target");
    run_step(
        "native tests of the partner plugin",
        Command::new(cargo())
            .current_dir(outside)
            .env_remove("CARGO_TARGET_DIR")
            .args(["test", "--quiet"]),
    )?;
    run_step(
        "wasm build of the partner plugin",
        Command::new(cargo())
            .current_dir(outside)
            .env_remove("CARGO_TARGET_DIR")
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"]),
    )?;
    let component_path = target.join("wasm32-wasip2/release/bookstore_weekend.wasm");
    let component = fs::read(&component_path).context("the built component")?;
    let output = Command::new(cargo())
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "-p",
            "coalition",
            "--",
            "plugin",
            "check",
            "--manifest",
        ])
        .arg(outside.join("plugin.toml"))
        .arg("--component")
        .arg(&component_path)
        .output()
        .context("running coalition plugin check")?;
    ensure!(
        output.status.success(),
        "coalition plugin check failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    ensure!(
        report.contains("\"ok\": true") && report.contains("\"name\": \"bookstore-weekend\""),
        "unexpected report: {report}"
    );
    Ok((component.len(), "ok".to_owned()))
}

fn sdk_version(root: &Path) -> Result<String> {
    let text = fs::read_to_string(root.join("sdk/Cargo.toml"))?;
    let value: toml::Value = toml::from_str(&text)?;
    value["package"]["version"]
        .as_str()
        .map(str::to_owned)
        .context("sdk/Cargo.toml has no package.version")
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &dest)?;
            }
        } else {
            fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

fn run_step(title: &str, command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("while starting: {title}"))?;
    ensure!(status.success(), "failed: {title} ({status})");
    Ok(())
}
