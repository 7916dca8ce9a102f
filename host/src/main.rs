//! The `coalition` binary: parses flags and hands over to [`coalition::app::cli::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = coalition::app::cli::Cli::parse();
    match coalition::app::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
