//! `coalition settlement …`: run the settle job, close a period with a progress bar, reconcile
//! and export, list and retry parked events, directly against the configured database.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::app::cli::fail;
use crate::interfaces::config::Config;
use crate::workflows::settlement::periods::{self, CloseRequest, PeriodId, Stage};

/// Actor of audit entries written from the command line.
const CLI_ACTOR: &str = "cli:settlement";

/// `coalition settlement …`
#[derive(Debug, clap::Subcommand)]
pub enum SettlementCommand {
    /// Settle pending and held events now; prints the report as JSON.
    Run,
    /// Close a period (a local month): settle, freeze, net and write statements.
    Close {
        /// The month, `YYYY-MM`.
        #[arg(long)]
        period: String,
        /// Close even if events are held by a failing plugin (they settle later as adjustments).
        #[arg(long)]
        carry_held: bool,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reconcile a period; prints every check and exits with status 1 if one fails.
    Reconcile {
        /// The month, `YYYY-MM`.
        #[arg(long)]
        period: String,
    },
    /// List parked events (a plugin failed on them): the plugin, version, problem code and
    /// message, failures and next retry; one JSON object per line, oldest first.
    Parked {
        /// Only events this plugin failed on.
        #[arg(long)]
        plugin: Option<String>,
        /// Only events this brand is a party to.
        #[arg(long)]
        brand: Option<String>,
        /// Only events out of automatic retries, waiting for an admin.
        #[arg(long)]
        waiting_for_admin: bool,
    },
    /// Retry parked events after a fix (audited): the named events, or every event a plugin
    /// failed on. They are due at once with their backoff started over.
    Retry {
        /// Event ids.
        event_ids: Vec<String>,
        /// Every event this plugin failed on (with ids: only those of them).
        #[arg(long)]
        plugin: Option<String>,
        /// Why, for the audit log (typically the fix).
        #[arg(long)]
        reason: String,
        /// Run the settle job right after, and print its report.
        #[arg(long)]
        run: bool,
    },
    /// Export a period's statements (or lines) as JSON or CSV.
    Export {
        /// The month, `YYYY-MM`.
        #[arg(long)]
        period: String,
        /// Only this party's statement (or lines).
        #[arg(long)]
        party: Option<String>,
        /// Export the lines instead of the statements.
        #[arg(long)]
        lines: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// JSON (statements: one document; lines: one object per line).
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

/// Runs `coalition settlement …`.
pub async fn run_command(config: Config, command: SettlementCommand) -> anyhow::Result<()> {
    crate::app::cli::with_state(config, async |state| dispatch(state, command).await).await
}

async fn dispatch(
    state: &crate::interfaces::api::AppState,
    command: SettlementCommand,
) -> anyhow::Result<()> {
    match command {
        SettlementCommand::Run => {
            let report = crate::workflows::settlement::job::run(state, state.now_ms())
                .await
                .map_err(fail)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        SettlementCommand::Close {
            period,
            carry_held,
            reason,
        } => {
            let period = PeriodId::parse(&period).map_err(fail)?;
            let bar = spinner();
            let progress_bar = bar.clone();
            let progress = move |stage: Stage| {
                progress_bar.set_message(match stage {
                    Stage::Settling => "settling pending events",
                    Stage::Aggregating => "aggregating lines",
                    Stage::Writing => "writing statements and netting",
                    Stage::Done => "closed",
                });
            };
            let closed = periods::close(
                state,
                &CloseRequest {
                    period,
                    carry_held,
                    actor: CLI_ACTOR,
                    reason: &reason,
                    settle_deadline: None,
                },
                &progress,
            )
            .await
            .map_err(fail);
            bar.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&closed?)?);
        }
        SettlementCommand::Parked {
            plugin,
            brand,
            waiting_for_admin,
        } => {
            let filter = crate::workflows::settlement::parking::ParkedFilter {
                party: brand,
                plugin,
                waiting_for_admin,
            };
            let mut cursor = String::new();
            let mut out = std::io::stdout().lock();
            loop {
                let page = crate::workflows::settlement::parking::list(
                    state.store.read(),
                    &filter,
                    &cursor,
                    crate::workflows::settlement::parking::MAX_PARKED_PAGE,
                )
                .await
                .map_err(fail)?;
                for event in &page.items {
                    serde_json::to_writer(&mut out, event)?;
                    out.write_all(b"\n")?;
                }
                match page.next_cursor {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            out.flush()?;
        }
        SettlementCommand::Retry {
            event_ids,
            plugin,
            reason,
            run,
        } => {
            let mut req = crate::workflows::settlement::parking::RetryParked {
                event_ids: (!event_ids.is_empty()).then_some(event_ids),
                plugin,
                after: None,
                reason,
            };
            let mut released: Vec<String> = Vec::new();
            loop {
                let mut tx = state.store.begin().await?;
                let report = crate::workflows::settlement::parking::release(
                    &mut tx,
                    state.store.backend(),
                    &req,
                    CLI_ACTOR,
                    state.now_ms(),
                )
                .await
                .map_err(fail)?;
                tx.commit().await?;
                released.extend(report.released);
                if !report.more {
                    break;
                }
                req.after = released.last().cloned();
            }
            eprintln!("released {} parked events for a retry", released.len());
            println!("{}", serde_json::json!({ "released": released }));
            if run {
                let report = crate::workflows::settlement::job::run(state, state.now_ms())
                    .await
                    .map_err(fail)?;
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        SettlementCommand::Reconcile { period } => {
            let period = PeriodId::parse(&period).map_err(fail)?;
            let report =
                crate::workflows::settlement::reconcile::reconcile(state, &period.to_string())
                    .await
                    .map_err(fail)?;
            for check in &report.checks {
                eprintln!(
                    "{} {:<24} {}",
                    if check.ok { "pass" } else { "FAIL" },
                    check.name,
                    check.detail
                );
                for id in &check.offenders {
                    eprintln!("       {id}");
                }
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok {
                anyhow::bail!("reconciliation of {} failed", report.period_id);
            }
        }
        SettlementCommand::Export {
            period,
            party,
            lines,
            format,
            out,
        } => {
            let period = PeriodId::parse(&period).map_err(fail)?;
            let period = periods::get(state.store.read(), &period.to_string())
                .await
                .map_err(fail)?;
            let mut sink: Box<dyn Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("while creating {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            if lines {
                let mut after = String::new();
                let mut first = true;
                loop {
                    let page = crate::workflows::settlement::export::lines_page(
                        state.store.read(),
                        &period.id,
                        party.as_deref(),
                        &after,
                        crate::workflows::settlement::export::MAX_LINES_PAGE,
                    )
                    .await
                    .map_err(fail)?;
                    match format {
                        ExportFormat::Csv => sink.write_all(
                            crate::workflows::settlement::export::lines_csv(&page.lines, first)
                                .map_err(fail)?
                                .as_bytes(),
                        )?,
                        ExportFormat::Json => {
                            for line in &page.lines {
                                serde_json::to_writer(&mut sink, line)?;
                                sink.write_all(b"\n")?;
                            }
                        }
                    }
                    first = false;
                    match page.next_after {
                        Some(next) => after = next,
                        None => break,
                    }
                }
            } else {
                let (statements, netting) = periods::statements(state, &period, party.as_deref())
                    .await
                    .map_err(fail)?;
                match format {
                    ExportFormat::Csv => sink.write_all(
                        crate::workflows::settlement::export::statements_csv(&statements)
                            .map_err(fail)?
                            .as_bytes(),
                    )?,
                    ExportFormat::Json => serde_json::to_writer_pretty(
                        &mut sink,
                        &serde_json::json!({
                            "period": period,
                            "statements": statements,
                            "netting": netting,
                        }),
                    )?,
                }
            }
            sink.flush()?;
        }
    }
    Ok(())
}

fn spinner() -> indicatif::ProgressBar {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
