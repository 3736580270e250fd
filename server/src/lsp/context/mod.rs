//! Context from the rest of the project (`context`): chunks of other files that share the
//! identifiers around the cursor or define them, put in front of the current file's code in
//! the prompt. The chunks are chosen from the lines around the cursor's line, not the line
//! itself, so typing on a line keeps the same chunks, and a chunk chosen before keeps its place
//! while it is still a good candidate (new ones go after it): the prompt's start, and so its KV
//! cache, stays the same while the user types.

pub mod index;
pub mod terms;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amd_engine::{Context, ContextChunk};
use tower_lsp_server::gen_lsp_types::Uri;

use self::index::{ChunkRef, Index, Limits};
use super::completion::window::CursorWindow;
use super::config::ServerConfig;
use super::project::file_path;
use super::state::{lock, ServerState};

/// Lines before the cursor's line (and after it) whose identifiers make the query.
const QUERY_LINES_BEFORE: usize = 24;
const QUERY_LINES_AFTER: usize = 6;
/// Characters per token assumed when filling the budget (the engine then cuts exactly).
const CHARS_PER_TOKEN: usize = 3;
/// Lines at the top of a document read for its imports.
const IMPORT_LINES: usize = 200;
/// Chunks ranked for a query; a chunk chosen before stays while it is among them.
const CANDIDATES: usize = 24;
/// Chunks sharing more of their identifiers than this with a chosen one are left out.
const MAX_SIMILARITY: f32 = 0.9;
/// Modules imported as modules whose members go into one prompt at most (see [`members`]).
const MEMBER_MODULES: usize = 2;
/// Member lines one module gives at most.
const MEMBER_LINES: usize = 6;
/// Words a member's name must share with the lines around the cursor.
const MEMBER_MIN_WORDS: usize = 2;
/// Files read for members at most (a common module name may match several).
pub(crate) const MEMBER_FILES: usize = 8;
/// Files larger than this are not indexed.
pub(crate) const MAX_FILE_BYTES: u64 = 512 * 1024;

/// The chunks chosen for a document's last query.
#[derive(Clone, Debug)]
struct Picked {
    key: u64,
    chunks: Vec<(ChunkRef, String)>,
}

/// The context side of the server's state.
#[derive(Debug, Default)]
pub struct ContextState {
    /// `None` until the workspace is indexed (or with `context` off).
    index: Mutex<Option<Index>>,
    /// Bumped on every change to the index: a document's chunks are chosen again after it.
    generation: AtomicU64,
    picked: Mutex<HashMap<Uri, Picked>>,
    /// The chunks of the last prompt, as `path:first-last` (1-based lines), for `amd/status`.
    last_used: Mutex<Vec<String>>,
    /// Per document: the tokens its context may take now (see [`ContextState::start_budget`]);
    /// `contextMaxTokens` where unset.
    budgets: Mutex<HashMap<Uri, Budget>>,
}

/// A document's context budget after a window that started afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Budget {
    tokens: usize,
    /// A job with this budget ran to its end since the budget last grew.
    answered: bool,
}

/// Tokens a document's context budget grows by, once per job that ran to its end, after a
/// window that started afresh, until it reaches `contextMaxTokens`.
pub const BUDGET_GROWTH: usize = 32;

impl ContextState {
    /// What `amd/status` shows.
    pub fn status(&self, config: &ServerConfig) -> serde_json::Value {
        let stats = lock(&self.index).as_ref().map(|i| i.stats);
        serde_json::json!({
            "enabled": config.context,
            "indexed": stats.is_some(),
            "index": stats,
            "lastUsed": *lock(&self.last_used),
        })
    }

