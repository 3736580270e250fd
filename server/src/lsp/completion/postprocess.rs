//! Cleaning a raw model completion against the text around the cursor. Pure.
//!
//! The model (without FIM) never sees the code after the cursor; these rules use it anyway:
//! stop where the completion starts repeating what follows, never repeat the next line, keep
//! a multi-line completion inside the block it started in, and do not close brackets the
//! suffix already closes.

/// The text around the cursor that post-processing needs.
#[derive(Clone, Copy, Debug)]
pub struct Around<'a> {
    /// The cursor's line up to the cursor.
    pub line_prefix: &'a str,
    /// The cursor's line after the cursor.
    pub line_suffix: &'a str,
    /// The lines after the cursor's line (a bounded window).
    pub next_lines: &'a str,
    pub multi_line: bool,
}

/// Returns the text to suggest, or `None` when nothing useful is left.
pub fn clean(raw: &str, around: &Around<'_>) -> Option<String> {
    // A lone CR is a line break to an LSP client: the suggestion uses `\n` only.
    let mut text = raw.replace("\r\n", "\n").replace('\r', "\n");
    if !around.multi_line {
        if let Some(i) = text.find('\n') {
            text.truncate(i);
        }
    }
    cut_at_suffix_repeat(&mut text, around.line_suffix);
    if around.multi_line {
        cut_at_dedent(&mut text, around.line_prefix);
    }
    cut_at_next_line_repeat(&mut text, around);
    drop_closers_the_suffix_has(&mut text, around.line_suffix);
    let trimmed_len = text.trim_end().len();
    text.truncate(trimmed_len);
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

/// Stops where the completion's first line starts to repeat the rest of the cursor's line.
fn cut_at_suffix_repeat(text: &mut String, line_suffix: &str) {
    let suffix = line_suffix.trim();
    // Closing brackets alone are left to the bracket rule: `)` appears inside most calls.
    if suffix
        .chars()
        .all(|c| matches!(c, ')' | ']' | '}' | ';' | ',' | ':'))
    {
        return;
    }
    let first_line_end = text.find('\n').unwrap_or(text.len());
    if let Some(i) = text[..first_line_end].find(suffix) {
        text.truncate(i);
    }
}

fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

pub fn opens_block(line: &str) -> bool {
    let t = line.trim_end();
    t.ends_with(':')
        || t.ends_with('{')
        || t.ends_with('(')
        || t.ends_with('[')
        || t.ends_with("=>")
}

fn starts_with_closer(line: &str) -> bool {
    matches!(line.trim_start().chars().next(), Some('}' | ')' | ']'))
}

/// Keeps a multi-line completion inside its block: stops before the first later line that is
/// indented less than the cursor's line (or, when the cursor's line opens a block, not more;
/// a closing bracket at the block's level is kept as the block's end).
fn cut_at_dedent(text: &mut String, line_prefix: &str) {
    let first_line_end = text.find('\n').unwrap_or(text.len());
    let cursor_line = format!("{line_prefix}{}", &text[..first_line_end]);
    let base = indent_of(&cursor_line);
    let opened = opens_block(&cursor_line);
    let mut offset = first_line_end;
    while offset < text.len() {
        let start = offset + 1;
        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = &text[start..end];
        if !line.trim().is_empty() {
            let indent = indent_of(line);
            if indent < base || (opened && indent == base && !starts_with_closer(line)) {
                text.truncate(offset);
                return;
            }
            if opened && indent == base && starts_with_closer(line) {
                text.truncate(end);
                return;
            }
        }
        offset = end;
    }
}

/// Never repeats the next non-empty line of the document.
fn cut_at_next_line_repeat(text: &mut String, around: &Around<'_>) {
    let Some(next) = around
        .next_lines
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
    else {
        return;
    };
    let mut offset = 0usize;
    for (i, line) in text.clone().split('\n').enumerate() {
        let whole = if i == 0 {
            format!("{}{line}", around.line_prefix)
        } else {
            line.to_owned()
        };
        if whole.trim() == next {
            text.truncate(offset.saturating_sub(1));
            return;
        }
        offset += line.len() + 1;
    }
}

/// Drops trailing closing brackets that the completion does not open and that the text after
/// the cursor already starts with (`foo(|)` + `a, b)` → `a, b`).
fn drop_closers_the_suffix_has(text: &mut String, line_suffix: &str) {
    let mut depth = [0i32; 3];
    let mut unmatched_at = Vec::new();
    let (mut in_str, mut quote) = (false, ' ');
    for (i, c) in text.char_indices() {
        if in_str {
            if c == quote {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                in_str = true;
                quote = c;
            }
            '(' | '[' | '{' => depth[bracket_kind(c)] += 1,
            ')' | ']' | '}' => {
                let k = bracket_kind(c);
                if depth[k] > 0 {
                    depth[k] -= 1;
                } else {
                    unmatched_at.push(i);
                }
            }
            _ => {}
        }
    }
    // Only a trailing run of unmatched closers can be the suffix's own closers.
    let tail_start = unmatched_at
        .iter()
        .rev()
        .take_while(|&&i| {
            text[i + 1..]
                .trim()
                .chars()
                .all(|c| matches!(c, ')' | ']' | '}' | ';' | ','))
        })
        .last()
        .copied();
    if let Some(start) = tail_start {
        let closers: String = text[start..]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if line_suffix.trim_start().starts_with(&closers) {
            text.truncate(start);
        }
    }
}

fn bracket_kind(c: char) -> usize {
    match c {
        '(' | ')' => 0,
        '[' | ']' => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$0` marks the cursor in `doc`; the result is rendered as `None` or the text.
    fn check(doc: &str, raw: &str, multi_line: bool, expect: &str) {
        let (before, after) = doc.split_once("$0").expect("cursor marker");
        let line_prefix = before.rsplit('\n').next().unwrap_or("");
        let (line_suffix, next_lines) = after.split_once('\n').unwrap_or((after, ""));
        let around = Around {
            line_prefix,
            line_suffix,
            next_lines,
            multi_line,
        };
        let got = clean(raw, &around).unwrap_or_else(|| "None".into());
        assert_eq!(got, expect, "doc {doc:?} raw {raw:?}");
    }

    #[test]
    fn single_line_stops_at_newline_and_trims() {
        check("x = $0", "compute(1)  \nprint(x)", false, "compute(1)");
        check("x = $0", "compute(1)\rprint(x)", false, "compute(1)");
        check("if x:$0", "\r\n    y\r    z", true, "\n    y\n    z");
    }

    #[test]
    fn stops_where_the_rest_of_the_line_is_repeated() {
        check("print($0, end='')", "value, end='')", false, "value");
    }

    #[test]
    fn drops_closers_the_suffix_already_has() {
        check("foo($0)", "a, b)", false, "a, b");
        check("xs = [f($0)]", "1)]", false, "1");
        check("foo($0)", "bar(1))", false, "bar(1)");
        check("foo($0", "a, b)", false, "a, b)");
        check("s = f($0)", "')')", false, "')'");
    }

    #[test]
    fn never_repeats_the_next_line() {
        check(
            "def f(x):\n    $0\n    return x\n",
            "y = x\n    return x\n",
            true,
            "y = x",
        );
        check("a = 1\n$0\nb = 2\n", "b = 2", true, "None");
    }

    #[test]
    fn multi_line_stays_inside_the_block() {
        check(
            "def f(x):$0\n",
            "\n    y = x + 1\n    return y\ndef g():\n    pass",
            true,
            "\n    y = x + 1\n    return y",
        );
        check(
            "    if x:\n        $0",
            "a()\n        b()\n    else:\n        c()",
            true,
            "a()\n        b()",
        );
        check("fn f() {$0", "\n    1\n}\nfn g() {}", true, "\n    1\n}");
    }

    #[test]
    fn empty_and_whitespace_results_are_dropped() {
        check("x = $0", "   ", false, "None");
        check("x = $0", "\nfoo", false, "None");
        check("x = $0", "", false, "None");
    }
}
