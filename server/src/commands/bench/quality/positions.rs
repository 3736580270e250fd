//! Where `bench quality` asks for suggestions: positions sampled deterministically from real
//! source files, each a document as the user has it at that moment and the text they went on
//! to write (the truth). Pure.

use rand::seq::SliceRandom;

use crate::lsp::context::terms;
use rand::SeedableRng;
use serde::Serialize;

/// What kind of place the cursor is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Kind {
    /// After a line's indentation; the truth is the rest of the line.
    Line,
    /// In the middle of a line's code; the truth is the rest of the line.
    Mid,
    /// On an empty line after a line that opens a block; the truth is the whole block body.
    Block,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Line, Kind::Mid, Kind::Block];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Line => "line",
            Kind::Mid => "mid",
            Kind::Block => "block",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One position: the document with the truth taken out, the cursor (a char offset) where it
/// was, and the truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) kind: Kind,
    /// Index of the file in the corpus.
    pub(crate) file: usize,
    /// 0-based line of the cursor.
    pub(crate) line: usize,
    pub(crate) document: String,
    pub(crate) cursor: usize,
    pub(crate) truth: String,
}

impl Position {
    /// The text of the cursor's line before the cursor.
    pub(crate) fn line_prefix(&self) -> &str {
        let before = char_prefix(&self.document, self.cursor);
        before.rsplit('\n').next().unwrap_or("")
    }
}

fn char_prefix(text: &str, n_chars: usize) -> &str {
    match text.char_indices().nth(n_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Lines whose code starts with these are comments: left out (they are prose, not code).
const COMMENT_STARTS: [&str; 5] = ["#", "//", "/*", "*", "--"];
/// Shortest code after the indentation for a line position, and for a mid-line one.
const MIN_LINE_CHARS: usize = 6;
const MIN_MID_CHARS: usize = 12;
/// Block bodies of this many non-blank lines.
const BLOCK_LINES: std::ops::RangeInclusive<usize> = 2..=8;

fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

fn is_code(content: &str) -> bool {
    !content.is_empty() && !COMMENT_STARTS.iter().any(|c| content.starts_with(c))
}

/// Every candidate position of `kind` in `text` (file number `file`), in order. Mid-line
/// cursors are chosen with `rng`.
fn candidates(text: &str, file: usize, kind: Kind, rng: &mut impl rand::Rng) -> Vec<Position> {
    let lines: Vec<&str> = text.split('\n').collect();
    let joined = |from: usize, to: usize| lines[from..to].join("\n");
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let indent = indent_of(line);
        let content = line[indent.len()..].trim_end();
        if !is_code(content) {
            continue;
        }
        let before = joined(0, i);
        let after = joined(i + 1, lines.len());
        let document = |head: &str| {
            let cursor_line = head;
            let mut d = String::with_capacity(text.len());
            if i > 0 {
                d.push_str(&before);
                d.push('\n');
            }
            let cursor = d.chars().count() + cursor_line.chars().count();
            d.push_str(cursor_line);
            if i + 1 < lines.len() {
                d.push('\n');
                d.push_str(&after);
            }
            (d, cursor)
        };
        match kind {
            Kind::Line if content.chars().count() >= MIN_LINE_CHARS => {
                let (document, cursor) = document(indent);
                out.push(Position {
                    kind,
                    file,
                    line: i,
                    document,
                    cursor,
                    truth: content.to_owned(),
                });
            }
            Kind::Mid if content.chars().count() >= MIN_MID_CHARS => {
                let n = content.chars().count();
                let cut = rng.random_range(3..n - 3);
                let split = content
                    .char_indices()
                    .nth(cut)
                    .map_or(content.len(), |(b, _)| b);
                let (head, rest) = content.split_at(split);
                let (document, cursor) = document(&format!("{indent}{head}"));
                out.push(Position {
                    kind,
                    file,
                    line: i,
                    document,
                    cursor,
                    truth: rest.to_owned(),
                });
            }
            Kind::Block
                if (content.ends_with('{') || content.ends_with(':')) && i + 1 < lines.len() =>
            {
                // The body: the lines after the opener indented deeper than it (blank lines
                // inside it included), up to the first line that is not.
                let body_indent = indent_of(lines[i + 1]);
                if body_indent.len() <= indent.len() || lines[i + 1].trim().is_empty() {
                    continue;
                }
                let mut end = i + 1;
                while end < lines.len()
                    && (lines[end].trim().is_empty() || indent_of(lines[end]).len() > indent.len())
                {
                    end += 1;
                }
                while end > i + 1 && lines[end - 1].trim().is_empty() {
                    end -= 1;
                }
                let n_code = lines[i + 1..end]
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .count();
                if !BLOCK_LINES.contains(&n_code) {
                    continue;
                }
                let body = joined(i + 1, end);
                let truth = body[body_indent.len()..].trim_end().to_owned();
                let mut document = joined(0, i + 1);
                document.push('\n');
                let cursor = document.chars().count() + body_indent.chars().count();
                document.push_str(body_indent);
                if end < lines.len() {
                    document.push('\n');
                    document.push_str(&joined(end, lines.len()));
                }
                out.push(Position {
                    kind,
                    file,
                    line: i + 1,
                    document,
                    cursor,
                    truth,
                });
            }
            _ => {}
        }
    }
    out
}

/// Which candidate positions `sample` may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    All,
    /// Positions whose truth uses a name its own file imports from another file of the corpus
    /// (CrossCodeEval's construction): the name is defined there and not in its own file, the
    /// own file imports it through an import that names that file (the name from the file's
    /// module, or the module itself: [`terms::Imports::brings_from`]), and the truth is the
    /// name's first use in the file (nowhere before the cursor but on import lines). Import
    /// lines and Python docstrings are left out. The model cannot know the name from the file
    /// before the cursor.
    CrossFile,
}

