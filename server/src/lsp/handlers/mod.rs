//! Request and notification handlers: free functions over the shared state, one file per
//! area. `server.rs` only delegates here.

pub(crate) mod completion;
pub(crate) mod status;
pub(crate) mod text_document;
pub(crate) mod workspace;

use tower_lsp_server::jsonrpc;

/// The one place an internal error becomes a JSON-RPC error.
pub(crate) fn to_lsp_error(e: &anyhow::Error) -> jsonrpc::Error {
    tracing::warn!(error = %format!("{e:#}"), "request failed");
    jsonrpc::Error {
        code: jsonrpc::ErrorCode::InternalError,
        message: format!("{e:#}").into(),
        data: None,
    }
}
