//! The `coalition` command line.

pub mod budgets;
pub mod jobs;
pub mod journeys;
pub mod membership;
pub mod pass;
pub mod plugin;
pub mod referrals;
pub mod settlement;
pub mod stored_value;
pub mod webhooks;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::domain::access::Role;
use crate::domain::members::transfer::{self, Format};
use crate::foundation::clock::{Clock, SystemClock};
use crate::foundation::store::{Store, StoreOptions};
use crate::interfaces::config::Config;

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
    /// Member data, read and written directly in the configured database.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Background jobs (points expiry, hold timeouts, tier evaluation), run once now.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Plugin packages: keys, signing, upload, review, deploy, canary, rollback, kill, audit.
    #[command(subcommand)]
    Plugin(crate::app::cli::plugin::PluginCommand),
    /// Member passes: verify one offline with public keys only.
    #[command(subcommand)]
    Pass(pass::PassCommand),
    /// Settlement between brands: settle events, close a period, reconcile, export.
    #[command(subcommand)]
    Settlement(crate::app::cli::settlement::SettlementCommand),
    /// Stored value: top up, a member's balance, the liability report, a brand's reserve.
    #[command(subcommand)]
    StoredValue(crate::app::cli::stored_value::StoredValueCommand),
    /// Partner budgets: list, set and change a brand's caps on what it funds.
    #[command(subcommand)]
    Budgets(crate::app::cli::budgets::BudgetsCommand),
    /// The paid membership card: plans, sell, cancel, a member's card, renewals, revenue.
    #[command(subcommand)]
    Membership(crate::app::cli::membership::MembershipCommand),
    /// Lifecycle journeys: run them now (with progress), or dry-run one.
    #[command(subcommand)]
    Journeys(journeys::JourneysCommand),
    /// Webhooks: subscriptions, the delivery log, replay, one delivery pass.
    #[command(subcommand)]
    Webhooks(crate::app::cli::webhooks::WebhooksCommand),
    /// Referral programmes, invite codes, a member's referrals, a programme's figures.
    #[command(subcommand)]
    Referrals(crate::app::cli::referrals::ReferralsCommand),
}

/// `coalition members …`
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Import members from a JSON lines or CSV file; registered phones are skipped, so an
    /// interrupted import can simply be run again.
    Import {
        /// The file to read.
        file: PathBuf,
        /// File format (default: from the file's extension).
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
    },
    /// Export every member, with full personal data, to a JSON lines or CSV file.
    Export {
        /// The file to write (replaced if it exists).
        file: PathBuf,
        /// File format (default: from the file's extension, else jsonl).
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
    },
}

/// File formats of `coalition members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl From<FileFormat> for Format {
    fn from(f: FileFormat) -> Format {
        match f {
            FileFormat::Csv => Format::Csv,
            FileFormat::Jsonl => Format::Jsonl,
        }
    }
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
    /// With `--demo`: install the example plugins from this directory (`<name>.wasm` and
    /// `<name>.toml`, as written by `cargo xtask build-plugins`).
    #[arg(long, env = "COALITION_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
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

/// A domain error as a command-line error: its kind, stable code and detail.
pub(crate) fn fail(err: crate::foundation::error::DomainError) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

/// Opens the configured database (sections validated), runs `f` against it, and closes the
/// store whether `f` succeeded or not: the frame of every `coalition <area> …` command that
/// works directly on the database.
pub(crate) async fn with_state<T>(
    config: Config,
    f: impl AsyncFnOnce(&crate::interfaces::api::AppState) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    config.validate_sections()?;
    let state = crate::app::server::build_state(config, Arc::new(SystemClock)).await?;
    let result = f(&state).await;
    state.store.close().await;
    result
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    // `coalition plugin …` answers in JSON on stdout and speaks on stderr; the runtime's
    // info lines (a plugin loaded) would bury what a partner needs there.
    let quiet = matches!(cli.command, Command::Plugin(_));
    init_tracing(&config, quiet);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")?;
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                if let Some(listen) = args.listen {
                    config.listen = listen;
                }
                if let Some(url) = args.database_url {
                    config.database_url = url;
                }
                serve(config, args.demo, args.plugins_dir).await
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
                let state = crate::app::server::build_state(config, Arc::new(SystemClock)).await?;
                let key = crate::domain::access::create_key(
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
            Command::Members(MembersCommand::Import { file, format }) => {
                members_import(&config, &file, format.map(Format::from)).await
            }
            Command::Members(MembersCommand::Export { file, format }) => {
                members_export(&config, &file, format.map(Format::from)).await
            }
            Command::Jobs(command) => jobs::run_command(config, command).await,
            Command::Plugin(command) => crate::app::cli::plugin::run(command).await,
            Command::Pass(command) => pass::run_command(command),
            Command::Settlement(command) => {
                crate::app::cli::settlement::run_command(config, command).await
            }
            Command::StoredValue(command) => {
                crate::app::cli::stored_value::run_command(config, command).await
            }
            Command::Budgets(command) => {
                crate::app::cli::budgets::run_command(config, command).await
            }
            Command::Membership(command) => {
                crate::app::cli::membership::run_command(config, command).await
            }
            Command::Journeys(command) => journeys::run_command(config, command).await,
            Command::Webhooks(command) => {
                crate::app::cli::webhooks::run_command(config, command).await
            }
            Command::Referrals(command) => {
                crate::app::cli::referrals::run_command(config, command).await
            }
        }
    });
    // Stopping does not wait for work that is only worth finishing while serving (a plugin
    // compile of a background validation): a version left `uploaded` is validated again by
    // the next node that starts.
    runtime.shutdown_background();
    outcome
}

