//! Type-through: while the user types characters that match the suggestion on screen, the
//! rest of it is served from here without asking the model. Pure.

use super::window::CursorWindow;

/// The suggestion last shown for a document, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    pub line: usize,
    pub line_prefix: String,
    pub line_suffix: String,
    pub context_tail: String,
    /// The start of the lines after the cursor's line (FIM prompts and post-processing see them).
    pub next_lines_head: String,
    pub text: String,
}

/// Chars of the following lines compared.
const NEXT_LINES_CHARS: usize = 256;

fn next_lines_head(at: &CursorWindow) -> String {
    at.next_lines().chars().take(NEXT_LINES_CHARS).collect()
}

impl Shown {
    pub fn new(at: &CursorWindow, text: String) -> Shown {
        Shown {
            line: at.line,
            line_prefix: at.line_prefix.clone(),
            line_suffix: at.line_suffix.clone(),
            context_tail: at.context_tail.clone(),
            next_lines_head: next_lines_head(at),
            text,
        }
    }

    /// The part of the suggestion still to type, if the cursor is inside it.
    pub fn remaining(&self, at: &CursorWindow) -> Option<&str> {
        let rest = self.text.strip_prefix(self.typed(at)?)?;
        (!rest.trim().is_empty()).then_some(rest)
    }

    /// What was typed at the suggestion's cursor since it was asked for, if that is all that
    /// changed (the same line, the same text around it).
    pub fn typed<'a>(&self, at: &'a CursorWindow) -> Option<&'a str> {
        if at.line != self.line
            || at.line_suffix != self.line_suffix
            || at.context_tail != self.context_tail
            || next_lines_head(at) != self.next_lines_head
        {
            return None;
        }
        at.line_prefix.strip_prefix(self.line_prefix.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::super::window::window_at as at;
    use super::*;

    #[test]
    fn serves_the_rest_while_typing_through() {
        let shown = Shown::new(&at("x = 1\nprint($0)\n"), "x + 1".into());
        assert_eq!(shown.remaining(&at("x = 1\nprint($0)\n")), Some("x + 1"));
        assert_eq!(shown.remaining(&at("x = 1\nprint(x $0)\n")), Some("+ 1"));
        assert_eq!(shown.remaining(&at("x = 1\nprint(x +$0)\n")), Some(" 1"));
    }

    #[test]
    fn misses_when_the_text_diverges_or_is_done() {
        let shown = Shown::new(&at("x = 1\nprint($0)\n"), "x + 1".into());
        assert_eq!(shown.remaining(&at("x = 1\nprint(y$0)\n")), None);
        assert_eq!(
            shown.remaining(&at("x = 1\nprint(x$0)\ny = 2\n")),
            None,
            "an edit below"
        );
        assert_eq!(shown.remaining(&at("x = 1\nprint(x + 1$0)\n")), None);
        assert_eq!(
            shown.remaining(&at("x = 2\nprint(x$0)\n")),
            None,
            "an edit above"
        );
        assert_eq!(
            shown.remaining(&at("x = 1\nprint(x$0))\n")),
            None,
            "the suffix changed"
        );
        assert_eq!(
            shown.remaining(&at("x = 1\nprint\n(x$0)\n")),
            None,
            "another line"
        );
    }
}
