//! The typist who accepts (`bench replay --accept`): when the suggestion on screen agrees
//! with what the script is about to type, they take it the way the editors' keys allow — the
//! whole suggestion (Tab), else whole lines (accept-line), else words (accept-word), one
//! keystroke each — and type on from there. The script stays the ground truth: accepting only
//! ever inserts the characters the script would have typed. Pure.

use ropey::Rope;

use super::script::{Action, KeyKind, Step};

/// How a suggestion was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    Whole,
    Lines,
    Words,
}

/// What the typist takes of a suggestion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Take {
    /// Characters inserted (each one a character the script would have typed).
    pub chars: usize,
    /// Keystrokes it costs (1 for the whole suggestion or each line or word).
    pub keys: usize,
    pub how: How,
}

/// The characters the script types next from step `i` on, one keystroke each, at the
/// cursor, in one document: the run stops at anything else (a backspace, a typo the next
/// step takes back, a far edit, another document, opening or closing one). The steps' count
/// equals the characters'.
pub(crate) fn upcoming(steps: &[Step], i: usize) -> String {
    let mut out = String::new();
    let mut at: Option<(usize, (u32, u32))> = None;
    for (j, step) in steps.iter().enumerate().skip(i) {
        let Action::Key {
            doc,
            start,
            end,
            text,
            cursor,
            kind: KeyKind::Type,
        } = &step.action
        else {
            break;
        };
        let typo = matches!(
            steps.get(j + 1).map(|s| &s.action),
            Some(Action::Key {
                kind: KeyKind::Backspace,
                ..
            })
        );
        let follows = at.is_none_or(|(d, c)| d == *doc && c == *start);
        if typo || !follows || start != end || text.chars().count() != 1 {
            break;
        }
        out.push_str(text);
        at = Some((*doc, *cursor));
    }
    out
}

/// What to take of `suggestion` when the script types `upcoming` next, if anything: all of
/// it when it all agrees; else the whole lines that agree; else the words that agree (a word:
/// leading spaces and then a run of identifier characters, or one other character). Taking
/// must save keystrokes: a take of as many keys as characters is not made.
pub(crate) fn take(suggestion: &str, upcoming: &str) -> Option<Take> {
    if suggestion.is_empty() {
        return None;
    }
    let worth = |t: Take| (t.chars > t.keys).then_some(t);
    if upcoming.starts_with(suggestion) {
        return worth(Take {
            chars: suggestion.chars().count(),
            keys: 1,
            how: How::Whole,
        });
    }
    let mut lines = 0;
    let mut chars = 0;
    for line in suggestion.split_inclusive('\n') {
        if !line.ends_with('\n') || !upcoming[byte_len(upcoming, chars)..].starts_with(line) {
            break;
        }
        lines += 1;
        chars += line.chars().count();
    }
    if lines > 0 {
        return worth(Take {
            chars,
            keys: lines,
            how: How::Lines,
        });
    }
    let (mut words, mut chars, mut rest) = (0, 0, suggestion);
    while let Some(word) = next_word(rest) {
        if !upcoming[byte_len(upcoming, chars)..].starts_with(word) {
            break;
        }
        words += 1;
        chars += word.chars().count();
        rest = &rest[word.len()..];
    }
    worth(Take {
        chars,
        keys: words,
        how: How::Words,
    })
}

/// Byte length of the first `chars` characters of `s` (all of it when shorter).
fn byte_len(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i)
}

/// The next word of `s`: leading spaces or tabs, then identifier characters, or one other
/// character.
fn next_word(s: &str) -> Option<&str> {
    let lead = s.len() - s.trim_start_matches([' ', '\t']).len();
    let rest = &s[lead..];
    let first = rest.chars().next()?;
    let len = if first.is_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    Some(&s[..lead + len])
}

/// Applies an LSP edit (line / UTF-16 column positions) to `rope`.
pub(crate) fn apply(rope: &mut Rope, start: (u32, u32), end: (u32, u32), text: &str) {
    let at = |(line, col): (u32, u32)| {
        let line_start = rope.line_to_char(line as usize);
        rope.utf16_cu_to_char(rope.char_to_utf16_cu(line_start) + col as usize)
    };
    let (from, to) = (at(start), at(end));
    rope.remove(from..to);
    rope.insert(from, text);
}

/// The documents as the script leaves them (every step applied).
pub(crate) fn final_texts(steps: &[Step]) -> Vec<Rope> {
    let mut docs: Vec<Rope> = Vec::new();
    for step in steps {
        match &step.action {
            Action::Open { text, .. } => docs.push(Rope::from_str(text)),
            Action::Key {
                doc,
                start,
                end,
                text,
                ..
            } => apply(&mut docs[*doc], *start, *end, text),
            Action::Close { .. } => {}
        }
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_agrees_the_way_the_keys_allow() {
        let whole = take("open(path)", "open(path)\n    x");
        assert_eq!((whole.unwrap().chars, whole.unwrap().how), (10, How::Whole));
        // The first line agrees, the second does not: accept-line once.
        let lines = take("a = 1\nb = 2\n", "a = 1\nc = 3\n").unwrap();
        assert_eq!((lines.chars, lines.keys, lines.how), (6, 1, How::Lines));
        // Words: `self.items` agrees (3 words: `self`, `.`, `items`), `[0]` does not.
        let words = take("self.items[0]", "self.items.pop()").unwrap();
        assert_eq!((words.chars, words.keys, words.how), (10, 3, How::Words));
        // Words with leading spaces count as one; a take of as many keys as characters, none.
        assert_eq!(take(" in range", " in x").unwrap().chars, 3);
        assert_eq!(take("(x", "(y"), None);
        assert_eq!(take("", "abc"), None);
        assert_eq!(take("zzz", "abc"), None);
    }

    fn key(doc: usize, col: u32, text: &str, kind: KeyKind) -> Step {
        let (start, end, cursor) = match kind {
            KeyKind::Backspace => ((0, col - 1), (0, col), (0, col - 1)),
            _ => ((0, col), (0, col), (0, col + 1)),
        };
        Step {
            at_ms: u64::from(col),
            action: Action::Key {
                doc,
                start,
                end,
                text: text.into(),
                cursor,
                kind,
            },
        }
    }

    #[test]
    fn the_upcoming_run_stops_at_typos_and_other_documents() {
        let steps = vec![
            key(0, 0, "a", KeyKind::Type),
            key(0, 1, "b", KeyKind::Type),
            key(0, 2, "x", KeyKind::Type), // a typo: the next step takes it back
            key(0, 3, "", KeyKind::Backspace),
            key(0, 2, "c", KeyKind::Type),
            key(1, 3, "d", KeyKind::Type),
        ];
        assert_eq!(upcoming(&steps, 0), "ab");
        assert_eq!(upcoming(&steps, 4), "c");
        assert_eq!(upcoming(&steps, 3), "");
    }

    #[test]
    fn edits_apply_at_utf16_columns() {
        let mut rope = Rope::from_str("a😀b\nxy\n");
        apply(&mut rope, (0, 3), (0, 3), "Z");
        apply(&mut rope, (1, 0), (1, 1), "");
        assert_eq!(rope.to_string(), "a😀Zb\ny\n");
    }
}