    /// Indexes `text` as the content of the file behind `uri`, if it is one of the workspace's.
    pub fn update(&self, uri: &Uri, text: &str) {
        let Some(path) = file_path(uri) else { return };
        if let Some(index) = lock(&self.index).as_mut() {
            if index.covers(&path) {
                index.update(&path, text);
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Indexes the file behind `uri` again from disk (a closed document's unsaved edits are
    /// gone).
    pub fn reread(&self, uri: &Uri) {
        let Some(path) = file_path(uri) else { return };
        let covered = lock(&self.index)
            .as_ref()
            .is_some_and(|index| index.may_read(&path));
        // Only a workspace file is read (the check before the read, not after).
        if let Some(text) = covered
            .then(|| std::fs::read_to_string(&path).ok())
            .flatten()
        {
            self.update(uri, &text);
        }
    }

    /// `context` was turned off: the index and the choices go (a large workspace's index
    /// holds tens of MiB).
    pub fn clear(&self) {
        *lock(&self.index) = None;
        lock(&self.picked).clear();
        lock(&self.last_used).clear();
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn forget(&self, uri: &Uri) {
        lock(&self.picked).remove(uri);
        lock(&self.budgets).remove(uri);
    }

    /// A window that starts afresh (nothing cached) gets context within its time budget; the
    /// context then grows after each job that ran to its end ([`ContextState::grow_budget`]),
    /// so its cost is spread over suggestions instead of added to the first one.
    pub fn start_budget(&self, uri: &Uri, tokens: usize) {
        let budget = Budget {
            tokens,
            answered: false,
        };
        lock(&self.budgets).insert(uri.clone(), budget);
    }

    /// One more request in the same window: the budget grows by [`BUDGET_GROWTH`] up to `max`
    /// if a job ran to its end since it last grew. Growing at every request would put new
    /// context tokens into every keystroke's job: while the user types faster than those are
    /// evaluated, every job is superseded and no suggestion comes.
    pub fn grow_budget(&self, uri: &Uri, max: usize) {
        if let Some(b) = lock(&self.budgets).get_mut(uri) {
            if b.answered {
                *b = Budget {
                    tokens: (b.tokens + BUDGET_GROWTH).min(max),
                    answered: false,
                };
            }
        }
    }

    /// The engine finished a job for `uri` (not cancelled): its budget may grow.
    pub fn answered(&self, uri: &Uri) {
        if let Some(b) = lock(&self.budgets).get_mut(uri) {
            b.answered = true;
        }
    }

    fn budget(&self, uri: &Uri, max: usize) -> usize {
        lock(&self.budgets)
            .get(uri)
            .map_or(max, |b| b.tokens.min(max))
    }
}

/// Indexes the workspace in the background when `context` is on and there is one.
pub fn start_indexing(state: &Arc<ServerState>) {
    let config = state.config();
    let roots = state.roots();
    if !config.context || roots.is_empty() {
        return;
    }
    let limits = Limits {
        max_files: config.context_max_files as usize,
        max_file_bytes: MAX_FILE_BYTES,
    };
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let index = Index::build(&roots, limits);
        tracing::info!(stats = ?index.stats, "workspace indexed for context");
        *lock(&state.context.index) = Some(index);
        state.context.generation.fetch_add(1, Ordering::Relaxed);
    });
}

/// The context for a prompt at `at` in `uri`'s document.
pub fn for_prompt(
    state: &ServerState,
    uri: &Uri,
    at: &CursorWindow,
    config: &ServerConfig,
) -> Context {
    let path = file_path(uri);
    let line_comment = path
        .as_deref()
        .and_then(Path::extension)
        .and_then(|e| e.to_str())
        .map_or("//", terms::line_comment);
    let budget = state
        .context
        .budget(uri, config.context_max_tokens as usize);
    let mut context = Context {
        chunks: Vec::new(),
        line_comment: line_comment.to_owned(),
        max_tokens: budget,
    };
    if !config.context || budget == 0 {
        lock(&state.context.last_used).clear();
        return context;
    }
    let query = query_text(at);
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        query.hash(&mut h);
        budget.hash(&mut h);
        state
            .context
            .generation
            .load(Ordering::Relaxed)
            .hash(&mut h);
        h.finish()
    };
    let cs = &state.context;
    let previous = lock(&cs.picked).get(uri).cloned();
    let chunks = match previous {
        Some(p) if p.key == key => p.chunks,
        previous => {
            let previous = previous.map(|p| p.chunks).unwrap_or_default();
            let chunks = choose(
                state,
                uri,
                &query,
                at,
                path.as_deref(),
                budget,
                &previous,
                config,
            );
            lock(&cs.picked).insert(
                uri.clone(),
                Picked {
                    key,
                    chunks: chunks.clone(),
                },
            );
            chunks
        }
    };
    *lock(&cs.last_used) = chunks.iter().map(|(r, _)| describe(r)).collect();
    context.chunks = chunks
        .into_iter()
        .map(|(r, text)| ContextChunk { path: r.rel, text })
        .collect();
    context
}

/// The lines around the cursor's line (not the line itself: typing on it changes nothing).
pub(crate) fn query_text(at: &CursorWindow) -> String {
    let before = at.prefix.rfind('\n').map_or("", |i| &at.prefix[..i]);
    let before: Vec<&str> = before.lines().rev().take(QUERY_LINES_BEFORE).collect();
    let after = at.next_lines();
    let mut text: Vec<&str> = before.into_iter().rev().collect();
    text.extend(after.lines().take(QUERY_LINES_AFTER));
    text.join("\n")
}

/// Chunks for `query` in prompt order: the outlines of the definitions the document uses
/// from the files it imports (`contextDefinitions`), then the ranked chunks, the members of
/// the modules it imports that suit the lines around the cursor (`contextMembers`) counted
/// best (see [`assemble`], [`members`]).
#[allow(clippy::too_many_arguments)]
fn choose(
    state: &ServerState,
    uri: &Uri,
    query: &str,
    at: &CursorWindow,
    path: Option<&Path>,
    budget_tokens: usize,
    previous: &[(ChunkRef, String)],
    config: &ServerConfig,
) -> Vec<(ChunkRef, String)> {
    let (definitions, max_tokens) = (
        config.context_definitions,
        config.context_max_tokens as usize,
    );
    let Some(doc) = state.docs.snapshot(uri) else {
        return Vec::new();
    };
    // Imports sit at the top of a file, usually outside the window.
    let head = head_of(&doc.rope);
    let text = definitions.then(|| doc.rope.to_string());
    let imports = terms::Imports::of(&head);
    let (ranked, wanted, modules) = match lock(&state.context.index).as_ref() {
        Some(index) => (
            rank(index, query, at, &head, path),
            text.as_deref()
                .map(|t| wanted_definitions(index, t, path))
                .unwrap_or_default(),
            if config.context_members {
                index.module_files(&imports, path, MEMBER_FILES)
            } else {
                Vec::new()
            },
        ),
        None => return Vec::new(),
    };
    // The index's lock is not held here: reading a file checks it again.
    let once = ReadOnce::new(|p: &Path| file_text(state, p));
    let read = |p: &Path| once.get(p);
    let members = members(modules, &imports, query, at, read);
    assemble(
        members_first(members, ranked),
        wanted,
        budget_tokens,
        max_tokens,
        previous,
        read,
    )
}

/// The context in prompt order: `wanted`'s outlines (at most half of `max_tokens` in all,
/// chosen from the whole document, see [`outlines`]) while they fit in half of
/// `budget_tokens`, those of `previous` first and in their place, new ones after them; then
/// `ranked`'s chunks in what is left (see [`pick`]). `read` gives a file's text.
pub(crate) fn assemble(
    ranked: Vec<(ChunkRef, f32)>,
    wanted: Vec<Wanted>,
    budget_tokens: usize,
    max_tokens: usize,
    previous: &[(ChunkRef, String)],
    read: impl Fn(&Path) -> Option<String>,
) -> Vec<(ChunkRef, String)> {
    // The outlines' lines depend on the document and `max_tokens`, not on the budget of the
    // moment: a budget that grows request by request adds whole outlines after the ones
    // already in the prompt instead of changing them.
    let outlines = outlines(wanted, max_tokens / 2 * CHARS_PER_TOKEN, &read);
    let half = budget_tokens / 2 * CHARS_PER_TOKEN;
    let kept = previous
        .iter()
        .filter_map(|(r, _)| outlines.iter().find(|(o, _)| o == r));
    let mut chosen: Vec<(ChunkRef, String)> = Vec::new();
    let mut used = 0;
    for (r, text) in kept.chain(&outlines) {
        if used + text.len() <= half && !chosen.iter().any(|(c, _)| c == r) {
            used += text.len();
            chosen.push((r.clone(), text.clone()));
        }
    }
    let left = budget_tokens.saturating_sub(used.div_ceil(CHARS_PER_TOKEN));
    chosen.extend(pick(ranked, left, previous, &read));
    chosen
}

/// The names a document uses from one file of the workspace that it imports.
#[derive(Debug)]
pub(crate) struct Wanted {
    path: std::path::PathBuf,
    rel: String,
    /// Each name with how much the document wants it.
    names: HashMap<String, Want>,
}

/// How much a document wants a name, in the order outlines take them: a name its imports
/// name but no line uses yet (the user imported it to use it next), then the most used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    imported_unused: bool,
    uses: usize,
}

/// The files that define names `doc` uses, or names on its import lines, and does not define
/// itself, where `doc` imports the name through an import that names that file
/// ([`terms::Imports::brings_from`], CrossCodeEval's notion of a cross-file name), in path
/// order; `path` (the document's own file) left out.
pub(crate) fn wanted_definitions(index: &Index, doc: &str, path: Option<&Path>) -> Vec<Wanted> {
    let imports = terms::Imports::of(doc);
    let mut uses: HashMap<&str, usize> = HashMap::new();
    let mut local = HashSet::new();
    for line in doc.lines() {
        if terms::is_import(line) {
            for word in terms::identifiers(line) {
                uses.entry(word).or_default();
            }
            continue;
        }
        if let Some(name) = terms::definition(line) {
            local.insert(name);
        }
        for word in terms::identifiers(line) {
            *uses.entry(word).or_default() += 1;
        }
    }
    let mut uses: Vec<(&str, usize)> = uses
        .into_iter()
        .filter(|(w, _)| !local.contains(w))
        .collect();
    uses.sort_unstable();
    let mut wanted: Vec<Wanted> = Vec::new();
    for (word, n) in uses {
        for (file, rel) in index.definers(word, path) {
            if !imports.brings_from(word, &rel) {
                continue;
            }
            let at = match wanted.iter().position(|w| w.path == file) {
                Some(i) => i,
                None => {
                    wanted.push(Wanted {
                        path: file,
                        rel,
                        names: HashMap::new(),
                    });
                    wanted.len() - 1
                }
            };
            let want = Want {
                imported_unused: n == 0,
                uses: n,
            };
            wanted[at].names.insert(word.to_owned(), want);
        }
    }
    wanted.sort_by(|a, b| a.rel.cmp(&b.rel));
    wanted
}

/// How the lines that enclose definitions without naming one start (an `impl` block).
const ENCLOSERS: [&str; 7] = [
    "impl ",
    "impl<",
    "unsafe impl",
    "trait ",
    "pub trait ",
    "class ",
    "pub(crate) trait ",
];

/// Longest line an outline keeps (a definition line with a long default or docstring).
const OUTLINE_LINE_CHARS: usize = 160;

/// Outlines of the files in `wanted`: the lines that define the names the document wants, each
/// with the line that encloses it (its class, `impl`, …), within `budget` characters, the
/// most wanted names first (see [`Want`]); one chunk per file, in path order, its lines in file order. The set
/// depends on the whole document, not the cursor, so it stays while the user types.
pub(crate) fn outlines(
    wanted: Vec<Wanted>,
    budget: usize,
    read: impl Fn(&Path) -> Option<String>,
) -> Vec<(ChunkRef, String)> {
    struct Entry {
        want: Want,
        file: usize,
        line: usize,
        enclosing: Option<usize>,
    }
    let texts: Vec<Option<String>> = wanted.iter().map(|w| read(&w.path)).collect();
    let lines: Vec<Vec<&str>> = texts
        .iter()
        .map(|t| {
            t.as_deref()
                .map(|t| t.lines().collect())
                .unwrap_or_default()
        })
        .collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut entries = Vec::new();
    for (f, w) in wanted.iter().enumerate() {
        let file = &lines[f];
        for (i, line) in file.iter().enumerate() {
            let Some(&want) = terms::definition(line).and_then(|name| w.names.get(name)) else {
                continue;
            };
            if !terms::declares_api(line) {
                continue;
            }
            let enclosing = (indent(line) > 0)
                .then(|| {
                    (0..i).rev().find(|&j| {
                        let l = file[j];
                        !l.trim().is_empty()
                            && indent(l) < indent(line)
                            && (terms::definition(l).is_some()
                                || ENCLOSERS.iter().any(|k| l.trim_start().starts_with(k)))
                    })
                })
                .flatten();
            entries.push(Entry {
                want,
                file: f,
                line: i,
                enclosing,
            });
        }
    }
    entries.sort_by(|a, b| {
        b.want
            .cmp(&a.want)
            .then(a.file.cmp(&b.file))
            .then(a.line.cmp(&b.line))
    });
    let cut = outline_line;
    let mut kept: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); wanted.len()];
    let mut used = 0;
    for e in entries {
        let new: Vec<usize> = std::iter::once(e.line)
            .chain(e.enclosing)
            .filter(|l| !kept[e.file].contains(l))
            .collect();
        let cost: usize = new.iter().map(|&l| cut(lines[e.file][l]).len() + 1).sum();
        if used + cost > budget {
            continue;
        }
        used += cost;
        kept[e.file].extend(new);
    }
    wanted
        .into_iter()
        .zip(kept)
        .enumerate()
        .filter(|(_, (_, k))| !k.is_empty())
        .map(|(f, (w, k))| {
            let lines_kept: Vec<usize> = k.into_iter().collect();
            let text: String = lines_kept
                .iter()
                .map(|&l| cut(lines[f][l]) + "\n")
                .collect();
            let r = ChunkRef {
                path: w.path,
                rel: w.rel,
                start: lines_kept[0],
                end: lines_kept[lines_kept.len() - 1] + 1,
                lines: lines_kept,
            };
            (r, text)
        })
        .collect()
}

