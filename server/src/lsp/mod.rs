//! The language server: tower-lsp-server over any byte streams (stdio in production,
//! in-memory duplex pipes in tests).

pub mod capabilities;
pub mod completion;
pub mod config;
pub mod context;
pub mod documents;
mod handlers;
pub(crate) mod lifecycle;
pub mod project;
mod server;
pub mod state;
pub mod transport;

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tower_lsp_server::{LspService, Server};

use self::config::ReuseMode;
use self::server::Backend;

/// Options from the command line.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Model used when the client's configuration names none.
    pub model: Option<PathBuf>,
    /// How much of the KV cache completions reuse (`full` but for the benchmarks' baselines).
    pub reuse: ReuseMode,
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
    let (service, socket) = LspService::build(|client| Backend::new(client, options))
        .custom_method("amd/status", Backend::status)
        .finish();
    // The editor's bytes reach tower-lsp-server only through the wire guard (transport.rs).
    let (to_server, server_input) = tokio::io::duplex(PIPE_BYTES);
    let (server_output, from_server) = tokio::io::duplex(PIPE_BYTES);
    let (answers_tx, answers_rx) = tokio::sync::mpsc::channel(ANSWER_QUEUE);
    let server = async move {
        Server::new(server_input, server_output, socket)
            .concurrency_level(MAX_CONCURRENCY)
            .serve(service)
            .await;
    };
    let output = std::pin::pin!(transport::pump_output(from_server, output, answers_rx));
    let running = std::pin::pin!(futures::future::join(server, output));
    let input = std::pin::pin!(transport::pump_input(input, to_server, answers_tx));
    // The server ends at `exit` or when the input ends (the input pump then drops `to_server`);
    // the output pump ends with the server's output. A read of the editor still pending then
    // is dropped.
    match futures::future::select(running, input).await {
        futures::future::Either::Left(_) => {}
        futures::future::Either::Right(((), running)) => {
            running.await;
        }
    }
}

/// Buffer of the in-memory pipes between the wire guard and tower-lsp-server.
const PIPE_BYTES: usize = 1 << 20;
/// Answers to refused input waiting to be written.
const ANSWER_QUEUE: usize = 64;
