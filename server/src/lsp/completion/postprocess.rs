//! Cleaning a raw model completion against the text around the cursor. Pure.
//!
//! The model (without FIM) never sees the code after the cursor; these rules use it anyway:
//! stop where the completion starts repeating what follows, never repeat the next line, keep
//! a multi-line completion inside the block it started in, and do not close brackets the
//! suffix already closes.

/// Where a suggestion lands, as post-processing needs it: the cursor's line and what follows.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    /// The cursor's line up to the cursor.
    pub line_prefix: &'a str,
    /// The cursor's line after the cursor.
    pub line_suffix: &'a str,
    /// The lines after the cursor's line (a bounded window).
    pub next_lines: &'a str,
    pub multi_line: bool,
}

/// Returns the text to suggest, or `None` when nothing useful is left.
pub fn clean(raw: &str, around: &Placement<'_>) -> Option<String> {
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
    if around.multi_line {
        cut_unclosed_block(&mut text, around);
    }
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

/// The document's next non-empty line, trailing spaces left out.
fn next_line<'a>(around: &Placement<'a>) -> Option<&'a str> {
    around
        .next_lines
        .lines()
        .map(str::trim_end)
        .find(|l| !l.trim().is_empty())
}

/// The first line a suggestion must not have: with the text before the cursor, it would be
/// the document's next line, and [`clean`] would drop all of it.
pub fn repeated_first_line<'a>(around: &Placement<'a>) -> Option<&'a str> {
    next_line(around)?.strip_prefix(around.line_prefix)
}

/// Never repeats the next non-empty line of the document, indentation included: a closing
/// `    }` of the suggestion's own block is not the document's `}` one level out.
fn cut_at_next_line_repeat(text: &mut String, around: &Placement<'_>) {
    let Some(next) = next_line(around) else {
        return;
    };
    let mut offset = 0usize;
    for (i, line) in text.clone().split('\n').enumerate() {
        let whole = if i == 0 {
            format!("{}{line}", around.line_prefix)
        } else {
            line.to_owned()
        };
        if whole.trim_end() == next {
            text.truncate(offset.saturating_sub(1));
            return;
        }
        offset += line.len() + 1;
    }
}

/// Walks `text`'s brackets outside string literals: `on_unmatched(i, c)` for each closer that
/// closes nothing opened in `text`, and the openers still open at the end (byte offset, the
/// closer they need).
fn walk_brackets(text: &str, mut on_unmatched: impl FnMut(usize, char)) -> Vec<(usize, char)> {
    let mut open: Vec<(usize, char)> = Vec::new();
    let (mut in_str, mut quote, mut escaped) = (false, ' ', false);
    for (i, c) in text.char_indices() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote || c == '\n' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                in_str = true;
                quote = c;
            }
            '(' => open.push((i, ')')),
            '[' => open.push((i, ']')),
            '{' => open.push((i, '}')),
            ')' | ']' | '}' => {
                if open.last().is_some_and(|&(_, need)| need == c) {
                    open.pop();
                } else {
                    on_unmatched(i, c);
                }
            }
            _ => {}
        }
    }
    open
}

/// When the text after the cursor starts with closing brackets (an auto-paired `foo(|)`,
/// `if (|) {`), the suggestion ends where it would close the first of them: `a, b);` becomes
/// `a, b`, never `a, b);)`.
fn drop_closers_the_suffix_has(text: &mut String, line_suffix: &str) {
    let Some(first) = line_suffix
        .trim_start()
        .chars()
        .next()
        .filter(|c| matches!(c, ')' | ']' | '}'))
    else {
        return;
    };
    let mut cut = None;
    walk_brackets(text, |i, c| {
        if cut.is_none() && c == first {
            cut = Some(i);
        }
    });
    if let Some(i) = cut {
        text.truncate(i);
    }
}

