//! An index of the workspace's source files for context retrieval: each file cut into chunks
//! of a few lines at top-level boundaries, an inverted index of identifiers over the chunks
//! (ranked with BM25), and the chunks that define each identifier. Only metadata is kept;
//! chunk text is read again when a chunk is chosen.
//!
//! Reading is bounded and stays inside the workspace: `.gitignore`d, hidden and vendored trees
//! are skipped, links are never followed, and at most `max_files` files of at most
//! `max_file_bytes` each are read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::terms;

/// A chunk never has more lines than this.
const MAX_LINES: usize = 24;
/// A chunk ends at a top-level line once it has at least this many.
const MIN_LINES: usize = 4;
/// BM25's parameters (the usual ones).
const K1: f32 = 1.2;
const B: f32 = 0.75;
/// A chunk that defines a query identifier gets this many times the identifier's weight.
const DEFINITION_BOOST: f32 = 2.0;

/// Extensions of the files indexed: source code, not data.
const EXTENSIONS: &[&str] = &[
    "rs", "py", "pyi", "js", "jsx", "mjs", "ts", "tsx", "go", "c", "h", "cc", "cpp", "hpp", "cxx",
    "java", "kt", "kts", "scala", "swift", "cs", "rb", "php", "lua", "sh", "zig", "dart", "ex",
    "exs", "erl", "hs", "ml", "mli", "jl", "r", "nim", "vue", "svelte", "sql",
];

/// Folders that hold generated or third-party code even where no `.gitignore` says so.
const SKIPPED_DIRS: &[&str] = &["node_modules", "target", "__pycache__", "venv", ".venv"];

/// How much of a workspace is read.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_files: usize,
    pub max_file_bytes: u64,
}

/// What indexing found and cost.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexStats {
    pub files: usize,
    pub chunks: usize,
    pub bytes: u64,
    pub terms: usize,
    /// Files left out: over the size limit, not UTF-8, or past `max_files`.
    pub skipped: usize,
    pub build_ms: f64,
}

#[derive(Debug)]
struct File {
    path: PathBuf,
    /// Relative to its root, `/`-separated.
    rel: String,
}

#[derive(Clone, Copy, Debug)]
struct Chunk {
    file: u32,
    start: u32,
    end: u32,
    /// Identifiers in it (BM25's document length).
    len: u32,
    /// False once its file was indexed again.
    live: bool,
}

/// A chunk chosen for a query: where it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub path: PathBuf,
    pub rel: String,
    /// Lines `start..end`, 0-based.
    pub start: usize,
    pub end: usize,
    /// An outline's lines (0-based, in order): only these lines of `start..end` are in it.
    /// Empty for a chunk of whole lines.
    pub lines: Vec<usize>,
}

/// A chunk and how often a term occurs in it, in 4 bytes (the index of a 10 000-file
/// workspace holds some 12 million): the chunk in the low 24 bits, the count (at most 255) in
/// the high 8.
#[derive(Clone, Copy, Debug)]
struct Posting(u32);

impl Posting {
    fn new(chunk: u32, tf: u16) -> Posting {
        Posting((chunk & 0x00ff_ffff) | (u32::from(tf.min(255)) << 24))
    }

    fn chunk(self) -> u32 {
        self.0 & 0x00ff_ffff
    }

    fn tf(self) -> u16 {
        (self.0 >> 24) as u16
    }
}

/// How much more a chunk of a module the current file imports counts.
const IMPORT_BOOST: f32 = 1.5;

/// Chunks beyond this cannot be told apart in a [`Posting`]: indexing stops there.
const MAX_CHUNKS: usize = 1 << 24;

#[derive(Debug, Default)]
pub struct Index {
    roots: Vec<PathBuf>,
    /// The roots with links resolved, once at build: what every read from disk is checked
    /// against ([`Index::may_read`]).
    real_roots: Vec<PathBuf>,
    files: Vec<File>,
    by_path: HashMap<PathBuf, u32>,
    chunks: Vec<Chunk>,
    terms: HashMap<Box<str>, u32>,
    /// Per term: the chunks that have it, each as [`Posting`].
    postings: Vec<Vec<Posting>>,
    /// Per term: the chunks that define it.
    defs: Vec<Vec<u32>>,
    n_live: usize,
    total_len: u64,
    pub stats: IndexStats,
}

