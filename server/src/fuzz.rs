//! Checks shared by the fuzz targets (`fuzz/`) and the tests that replay their corpora, in the
//! way rust-analyzer's `syntax::fuzz` is: each takes arbitrary bytes and panics on a bug.

use tower_lsp_server::gen_lsp_types::{
    Position, Range, TextDocumentContentChangeEvent, TextDocumentContentChangePartial,
    TextDocumentContentChangeWholeDocument,
};

use crate::lsp::documents::{Document, PositionEncoding};
use crate::lsp::transport::{Decoded, Decoder};

/// Characters edits are made of: line endings of every kind (and Unicode breaks that are
/// not LSP line endings), multi-unit characters in UTF-8 and UTF-16.
const ALPHABET: [char; 16] = [
    'a',
    ' ',
    '\n',
    '\r',
    '\t',
    'é',
    '中',
    '😀',
    '\u{2028}',
    '\u{0c}',
    '\u{0b}',
    '\u{85}',
    'x',
    '(',
    '\u{1F3FB}',
    '\0',
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn text(&mut self) -> String {
        let n = self.byte().unwrap_or(0) % 8;
        (0..n)
            .filter_map(|_| self.byte())
            .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()])
            .collect()
    }
}

/// Incremental edits applied to a [`Document`] must give the text a naive implementation of
/// the LSP's rules gives (positions in the negotiated encoding; a column past the end of a
/// line means its end; a line past the end means the end of the document; a column inside a
/// character means its start; lines end at `\n`, `\r\n` or `\r`). Positions map back to the
/// same offsets.
pub fn check_document_edits(data: &[u8]) {
    let mut input = Bytes(data);
    let enc = match input.byte().unwrap_or(0) % 3 {
        0 => PositionEncoding::Utf16,
        1 => PositionEncoding::Utf8,
        _ => PositionEncoding::Utf32,
    };
    let initial = input.text();
    let mut doc = Document::new(&initial, 0);
    let mut naive: Vec<char> = initial.chars().collect();
    while let Some(op) = input.byte() {
        let mut pos = || Position {
            line: u32::from(input.byte().unwrap_or(0) % 6),
            character: u32::from(input.byte().unwrap_or(0) % 12),
        };
        let (start, end) = (pos(), pos());
        let text = input.text();
        #[allow(deprecated)] // `range_length` must be written to build the struct
        let change = if op % 16 == 0 {
            naive = text.chars().collect();
            TextDocumentContentChangeEvent::TextDocumentContentChangeWholeDocument(
                TextDocumentContentChangeWholeDocument { text },
            )
        } else {
            let s = naive_offset(&naive, start, enc);
            let e = naive_offset(&naive, end, enc).max(s);
            naive.splice(s..e, text.chars());
            TextDocumentContentChangeEvent::TextDocumentContentChangePartial(
                TextDocumentContentChangePartial {
                    range: Range { start, end },
                    range_length: None,
                    text,
                },
            )
        };
        doc.apply_change(&change, enc);
        let expected: String = naive.iter().collect();
        assert_eq!(doc.rope.to_string(), expected, "after {change:?}");
    }
    for offset in 0..=naive.len() {
        let inside_crlf =
            offset > 0 && naive[offset - 1] == '\r' && naive.get(offset) == Some(&'\n');
        if !inside_crlf {
            let p = doc.position(offset, enc);
            assert_eq!(doc.char_offset(p, enc), offset, "{p:?}");
            assert_eq!(naive_offset(&naive, p, enc), offset, "{p:?}");
        }
    }
    check_context_scanning(&doc.rope.to_string());
}

/// What context retrieval reads of any text: chunks cover its lines in order, and scanning
/// identifiers, definitions, the words of names and imports never panics and returns pieces
/// of the text.
fn check_context_scanning(text: &str) {
    use crate::lsp::context::{index::chunk_lines, terms};
    let chunks = chunk_lines(text);
    let mut next = 0;
    for &(start, end) in &chunks {
        assert!(start == next && end > start, "{chunks:?}");
        next = end;
    }
    assert_eq!(next, text.lines().count());
    for line in text.lines() {
        if let Some(name) = terms::definition(line) {
            assert!(line.contains(name));
        }
        assert!(terms::identifiers(line).all(|w| line.contains(w)));
        for word in terms::identifiers(line) {
            assert!(terms::subwords(word).iter().all(|s| s.chars().count() >= 2));
        }
    }
    // The names a file refers to a module by are pieces of its import lines.
    let imports = terms::Imports::of(text);
    for rel in ["b.py", "a/mod.rs", "x/__init__.py", ""] {
        assert!(imports.module_refs(rel).iter().all(|r| text.contains(r)));
    }
}

/// The LSP's rules, written as plainly as possible.
fn naive_offset(text: &[char], pos: Position, enc: PositionEncoding) -> usize {
    let mut i = 0;
    for _ in 0..pos.line {
        let Some(brk) = (i..text.len()).find(|&j| text[j] == '\n' || text[j] == '\r') else {
            return text.len();
        };
        i = if text[brk] == '\r' && text.get(brk + 1) == Some(&'\n') {
            brk + 2
        } else {
            brk + 1
        };
    }
    let mut units = 0;
    while i < text.len() && text[i] != '\n' && text[i] != '\r' {
        let w = match enc {
            PositionEncoding::Utf8 => text[i].len_utf8(),
            PositionEncoding::Utf16 => text[i].len_utf16(),
            PositionEncoding::Utf32 => 1,
        };
        if units + w > pos.character as usize {
            break;
        }
        units += w;
        i += 1;
    }
    i
}

/// The wire guard's decoder never panics, keeps its memory bounded, passes on only bodies
/// that are JSON-RPC messages, and finds the same messages however the input is split.
pub fn check_framing(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let whole = decode_messages(data, data.len().max(1));
    let pieces = decode_messages(data, usize::from(split) % 17 + 1);
    assert_eq!(whole, pieces, "messages depend on how the input was split");
    for body in &whole {
        assert!(
            serde_json::from_slice::<tower_lsp_server::jsonrpc::Request>(body).is_ok()
                || serde_json::from_slice::<tower_lsp_server::jsonrpc::Response>(body).is_ok()
        );
    }
}

fn decode_messages(data: &[u8], step: usize) -> Vec<Vec<u8>> {
    let mut decoder = Decoder::default();
    let mut messages = Vec::new();
    for piece in data.chunks(step) {
        decoder.push(piece);
        while let Some(item) = decoder.next_item() {
            if let Decoded::Message(body) = item {
                messages.push(body);
            }
        }
        // Bounded: a header line, or the body being waited for (at most MAX_BODY).
        assert!(
            decoder.pending() <= crate::lsp::transport::MAX_HEADER_LINE + step + 2 * 64
                || decoder.waiting_for_body(),
            "{} bytes pending",
            decoder.pending()
        );
    }
    messages
}