/// An outline's line: `l` without its trailing blanks, cut at [`OUTLINE_LINE_CHARS`].
fn outline_line(l: &str) -> String {
    l.trim_end().chars().take(OUTLINE_LINE_CHARS).collect()
}

/// For the modules the document imports as modules (`files`, see [`Index::module_files`]) and
/// the lines around the cursor name members through (`errors.X`, `chan::Tx`): their
/// top-level definitions whose names share at least [`MEMBER_MIN_WORDS`] words
/// ([`terms::subwords`]) with `query` (the lines around the cursor) and that the window
/// before the cursor does not name, scored by those words (a word counts for less the more of
/// the module's names have it); of each module the best [`MEMBER_LINES`] that score at least
/// half the best, as one outline; the [`MEMBER_MODULES`] best modules, best first. What the
/// user may be about to name through the module for the first time
/// (`errors.StartBoundaryNotFoundDefect` where the code around speaks of a start boundary not
/// found), which the outlines (the names the document already uses) cannot hold.
pub(crate) fn members(
    files: Vec<(std::path::PathBuf, String)>,
    imports: &terms::Imports<'_>,
    query: &str,
    at: &CursorWindow,
    read: impl Fn(&Path) -> Option<String>,
) -> Vec<ChunkRef> {
    let seen: HashSet<&str> = terms::identifiers(&at.prefix)
        .chain(terms::identifiers(query))
        .collect();
    let near: HashSet<String> = terms::identifiers(query)
        .flat_map(terms::subwords)
        .collect();
    let mut modules: Vec<(f32, ChunkRef)> = Vec::new();
    for (path, rel) in files {
        if !imports
            .module_refs(&rel)
            .iter()
            .any(|m| names_members_of(query, m))
        {
            continue;
        }
        let Some(text) = read(&path) else { continue };
        let candidates: Vec<(usize, Vec<String>)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.starts_with(char::is_whitespace) && terms::declares_api(l))
            .filter_map(|(i, l)| terms::definition(l).map(|name| (i, name)))
            .filter(|(_, name)| !seen.contains(name) && !name.starts_with("__"))
            .map(|(i, name)| {
                let mut words = terms::subwords(name);
                words.sort_unstable();
                words.dedup();
                (i, words)
            })
            .collect();
        let n = candidates.len() as f32;
        let mut df: HashMap<&str, f32> = HashMap::new();
        for (_, words) in &candidates {
            for w in words {
                *df.entry(w.as_str()).or_default() += 1.0;
            }
        }
        let mut scored: Vec<(f32, usize)> = candidates
            .iter()
            .filter_map(|(i, words)| {
                let shared: Vec<&str> = words
                    .iter()
                    .map(String::as_str)
                    .filter(|w| near.contains(*w))
                    .collect();
                (shared.len() >= MEMBER_MIN_WORDS).then(|| {
                    let score = shared.iter().map(|w| (1.0 + n / df[w]).ln()).sum::<f32>();
                    (score, *i)
                })
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let Some(&(best, _)) = scored.first() else {
            continue;
        };
        // Words every name of the module has (`Defect`) tie nothing: only names close to the
        // best one stay.
        scored.retain(|&(score, _)| score >= best / 2.0);
        scored.truncate(MEMBER_LINES);
        let mut lines: Vec<usize> = scored.iter().map(|&(_, i)| i).collect();
        lines.sort_unstable();
        let r = ChunkRef {
            path,
            rel,
            start: lines[0],
            end: lines[lines.len() - 1] + 1,
            lines,
        };
        modules.push((best, r));
    }
    modules.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.rel.cmp(&b.1.rel)));
    modules
        .into_iter()
        .take(MEMBER_MODULES)
        .map(|(_, r)| r)
        .collect()
}

