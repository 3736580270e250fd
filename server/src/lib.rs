//! amd-lsp: the language server and its command-line tools. The only crate that speaks LSP.

pub mod cli;
mod commands;
pub mod logging;

use anyhow::Result;

use crate::cli::{Cli, Command, DevCommand};

/// Runs what the command line asked for.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Complete(args)) => commands::complete::run(&args),
        Some(Command::Dev {
            command: DevCommand::MakeModel(args),
        }) => commands::dev::make_model(&args),
        None => {
            anyhow::bail!("nothing to do: pass --stdio to serve LSP, or a command (see --help)")
        }
    }
}
