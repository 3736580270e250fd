//! didOpen / didChange / didClose / didSave. Synchronous: a change is applied before the
//! handler could yield, so a later request always sees it.

use tower_lsp_server::gen_lsp_types::{
    DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
    DidSaveTextDocumentParams, TextDocumentContentChangeEvent,
};

use std::sync::Arc;

use crate::lsp::completion::flight::Flight;
use crate::lsp::completion::prefill_on_open;
use crate::lsp::documents::ChangeRejected;
use crate::lsp::state::ServerState;

pub(crate) fn handle_did_open(state: &Arc<ServerState>, params: DidOpenTextDocumentParams) {
    let doc = params.text_document;
    tracing::debug!(uri = %doc.uri, version = doc.version, n_bytes = doc.text.len(), "didOpen");
    state.forget(&doc.uri);
    state.docs.open(doc.uri.clone(), &doc.text, doc.version);
    state.opened(&doc.uri);
    state.context.update(&doc.uri, &doc.text);
    prefill_on_open(state, &doc.uri);
}

/// A saved document's text is what other documents' context now reads from its file.
pub(crate) fn handle_did_save(state: &ServerState, params: DidSaveTextDocumentParams) {
    let uri = params.text_document.uri;
    let text = params
        .text
        .or_else(|| state.docs.snapshot(&uri).map(|d| d.rope.to_string()));
    if let Some(text) = text {
        state.context.update(&uri, &text);
    }
}

pub(crate) fn handle_did_change(state: &ServerState, params: DidChangeTextDocumentParams) {
    let uri = params.text_document.text_document_identifier.uri;
    let version = params.text_document.version;
    match state
        .docs
        .change(&uri, version, &params.content_changes, state.encoding())
    {
        // A request in flight was asked for the text before this change: it answers empty
        // now (a popup client asks again: the list is incomplete) instead of late and wrong.
        Ok(()) => {
            state.latest.cancel(&uri);
            // The next keystroke's request decides whether a generation in flight goes on;
            // an edit off its line means it will not.
            let off_line = |flight: &Flight| {
                !params.content_changes.iter().all(|c| match c {
                    TextDocumentContentChangeEvent::TextDocumentContentChangePartial(c) => {
                        let r = c.range;
                        flight.survives_edit((r.start.line, r.end.line), &c.text)
                    }
                    TextDocumentContentChangeEvent::TextDocumentContentChangeWholeDocument(_) => {
                        true
                    }
                })
            };
            if state.flight(&uri).is_some_and(|f| off_line(&f)) {
                state.end_flight(&uri);
            }
        }
        Err(ChangeRejected::UnknownDocument) => {
            tracing::warn!(uri = %uri, "didChange for a document that is not open; ignored");
        }
        Err(ChangeRejected::StaleVersion { have, got }) => {
            tracing::warn!(uri = %uri, have, got, "didChange with a stale version; ignored");
        }
    }
}

pub(crate) fn handle_did_close(state: &ServerState, params: DidCloseTextDocumentParams) {
    let uri = params.text_document.uri;
    state.forget(&uri);
    if !state.docs.close(&uri) {
        tracing::warn!(uri = %uri, "didClose for a document that is not open");
    }
    // Unsaved edits are gone with the document: the index goes back to the file.
    state.context.reread(&uri);
}
