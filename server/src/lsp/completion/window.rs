//! What the model sees: the window of text around the cursor, cut from a document snapshot, with a
//! prompt-window start that is sticky so typing keeps the KV cache append-only. Pure.

use ropey::Rope;

/// Bytes of text after the cursor kept for FIM prompts and post-processing.
const SUFFIX_CHARS: usize = 2048;
/// Chars before the cursor's line compared by the type-through cache.
const CONTEXT_TAIL_CHARS: usize = 256;

/// How large the prompt window may grow before its start moves, and how much it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowPolicy {
    pub max_chars: usize,
    pub keep_chars: usize,
}

/// The window of a document around the cursor that a prompt is made from (and where a
/// suggestion lands: the cursor's line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CursorWindow {
    pub line: usize,
    /// Char offset where the prompt window starts (a line start, when possible).
    pub window_start: usize,
    /// Window start .. cursor.
    pub prefix: String,
    /// Cursor .. a bounded distance after it.
    pub suffix: String,
    pub line_prefix: String,
    pub line_suffix: String,
    /// Up to 256 chars before the cursor's line: what the type-through cache compares.
    pub context_tail: String,
}

impl CursorWindow {
    /// The lines after the cursor's line, from the bounded suffix.
    pub fn next_lines(&self) -> &str {
        self.suffix.split_once('\n').map_or("", |(_, rest)| rest)
    }
}

/// Characters per token assumed when sizing a first window (code in BPE and SentencePiece
/// vocabularies runs 3–4; the lower figure keeps the window inside its time budget).
const CHARS_PER_TOKEN: f64 = 3.0;
/// The smallest first window: a dozen lines of context.
const FIRST_WINDOW_MIN_CHARS: usize = 512;

/// Whether the window moves because typing took it past `max_chars` (its kept half is in the
/// KV cache, shifted) rather than starting afresh where nothing is cached: a document's first
/// request, or a cursor that jumped before the window or far past it.
pub fn slides(prev: Option<usize>, cursor: usize, policy: WindowPolicy) -> bool {
    prev.is_some_and(|start| {
        start <= cursor && cursor - start <= policy.max_chars + policy.keep_chars
    })
}

/// How many characters a window that starts afresh keeps before the cursor: what the model
/// evaluates in `budget_ms` at `tokens_per_s` (measured; unknown before the first job: half
/// the usual), between [`FIRST_WINDOW_MIN_CHARS`] and `policy.keep_chars`. The window then
/// grows as the user types, its start staying put, so the cache stays append-only.
pub fn first_window_chars(
    policy: WindowPolicy,
    budget_ms: u32,
    tokens_per_s: Option<f64>,
) -> usize {
    if budget_ms == 0 {
        return policy.keep_chars;
    }
    let chars = match tokens_per_s {
        Some(rate) => (rate * f64::from(budget_ms) / 1000.0 * CHARS_PER_TOKEN) as usize,
        None => policy.keep_chars / 2,
    };
    chars.clamp(
        FIRST_WINDOW_MIN_CHARS.min(policy.keep_chars),
        policy.keep_chars,
    )
}

/// Splits a first window's time budget (`firstSuggestionMs`) between the file's window and
/// the context from other files: with context on, each gets half, the context as tokens at
/// `tokens_per_s` (unknown before the first job: a quarter of `context_max`). Returns the
/// window's milliseconds and the context's tokens. A budget of 0 ms limits neither.
pub fn share_first_budget(
    budget_ms: u32,
    tokens_per_s: Option<f64>,
    context: bool,
    context_max: usize,
) -> (u32, usize) {
    if budget_ms == 0 || !context || context_max == 0 {
        return (budget_ms, context_max);
    }
    let half = budget_ms / 2;
    let tokens = match tokens_per_s {
        Some(rate) => (rate * f64::from(half) / 1000.0) as usize,
        None => context_max / 4,
    };
    (half.max(1), tokens.min(context_max))
}

/// Chooses the window start: the previous one while it is still a line start at most
/// `max_chars` before the cursor; otherwise the first line start after `cursor - keep_chars`.
pub fn window_start(
    rope: &Rope,
    cursor: usize,
    prev: Option<usize>,
    policy: WindowPolicy,
) -> usize {
    if let Some(start) = prev {
        let is_line_start =
            start <= rope.len_chars() && rope.line_to_char(rope.char_to_line(start)) == start;
        if start <= cursor && cursor - start <= policy.max_chars && is_line_start {
            return start;
        }
    }
    let from = cursor.saturating_sub(policy.keep_chars);
    let line = rope.char_to_line(from);
    let line_start = rope.line_to_char(line);
    if line_start == from {
        return from;
    }
    let next = if line + 1 < rope.len_lines() {
        rope.line_to_char(line + 1)
    } else {
        cursor
    };
    if next <= cursor {
        next
    } else {
        from
    }
}

