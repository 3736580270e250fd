//! workspace/didChangeConfiguration: new settings (layered over the initializationOptions)
//! apply to the next request; model, thread, context or GPU changes reload the model.

use std::sync::Arc;

use tower_lsp_server::gen_lsp_types::{DidChangeConfigurationParams, MessageType};

use crate::lsp::config::ServerConfig;
use crate::lsp::lifecycle::load_engine;
use crate::lsp::state::ServerState;

pub(crate) async fn handle_did_change_configuration(
    state: Arc<ServerState>,
    params: DidChangeConfigurationParams,
) {
    let (next, problems) = ServerConfig::read(&ServerConfig::merged(
        &state.init_options(),
        &params.settings,
    ));
    if !problems.is_empty() {
        // Say once what was wrong; the valid keys apply.
        let text = format!(
            "amd-lsp: settings: ignored {}; the other settings apply",
            problems.join("; ")
        );
        tracing::warn!("{text}");
        state.client.show_message(MessageType::Warning, text).await;
    }
    let previous = state.set_config(next.clone());
    tracing::info!(
        reload = previous.needs_reload(&next),
        "configuration changed"
    );
    if next.context && (!previous.context || previous.context_max_files != next.context_max_files) {
        crate::lsp::context::start_indexing(&state);
    } else if previous.context && !next.context {
        state.context.clear();
    }
    if previous.needs_reload(&next) {
        load_engine(state).await;
    }
}