/// Whether `text` names a member through the module `module` (`errors.X`, `chan::Tx`).
fn names_members_of(text: &str, module: &str) -> bool {
    text.match_indices(module).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = &text[i + module.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && (after.starts_with('.') || after.starts_with("::"))
    })
}

/// `members` ranked before all of `ranked`: they go into the prompt first, nearest the
/// current file's code.
pub(crate) fn members_first(
    members: Vec<ChunkRef>,
    ranked: Vec<(ChunkRef, f32)>,
) -> Vec<(ChunkRef, f32)> {
    members
        .into_iter()
        .map(|r| (r, f32::INFINITY))
        .chain(ranked)
        .collect()
}

/// The best [`CANDIDATES`] chunks of `index` for `query` around `at` in the file at `path`
/// (left out) whose first lines are `head`.
pub(crate) fn rank(
    index: &Index,
    query: &str,
    at: &CursorWindow,
    head: &str,
    path: Option<&Path>,
) -> Vec<(ChunkRef, f32)> {
    let words: Vec<&str> = terms::identifiers(query).collect();
    let local: Vec<&str> = at
        .prefix
        .lines()
        .chain(at.suffix.lines())
        .filter_map(terms::definition)
        .collect();
    let imported: Vec<&str> = head
        .lines()
        .chain(at.prefix.lines())
        .flat_map(terms::imported_modules)
        .collect();
    index.rank(&words, &local, &imported, path, CANDIDATES)
}