/// Cuts the window of `cursor` (a char offset) out of `rope`, from `window_start`.
pub fn cursor_window(rope: &Rope, cursor: usize, window_start: usize) -> CursorWindow {
    let cursor = cursor.min(rope.len_chars());
    let window_start = window_start.min(cursor);
    let line = rope.char_to_line(cursor);
    let line_start = rope.line_to_char(line);
    let line_end = if line + 1 < rope.len_lines() {
        rope.line_to_char(line + 1)
    } else {
        rope.len_chars()
    };
    let line_suffix: String = rope
        .slice(cursor..line_end)
        .chars()
        .take_while(|c| *c != '\n' && *c != '\r')
        .collect();
    let suffix_end = (cursor + SUFFIX_CHARS).min(rope.len_chars());
    CursorWindow {
        line,
        window_start,
        prefix: rope.slice(window_start..cursor).to_string(),
        suffix: rope.slice(cursor..suffix_end).to_string(),
        line_prefix: rope.slice(line_start..cursor).to_string(),
        line_suffix,
        context_tail: rope
            .slice(line_start.saturating_sub(CONTEXT_TAIL_CHARS)..line_start)
            .to_string(),
    }
}

/// Tests: the cursor window of `doc`, where `$0` marks the cursor (the window starts at 0).
#[cfg(test)]
pub fn window_at(doc: &str) -> CursorWindow {
    let (before, after) = doc.split_once("$0").expect("cursor marker");
    let rope = Rope::from_str(&format!("{before}{after}"));
    cursor_window(&rope, before.chars().count(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: WindowPolicy = WindowPolicy {
        max_chars: 20,
        keep_chars: 10,
    };

    #[test]
    fn window_start_is_sticky_then_jumps_to_a_line_start() {
        let rope = Rope::from_str("aaaa\nbbbb\ncccc\ndddd\neeee\nffff\n");
        assert_eq!(window_start(&rope, 4, None, POLICY), 0);
        // Typing onwards keeps the start until the window exceeds max_chars.
        assert_eq!(window_start(&rope, 19, Some(0), POLICY), 0);
        // 24 - 10 = 14 is inside "cccc\n"'s newline; the next line starts at 15.
        assert_eq!(window_start(&rope, 24, Some(0), POLICY), 15);
        assert_eq!(window_start(&rope, 24, Some(15), POLICY), 15);
        // A start that is no longer a line start (an edit above shifted it) is replaced.
        assert_eq!(window_start(&rope, 24, Some(16), POLICY), 15);
        // A cursor before the start (a jump upwards) moves it back.
        assert_eq!(window_start(&rope, 3, Some(15), POLICY), 0);
    }

    #[test]
    fn a_window_that_starts_afresh_fits_the_time_budget() {
        let policy = WindowPolicy {
            max_chars: 4096,
            keep_chars: 2048,
        };
        // 200 tokens/s, 700 ms: 140 tokens, 420 characters, raised to the minimum.
        assert_eq!(first_window_chars(policy, 700, Some(200.0)), 512);
        assert_eq!(first_window_chars(policy, 700, Some(400.0)), 840);
        // A fast machine keeps the usual half; unmeasured, a quarter; 0 turns it off.
        assert_eq!(first_window_chars(policy, 700, Some(5000.0)), 2048);
        assert_eq!(first_window_chars(policy, 700, None), 1024);
        assert_eq!(first_window_chars(policy, 0, Some(200.0)), 2048);
        // Typing past the window's end slides it (the kept half is cached); a first request,
        // a jump back or far ahead starts afresh.
        assert!(slides(Some(100), 4300, policy));
        assert!(!slides(None, 4300, policy));
        assert!(!slides(Some(5000), 4300, policy));
        assert!(!slides(Some(100), 100 + 4096 + 2048 + 1, policy));
    }

    #[test]
    fn context_takes_half_of_a_first_windows_time() {
        // 400 tokens/s, 700 ms: 350 ms for the window, 140 tokens of context.
        assert_eq!(share_first_budget(700, Some(400.0), true, 512), (350, 140));
        // A fast machine: the whole context; unmeasured: a quarter of it.
        assert_eq!(share_first_budget(700, Some(5000.0), true, 512), (350, 512));
        assert_eq!(share_first_budget(700, None, true, 512), (350, 128));
        // Context off, or no time budget: nothing shared.
        assert_eq!(share_first_budget(700, Some(400.0), false, 512), (700, 512));
        assert_eq!(share_first_budget(0, Some(400.0), true, 512), (0, 512));
    }

    #[test]
    fn surroundings_of_a_cursor() {
        let rope = Rope::from_str("def f(x):\n    return x + 1\nprint(f(2))\n");
        let cursor = "def f(x):\n    return x".chars().count();
        let s = cursor_window(&rope, cursor, 0);
        assert_eq!(s.line, 1);
        assert_eq!(s.prefix, "def f(x):\n    return x");
        assert_eq!(s.line_prefix, "    return x");
        assert_eq!(s.line_suffix, " + 1");
        assert_eq!(s.next_lines(), "print(f(2))\n");
        assert_eq!(s.context_tail, "def f(x):\n");
    }
}
