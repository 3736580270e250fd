//! Logging: `tracing` to stderr or a file, never stdout (stdout carries LSP frames).

use std::fs::OpenOptions;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

use crate::cli::LogArgs;

/// llama.cpp is chatty at info level (hundreds of lines per load); keep it to warnings.
const QUIET_LLAMA: &str = "llama-cpp-2=warn";

pub fn init(args: &LogArgs) -> Result<()> {
    let directives = std::env::var("AMD_LSP_LOG").unwrap_or_else(|_| args.log_level.clone());
    let filter = EnvFilter::try_new(format!("{QUIET_LLAMA},{directives}"))
        .with_context(|| format!("bad log filter {directives:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match &args.log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            builder.with_writer(Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
