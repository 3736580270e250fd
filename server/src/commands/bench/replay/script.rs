//! The editing a replay performs, planned ahead from source files and a seed: a person
//! re-typing parts of real files at human speed (bursts and pauses, typos fixed with
//! backspace, an edit far above the cursor now and then, switching between open files, opening
//! new ones). Pure and deterministic: the same files and seed give the same script.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ropey::Rope;

/// What the replay does at `at_ms` after its start.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Step {
    pub at_ms: u64,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Opens document `doc` (its URI is the replay's) with this text.
    Open {
        doc: usize,
        name: String,
        text: String,
    },
    /// Closes document `doc`.
    Close { doc: usize },
    /// One keystroke: replace `start..end` (LSP line / UTF-16 column) by `text`, then ask for a
    /// completion at `cursor`.
    Key {
        doc: usize,
        start: (u32, u32),
        end: (u32, u32),
        text: String,
        cursor: (u32, u32),
        kind: KeyKind,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Type,
    Backspace,
    /// Typing at a point far above where the user was.
    FarEdit,
}

/// How the person types.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Style {
    /// Keystrokes in the script.
    pub keystrokes: usize,
    /// Most documents open at once.
    pub max_open: usize,
    /// Lines re-typed per region.
    pub region_lines: (usize, usize),
    /// Milliseconds between keystrokes inside a burst.
    pub key_ms: (u64, u64),
    /// Pause at a line end (probability, milliseconds).
    pub line_pause: (f64, (u64, u64)),
    /// A typo (fixed by a backspace) per typed character.
    pub typo: f64,
    /// An edit far above the cursor, per line typed.
    pub far_edit: f64,
    /// Switching to another open document, per line typed.
    pub switch: f64,
    /// Opening another file, per line typed.
    pub open: f64,
    /// Milliseconds spent looking at a newly opened file before typing in it (0: none; the
    /// default keeps the scripts of earlier measurements).
    pub look_ms: u64,
}

impl Default for Style {
    fn default() -> Style {
        Style {
            keystrokes: 600,
            max_open: 8,
            region_lines: (3, 12),
            key_ms: (60, 180),
            line_pause: (0.35, (300, 1500)),
            typo: 0.03,
            far_edit: 0.05,
            switch: 0.15,
            open: 0.1,
            look_ms: 0,
        }
    }
}

/// A document as the replay sees it: its text and the part still to re-type.
struct Doc {
    open: bool,
    rope: Rope,
    /// Char offset of the cursor (where the region is being re-typed).
    cursor: usize,
    /// What is left to type, in order.
    pending: Vec<char>,
}

impl Doc {
    fn position(&self, char_idx: usize) -> (u32, u32) {
        let line = self.rope.char_to_line(char_idx);
        let col: usize = self
            .rope
            .slice(self.rope.line_to_char(line)..char_idx)
            .chars()
            .map(char::len_utf16)
            .sum();
        (line as u32, col as u32)
    }
}

