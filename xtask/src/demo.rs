//! `cargo xtask demo`: builds the example plugins and runs the host server with a demo
//! coalition on embedded SQLite under `data/`, the plugins installed and active.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::paths;

/// Flags of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Extra arguments passed to `coalition serve`.
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Builds the plugins, then runs `coalition serve --demo` until interrupted.
pub fn run(args: &Args) -> Result<()> {
    crate::build_plugins::run(&crate::build_plugins::Args::default())?;
    let root = paths::repo_root();
    let plugins_dir = paths::plugins_out_dir();
    let status = Command::new(crate::test::cargo())
        .current_dir(&root)
        .env(paths::PLUGINS_DIR_ENV, &plugins_dir)
        .env("COALITION_DATA_DIR", root.join("data"))
        .args(["run", "--package", "coalition", "--", "serve", "--demo"])
        .args(["--listen", &args.listen])
        .args(["--plugins-dir"])
        .arg(&plugins_dir)
        .args(&args.extra)
        .status()
        .context("while starting the server")?;
    ensure!(status.success(), "the server exited with {status}");
    Ok(())
}
