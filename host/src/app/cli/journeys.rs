//! `coalition journeys …`: run the journeys now with a progress bar, or dry-run one, directly
//! against the configured database (`docs/ENGAGEMENT.md`).

use std::io::IsTerminal;

use crate::app::cli::{fail, with_state};
use crate::interfaces::config::Config;
use crate::workflows::journeys;

/// `coalition journeys …`
#[derive(Debug, clap::Subcommand)]
pub enum JourneysCommand {
    /// Run every active journey (or one) once now, batch by batch; prints the report as JSON.
    /// Safe to interrupt and to run again: a run resumes, and never acts twice per occurrence.
    Run {
        /// Only this journey.
        #[arg(long)]
        journey: Option<String>,
    },
    /// How many members a run now would touch, with a sample; writes nothing.
    DryRun {
        /// The journey.
        journey: String,
    },
}

/// Runs `coalition journeys …`.
pub async fn run_command(config: Config, command: JourneysCommand) -> anyhow::Result<()> {
    with_state(config, async |state| {
        let now = state.now_ms();
        let report = match command {
            JourneysCommand::Run { journey } => {
                let bar = progress_bar();
                let report = journeys::run(state, journey.as_deref(), now, None, |id, batch| {
                    bar.inc(u64::try_from(batch.candidates).unwrap_or(0));
                    bar.set_message(format!("journey {id}: {} touched", batch.touched));
                })
                .await
                .map_err(fail)?;
                bar.finish_and_clear();
                serde_json::to_value(report)?
            }
            JourneysCommand::DryRun { journey } => serde_json::to_value(
                journeys::dry_run(state, &journey, now)
                    .await
                    .map_err(fail)?,
            )?,
        };
        println!("{report}");
        Ok(())
    })
    .await
}

/// Candidates looked at so far, on stderr when it is a terminal (hidden in CI and pipes).
fn progress_bar() -> indicatif::ProgressBar {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {pos} candidates {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}
