//! The `amd-lsp` binary: parse the command line, set up logging, run the chosen command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    amd_lsp::environment::ensure_environment();
    let cli = amd_lsp::cli::Cli::parse();
    if let Err(e) = amd_lsp::logging::init(&cli.log) {
        eprintln!("amd-lsp: {e:#}");
        return ExitCode::FAILURE;
    }
    let logs_to_file = cli.log.log_file.is_some();
    match amd_lsp::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if logs_to_file {
                tracing::error!("{e:#}");
            }
            eprintln!("amd-lsp: {e:#}");
            ExitCode::FAILURE
        }
    }
}