/// What the cross-file filter knows of each file.
struct FileFacts<'a> {
    /// The names it defines (`terms::definition`).
    defines: std::collections::HashSet<&'a str>,
    imports: terms::Imports<'a>,
    /// Per identifier: the first line (0-based) that uses it, import lines and prose left out.
    first_use: std::collections::HashMap<&'a str, usize>,
    /// Per line: inside a Python triple-quoted string, or opening one (prose).
    prose: Vec<bool>,
}

fn facts(files: &[String]) -> Vec<FileFacts<'_>> {
    files
        .iter()
        .map(|text| {
            let prose = prose_lines(text);
            let mut first_use = std::collections::HashMap::new();
            for (i, line) in text.split('\n').enumerate() {
                if !terms::is_import(line) && !prose[i] {
                    for w in terms::identifiers(line) {
                        first_use.entry(w).or_insert(i);
                    }
                }
            }
            FileFacts {
                defines: text.lines().filter_map(terms::definition).collect(),
                imports: terms::Imports::of(text),
                first_use,
                prose,
            }
        })
        .collect()
}

/// Per line of `text`: whether it is inside a triple-quoted string or starts one (a Python
/// docstring). Counting quotes is enough for docstrings; a `"""` inside a one-line string
/// would flip the lines after it (rare in real code).
fn prose_lines(text: &str) -> Vec<bool> {
    const QUOTES: [&str; 2] = ["\"\"\"", "'''"];
    let mut inside = false;
    text.split('\n')
        .map(|line| {
            let prose = inside || QUOTES.iter().any(|q| line.trim_start().starts_with(q));
            let n: usize = QUOTES.iter().map(|q| line.matches(q).count()).sum();
            inside ^= n % 2 == 1;
            prose
        })
        .collect()
}

/// The names `p`'s truth uses that make it a cross-file position (see [`Filter`]), each with
/// the other files that define it.
fn cross_file_names<'t>(
    p: &'t Position,
    facts: &[FileFacts],
    rels: &[String],
) -> Vec<(&'t str, Vec<usize>)> {
    let own = &facts[p.file];
    if terms::is_import(&p.truth) || own.prose.get(p.line).copied().unwrap_or(false) {
        return Vec::new();
    }
    let on_line_before: std::collections::HashSet<&str> =
        terms::identifiers(p.line_prefix()).collect();
    let first_use_here =
        |w: &str| own.first_use.get(w).is_none_or(|&l| l >= p.line) && !on_line_before.contains(w);
    terms::identifiers(&p.truth)
        .filter(|w| !own.defines.contains(w) && first_use_here(w))
        .map(|w| {
            let files = (0..facts.len())
                .filter(|&i| {
                    i != p.file
                        && facts[i].defines.contains(w)
                        && own.imports.brings_from(w, &rels[i])
                })
                .collect::<Vec<_>>();
            (w, files)
        })
        .filter(|(_, files)| !files.is_empty())
        .collect()
}

/// `per_kind` positions of each of `kinds` from `files` (whose paths relative to the corpus
/// are `rels`) that pass `filter`, chosen by `seed`; the same arguments give the same
/// positions.
pub(crate) fn sample(
    files: &[String],
    rels: &[String],
    kinds: &[Kind],
    per_kind: usize,
    seed: u64,
    filter: Filter,
) -> Vec<Position> {
    let facts = facts(files);
    let mut out = Vec::new();
    for &kind in kinds {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (kind as u64) << 32);
        let mut all: Vec<Position> = files
            .iter()
            .enumerate()
            .flat_map(|(i, text)| candidates(text, i, kind, &mut rng))
            .filter(|p| filter == Filter::All || !cross_file_names(p, &facts, rels).is_empty())
            .collect();
        all.shuffle(&mut rng);
        // At most a quarter of a kind's positions from one file, so one long file does not
        // stand for the corpus.
        let cap = (per_kind / 4).max(1);
        let mut per_file = std::collections::HashMap::new();
        for p in all {
            let n = per_file.entry(p.file).or_insert(0usize);
            if *n < cap && out.iter().filter(|q: &&Position| q.kind == kind).count() < per_kind {
                *n += 1;
                out.push(p);
            }
        }
    }
    out
}