/// The first [`IMPORT_LINES`] lines of `text`, where its imports are.
pub(crate) fn head_of(rope: &ropey::Rope) -> String {
    let n = rope.len_lines().min(IMPORT_LINES);
    rope.slice(..rope.line_to_char(n)).to_string()
}

/// How `amd/status` names a chunk: `path:first-last` (1-based lines), or `path:a,b,c` for an
/// outline's lines.
pub(crate) fn describe(r: &ChunkRef) -> String {
    if r.lines.is_empty() {
        format!("{}:{}-{}", r.rel, r.start + 1, r.end)
    } else {
        let lines: Vec<String> = r.lines.iter().map(|l| (l + 1).to_string()).collect();
        format!("{}:{}", r.rel, lines.join(","))
    }
}

/// Of `ranked` (best first), the chunks that go into the prompt, in prompt order (see
/// [`arrange`]), within `budget_tokens`, without near-duplicates; `read` gives a file's text.
pub(crate) fn pick(
    ranked: Vec<(ChunkRef, f32)>,
    budget_tokens: usize,
    previous: &[(ChunkRef, String)],
    read: impl Fn(&Path) -> Option<String>,
) -> Vec<(ChunkRef, String)> {
    let budget = budget_tokens * CHARS_PER_TOKEN;
    // Candidates with their text, best first, near-duplicates of better ones left out.
    let mut candidates: Vec<(ChunkRef, String, HashSet<String>)> = Vec::new();
    // Several candidates often come from one file: each file is read once per choice.
    let mut files: HashMap<std::path::PathBuf, Option<String>> = HashMap::new();
    for (r, _score) in ranked {
        let file = files.entry(r.path.clone()).or_insert_with(|| read(&r.path));
        let Some(text) = file.as_deref().and_then(|t| lines_of(t, &r)) else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let ids: HashSet<String> = terms::identifiers(&text).map(str::to_owned).collect();
        if candidates
            .iter()
            .any(|(_, _, other)| similarity(&ids, other) > MAX_SIMILARITY)
        {
            continue;
        }
        candidates.push((r, text, ids));
    }
    let previous: Vec<&ChunkRef> = previous.iter().map(|(r, _)| r).collect();
    let sized: Vec<(&ChunkRef, usize)> = candidates.iter().map(|(r, t, _)| (r, t.len())).collect();
    let order = arrange(&previous, &sized, budget);
    order
        .into_iter()
        .filter_map(|r| {
            candidates
                .iter()
                .find(|(c, _, _)| c == r)
                .map(|(c, t, _)| (c.clone(), t.clone()))
        })
        .collect()
}

