//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! # Layout
//! - `main.rs`: flag parsing and dispatch only; one module per subcommand.
//! - `paths`: where the repository, the guest workspace and the built components live.
//! - `build_plugins`: `cargo xtask build-plugins`, every guest into `target/plugins/`.
//! - `test`: `cargo xtask test`, the whole test suite (what CI runs).
//! - `demo`: `cargo xtask demo`, the server with the demo coalition and its plugins.
//! - `partner_check`: `cargo xtask partner-check`, the SDK packaged and a plugin built against
//!   it outside the repository.
//! - `contract`: `cargo xtask api-contract`, the served OpenAPI document against the real server
//!   (schemathesis and a generated client); also the last step of `test`.
//! - `browser`: `cargo xtask setup-browser`, the pinned headless Chromium and chromedriver of the
//!   console's browser tests; also a step of `test`.

use clap::{Parser, Subcommand};

mod browser;
mod build_plugins;
mod contract;
mod demo;
mod partner_check;
mod paths;
mod test;

#[derive(Parser)]
#[command(name = "xtask", about = "Coalition project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build every example plugin and hostile fixture into WebAssembly components
    /// (`target/plugins/<name>.wasm` + `<name>.toml`).
    BuildPlugins(build_plugins::Args),
    /// Run every test: plugin builds, native plugin tests, SDK, runtime and host (SQLite and
    /// PostgreSQL).
    Test(test::Args),
    /// Run the host server with the demo coalition and the example plugins installed.
    Demo(demo::Args),
    /// Package the SDK and build a partner plugin against it outside the repository.
    PartnerCheck,
    /// Check the served OpenAPI document against the real server: schemathesis (no 5xx, no
    /// response that the document does not describe) and a client generated from it.
    ApiContract(contract::Args),
    /// Install the pinned Debian `chromium` and `chromium-driver` that the console's browser
    /// tests drive (nothing to do if already installed).
    SetupBrowser,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BuildPlugins(args) => build_plugins::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::PartnerCheck => partner_check::run(),
        Command::ApiContract(args) => contract::run(&args),
        Command::SetupBrowser => browser::ensure_chromium(),
    }
}