/// Cuts `text` into chunks of lines: `(start, end)` line ranges covering it.
pub fn chunk_lines(text: &str) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut start = 0;
    for (i, line) in lines.iter().enumerate() {
        let n = i - start;
        let top_level = line
            .chars()
            .next()
            .is_some_and(|c| !c.is_whitespace() && !matches!(c, '}' | ')' | ']'));
        if n >= MAX_LINES || (n >= MIN_LINES && top_level) {
            out.push((start, i));
            start = i;
        }
    }
    if start < lines.len() {
        out.push((start, lines.len()));
    }
    out
}

impl Index {
    /// Walks the workspace roots and indexes what [`Limits`] allow.
    pub fn build(roots: &[PathBuf], limits: Limits) -> Index {
        let started = Instant::now();
        let mut index = Index {
            roots: roots.to_vec(),
            real_roots: roots
                .iter()
                .filter_map(|r| std::fs::canonicalize(r).ok())
                .collect(),
            ..Index::default()
        };
        'roots: for root in roots {
            let walk = ignore::WalkBuilder::new(root)
                .follow_links(false)
                .require_git(false)
                .hidden(true)
                .filter_entry(|e| {
                    !(e.file_type().is_some_and(|t| t.is_dir())
                        && e.file_name()
                            .to_str()
                            .is_some_and(|n| SKIPPED_DIRS.contains(&n)))
                })
                .build();
            for entry in walk.flatten() {
                // Links are never followed: a link's file type is "symlink", not "file".
                if !entry.file_type().is_some_and(|t| t.is_file()) || !is_source(entry.path()) {
                    continue;
                }
                if index.stats.files >= limits.max_files {
                    index.stats.skipped += 1;
                    if index.stats.skipped > limits.max_files {
                        break 'roots;
                    }
                    continue;
                }
                let too_big = entry
                    .metadata()
                    .map_or(true, |m| m.len() > limits.max_file_bytes);
                let text = (!too_big)
                    .then(|| std::fs::read_to_string(entry.path()).ok())
                    .flatten();
                match text {
                    Some(text) => index.add(entry.path(), &text),
                    None => index.stats.skipped += 1,
                }
            }
        }
        for p in &mut index.postings {
            p.shrink_to_fit();
        }
        index.stats.build_ms = started.elapsed().as_secs_f64() * 1e3;
        index
    }

    /// Whether `path` is one of the workspace's source files this index would read.
    pub fn covers(&self, path: &Path) -> bool {
        is_source(path) && self.root_of(path).is_some()
    }

    /// Whether reading `path` reads a file inside the workspace: its real path (links
    /// resolved) is under a root's real path. Checked before every read from disk.
    pub fn may_read(&self, path: &Path) -> bool {
        let Ok(real) = std::fs::canonicalize(path) else {
            return false;
        };
        self.covers(path) && self.real_roots.iter().any(|r| real.starts_with(r))
    }

    fn root_of(&self, path: &Path) -> Option<&PathBuf> {
        self.roots
            .iter()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.components().count())
    }

    /// Indexes `text` as the content of `path` (a file of the workspace), replacing what was
    /// indexed for it before. Paths outside the roots are ignored.
    pub fn update(&mut self, path: &Path, text: &str) {
        if self.covers(path) {
            self.add(path, text);
        }
    }

    fn add(&mut self, path: &Path, text: &str) {
        if self.chunks.len() >= MAX_CHUNKS {
            self.stats.skipped += 1;
            return;
        }
        let rel = self.root_of(path).and_then(|r| path.strip_prefix(r).ok());
        let Some(rel) = rel else { return };
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let file = match self.by_path.get(path) {
            Some(&f) => {
                for chunk in self.chunks.iter_mut().filter(|c| c.file == f && c.live) {
                    chunk.live = false;
                    self.n_live -= 1;
                    self.total_len -= u64::from(chunk.len);
                }
                f
            }
            None => {
                let f = self.files.len() as u32;
                self.files.push(File {
                    path: path.to_path_buf(),
                    rel,
                });
                self.by_path.insert(path.to_path_buf(), f);
                self.stats.files += 1;
                f
            }
        };
        self.stats.bytes += text.len() as u64;
        let lines: Vec<&str> = text.lines().collect();
        for (start, end) in chunk_lines(text) {
            if lines[start..end].iter().all(|l| is_import(l)) {
                // The current file has its own imports; another file's say nothing new.
                continue;
            }
            let id = self.chunks.len() as u32;
            let mut counts: HashMap<&str, u16> = HashMap::new();
            let mut len = 0u32;
            for line in &lines[start..end] {
                for word in terms::identifiers(line) {
                    *counts.entry(word).or_default() += 1;
                    len += 1;
                }
                if let Some(name) = terms::definition(line) {
                    let t = self.term(name);
                    if self.defs[t as usize].last() != Some(&id) {
                        self.defs[t as usize].push(id);
                    }
                }
            }
            for (word, n) in counts {
                let t = self.term(word);
                self.postings[t as usize].push(Posting::new(id, n));
            }
            self.chunks.push(Chunk {
                file,
                start: start as u32,
                end: end as u32,
                len,
                live: true,
            });
            self.n_live += 1;
            self.total_len += u64::from(len);
        }
        self.stats.chunks = self.n_live;
        self.stats.terms = self.terms.len();
    }

    fn term(&mut self, word: &str) -> u32 {
        if let Some(&t) = self.terms.get(word) {
            return t;
        }
        let t = self.postings.len() as u32;
        self.terms.insert(word.into(), t);
        self.postings.push(Vec::new());
        self.defs.push(Vec::new());
        t
    }

    /// The files that define `name` (in a live chunk), as (path, relative path), in index
    /// order, but `exclude`.
    pub fn definers(&self, name: &str, exclude: Option<&Path>) -> Vec<(PathBuf, String)> {
        let Some(&t) = self.terms.get(name) else {
            return Vec::new();
        };
        let excluded = exclude.and_then(|p| self.by_path.get(p)).copied();
        let mut files: Vec<u32> = self.defs[t as usize]
            .iter()
            .map(|&c| self.chunks[c as usize])
            .filter(|c| c.live && Some(c.file) != excluded)
            .map(|c| c.file)
            .collect();
        files.dedup();
        files
            .into_iter()
            .map(|f| {
                let file = &self.files[f as usize];
                (file.path.clone(), file.rel.clone())
            })
            .collect()
    }

    /// The files `imports` imports as modules ([`terms::Imports::brings_module`]), as (path,
    /// relative path), at most `n`, but `exclude` (the importing file): where several files go
    /// by the module's name (`utils.py` in many packages), those nearest `exclude` first, then
    /// in path order.
    pub fn module_files(
        &self,
        imports: &terms::Imports<'_>,
        exclude: Option<&Path>,
        n: usize,
    ) -> Vec<(PathBuf, String)> {
        let near = |p: &Path| {
            let shared = exclude.map_or(0, |e| {
                p.components()
                    .zip(e.components())
                    .take_while(|(a, b)| a == b)
                    .count()
            });
            std::cmp::Reverse(shared)
        };
        let mut files: Vec<(PathBuf, String)> = self
            .files
            .iter()
            .filter(|f| Some(f.path.as_path()) != exclude && imports.brings_module(&f.rel))
            .map(|f| (f.path.clone(), f.rel.clone()))
            .collect();
        files.sort_by(|a, b| near(&a.0).cmp(&near(&b.0)).then(a.1.cmp(&b.1)));
        files.truncate(n);
        files
    }

    /// The chunks that best match `query` (identifiers around the cursor, with repeats), best
    /// first, at most `n`, none from `exclude` (the current file). Identifiers in `local` (defined
    /// in the current file) do not pull in other files' definitions of them. Chunks of files
    /// whose name (or folder, for `mod.rs` / `__init__.py`) is one of `imported` (the modules the
    /// current file imports) count [`IMPORT_BOOST`] times.
    pub fn rank(
        &self,
        query: &[&str],
        local: &[&str],
        imported: &[&str],
        exclude: Option<&Path>,
        n: usize,
    ) -> Vec<(ChunkRef, f32)> {
        if self.n_live == 0 {
            return Vec::new();
        }
        let excluded = exclude.and_then(|p| self.by_path.get(p)).copied();
        // Per query word: its term and how often the query has it.
        let mut weights: HashMap<&str, (u32, f32)> = HashMap::new();
        for &word in query {
            if let Some(&t) = self.terms.get(word) {
                weights.entry(word).or_insert((t, 0.0)).1 += 1.0;
            }
        }
        let n_docs = self.n_live as f32;
        let avg_len = (self.total_len as f32 / n_docs).max(1.0);
        let mut scores: HashMap<u32, f32> = HashMap::new();
        // In a fixed order: the scores are float sums.
        let mut weights: Vec<(&str, (u32, f32))> = weights.into_iter().collect();
        weights.sort_by_key(|(_, (t, _))| *t);
        for &(word, (t, q)) in &weights {
            let postings = &self.postings[t as usize];
            let live = |c: u32| {
                let chunk = &self.chunks[c as usize];
                chunk.live && Some(chunk.file) != excluded
            };
            let df = postings.iter().filter(|p| live(p.chunk())).count() as f32;
            if df == 0.0 {
                continue;
            }
            let idf = ((n_docs - df + 0.5) / (df + 0.5) + 1.0).ln();
            let q = 1.0 + q.ln();
            for (c, tf) in postings
                .iter()
                .filter(|p| live(p.chunk()))
                .map(|p| (p.chunk(), p.tf()))
            {
                let len = self.chunks[c as usize].len as f32;
                let tf = f32::from(tf);
                let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg_len));
                *scores.entry(c).or_default() += q * s;
            }
            if !local.contains(&word) {
                for &c in self.defs[t as usize].iter().filter(|&&c| live(c)) {
                    *scores.entry(c).or_default() += q * idf * DEFINITION_BOOST;
                }
            }
        }
        let mut ranked: Vec<(u32, f32)> = scores.into_iter().collect();
        if !imported.is_empty() {
            for (c, score) in &mut ranked {
                let file = &self.files[self.chunks[*c as usize].file as usize];
                if terms::module_names(&file.rel).any(|m| imported.contains(&m)) {
                    *score *= IMPORT_BOOST;
                }
            }
        }
        // Best first; ties by position in the index, so the order never depends on hashing.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(n)
            .map(|(c, s)| {
                let chunk = self.chunks[c as usize];
                let file = &self.files[chunk.file as usize];
                (
                    ChunkRef {
                        path: file.path.clone(),
                        rel: file.rel.clone(),
                        start: chunk.start as usize,
                        end: chunk.end as usize,
                        lines: Vec::new(),
                    },
                    s,
                )
            })
            .collect()
    }
}

