//! What we tell the client we can do, following what it says it can do.

use tower_lsp_server::gen_lsp_types::{
    ClientCapabilities, CompletionOptions, InlineCompletionProvider, PositionEncodingKind, Save,
    SaveOptions, ServerCapabilities, TextDocumentSync, TextDocumentSyncKind,
    TextDocumentSyncOptions,
};

use super::config::CompletionPopup;
use super::documents::PositionEncoding;
use super::state::ClientFacts;

pub fn client_facts(caps: &ClientCapabilities) -> ClientFacts {
    let offered = caps
        .general
        .as_ref()
        .and_then(|g| g.position_encodings.as_ref())
        .cloned()
        .unwrap_or_default();
    // UTF-8 when offered: it is what we store; UTF-16 otherwise (the LSP default).
    let encoding = if offered.contains(&PositionEncodingKind::UTF8) {
        PositionEncoding::Utf8
    } else {
        PositionEncoding::Utf16
    };
    ClientFacts {
        encoding,
        inline_completion: caps
            .text_document
            .as_ref()
            .and_then(|t| t.inline_completion.as_ref())
            .is_some(),
        work_done_progress: caps
            .window
            .as_ref()
            .and_then(|w| w.work_done_progress)
            .unwrap_or(false),
    }
}

pub fn server_capabilities(facts: &ClientFacts, popup: CompletionPopup) -> ServerCapabilities {
    let offer_popup = match popup {
        CompletionPopup::Always => true,
        CompletionPopup::Never => false,
        CompletionPopup::Auto => !facts.inline_completion,
    };
    ServerCapabilities {
        position_encoding: Some(match facts.encoding {
            PositionEncoding::Utf8 => PositionEncodingKind::UTF8,
            PositionEncoding::Utf16 => PositionEncodingKind::UTF16,
            PositionEncoding::Utf32 => PositionEncodingKind::UTF32,
        }),
        text_document_sync: Some(TextDocumentSync::Options(TextDocumentSyncOptions {
            open_close: Some(true),
            change: Some(TextDocumentSyncKind::Incremental),
            will_save: None,
            will_save_wait_until: None,
            save: Some(Save::SaveOptions(SaveOptions {
                include_text: Some(false),
            })),
        })),
        inline_completion_provider: facts
            .inline_completion
            .then_some(InlineCompletionProvider::Bool(true)),
        completion_provider: offer_popup.then(CompletionOptions::default),
        ..ServerCapabilities::default()
    }
}
