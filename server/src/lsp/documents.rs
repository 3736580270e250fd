//! Open documents: text in a rope, its version, and conversion between LSP positions
//! (UTF-16 or UTF-8 code units, as negotiated) and char offsets. The only place that knows
//! how positions are encoded.

use std::collections::HashMap;
use std::sync::Mutex;

use ropey::Rope;
use tower_lsp_server::gen_lsp_types::{Position, Range, TextDocumentContentChangeEvent, Uri};

/// How the client counts columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PositionEncoding {
    Utf8,
    #[default]
    Utf16,
    Utf32,
}

/// One open document.
#[derive(Clone, Debug)]
pub struct Document {
    pub rope: Rope,
    pub version: i32,
}

/// Why a change was not applied.
#[derive(Debug, PartialEq, Eq)]
pub enum ChangeRejected {
    UnknownDocument,
    StaleVersion { have: i32, got: i32 },
}

impl Document {
    pub fn new(text: &str, version: i32) -> Document {
        Document {
            rope: Rope::from_str(text),
            version,
        }
    }

    /// The char offset of an LSP position. Positions past the end of a line mean the end of
    /// that line, lines past the end mean the end of the document, and a column inside a
    /// UTF-16 surrogate pair (or a UTF-8 sequence) rounds down to the character's start.
    pub fn char_offset(&self, pos: Position, enc: PositionEncoding) -> usize {
        let line = pos.line as usize;
        if line >= self.rope.len_lines() {
            return self.rope.len_chars();
        }
        let line_start = self.rope.line_to_char(line);
        let mut units = 0usize;
        let mut n_chars = 0usize;
        for c in self.rope.line(line).chars() {
            if c == '\n' || c == '\r' {
                break;
            }
            let w = match enc {
                PositionEncoding::Utf8 => c.len_utf8(),
                PositionEncoding::Utf16 => c.len_utf16(),
                PositionEncoding::Utf32 => 1,
            };
            if units + w > pos.character as usize {
                break;
            }
            units += w;
            n_chars += 1;
        }
        line_start + n_chars
    }

    /// The LSP position of a char offset.
    pub fn position(&self, char_offset: usize, enc: PositionEncoding) -> Position {
        let char_offset = char_offset.min(self.rope.len_chars());
        let line = self.rope.char_to_line(char_offset);
        let line_start = self.rope.line_to_char(line);
        let character = self
            .rope
            .slice(line_start..char_offset)
            .chars()
            .map(|c| match enc {
                PositionEncoding::Utf8 => c.len_utf8(),
                PositionEncoding::Utf16 => c.len_utf16(),
                PositionEncoding::Utf32 => 1,
            })
            .sum::<usize>();
        Position {
            line: line as u32,
            character: character as u32,
        }
    }

    /// Applies one change event: a range replacement, or the whole text.
    pub fn apply_change(&mut self, change: &TextDocumentContentChangeEvent, enc: PositionEncoding) {
        match change {
            TextDocumentContentChangeEvent::TextDocumentContentChangePartial(c) => {
                let start = self.char_offset(c.range.start, enc);
                let end = self.char_offset(c.range.end, enc).max(start);
                self.rope.remove(start..end);
                self.rope.insert(start, &c.text);
            }
            TextDocumentContentChangeEvent::TextDocumentContentChangeWholeDocument(c) => {
                self.rope = Rope::from_str(&c.text);
            }
        }
    }

    pub fn range_of(&self, start: usize, end: usize, enc: PositionEncoding) -> Range {
        Range {
            start: self.position(start, enc),
            end: self.position(end, enc),
        }
    }
}

/// All open documents behind one short lock (never held across an `.await`).
#[derive(Debug, Default)]
pub struct DocumentStore {
    docs: Mutex<HashMap<Uri, Document>>,
}

impl DocumentStore {
    pub fn open(&self, uri: Uri, text: &str, version: i32) {
        self.lock().insert(uri, Document::new(text, version));
    }

    pub fn close(&self, uri: &Uri) -> bool {
        self.lock().remove(uri).is_some()
    }

    /// Applies a didChange. A version not newer than the one we have is refused: the LSP
    /// requires versions to increase, so it can only be a duplicate or a reordering.
    pub fn change(
        &self,
        uri: &Uri,
        version: i32,
        changes: &[TextDocumentContentChangeEvent],
        enc: PositionEncoding,
    ) -> Result<(), ChangeRejected> {
        let mut docs = self.lock();
        let doc = docs.get_mut(uri).ok_or(ChangeRejected::UnknownDocument)?;
        if version <= doc.version {
            return Err(ChangeRejected::StaleVersion {
                have: doc.version,
                got: version,
            });
        }
        for change in changes {
            doc.apply_change(change, enc);
        }
        doc.version = version;
        Ok(())
    }

    /// A copy of the document (cheap: ropes share their nodes).
    pub fn snapshot(&self, uri: &Uri) -> Option<Document> {
        self.lock().get(uri).cloned()
    }

    /// The document's version (`None` once it is closed).
    pub fn version(&self, uri: &Uri) -> Option<i32> {
        self.lock().get(uri).map(|d| d.version)
    }

    pub fn n_open(&self) -> usize {
        self.lock().len()
    }