/// A multi-line suggestion does not leave a bracket it opened unclosed (a block cut off by
/// the token budget) unless the document's next line closes it at the opener's indentation:
/// it is cut back to its last line end where every bracket it opened is closed, or to its
/// first line.
fn cut_unclosed_block(text: &mut String, around: &Placement<'_>) {
    if !text.contains('\n') {
        return;
    }
    let open = walk_brackets(text, |_, _| {});
    let Some(&(at, need)) = open.last() else {
        return;
    };
    let opener_line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let opener_indent = if opener_line_start == 0 {
        indent_of(&format!("{}{}", around.line_prefix, &text[..at]))
    } else {
        indent_of(&text[opener_line_start..at])
    };
    let next = around.next_lines.lines().find(|l| !l.trim().is_empty());
    if open.len() == 1
        && next.is_some_and(|l| l.trim_start().starts_with(need) && indent_of(l) == opener_indent)
    {
        return;
    }
    // The last line end at which nothing the suggestion opened is open.
    let mut keep = text.find('\n').unwrap_or(text.len());
    let mut offset = 0;
    for line in text.split('\n') {
        let end = offset + line.len();
        if walk_brackets(&text[..end], |_, _| {}).is_empty() {
            keep = keep.max(end);
        }
        offset = end + 1;
    }
    text.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$0` marks the cursor in `doc`; the result is rendered as `None` or the text.
    fn check(doc: &str, raw: &str, multi_line: bool, expect: &str) {
        let (before, after) = doc.split_once("$0").expect("cursor marker");
        let line_prefix = before.rsplit('\n').next().unwrap_or("");
        let (line_suffix, next_lines) = after.split_once('\n').unwrap_or((after, ""));
        let around = Placement {
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
        // The suffix starts with the closer: the suggestion ends where it closes it.
        check("foo($0)", "a, b);", false, "a, b");
        check("if ($0)", "x > 0) {", false, "x > 0");
        check("foo(bar($0), x)", "1), y)", false, "1");
    }

    #[test]
    fn a_block_keeps_its_closing_brace_and_closes_what_it_opens() {
        check(
            "fn f() {\n    $0\n}",
            "for x in xs {\n        use(x);\n    }",
            true,
            "for x in xs {\n        use(x);\n    }",
        );
        // Cut off by the budget: back to the last line end where nothing is left open.
        check(
            "fn f() {\n    $0\n}",
            "let a = 1;\n    for x in xs {\n        use(x);",
            true,
            "let a = 1;",
        );
        // Nothing to fall back on: the first line stays (the user goes on typing the block).
        check(
            "fn f() {\n    $0\n}",
            "for x in xs {\n        use(x);",
            true,
            "for x in xs {",
        );
        // The next line closes it at the opener's indentation: complete as it is.
        check(
            "    if x {$0\n    }",
            "\n        a();\n        b();",
            true,
            "\n        a();\n        b();",
        );
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
    fn the_first_line_to_avoid_is_the_next_line_less_the_text_before_the_cursor() {
        let first_line = |doc: &str| {
            let (before, after) = doc.split_once("$0").expect("cursor marker");
            let (line_suffix, next_lines) = after.split_once('\n').unwrap_or((after, ""));
            let around = Placement {
                line_prefix: before.rsplit('\n').next().unwrap_or(""),
                line_suffix,
                next_lines,
                multi_line: true,
            };
            repeated_first_line(&around).map(str::to_owned)
        };
        let avoid = first_line("def f(x):\n    $0\n\n    return x  \n");
        assert_eq!(avoid.as_deref(), Some("return x"));
        // What `clean` drops whole is exactly that line after the text before the cursor.
        check(
            "def f(x):\n    $0\n\n    return x  \n",
            "return x",
            true,
            "None",
        );
        assert_eq!(first_line("    x = $0\n    x = 2\n").as_deref(), Some("2"));
        assert_eq!(first_line("    x = $0\n    y = 2\n"), None);
        assert_eq!(first_line("        $0\n    }\n"), None);
        assert_eq!(first_line("x = 1$0"), None);
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
