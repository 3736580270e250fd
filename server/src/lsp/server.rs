//! `impl LanguageServer`: one-line delegations to `handlers`, plus the two things only this
//! layer can do: panic isolation for requests and the JSON-RPC error boundary.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use tower_lsp_server::gen_lsp_types::{
    CompletionParams, CompletionResponse, DidChangeConfigurationParams,
    DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
    DidSaveTextDocumentParams, InitializeParams, InitializeResult, InitializedParams,
    InlineCompletionParams, InlineCompletionResponse, MessageType, ServerInfo,
};
use tower_lsp_server::jsonrpc::{self, Result};
use tower_lsp_server::{Client, LanguageServer};

use super::capabilities::{client_facts, server_capabilities};
use super::config::ServerConfig;
use super::handlers::{self, completion, status, text_document, workspace};
use super::lifecycle::{self, load_engine};
use super::state::{EngineSlot, ServerState};
use super::ServeOptions;

pub(crate) struct Backend {
    state: Arc<ServerState>,
    /// A problem with `initializationOptions`, reported once the client is initialized.
    init_warning: Mutex<Option<String>>,
}

impl Backend {
    pub(crate) fn new(client: Client, options: ServeOptions) -> Backend {
        Backend {
            state: Arc::new(ServerState::new(client, options.model, options.reuse)),
            init_warning: Mutex::new(None),
        }
    }

    pub(crate) async fn status(&self) -> Result<serde_json::Value> {
        Ok(status::handle_status(&self.state))
    }

    /// Runs a request handler; a panic or an error becomes a JSON-RPC error.
    async fn request<T>(&self, f: impl Future<Output = anyhow::Result<T>>) -> Result<T> {
        match AssertUnwindSafe(f).catch_unwind().await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                ServerState::bump(&self.state.counters.n_errors);
                Err(handlers::to_lsp_error(&e))
            }
            Err(_) => {
                ServerState::bump(&self.state.counters.n_errors);
                tracing::error!("a request handler panicked");
                Err(jsonrpc::Error::internal_error())
            }
        }
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        if let Some(pid) = params.process_id.and_then(|p| u32::try_from(p).ok()) {
            lifecycle::watch_parent(pid);
        }
        let facts = client_facts(&params.capabilities);
        self.state.set_client_facts(facts);
        self.state.set_roots(super::project::roots(&params));
        let options = params
            .initialization_options
            .unwrap_or(serde_json::Value::Null);
        let (config, problems) = ServerConfig::read(&options);
        self.state.set_config(config);
        self.state.set_init_options(options);
        if !problems.is_empty() {
            *self
                .init_warning
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(format!(
                "amd-lsp: initializationOptions: ignored {}; the other settings apply",
                problems.join("; ")
            ));
        }
        tracing::info!(encoding = ?facts.encoding, inline = facts.inline_completion, "initialize");
        Ok(InitializeResult {
            capabilities: server_capabilities(&facts, self.state.config().completion_popup),
            server_info: Some(ServerInfo {
                name: "amd-lsp".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        let warning = self
            .init_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(text) = warning {
            tracing::warn!("{text}");
            self.state
                .client
                .show_message(MessageType::Warning, text)
                .await;
        }
        // Loading starts now, so a request that follows sees "loading", not "unconfigured".
        lifecycle::retire(self.state.set_engine_slot(EngineSlot::Loading));
        tokio::spawn(load_engine(Arc::clone(&self.state)));
        super::context::start_indexing(&self.state);
    }

    async fn shutdown(&self) -> Result<()> {
        tracing::info!("shutdown");
        self.state.shutting_down.store(true, Ordering::SeqCst);
        lifecycle::retire(self.state.set_engine_slot(EngineSlot::Unconfigured));
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        text_document::handle_did_open(&self.state, params);
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        text_document::handle_did_change(&self.state, params);
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        text_document::handle_did_close(&self.state, params);
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        text_document::handle_did_save(&self.state, params);
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        workspace::handle_did_change_configuration(Arc::clone(&self.state), params).await;
    }

    async fn inline_completion(
        &self,
        params: InlineCompletionParams,
    ) -> Result<Option<InlineCompletionResponse>> {
        self.request(completion::handle_inline_completion(
            Arc::clone(&self.state),
            params,
        ))
        .await
    }

    async fn completion(&self, params: CompletionParams) -> Result<Option<CompletionResponse>> {
        self.request(completion::handle_completion(
            Arc::clone(&self.state),
            params,
        ))
        .await
    }
}