/// Which of `ranked` (best first, with their sizes) go into the prompt, in prompt order. Those
/// in `previous` that are still candidates keep their place, so the prompt's start and its KV
/// cache stay valid while the cursor moves among related code; new ones fill what is left of
/// `budget`, the best last (nearest the current file's code).
fn arrange<T: PartialEq + Copy>(previous: &[T], ranked: &[(T, usize)], budget: usize) -> Vec<T> {
    let size = |t: &T| ranked.iter().find(|(r, _)| r == t).map(|(_, n)| *n);
    let mut out: Vec<T> = Vec::new();
    let mut used = 0;
    for p in previous {
        if let Some(n) = size(p) {
            if used + n <= budget + budget / 4 {
                used += n;
                out.push(*p);
            }
        }
    }
    let mut new = Vec::new();
    for (r, n) in ranked {
        if used >= budget {
            break;
        }
        if out.contains(r) || used + n > budget + budget / 4 {
            continue;
        }
        used += n;
        new.push(*r);
    }
    out.extend(new.into_iter().rev());
    out
}

/// Jaccard similarity of two sets of identifiers.
fn similarity(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f32 / union as f32
}

/// A file's text: the open document's (its unsaved edits), else the file's on disk when it is
/// one the index may read (inside the workspace, links resolved).
fn file_text(state: &ServerState, path: &Path) -> Option<String> {
    let uri = url::Url::from_file_path(path)
        .ok()
        .map(|u| Uri::from(u.as_str()));
    if let Some(doc) = uri.and_then(|u| state.docs.snapshot(&u)) {
        return Some(doc.rope.to_string());
    }
    let allowed = lock(&state.context.index)
        .as_ref()
        .is_some_and(|index| index.may_read(path));
    allowed
        .then(|| std::fs::read_to_string(path).ok())
        .flatten()
}

/// A file reader that reads each file once: the members, the outlines and the ranked chunks
/// of one choice often come from the same files.
pub(crate) struct ReadOnce<F> {
    read: F,
    texts: std::cell::RefCell<HashMap<std::path::PathBuf, Option<String>>>,
}

impl<F: Fn(&Path) -> Option<String>> ReadOnce<F> {
    pub(crate) fn new(read: F) -> ReadOnce<F> {
        ReadOnce {
            read,
            texts: Default::default(),
        }
    }

    pub(crate) fn get(&self, path: &Path) -> Option<String> {
        if let Some(text) = self.texts.borrow().get(path) {
            return text.clone();
        }
        let text = (self.read)(path);
        self.texts
            .borrow_mut()
            .insert(path.to_path_buf(), text.clone());
        text
    }
}

