//! The language server: tower-lsp-server over any byte streams (stdio in production,
//! in-memory duplex pipes in tests).

pub mod capabilities;
pub mod completion;
pub mod config;
pub mod documents;
mod handlers;
mod lifecycle;
mod server;
pub mod state;

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tower_lsp_server::{LspService, Server};

use self::server::Backend;

/// Options from the command line.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Model used when the client's configuration names none.
    pub model: Option<PathBuf>,
}

/// Requests handled at once; superseded completions answer immediately, so this only has to
/// exceed the number of documents with a completion in flight.
const MAX_CONCURRENCY: usize = 64;

/// Serves LSP on `input`/`output` until the client sends `exit` or closes the stream.
pub async fn serve<I, O>(input: I, output: O, options: ServeOptions)
where
    I: AsyncRead + Unpin,
    O: AsyncWrite,
{
    let (service, socket) = LspService::build(|client| Backend::new(client, options.model))
        .custom_method("amd/status", Backend::status)
        .finish();
    Server::new(input, output, socket)
        .concurrency_level(MAX_CONCURRENCY)
        .serve(service)
        .await;
}
