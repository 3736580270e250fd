//! amd-lsp: the language server and its command-line tools. The only crate that speaks LSP.

pub mod backend;
pub mod cli;
#[doc(hidden)]
pub mod client;
mod commands;
pub mod environment;
#[doc(hidden)]
pub mod fuzz;
pub mod logging;
pub mod lsp;
pub mod models;

use anyhow::Result;

use crate::cli::{BenchCommand, Cli, Command, DevCommand, ModelCommand};

/// Runs what the command line asked for.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Complete(args)) => commands::complete::run(&args),
        Some(Command::Model {
            command: ModelCommand::Convert(args),
        }) => commands::model::convert(&args),
        Some(Command::Model {
            command: ModelCommand::List,
        }) => commands::model::list(cli.model),
        Some(Command::Model {
            command: ModelCommand::Pull(args),
        }) => commands::model::pull(&args),
        Some(Command::Dev {
            command: DevCommand::MakeModel(args),
        }) => commands::dev::make_model(&args),
        Some(Command::Bench {
            command: BenchCommand::Spec(args),
        }) => commands::bench::spec::run(&args),
        Some(Command::Bench {
            command: BenchCommand::Soak(args),
        }) => commands::bench::soak::run(&args),
        Some(Command::Bench {
            command: BenchCommand::Replay(args),
        }) => commands::bench::replay::run(&args),
        Some(Command::Bench {
            command: BenchCommand::Quality(args),
        }) => commands::bench::quality::run(&args),
        Some(Command::Bench {
            command: BenchCommand::Index(args),
        }) => commands::bench::index::run(&args),
        None if cli.stdio => serve_stdio(cli.model),
        None => {
            anyhow::bail!("nothing to do: pass --stdio to serve LSP, or a command (see --help)")
        }
    }
}

/// How long blocking work (the stdin read, a model being dropped) may delay the exit.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// `amd-lsp --stdio`: LSP on stdin/stdout until `exit` or end of input.
fn serve_stdio(model: Option<std::path::PathBuf>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        #[cfg(unix)]
        tokio::spawn(lsp::lifecycle::exit_on_signal());
        let options = lsp::ServeOptions {
            model,
            reuse: lsp::config::ReuseMode::from_env(),
        };
        lsp::serve(tokio::io::stdin(), tokio::io::stdout(), options).await;
    });
    // tokio reads stdin on a blocking thread that cannot be interrupted: after `exit` from a
    // client that keeps stdin open, dropping the runtime would wait for that read forever.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    // The same way out as a signal or a vanished editor: no C `atexit` handler (llama.cpp's
    // and ggml's static destructors) may run while the engine thread is still in a call.
    lsp::lifecycle::exit_now("exit")
}