/// A chunk's lines of its file's text (an outline's: only its lines).
fn lines_of(text: &str, r: &ChunkRef) -> Option<String> {
    let lines: Vec<&str> = text.lines().skip(r.start).take(r.end - r.start).collect();
    if r.lines.is_empty() {
        return (!lines.is_empty()).then(|| lines.join("\n") + "\n");
    }
    let outline: Option<String> = r
        .lines
        .iter()
        .map(|&l| {
            lines
                .get(l.checked_sub(r.start)?)
                .map(|l| outline_line(l) + "\n")
        })
        .collect();
    outline.filter(|o| !o.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_once_per_job_that_ran_to_its_end() {
        let state = ContextState::default();
        let uri = Uri::from("file:///w/a.py");
        let other = Uri::from("file:///w/b.py");
        assert_eq!(
            state.budget(&uri, 512),
            512,
            "no window started: the whole budget"
        );
        state.start_budget(&uri, 80);
        // Keystrokes whose jobs were superseded: no growth.
        state.grow_budget(&uri, 512);
        state.grow_budget(&uri, 512);
        assert_eq!(state.budget(&uri, 512), 80);
        state.answered(&other);
        state.grow_budget(&uri, 512);
        assert_eq!(state.budget(&uri, 512), 80, "another document's answer");
        state.answered(&uri);
        state.grow_budget(&uri, 512);
        state.grow_budget(&uri, 512);
        assert_eq!(
            state.budget(&uri, 512),
            80 + BUDGET_GROWTH,
            "one growth per answer"
        );
        state.answered(&uri);
        state.grow_budget(&uri, 100);
        assert_eq!(state.budget(&uri, 512), 100, "never past the maximum");
        state.start_budget(&uri, 40);
        state.grow_budget(&uri, 512);
        assert_eq!(
            state.budget(&uri, 512),
            40,
            "a fresh window starts unanswered"
        );
    }

    #[test]
    fn chunks_chosen_before_keep_their_place_and_new_ones_go_last_best_last() {
        // Fresh: best first in the ranking, best last in the prompt, within the budget.
        assert_eq!(arrange(&[], &[(1, 40), (2, 40), (3, 40)], 80), [2, 1]);
        // Chunk 9 is still a candidate (ranked low): it stays first; 7 is gone; the best new
        // one fills the rest.
        assert_eq!(arrange(&[7, 9], &[(1, 40), (2, 40), (9, 40)], 80), [9, 1]);
        // A chunk over what is left (a quarter over the budget at most) is passed over.
        assert_eq!(arrange(&[], &[(1, 90), (2, 30)], 80), [1]);
        assert_eq!(arrange(&[], &[(1, 200), (2, 30)], 80), [2]);
    }

    /// An empty index of a workspace at `root` (nothing on disk), for files indexed from memory.
    fn memory_index(root: &str) -> (std::path::PathBuf, Index) {
        let root = std::path::PathBuf::from(root);
        let limits = index::Limits {
            max_files: 10,
            max_file_bytes: 1 << 20,
        };
        let index = Index::build(std::slice::from_ref(&root), limits);
        (root, index)
    }

    #[test]
    fn the_definitions_a_file_uses_from_its_imports_come_as_outlines() {
        let (root, mut index) = memory_index("/amd-lsp-outline-test");
        // Nothing on disk: the files are indexed from memory and read from this table.
        let files = [
            (
                "futures.py",
                "import os\n\nclass Future:\n    def __init__(self):\n        self.state = 1\n\n    def done(self):\n        return True\n\n    def result(self):\n        return 1\n\ndef unrelated():\n    pass\n",
            ),
            ("queues.py", "class Queue:\n    def put(self, item):\n        pass\n"),
            // Defines a name the document uses, but the document does not import it.
            ("other.py", "def done():\n    pass\n"),
        ];
        for (name, text) in files {
            index.update(&root.join(name), text);
        }
        let doc = "from .queues import Queue\nfrom . import futures\n\ndef wait(fut):\n    if fut.done():\n        return fut.result()\n    queue = Queue()\n    fut.done()\n";
        let read = |p: &Path| {
            files
                .iter()
                .find(|(n, _)| root.join(n) == p)
                .map(|(_, t)| (*t).to_owned())
        };
        let this = root.join("tasks.py");
        let shown = |budget| {
            let wanted = wanted_definitions(&index, doc, Some(&this));
            outlines(wanted, budget, read)
                .iter()
                .map(|(r, t)| (describe(r), t.clone()))
                .collect::<Vec<_>>()
        };
        // Each used definition with its class, in file order; files in path order.
        assert_eq!(
            shown(1000),
            [
                (
                    "futures.py:3,7,10".to_owned(),
                    "class Future:\n    def done(self):\n    def result(self):\n".to_owned()
                ),
                ("queues.py:1".to_owned(), "class Queue:\n".to_owned()),
            ]
        );
        // A small budget keeps the most used first: `done` (twice) and its class.
        assert_eq!(
            shown(40),
            [(
                "futures.py:3,7".to_owned(),
                "class Future:\n    def done(self):\n".to_owned()
            )]
        );
        // A budget that grows (a window that started afresh) adds whole outlines after those
        // already in the prompt: first only queues.py's fits in half the budget, then
        // futures.py's goes after it, and queues.py's stays first.
        let context = |budget, previous: &[(ChunkRef, String)]| {
            let wanted = wanted_definitions(&index, doc, Some(&this));
            assemble(Vec::new(), wanted, budget, 512, previous, read)
        };
        let small = context(20, &[]);
        let names =
            |c: &[(ChunkRef, String)]| c.iter().map(|(r, _)| describe(r)).collect::<Vec<_>>();
        assert_eq!(names(&small), ["queues.py:1"]);
        assert_eq!(
            names(&context(100, &small)),
            ["queues.py:1", "futures.py:3,7,10"]
        );
        assert_eq!(
            names(&context(100, &[])),
            ["futures.py:3,7,10", "queues.py:1"]
        );
    }

    #[test]
    fn a_name_imported_and_not_used_yet_comes_first_in_the_outline() {
        let (root, mut index) = memory_index("/amd-lsp-outline-unused");
        let queues =
            "class Queue:\n    pass\n\nclass LifoQueue:\n    pass\n\nclass Other:\n    pass\n";
        index.update(&root.join("queues.py"), queues);
        let read = |_: &Path| Some(queues.to_owned());
        // `Queue` is used three times; `LifoQueue` is imported but not used yet: the user is
        // about to use it. `Other` is neither imported nor used.
        let doc = "from .queues import Queue, LifoQueue\n\nq = Queue()\nr = Queue()\ns = Queue()\n";
        let wanted = wanted_definitions(&index, doc, Some(&root.join("tasks.py")));
        let shown = |budget| {
            let wanted = wanted_definitions(&index, doc, Some(&root.join("tasks.py")));
            outlines(wanted, budget, read)
                .iter()
                .map(|(_, t)| t.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(wanted.len(), 1);
        assert_eq!(shown(20), ["class LifoQueue:\n"]);
        assert_eq!(shown(100), ["class Queue:\nclass LifoQueue:\n"]);
    }

    #[test]
    fn members_of_a_module_the_code_around_the_cursor_names_come_by_their_words() {
        let (root, mut index) = memory_index("/amd-lsp-members");
        let errors = "class MessageDefect(Exception):\n    pass\n\nclass NoBoundaryInMultipartDefect(MessageDefect):\n    pass\n\nclass StartBoundaryNotFoundDefect(MessageDefect):\n    \"\"\"The claimed start boundary was never found.\"\"\"\n\nclass CloseBoundaryNotFoundDefect(MessageDefect):\n    pass\n\nclass InvalidHeaderDefect(MessageDefect):\n    pass\n\ndef _private_boundary_not_found():\n    pass\n";
        let parser = "def parse_message_id(value):\n    pass\n";
        index.update(&root.join("errors.py"), errors);
        index.update(&root.join("_header_value_parser.py"), parser);
        index.update(
            &root.join("parser.py"),
            "def parse_boundary_not_found():\n    pass\n",
        );
        let read = |p: &Path| {
            [("errors.py", errors), ("_header_value_parser.py", parser)]
                .iter()
                .find(|(n, _)| root.join(n) == p)
                .map(|(_, t)| (*t).to_owned())
        };
        let this = root.join("feedparser.py");
        // The members chosen with the cursor at the end of `head` and `body`.
        let chosen = |head: &str, body: &str| {
            let imports = terms::Imports::of(head);
            let files = index.module_files(&imports, Some(&this), MEMBER_FILES);
            let at = CursorWindow {
                prefix: format!("{head}{body}"),
                ..CursorWindow::default()
            };
            members(files, &imports, &query_text(&at), &at, read)
                .iter()
                .map(|r| (describe(r), lines_of(&read(&r.path).unwrap(), r).unwrap()))
                .collect::<Vec<_>>()
        };
        let head = "from . import errors\n";
        // The code speaks of a boundary not found and names members through `errors.`: the
        // names that share its words, in file order; not the one the window already names,
        // nor those that share only `Defect` (every name has it) or little more
        // (`NoBoundaryInMultipartDefect`).
        let body =
            "\nif boundary not found:\n    defect = errors.CloseBoundaryNotFoundDefect()\n    x\n";
        assert_eq!(
            chosen(head, body),
            [(
                "errors.py:7,16".to_owned(),
                "class StartBoundaryNotFoundDefect(MessageDefect):\ndef _private_boundary_not_found():\n"
                    .to_owned()
            )]
        );
        // Without a member named through the module near the cursor, nothing.
        assert!(chosen(head, "\nif boundary not found:\n    x\n").is_empty());
        // Through an alias: `parser.` names `_header_value_parser.py`'s members, not
        // `parser.py`'s.
        let head = "from . import errors\nfrom . import _header_value_parser as parser\n";
        let body = "\nclass MessageIDHeader:\n    value = parser.get(value)\n\n";
        assert_eq!(
            chosen(head, body),
            [(
                "_header_value_parser.py:1".to_owned(),
                "def parse_message_id(value):\n".to_owned()
            )]
        );
    }

    #[test]
    fn a_choice_reads_each_file_once() {
        let reads = std::cell::Cell::new(0);
        let once = ReadOnce::new(|p: &Path| {
            reads.set(reads.get() + 1);
            (p == Path::new("/w/a.py")).then(|| "x = 1\n".to_owned())
        });
        for _ in 0..3 {
            assert_eq!(once.get(Path::new("/w/a.py")).as_deref(), Some("x = 1\n"));
            assert_eq!(once.get(Path::new("/w/gone.py")), None);
        }
        assert_eq!(reads.get(), 2, "one read per file, a missing one included");
    }

    #[test]
    fn the_query_leaves_out_the_cursors_line() {
        let at = CursorWindow {
            prefix: "import alpha\nbeta = 1\n    gam".into(),
            suffix: "ma()\ndelta()\n".into(),
            ..CursorWindow::default()
        };
        assert_eq!(query_text(&at), "import alpha\nbeta = 1\ndelta()");
    }
}