/// Files to replay, as (name, text). Files with fewer lines than a region are skipped.
pub(crate) fn plan(files: &[(String, String)], seed: u64, style: &Style) -> Vec<Step> {
    let usable: Vec<&(String, String)> = files
        .iter()
        .filter(|(_, t)| t.lines().count() > style.region_lines.1 + 2)
        .collect();
    if usable.is_empty() || style.keystrokes == 0 {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut docs: Vec<Doc> = Vec::new();
    let mut at_ms = 0u64;
    let mut keys = 0usize;
    let mut next_file = rng.random_range(0..usable.len());

    let open = |rng: &mut StdRng,
                docs: &mut Vec<Doc>,
                steps: &mut Vec<Step>,
                at_ms: u64,
                file: &(String, String)| {
        let (name, text) = file;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let n = rng.random_range(style.region_lines.0..=style.region_lines.1);
        let first = rng.random_range(1..lines.len() - n);
        let before: String = lines[..first].concat();
        let region: String = lines[first..first + n].concat();
        let after: String = lines[first + n..].concat();
        let doc = docs.len();
        let cursor = before.chars().count();
        steps.push(Step {
            at_ms,
            action: Action::Open {
                doc,
                name: name.clone(),
                text: format!("{before}{after}"),
            },
        });
        docs.push(Doc {
            open: true,
            rope: Rope::from_str(&format!("{before}{after}")),
            cursor,
            pending: region.chars().collect(),
        });
        doc
    };

    let mut current = open(&mut rng, &mut docs, &mut steps, at_ms, usable[next_file]);
    at_ms += style.look_ms;
    next_file = (next_file + 1) % usable.len();
    while keys < style.keystrokes {
        if docs[current].pending.is_empty() {
            // Region done: a new file, or another one that still has typing left.
            let other = (0..docs.len()).find(|&d| docs[d].open && !docs[d].pending.is_empty());
            let n_open = docs.iter().filter(|d| d.open).count();
            current = match other {
                Some(d) if n_open >= style.max_open || rng.random_bool(0.5) => d,
                _ => {
                    at_ms += rng.random_range(800..2500);
                    if n_open >= style.max_open {
                        // Close the first finished document (the current one at worst).
                        let done = (0..docs.len())
                            .find(|&d| docs[d].open && docs[d].pending.is_empty())
                            .unwrap_or(current);
                        docs[done].open = false;
                        steps.push(Step {
                            at_ms,
                            action: Action::Close { doc: done },
                        });
                    }
                    let d = open(&mut rng, &mut docs, &mut steps, at_ms, usable[next_file]);
                    at_ms += style.look_ms;
                    next_file = (next_file + 1) % usable.len();
                    d
                }
            };
            continue;
        }
        let c = docs[current].pending.remove(0);
        at_ms += rng.random_range(style.key_ms.0..=style.key_ms.1);
        if c.is_alphanumeric() && rng.random_bool(style.typo) {
            let wrong = char::from(b'a' + rng.random_range(0..26u8));
            key(
                &mut docs[current],
                current,
                &mut steps,
                at_ms,
                &wrong.to_string(),
                KeyKind::Type,
            );
            at_ms += rng.random_range(150..400);
            backspace(&mut docs[current], current, &mut steps, at_ms);
            at_ms += rng.random_range(style.key_ms.0..=style.key_ms.1);
            keys += 2;
        }
        key(
            &mut docs[current],
            current,
            &mut steps,
            at_ms,
            &c.to_string(),
            KeyKind::Type,
        );
        keys += 1;
        if c == '\n' {
            if rng.random_bool(style.line_pause.0) {
                at_ms += rng.random_range(style.line_pause.1 .0..=style.line_pause.1 .1);
            }
            if rng.random_bool(style.far_edit) {
                keys += far_edit(
                    &mut rng,
                    &mut docs[current],
                    current,
                    &mut steps,
                    &mut at_ms,
                    style,
                );
            }
            let others: Vec<usize> = (0..docs.len())
                .filter(|&d| docs[d].open && d != current)
                .collect();
            if !others.is_empty() && rng.random_bool(style.switch) {
                at_ms += rng.random_range(500..2000);
                current = others[rng.random_range(0..others.len())];
            } else if others.len() + 1 < style.max_open && rng.random_bool(style.open) {
                at_ms += rng.random_range(800..2500);
                current = open(&mut rng, &mut docs, &mut steps, at_ms, usable[next_file]);
                next_file = (next_file + 1) % usable.len();
            }
        }
    }
    steps
}

/// Types `text` at the document's cursor.
fn key(doc: &mut Doc, index: usize, steps: &mut Vec<Step>, at_ms: u64, text: &str, kind: KeyKind) {
    let pos = doc.position(doc.cursor);
    doc.rope.insert(doc.cursor, text);
    doc.cursor += text.chars().count();
    steps.push(Step {
        at_ms,
        action: Action::Key {
            doc: index,
            start: pos,
            end: pos,
            text: text.to_owned(),
            cursor: doc.position(doc.cursor),
            kind,
        },
    });
}

/// Deletes the character before the cursor.
fn backspace(doc: &mut Doc, index: usize, steps: &mut Vec<Step>, at_ms: u64) {
    let end = doc.position(doc.cursor);
    doc.rope.remove(doc.cursor - 1..doc.cursor);
    doc.cursor -= 1;
    let start = doc.position(doc.cursor);
    steps.push(Step {
        at_ms,
        action: Action::Key {
            doc: index,
            start,
            end,
            text: String::new(),
            cursor: start,
            kind: KeyKind::Backspace,
        },
    });
}

/// Goes to a line well above the cursor, appends a short comment to it keystroke by
/// keystroke, and comes back. Returns the keystrokes made.
fn far_edit(
    rng: &mut StdRng,
    doc: &mut Doc,
    index: usize,
    steps: &mut Vec<Step>,
    at_ms: &mut u64,
    style: &Style,
) -> usize {
    let line_now = doc.rope.char_to_line(doc.cursor);
    if line_now < 20 {
        return 0;
    }
    let line = rng.random_range(0..line_now / 2);
    let line_end = doc.rope.line_to_char(line) + doc.rope.line(line).len_chars();
    let insert_at = if doc.rope.line(line).chars().last() == Some('\n') {
        line_end - 1
    } else {
        line_end
    };
    let saved = doc.cursor;
    doc.cursor = insert_at;
    *at_ms += rng.random_range(600..1500);
    let comment = "  # checked";
    for c in comment.chars() {
        *at_ms += rng.random_range(style.key_ms.0..=style.key_ms.1);
        key(doc, index, steps, *at_ms, &c.to_string(), KeyKind::FarEdit);
    }
    let added = comment.chars().count();
    doc.cursor = saved + added; // the text above moved the old cursor along
    *at_ms += rng.random_range(400..1200);
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, String)> {
        let text = include_str!("../../../../../tests/fixtures/documents/heapq.py").to_owned();
        vec![("heapq.py".into(), text.clone()), ("copy.py".into(), text)]
    }

    /// Applies the script to its own documents, checking every edit lands where the replay
    /// says; returns the texts.
    fn apply(steps: &[Step]) -> Vec<Rope> {
        let mut docs: Vec<Rope> = Vec::new();
        for step in steps {
            match &step.action {
                Action::Open { doc, text, .. } => {
                    assert_eq!(*doc, docs.len());
                    docs.push(Rope::from_str(text));
                }
                Action::Close { .. } => {}
                Action::Key {
                    doc,
                    start,
                    end,
                    text,
                    cursor,
                    ..
                } => {
                    let rope = &mut docs[*doc];
                    let to_char = |rope: &Rope, (line, col): (u32, u32)| {
                        let start = rope.line_to_char(line as usize);
                        let mut units = 0;
                        let mut chars = 0;
                        for c in rope.line(line as usize).chars() {
                            if units >= col as usize {
                                break;
                            }
                            units += c.len_utf16();
                            chars += 1;
                        }
                        assert_eq!(units, col as usize, "column inside the line");
                        start + chars
                    };
                    let (s, e) = (to_char(rope, *start), to_char(rope, *end));
                    rope.remove(s..e);
                    rope.insert(s, text);
                    assert_eq!(to_char(rope, *cursor), s + text.chars().count());
                }
            }
        }
        docs
    }

    #[test]
    fn same_seed_same_script_and_another_seed_another() {
        let style = Style {
            keystrokes: 400,
            ..Style::default()
        };
        assert_eq!(plan(&files(), 7, &style), plan(&files(), 7, &style));
        assert_ne!(plan(&files(), 7, &style), plan(&files(), 8, &style));
    }

    #[test]
    fn the_script_types_like_a_person() {
        let style = Style {
            keystrokes: 3000,
            ..Style::default()
        };
        let steps = plan(&files(), 1, &style);
        let keys: Vec<&Step> = steps
            .iter()
            .filter(|s| matches!(s.action, Action::Key { .. }))
            .collect();
        assert!(keys.len() >= 3000);
        let kinds = |k: KeyKind| {
            keys.iter()
                .filter(|s| matches!(s.action, Action::Key { kind, .. } if kind == k))
                .count()
        };
        assert!(kinds(KeyKind::Backspace) > 10, "typos are fixed");
        assert!(kinds(KeyKind::FarEdit) > 0, "edits far above the cursor");
        let (mut open_now, mut most_open) = (0usize, 0usize);
        for s in &steps {
            match s.action {
                Action::Open { .. } => open_now += 1,
                Action::Close { .. } => open_now -= 1,
                Action::Key { .. } => {}
            }
            most_open = most_open.max(open_now);
        }
        assert!(
            (3..=style.max_open).contains(&most_open),
            "{most_open} documents open"
        );
        assert!(
            steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
            "time only goes forward"
        );
        let gaps: Vec<u64> = steps.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
        assert!(gaps.iter().any(|&g| g >= 300), "pauses");
        let median = {
            let mut g = gaps.clone();
            g.sort_unstable();
            g[g.len() / 2]
        };
        assert!(
            (60..=250).contains(&median),
            "bursts at typing speed: median gap {median} ms"
        );
        // Switching: consecutive keystrokes in different documents.
        let docs: Vec<usize> = keys
            .iter()
            .map(|s| match s.action {
                Action::Key { doc, .. } => doc,
                _ => 0,
            })
            .collect();
        assert!(docs.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn edits_land_where_the_replay_says_and_retype_the_file() {
        // Long enough to finish the first regions: finished documents equal their file.
        let style = Style {
            keystrokes: 2500,
            typo: 0.05,
            far_edit: 0.0,
            ..Style::default()
        };
        let files = files();
        let steps = plan(&files, 3, &style);
        let docs = apply(&steps);
        let original = &files[0].1;
        assert!(
            docs.iter().any(|d| *d == original.as_str()),
            "a region re-typed whole"
        );
        // With far edits the finished documents differ only by the comments added.
        let style = Style {
            far_edit: 0.5,
            ..style
        };
        let docs = apply(&plan(&files, 3, &style));
        assert!(docs.iter().any(|d| d.to_string().contains("  # checked")));
        assert!(docs
            .iter()
            .any(|d| d.to_string().replace("  # checked", "") == *original));
    }
}