/// Where the names that make `p` a cross-file position (see [`Filter`]) are defined: (file,
/// 0-based line) of each such definition.
pub(crate) fn definitions_elsewhere(
    files: &[String],
    rels: &[String],
    p: &Position,
) -> Vec<(usize, usize)> {
    let facts = facts(files);
    let mut out: Vec<(usize, usize)> = cross_file_names(p, &facts, rels)
        .into_iter()
        .flat_map(|(name, defining)| {
            defining.into_iter().flat_map(move |f| {
                files[f]
                    .lines()
                    .enumerate()
                    .filter(move |(_, l)| terms::definition(l) == Some(name))
                    .map(move |(n, _)| (f, n))
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUST: &str = "fn main() {\n    let x = compute(1, 2);\n    // a comment here\n    if x > 0 {\n        println!(\"{x}\");\n        done();\n    }\n}\n";

    fn only(kind: Kind) -> Vec<Position> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        candidates(RUST, 0, kind, &mut rng)
    }

    /// The document with the truth put back at the cursor is the file again (for line and mid
    /// positions; a block position drops its body's first indentation only).
    fn restored(p: &Position) -> String {
        let at = p
            .document
            .char_indices()
            .nth(p.cursor)
            .map_or(p.document.len(), |(b, _)| b);
        format!("{}{}{}", &p.document[..at], p.truth, &p.document[at..])
    }

    #[test]
    fn line_positions_start_after_the_indentation_and_skip_comments() {
        let got = only(Kind::Line);
        let truths: Vec<&str> = got.iter().map(|p| p.truth.as_str()).collect();
        assert_eq!(
            truths,
            [
                "fn main() {",
                "let x = compute(1, 2);",
                "if x > 0 {",
                "println!(\"{x}\");",
                "done();"
            ]
        );
        for p in &got {
            assert_eq!(restored(p), RUST);
            assert!(p.line_prefix().chars().all(char::is_whitespace));
        }
    }

    #[test]
    fn mid_positions_cut_inside_the_code() {
        let got = only(Kind::Mid);
        assert!(!got.is_empty());
        for p in &got {
            assert_eq!(restored(p), RUST);
            assert!(p.line_prefix().trim().len() >= 3, "{:?}", p.line_prefix());
            assert!(p.truth.chars().count() >= 3);
        }
    }

    #[test]
    fn block_positions_take_the_whole_body_out() {
        let got = only(Kind::Block);
        let bodies: Vec<&str> = got.iter().map(|p| p.truth.as_str()).collect();
        assert_eq!(
            bodies,
            [
                "let x = compute(1, 2);\n    // a comment here\n    if x > 0 {\n        println!(\"{x}\");\n        done();\n    }",
                "println!(\"{x}\");\n        done();"
            ]
        );
        let p = &got[1];
        assert_eq!(
            p.document,
            "fn main() {\n    let x = compute(1, 2);\n    // a comment here\n    if x > 0 {\n        \n    }\n}\n"
        );
        assert_eq!(p.line_prefix(), "        ");
    }

    #[test]
    fn sampling_is_deterministic_and_bounded_per_file() {
        let files = vec![RUST.to_owned(), RUST.replace("compute", "other")];
        let rels = ["a.rs".to_owned(), "b.rs".to_owned()];
        let a = sample(&files, &rels, &[Kind::Line, Kind::Mid], 4, 3, Filter::All);
        let b = sample(&files, &rels, &[Kind::Line, Kind::Mid], 4, 3, Filter::All);
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|p| p.kind == Kind::Line).count(), 2);
        assert!(a.iter().all(|p| p.file < 2));
    }

    #[test]
    fn cross_file_positions_are_the_first_use_of_a_name_imported_from_another_file() {
        let app = "from lib import compute\nimport util\n\ndef main():\n    \"\"\"Calls compute\n    and compute again.\"\"\"\n    total = compute(1, 2)\n    middle = helper(3)\n    other = util.scale(4)\n    again = compute(5, 6)\n    return total\n";
        let lib = "def compute(a, b):\n    return a + b\n\ndef helper(a):\n    return a\n";
        let util = "def scale(a):\n    return 2 * a\n";
        let files = vec![app.to_owned(), lib.to_owned(), util.to_owned()];
        let rels = ["app.py", "lib.py", "pkg/util.py"].map(str::to_owned);
        let got = sample(&files, &rels, &[Kind::Line], 10, 1, Filter::CrossFile);
        let mut truths: Vec<&str> = got.iter().map(|p| p.truth.as_str()).collect();
        truths.sort_unstable();
        // `compute` is named in an import; `scale`'s module is imported; `helper` is defined
        // in lib.py but app.py does not import it; the second use of `compute` is not its
        // first; the docstring is prose; the import lines themselves are left out; lib.py and
        // util.py import nothing.
        assert_eq!(truths, ["other = util.scale(4)", "total = compute(1, 2)"]);
        let p = got.iter().find(|p| p.truth.starts_with("total")).unwrap();
        assert_eq!(definitions_elsewhere(&files, &rels, p), [(1, 0)]);
    }
}
