//! `cargo xtask test`: the whole test suite, exactly what CI runs.
//!
//! 1. builds every plugin component (installing the rustup targets if missing);
//! 2. runs the native unit tests of the example plugins (their own workspace);
//! 3. installs the pinned headless Chromium and chromedriver if missing (see [`crate::browser`]),
//!    then runs every test of the host workspace: SDK, runtime (real components, hostile
//!    fixtures), host (HTTP tests on SQLite files and on PostgreSQL at 127.0.0.1:5432, the
//!    console in a real browser), the kill -9 crash check, and doc tests;
//! 4. checks the served OpenAPI document against the real server with schemathesis and a
//!    generated client (`cargo xtask api-contract`, see [`crate::contract`]);
//! 5. packages the SDK and builds a partner plugin against it outside the repository.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::paths;

/// Flags of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments passed to `cargo test` of the host workspace (e.g. a test name filter).
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Runs the suite; fails on the first failing step.
pub fn run(args: &Args) -> Result<()> {
    crate::build_plugins::run(&crate::build_plugins::Args::default())?;
    let root = paths::repo_root();
    let plugins_dir = paths::plugins_out_dir();

    // One cargo invocation per WIT version: see `build_plugins::by_wit_version`.
    let guests = crate::build_plugins::discover(&paths::guest_workspace())?;
    for (wit, packages) in crate::build_plugins::by_wit_version(&guests) {
        let mut command = Command::new(cargo());
        command
            .current_dir(&root)
            .args(["test", "--manifest-path", "plugins/Cargo.toml"]);
        for package in packages {
            command.args(["--package", package]);
        }
        step(
            &format!("native tests of the example plugins written against {wit}"),
            &mut command,
        )?;
    }
    println!("==> headless Chromium and chromedriver for the console's browser tests");
    crate::browser::ensure_chromium()?;
    step(
        "host workspace tests (SDK, runtime, host on SQLite and PostgreSQL, console in Chromium)",
        Command::new(cargo())
            .current_dir(&root)
            .env(paths::PLUGINS_DIR_ENV, &plugins_dir)
            .args(["test", "--workspace"])
            .args(&args.extra),
    )?;
    println!("==> API contract: schemathesis and a generated client against the served document");
    crate::contract::run(&crate::contract::Args::default())?;
    println!("==> partner kit: the SDK packaged, a plugin built against it outside the repository");
    crate::partner_check::run()?;
    println!("all test steps passed");
    Ok(())
}

fn step(title: &str, command: &mut Command) -> Result<()> {
    println!("==> {title}");
    let status = command
        .status()
        .with_context(|| format!("while starting: {title}"))?;
    ensure!(status.success(), "failed: {title} ({status})");
    Ok(())
}

/// The cargo that runs us, so the same toolchain builds everything.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
