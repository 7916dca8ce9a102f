//! The `coalition` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::auth::Role;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;

/// Coalition: one membership, one points wallet and one tier ladder for a coalition of brands.
#[derive(Debug, Parser)]
#[command(name = "coalition", version, about)]
pub struct Cli {
    /// Configuration file (TOML); `COALITION_*` environment variables override it.
    #[arg(long, global = true, env = "COALITION_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Platform administration.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// Flags of `coalition serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides the configuration).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Database URL (overrides the configuration).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Seed a demo coalition (brands, members, keys) on first start and print its keys.
    #[arg(long)]
    pub demo: bool,
}

/// `coalition admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an API key and print its secret once.
    CreateKey {
        /// Role: admin, brand, counter or member.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Brand scope (brand and counter keys).
        #[arg(long)]
        brand: Option<String>,
        /// Member scope (member keys).
        #[arg(long)]
        member: Option<String>,
        /// Free-text label.
        #[arg(long, default_value = "")]
        label: String,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                if let Some(listen) = args.listen {
                    config.listen = listen;
                }
                if let Some(url) = args.database_url {
                    config.database_url = url;
                }
                serve(config, args.demo).await
            }
            Command::Admin(AdminCommand::CreateKey {
                role,
                brand,
                member,
                label,
            }) => {
                let role = Role::parse(&role).with_context(|| {
                    format!("unknown role {role:?}: expected admin, brand, counter or member")
                })?;
                let state = crate::server::build_state(config, Arc::new(SystemClock)).await?;
                let key = crate::auth::create_key(
                    state.store.write(),
                    role,
                    brand.as_deref(),
                    member.as_deref(),
                    &label,
                    SystemClock.now_ms(),
                )
                .await
                .map_err(|err| anyhow::anyhow!("{err}"))?;
                println!("{}", key.secret);
                eprintln!("created {} key {}", role.as_str(), key.id);
                Ok(())
            }
        }
    })
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    let listen = config.listen;
    let state = crate::server::build_state(config, Arc::new(SystemClock)).await?;
    if demo {
        crate::demo::seed(&state).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("while binding {listen}"))?;
    crate::server::run(listener, state, crate::server::shutdown_signal()).await
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
