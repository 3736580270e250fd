//! textDocument/inlineCompletion and textDocument/completion: the same suggestions, shaped
//! for each.

use std::sync::Arc;

use anyhow::Result;
use tower_lsp_server::gen_lsp_types::{
    CompletionItem, CompletionItemKind, CompletionItemTextEdit, CompletionList, CompletionParams,
    CompletionResponse, CompletionTriggerKind, InlineCompletionItem, InlineCompletionList,
    InlineCompletionParams, InlineCompletionResponse, InlineCompletionTriggerKind, InsertText,
    InsertTextFormat, InsertTextMode, Range, TextEdit,
};

use crate::lsp::completion::{suggest, SuggestParams, Suggestion};
use crate::lsp::state::ServerState;

/// Longest popup label, in characters.
const LABEL_CHARS: usize = 60;

pub(crate) async fn handle_inline_completion(
    state: Arc<ServerState>,
    params: InlineCompletionParams,
) -> Result<Option<InlineCompletionResponse>> {
    let pos = params.text_document_position_params;
    let invoked = params.context.trigger_kind == InlineCompletionTriggerKind::Invoked;
    let n_candidates = if invoked {
        state.config().inline_candidates.max(1) as usize
    } else {
        1
    };
    let selected = params
        .context
        .selected_completion_info
        .map(|info| (info.range, info.text));
    let suggestion = suggest(
        &state,
        SuggestParams {
            uri: pos.text_document.uri,
            position: pos.position,
            n_candidates,
            selected,
            invoked,
        },
    )
    .await?;
    Ok(suggestion.map(|s| InlineCompletionResponse::InlineCompletionList(inline_items(&s))))
}

/// Each item replaces the line up to the cursor with that text plus the suggestion; the
/// filter text is the same, so the client keeps the item while the user types through it.
fn inline_items(s: &Suggestion) -> InlineCompletionList {
    let range = Range {
        start: s.line_start,
        end: s.cursor,
    };
    InlineCompletionList {
        items: s
            .texts
            .iter()
            .map(|text| {
                let insert = format!("{}{text}", s.line_prefix);
                InlineCompletionItem {
                    insert_text: InsertText::String(insert.clone()),
                    filter_text: Some(insert),
                    range: Some(range),
                    command: None,
                }
            })
            .collect(),
    }
}

pub(crate) async fn handle_completion(
    state: Arc<ServerState>,
    params: CompletionParams,
) -> Result<Option<CompletionResponse>> {
    let invoked = params
        .context
        .as_ref()
        .is_some_and(|c| c.trigger_kind == CompletionTriggerKind::Invoked);
    let pos = params.text_document_position_params;
    let suggestion = suggest(
        &state,
        SuggestParams {
            uri: pos.text_document.uri,
            position: pos.position,
            n_candidates: 1,
            selected: None,
            invoked,
        },
    )
    .await?;
    // Always incomplete: the client asks again as the user types.
    let items = suggestion.map(|s| popup_items(&s)).unwrap_or_default();
    Ok(Some(CompletionResponse::CompletionList(CompletionList {
        is_incomplete: true,
        item_defaults: None,
        apply_kind: None,
        items,
    })))
}

/// What a popup client filters an item by: the identifier the item starts with (the word
/// typed so far and its continuation), never later text. A fuzzy client (Helix) matches typed
/// text anywhere in the filter text: with the whole suggestion there, a stale item for
/// `open(pa` stayed on screen after the user typed `th` (it matched `path` further on) and
/// accepting it replaced the typed `path`.
fn filter_text(new_text: &str) -> String {
    let n = new_text
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(new_text.len(), |(i, _)| i);
    if n == 0 {
        // Nothing identifier-like at the start (`.get(`, `(`): the text up to the first space.
        new_text.split_whitespace().next().unwrap_or("").to_owned()
    } else {
        new_text[..n].to_owned()
    }
}

/// One popup item per suggestion; its edit replaces the word before the cursor.
fn popup_items(s: &Suggestion) -> Vec<CompletionItem> {
    s.texts
        .iter()
        .map(|text| {
            let new_text = format!("{}{text}", s.word);
            let first_line = new_text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let mut label: String = first_line.chars().take(LABEL_CHARS).collect();
            if first_line.chars().count() > LABEL_CHARS || new_text.trim().lines().count() > 1 {
                label.push('…');
            }
            CompletionItem {
                label,
                kind: Some(CompletionItemKind::Text),
                detail: Some("amd-lsp".into()),
                preselect: Some(true),
                sort_text: Some("0".into()),
                filter_text: Some(filter_text(&new_text)),
                insert_text_format: Some(InsertTextFormat::PlainText),
                // Later lines carry their absolute indentation already: a client that adjusts
                // it (lsp-mode, VS Code's default) would indent them twice.
                insert_text_mode: Some(InsertTextMode::AsIs),
                text_edit: Some(CompletionItemTextEdit::TextEdit(TextEdit {
                    range: Range {
                        start: s.word_start,
                        end: s.cursor,
                    },
                    new_text,
                })),
                ..CompletionItem::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{filter_text, popup_items, Suggestion};
    use tower_lsp_server::gen_lsp_types::{InsertTextMode, Position};

    #[test]
    fn multi_line_popup_items_are_inserted_as_they_are() {
        let at = |character| Position { line: 1, character };
        let s = Suggestion {
            line_start: at(0),
            cursor: at(4),
            word_start: at(4),
            line_prefix: "    ".into(),
            word: String::new(),
            texts: vec!["for x in xs:\n        use(x)".into()],
        };
        let items = popup_items(&s);
        // Later lines carry their own indentation: a client must not add the cursor's again.
        assert_eq!(items[0].insert_text_mode, Some(InsertTextMode::AsIs));
    }

    #[test]
    fn popup_items_filter_on_the_identifier_they_start_with() {
        assert_eq!(filter_text("pa.get_file(path)) as file:"), "pa");
        assert_eq!(filter_text("path) as file:"), "path");
        assert_eq!(filter_text("(x)"), "(x)");
        assert_eq!(filter_text(""), "");
    }
}