async fn serve(mut config: Config, demo: bool, plugins_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let listen = config.listen;
    if demo {
        // The demo's webhook receiver listens on 127.0.0.1 (see `demo::seed_with_plugins`).
        config.webhooks.allow_private_targets = true;
    }
    let state = crate::app::server::build_state(config, Arc::new(SystemClock)).await?;
    if demo {
        crate::app::demo::seed_with_plugins(&state, plugins_dir.as_deref()).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("while binding {listen}"))?;
    crate::app::server::run(listener, state, crate::app::server::shutdown_signal()).await
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let options = StoreOptions {
        max_connections: config.limits.db_max_connections,
        acquire_timeout: Duration::from_millis(config.limits.db_acquire_timeout_ms),
    };
    Store::open(&config.database_url(), options).await
}

/// A progress bar on stderr, hidden when stderr is not a terminal or under CI, so logs and
/// pipelines get the summary lines only.
fn progress_bar(len: u64, template: &str) -> ProgressBar {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

async fn members_import(
    config: &Config,
    file: &Path,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let format = format
        .or_else(|| Format::from_path(file))
        .with_context(|| {
            format!(
            "cannot tell the format of {} from its extension: pass --format csv or --format jsonl",
            file.display()
        )
        })?;
    let store = open_store(config).await?;
    let input =
        std::fs::File::open(file).with_context(|| format!("while opening {}", file.display()))?;
    let len = input.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(
        len,
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
    );
    let now_ms = SystemClock.now_ms();
    let mut rows = transfer::RowReader::new(
        format,
        std::io::BufReader::new(bar.wrap_read(input)),
        now_ms,
    )
    .with_context(|| format!("while reading {}", file.display()))?;
    let report = transfer::import(&store, &mut rows, now_ms, None, |r| {
        bar.set_message(format!(
            "{} created, {} skipped, {} failed",
            r.created, r.skipped, r.failed
        ));
    })
    .await
    .with_context(|| format!("while importing {}", file.display()))?;
    bar.finish_and_clear();
    store.close().await;
    for err in &report.errors {
        eprintln!("line {}: {} ({})", err.line, err.detail, err.code);
    }
    if report.errors_truncated {
        eprintln!(
            "… and {} more failed rows",
            report.failed - report.errors.len() as u64
        );
    }
    println!(
        "{} rows: {} created, {} skipped (phone already registered), {} failed",
        report.rows, report.created, report.skipped, report.failed
    );
    if report.failed > 0 {
        anyhow::bail!(
            "{} rows of {} were not imported",
            report.failed,
            file.display()
        );
    }
    Ok(())
}

async fn members_export(
    config: &Config,
    file: &Path,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let format = format
        .or_else(|| Format::from_path(file))
        .unwrap_or(Format::Jsonl);
    let store = open_store(config).await?;
    let total = transfer::count(&store).await?;
    let bar = progress_bar(
        total,
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} members",
    );
    // Written beside the target and renamed at the end, so a failed export never leaves a
    // truncated file that looks complete.
    let partial = file.with_extension(format!("{}.partial", format.extension()));
    let out = std::fs::File::create(&partial)
        .with_context(|| format!("while creating {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(out);
    out.write_all(&transfer::export_header(format))?;
    let mut after = None;
    let mut written = 0u64;
    loop {
        let (page, next) = transfer::export_page(&store, after).await?;
        out.write_all(&transfer::export_lines(&page, format))
            .with_context(|| format!("while writing {}", partial.display()))?;
        written += page.len() as u64;
        bar.inc(page.len() as u64);
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    out.flush()
        .with_context(|| format!("while writing {}", partial.display()))?;
    drop(out);
    std::fs::rename(&partial, file)
        .with_context(|| format!("while renaming {} to {}", partial.display(), file.display()))?;
    bar.finish_and_clear();
    store.close().await;
    println!("{written} members written to {}", file.display());
    Ok(())
}

/// Logs to stderr: `RUST_LOG` when set, else the configured filter, else (`quiet`) warnings.
fn init_tracing(config: &Config, quiet: bool) {
    let default = if quiet { "warn" } else { &config.log_filter };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};
    use crate::app::cli::plugin::PluginCommand;

    /// Regression: `coalition plugin approve --config '{…}'` panicked — the subcommand's
    /// `--config` clashed with the global `--config` (clap's definition checks catch it).
    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plugin_approve_takes_the_plugin_config_beside_the_global_config() {
        let cli = Cli::try_parse_from([
            "coalition",
            "--config",
            "examples/coalition.toml",
            "plugin",
            "approve",
            "v-1",
            "--plugin-config",
            r#"{"double_weekday":"friday"}"#,
        ])
        .expect("parses");
        assert!(cli.config.is_some());
        match cli.command {
            Command::Plugin(PluginCommand::Approve { plugin_config, .. }) => {
                assert_eq!(
                    plugin_config.as_deref(),
                    Some(r#"{"double_weekday":"friday"}"#)
                );
            }
            _ => panic!("not plugin approve"),
        }
    }

    #[test]
    fn plugin_canary_takes_percent_or_basis_points_but_not_both() {
        let parse = |args: &[&str]| {
            let mut all = vec!["coalition", "plugin", "canary", "v-1"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        assert!(parse(&["--percent", "5"]).is_ok());
        assert!(parse(&["--basis-points", "500"]).is_ok());
        assert!(parse(&["--percent", "5", "--basis-points", "500"]).is_err());
        assert!(parse(&[]).is_err());
    }
}