    /// The text of up to `max_docs` other open documents (at most `max_chars` characters of
    /// each, from its start), for prompt-lookup drafting.
    pub fn others(&self, uri: &Uri, max_docs: usize, max_chars: usize) -> Vec<String> {
        let docs = self.lock();
        docs.iter()
            .filter(|(u, _)| *u != uri)
            .take(max_docs)
            .map(|(_, d)| {
                let end = d.rope.len_chars().min(max_chars);
                d.rope.slice(..end).to_string()
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uri, Document>> {
        // A panic while holding this lock cannot leave a half-applied change that matters
        // more than losing every document, so recover the data.
        self.docs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use tower_lsp_server::gen_lsp_types::TextDocumentContentChangePartial;

    use super::*;

    fn pos(line: u32, character: u32) -> Position {
        Position { line, character }
    }

    #[allow(deprecated)]
    fn edit(
        doc: &mut Document,
        (l0, c0): (u32, u32),
        (l1, c1): (u32, u32),
        text: &str,
        enc: PositionEncoding,
    ) {
        let change = TextDocumentContentChangePartial {
            range: Range {
                start: pos(l0, c0),
                end: pos(l1, c1),
            },
            range_length: None,
            text: text.into(),
        };
        doc.apply_change(&change.into(), enc);
    }

    #[test]
    fn only_lsp_line_endings_break_lines() {
        // Form feed, vertical tab, NEL, U+2028 and U+2029 are text to the LSP, not line breaks.
        let doc = Document::new("a\u{c}\u{b}\u{85}\u{2028}\u{2029}b\r\nc\rd\ne", 1);
        let at = |line, character| {
            doc.char_offset(Position { line, character }, PositionEncoding::Utf16)
        };
        assert_eq!(at(0, 6), 6, "b is on line 0");
        assert_eq!(at(1, 0), 9, "c starts line 1 (after CRLF)");
        assert_eq!(at(2, 0), 11, "d starts line 2 (after CR)");
        assert_eq!(at(3, 0), 13, "e starts line 3 (after LF)");
    }

    #[test]
    fn utf16_columns_count_surrogate_pairs_as_two() {
        let doc = Document::new("a😀b\nxyz", 1);
        let enc = PositionEncoding::Utf16;
        assert_eq!(doc.char_offset(pos(0, 0), enc), 0);
        assert_eq!(doc.char_offset(pos(0, 1), enc), 1);
        assert_eq!(
            doc.char_offset(pos(0, 2), enc),
            1,
            "inside the pair rounds down"
        );
        assert_eq!(doc.char_offset(pos(0, 3), enc), 2);
        assert_eq!(doc.char_offset(pos(0, 4), enc), 3);
        assert_eq!(
            doc.char_offset(pos(0, 99), enc),
            3,
            "past the end of the line"
        );
        assert_eq!(doc.char_offset(pos(9, 0), enc), 7, "past the last line");
        assert_eq!(doc.position(2, enc), pos(0, 3));
        assert_eq!(doc.position(5, enc), pos(1, 1));
    }

    #[test]
    fn utf8_columns_count_bytes() {
        let doc = Document::new("é😀b", 1);
        let enc = PositionEncoding::Utf8;
        assert_eq!(doc.char_offset(pos(0, 2), enc), 1);
        assert_eq!(doc.char_offset(pos(0, 6), enc), 2);
        assert_eq!(doc.char_offset(pos(0, 4), enc), 1);
        assert_eq!(doc.position(3, enc), pos(0, 7));
    }

    #[test]
    fn incremental_edits_apply_in_order() {
        let enc = PositionEncoding::Utf16;
        let mut doc = Document::new("fn main() {\n}\n", 1);
        edit(&mut doc, (0, 11), (0, 11), "\n    let x = 1;", enc);
        edit(&mut doc, (1, 12), (1, 13), "42", enc);
        edit(&mut doc, (0, 0), (0, 2), "pub fn", enc);
        assert_eq!(
            doc.rope.to_string(),
            "pub fn main() {\n    let x = 42;\n}\n"
        );
        // Deleting across lines, and a range whose end is past the end of the document.
        edit(&mut doc, (0, 15), (1, 99), "", enc);
        assert_eq!(doc.rope.to_string(), "pub fn main() {\n}\n");
        edit(&mut doc, (1, 0), (40, 0), "}", enc);
        assert_eq!(doc.rope.to_string(), "pub fn main() {\n}");
    }

    #[test]
    fn stale_versions_and_unknown_documents_are_refused() {
        let store = DocumentStore::default();
        let uri = Uri::from("file:///a.py");
        store.open(uri.clone(), "x", 3);
        let whole = |t: &str| {
            vec![
                TextDocumentContentChangeEvent::TextDocumentContentChangeWholeDocument(
                    tower_lsp_server::gen_lsp_types::TextDocumentContentChangeWholeDocument {
                        text: t.into(),
                    },
                ),
            ]
        };
        assert_eq!(
            store.change(&uri, 3, &whole("y"), PositionEncoding::Utf16),
            Err(ChangeRejected::StaleVersion { have: 3, got: 3 })
        );
        assert_eq!(
            store.change(&uri, 4, &whole("y"), PositionEncoding::Utf16),
            Ok(())
        );
        assert_eq!(
            store.snapshot(&uri).map(|d| d.rope.to_string()),
            Some("y".into())
        );
        assert_eq!(
            store.change(
                &Uri::from("file:///b.py"),
                1,
                &whole("z"),
                PositionEncoding::Utf16
            ),
            Err(ChangeRejected::UnknownDocument)
        );
    }
}