/// Whether a line only imports (or is blank): `import`, `from … import`, `use`, `#include`.
fn is_import(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty()
        || [
            "import ",
            "from ",
            "use ",
            "pub use ",
            "#include",
            "extern crate ",
            "mod ",
        ]
        .iter()
        .any(|p| t.starts_with(p))
        || t.starts_with(')')
        || t.starts_with('}')
}

fn is_source(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_imported_as_modules_are_looked_for_near_the_importing_file_first() {
        let root = PathBuf::from("/amd-lsp-module-files");
        let limits = Limits {
            max_files: 10,
            max_file_bytes: 1 << 20,
        };
        let mut index = Index::build(std::slice::from_ref(&root), limits);
        for rel in ["a/utils.py", "b/c/utils.py", "b/other.py", "b/c/errors.py"] {
            index.update(&root.join(rel), "def f():\n    pass\n");
        }
        let imports = terms::Imports::of("from . import utils, errors\n");
        let here = root.join("b/c/main.py");
        let rels = |n| -> Vec<String> {
            index
                .module_files(&imports, Some(&here), n)
                .into_iter()
                .map(|(_, rel)| rel)
                .collect()
        };
        assert_eq!(rels(8), ["b/c/errors.py", "b/c/utils.py", "a/utils.py"]);
        assert_eq!(rels(1), ["b/c/errors.py"]);
    }

    /// A fresh folder under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("amd-lsp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const LIMITS: Limits = Limits {
        max_files: 100,
        max_file_bytes: 1 << 20,
    };

    fn found(index: &Index, words: &[&str]) -> Vec<String> {
        let mut rels: Vec<String> = index
            .rank(words, &[], &[], None, 100)
            .into_iter()
            .map(|(r, _)| r.rel)
            .collect();
        rels.sort();
        rels.dedup();
        rels
    }

    #[test]
    fn nothing_outside_the_workspace_or_ignored_is_read() {
        let base = scratch("walk");
        let (root, outside) = (base.join("ws"), base.join("outside"));
        write(&root.join("src/lib.rs"), "fn marker_word() {}\n");
        write(&root.join("ignored/gen.rs"), "fn marker_word() {}\n");
        write(&root.join(".hidden/h.rs"), "fn marker_word() {}\n");
        write(&root.join("target/debug/x.rs"), "fn marker_word() {}\n");
        write(&root.join("notes.txt"), "marker_word\n");
        write(&root.join(".gitignore"), "ignored/\n");
        write(&outside.join("secret.rs"), "fn marker_word() {}\n");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, root.join("linked_dir")).unwrap();
            std::os::unix::fs::symlink(outside.join("secret.rs"), root.join("linked.rs")).unwrap();
        }
        let index = Index::build(std::slice::from_ref(&root), LIMITS);
        assert_eq!(found(&index, &["marker_word"]), ["src/lib.rs"]);
        assert_eq!(index.stats.files, 1);
        // Documents outside the roots are not indexed when opened either, and a path through
        // a link out of the workspace is not read.
        #[cfg(unix)]
        {
            assert!(!index.may_read(&root.join("linked.rs")));
            assert!(!index.may_read(&root.join("linked_dir/secret.rs")));
            assert!(index.may_read(&root.join("src/lib.rs")));
        }
        let mut index = index;
        index.update(&outside.join("secret.rs"), "fn marker_word() {}\n");
        assert_eq!(found(&index, &["marker_word"]), ["src/lib.rs"]);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn the_file_limit_holds() {
        let root = scratch("limit");
        for i in 0..5 {
            write(&root.join(format!("f{i}.py")), "def shared_name(): pass\n");
        }
        let limits = Limits {
            max_files: 3,
            ..LIMITS
        };
        let index = Index::build(std::slice::from_ref(&root), limits);
        assert_eq!((index.stats.files, index.stats.skipped), (3, 2));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn definitions_rank_first_and_updates_replace_a_file() {
        let root = scratch("rank");
        write(
            &root.join("util.py"),
            "import os\n\n\ndef parse_config(path, strict=False):\n    return {}\n",
        );
        write(
            &root.join("app.py"),
            "from util import parse_config\n\nconfig = parse_config('a')\nother = parse_config('b')\n",
        );
        let mut index = Index::build(std::slice::from_ref(&root), LIMITS);
        let top = |index: &Index, exclude: Option<&Path>| {
            index
                .rank(&["parse_config"], &[], &[], exclude, 1)
                .first()
                .map(|(r, _)| r.rel.clone())
        };
        // app.py uses the name more often; util.py defines it.
        assert_eq!(top(&index, None).as_deref(), Some("util.py"));
        // The current file is never a candidate.
        assert_eq!(
            top(&index, Some(&root.join("util.py"))).as_deref(),
            Some("app.py")
        );
        // A name defined in the current file does not pull in others' definitions.
        let local = index.rank(&["parse_config"], &["parse_config"], &[], None, 1);
        assert_eq!(local[0].0.rel, "app.py");
        index.update(
            &root.join("util.py"),
            "def load_config(path):\n    return {}\n",
        );
        assert_eq!(top(&index, None).as_deref(), Some("app.py"));
        assert_eq!(index.stats.chunks, 2);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn files_are_known_by_their_module_names() {
        let names = |rel| terms::module_names(rel).collect::<Vec<_>>();
        assert_eq!(names("asyncio/queues.py"), ["queues"]);
        assert_eq!(names("src/sync/mod.rs"), ["mod", "sync"]);
        assert_eq!(names("email/__init__.py"), ["__init__", "email"]);
        assert_eq!(names("lib.rs"), ["lib"]);
    }

    #[test]
    fn import_lines_are_told_apart() {
        for line in [
            "import os",
            "from . import x",
            "use std::fmt;",
            "#include <a.h>",
            "",
            "    )",
        ] {
            assert!(is_import(line), "{line}");
        }
        for line in ["def f():", "x = import_module()", "    return used"] {
            assert!(!is_import(line), "{line}");
        }
    }

    #[test]
    fn chunks_end_at_top_level_lines() {
        let text = "use a;\nuse b;\nuse c;\nuse d;\n\nfn one() {\n    x\n}\n\nfn two() {\n}\n";
        assert_eq!(chunk_lines(text), [(0, 5), (5, 9), (9, 11)]);
        let long: String = (0..60).map(|i| format!("    line{i}\n")).collect();
        assert_eq!(chunk_lines(&long), [(0, 24), (24, 48), (48, 60)]);
    }
}
