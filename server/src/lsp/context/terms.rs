//! The words context retrieval works with: identifiers, and the names a line defines. Plain
//! scanning, no parser: the same for every language, a few MB/s, and good enough to rank
//! chunks (what a tree-sitter tags query would add is measured in docs/benchmarks.md).

/// Identifiers shorter than this say too little to rank by (`i`, `x`, `id`).
const MIN_LEN: usize = 3;

/// Words of the common languages that every file has; they rank nothing.
const KEYWORDS: &[&str] = &[
    "and",
    "as",
    "assert",
    "async",
    "await",
    "bool",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "crate",
    "def",
    "default",
    "del",
    "elif",
    "else",
    "enum",
    "except",
    "export",
    "extern",
    "false",
    "final",
    "finally",
    "for",
    "from",
    "func",
    "function",
    "global",
    "impl",
    "import",
    "interface",
    "lambda",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "new",
    "none",
    "None",
    "not",
    "null",
    "package",
    "pass",
    "private",
    "protected",
    "pub",
    "public",
    "raise",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "str",
    "struct",
    "super",
    "switch",
    "this",
    "throw",
    "trait",
    "true",
    "True",
    "False",
    "try",
    "type",
    "unsafe",
    "use",
    "usize",
    "var",
    "void",
    "where",
    "while",
    "with",
    "yield",
    "String",
    "Option",
    "Result",
    "Some",
    "Vec",
    "u8",
    "u16",
    "u32",
    "u64",
    "i32",
    "i64",
    "f32",
    "f64",
    "int",
    "float",
    "char",
    "the",
];

fn is_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_inner(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every identifier of `text` worth ranking by, in order (with repeats).
pub fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        let start = rest.find(is_start)?;
        // Not the tail of a number or of a longer word (`0x1f`, `a1b`).
        let glued = rest[..start].chars().next_back().is_some_and(is_inner);
        let len = rest[start..]
            .find(|c| !is_inner(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + len];
        rest = &rest[start + len..];
        if !glued && word.len() >= MIN_LEN && !KEYWORDS.contains(&word) {
            return Some(word);
        }
    })
}

/// Words that introduce a definition of the identifier that follows them.
const DEFINERS: &[&str] = &[
    "fn",
    "struct",
    "enum",
    "trait",
    "type",
    "union",
    "mod",
    "const",
    "static",
    "macro_rules!",
    "def",
    "class",
    "function",
    "interface",
    "func",
    "module",
    "object",
    "val",
    "var",
    "let",
    "typedef",
];

/// Words that may stand before a definer (`pub(crate) async fn`, `export default class`).
const MODIFIERS: &[&str] = &[
    "pub",
    "pub(crate)",
    "pub(super)",
    "async",
    "unsafe",
    "extern",
    "export",
    "default",
    "abstract",
    "public",
    "private",
    "protected",
    "static",
    "final",
    "inline",
    "const",
    "override",
    "open",
    "data",
    "sealed",
];

/// The name a line defines, if it does: `fn name`, `class Name`, `def name`, `type Name`,
/// and a top-level `NAME = …` (a Python constant or module-level name).
pub fn definition(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    let mut words = trimmed.split_whitespace().peekable();
    let mut modified = false;
    while words
        .peek()
        .is_some_and(|w| MODIFIERS.contains(w) && !DEFINERS.contains(w) || *w == "const")
    {
        let w = words.next()?;
        modified = true;
        if w == "const" && words.peek().is_none_or(|n| !DEFINERS.contains(n)) {
            // `const NAME: …` (Rust), `const name = …` (JavaScript).
            return name_at(words.next()?);
        }
    }
    match words.next()? {
        w if DEFINERS.contains(&w) => name_at(words.next()?),
        w if !modified && trimmed.len() == line.len() => {
            // `w` is the line's first word: it starts at byte 0.
            // Top-level assignment: `NAME = …`, `NAME: Type = …`.
            let after = trimmed[w.len()..].trim_start();
            let name = w.trim_end_matches(':');
            let assigns = (after.starts_with('=') && !after.starts_with("=="))
                || (w.ends_with(':') && after.contains('='));
            (assigns && name.chars().next().is_some_and(is_start) && name.chars().all(is_inner))
                .then_some(name)
        }
        _ => None,
    }
}

/// Whether a line that defines a name (see [`definition`]) declares something another file
/// can use: not a local binding (`let`, `var`, `val`) or a module declaration (`mod x;`).
pub fn declares_api(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let first = loop {
        match words.next() {
            Some(w) if MODIFIERS.contains(&w) => {}
            other => break other,
        }
    };
    !matches!(first, Some("let" | "var" | "val" | "mod"))
}

/// The identifier at the start of `word` (`name(` → `name`, `Name<T>` → `Name`).
fn name_at(word: &str) -> Option<&str> {
    let word = word.trim_start_matches('*').trim_start_matches('&');
    let len = word.find(|c| !is_inner(c)).unwrap_or(word.len());
    let name = &word[..len];
    (name.chars().next().is_some_and(is_start)).then_some(name)
}

/// The modules an import line names: `from .a.b import c` → `a`, `b`; `import a.b as c` →
/// `a`, `b`; `use crate::x::y::{Z, W};` → `x`, `y`; `import {a} from "./dir/mod.js"` → `dir`, `mod`.
pub fn imported_modules(line: &str) -> Vec<&str> {
    let t = line.trim_start();
    let path = if let Some(rest) = t.strip_prefix("from ") {
        rest.split_whitespace().next().unwrap_or("")
    } else if let Some(rest) = t.strip_prefix("import ") {
        match rest.rsplit_once(" from ") {
            Some((_, source)) => source.trim_matches(|c| matches!(c, '"' | '\'' | ';' | ' ')),
            None => rest.split([' ', ',']).next().unwrap_or(""),
        }
    } else if let Some(rest) = t
        .strip_prefix("use ")
        .or_else(|| t.strip_prefix("pub use "))
    {
        rest.split(['{', ';']).next().unwrap_or("")
    } else {
        return Vec::new();
    };
    path.split(['.', '/', ':'])
        .filter(|p| p.len() >= MIN_LEN && !matches!(*p, "crate" | "super" | "self" | "std"))
        .filter(|p| p.chars().all(is_inner))
        .collect()
}

/// The names a file goes by in imports: its stem (`queues` for `asyncio/queues.py`), and its
/// folder's name for a package file (`sync` for `sync/mod.rs`, `email` for `email/__init__.py`).
pub fn module_names(rel: &str) -> impl Iterator<Item = &str> {
    let mut parts = rel.rsplit('/');
    let file = parts.next().unwrap_or("");
    let stem = file.split('.').next().unwrap_or(file);
    let folder = matches!(stem, "mod" | "__init__" | "index" | "lib")
        .then(|| parts.next())
        .flatten();
    std::iter::once(stem).chain(folder)
}

/// Whether `line` imports something: `import …`, `from … import …`, `use …;`.
pub fn is_import(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("import ")
        || (t.starts_with("from ") && t.contains(" import "))
        || t.starts_with("use ")
        || t.starts_with("pub use ")
}

/// What a file imports.
#[derive(Debug, Default)]
pub struct Imports<'a> {
    /// Per import line: the module path it imports from, and the names it imports (their
    /// aliases too: `parser` in `import _header_value_parser as parser`).
    lines: Vec<(Vec<&'a str>, Vec<&'a str>)>,
    /// Per import line, in the same order: each alias, as (what it names, the alias); `self`
    /// for the module itself (`use …::semaphore::{self as sem}`).
    aliases: Vec<Vec<(&'a str, &'a str)>>,
}

impl<'a> Imports<'a> {
    pub fn of(text: &'a str) -> Imports<'a> {
        let mut imports = Imports::default();
        for line in text.lines().filter(|l| is_import(l)) {
            let path = imported_modules(line);
            let t = line.trim_start();
            let names: Vec<&str> = match t.strip_prefix("from ") {
                // `from X import a, b` brings `a` and `b` (modules or not), not all of `X`.
                Some(rest) => {
                    identifiers(rest.split_once(" import ").map_or("", |(_, n)| n)).collect()
                }
                None => match (t.find('{'), t.starts_with("import ")) {
                    // `use a::b::{c, self}`, `import {c} from "./b"`.
                    (Some(open), _) => {
                        let inner = &t[open..];
                        let mut names: Vec<&str> =
                            identifiers(inner.split(" from ").next().unwrap_or(inner)).collect();
                        if inner.contains("self") {
                            names.extend(path.last().copied());
                        }
                        names
                    }
                    // `import a.b`: the modules themselves.
                    (None, true) => path.clone(),
                    // `use a::b::c;`: the last step, a module or an item.
                    (None, false) => path.last().copied().into_iter().collect(),
                },
            };
            imports.aliases.push(aliases(t));
            imports.lines.push((path, names));
        }
        imports
    }

    /// Whether a file that imports these gets `name`, defined in the file at `rel` (relative
    /// path), through an import that names that file: the name is imported from the file's
    /// module (`from .queues import Queue`, `use …::queues::{Queue}`), or the module itself is
    /// imported (`import queues`, `from . import queues`, `use …::queues::{self}`). An import
    /// of the same name from elsewhere does not count. CrossCodeEval's notion of a cross-file
    /// name.
    pub fn brings_from(&self, name: &str, rel: &str) -> bool {
        let module = |m: &str| module_names(rel).any(|n| n == m);
        self.lines.iter().any(|(path, names)| {
            names.iter().any(|n| module(n))
                || (names.contains(&name) && path.iter().any(|p| module(p)))
        })
    }

    /// Whether the file at `rel` is imported as a module (`import parser`, `from . import
    /// errors`, `use …::chan;`, `use …::semaphore::{self}`): the importing file names its
    /// members through it (`errors.StartBoundaryNotFoundDefect`), each one possibly for the
    /// first time.
    pub fn brings_module(&self, rel: &str) -> bool {
        !self.module_refs(rel).is_empty()
    }

    /// The names by which the importing file refers to the module at `rel` (its name, or
    /// the alias it is imported as: `parser` for `from email import _header_value_parser as
    /// parser`); none if it is not imported as a module. An alias that happens to be another
    /// module's name (`parser.py`) does not import that module.
    pub fn module_refs(&self, rel: &str) -> Vec<&'a str> {
        let module = |m: &str| module_names(rel).any(|n| n == m);
        let mut refs = Vec::new();
        for ((path, names), aliases) in self.lines.iter().zip(&self.aliases) {
            let last = path.last().copied();
            for &n in names {
                if !module(n) || aliases.iter().any(|&(_, alias)| alias == n) {
                    continue;
                }
                let alias = aliases.iter().find(|&&(what, _)| {
                    what == n
                        || (what == "self" && Some(n) == last)
                        || what.ends_with(&format!(".{n}"))
                });
                refs.push(alias.map_or(n, |&(_, a)| a));
            }
        }
        refs.dedup();
        refs
    }
}

/// The `X as Y` pairs of an import line, as (`X` from its last `::` on, `Y`): `import a.b as c` →
/// (`a.b`, `c`), `from x import y as z, w` → (`y`, `z`), `use a::{self as b}` → (`self`, `b`),
/// `use a::B as C;` → (`B`, `C`).
fn aliases(line: &str) -> Vec<(&str, &str)> {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}' | '(' | ')' | ';'))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(3)
        .filter(|w| w[1] == "as")
        .filter_map(|w| {
            let what = w[0].rsplit("::").next().unwrap_or(w[0]);
            let alias = w[2];
            (alias.chars().next().is_some_and(is_start) && alias.chars().all(is_inner))
                .then_some((what, alias))
        })
        .collect()
}

/// The lowercase words an identifier is made of (`parse_content_type_header` → `parse`,
/// `content`, `type`, `header`; `MessageIDHeader` → `message`, `id`, `header`), a plural's
/// `s` dropped (`headers` → `header`), words of one letter or digits only left out. What ties
/// a member's name to the words of the code around the cursor.
pub fn subwords(ident: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let chars: Vec<char> = ident.chars().collect();
    let mut flush = |word: &mut String| {
        let w = std::mem::take(word).to_lowercase();
        let w = match w.strip_suffix('s') {
            Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_owned(),
            _ => w,
        };
        if w.chars().count() >= 2 && w.chars().any(char::is_alphabetic) {
            words.push(w);
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            flush(&mut word);
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        // A new word starts at `aB` and at the last capital of `ABc` (`IDHeader` → `ID`, `Header`).
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase() || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
            });
        if boundary {
            flush(&mut word);
        }
        word.push(c);
    }
    flush(&mut word);
    words
}

/// What starts a line comment in the language of a file with this extension.
pub fn line_comment(extension: &str) -> &'static str {
    match extension {
        "py" | "pyi" | "sh" | "bash" | "rb" | "pl" | "r" | "R" | "jl" | "nim" | "toml" | "yaml"
        | "yml" | "cmake" | "ex" | "exs" | "cr" | "tcl" | "ps1" => "#",
        "lua" | "sql" | "hs" | "elm" | "ada" => "--",
        "lisp" | "el" | "clj" | "scm" | "rkt" => ";;",
        "erl" | "hrl" | "tex" => "%",
        "vim" => "\"",
        _ => "//",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_bring_names_through_an_import_that_names_their_file() {
        let py = "from .queues import Queue, LifoQueue\nfrom . import futures\nimport email.utils\n\nx = 1\n";
        let imports = Imports::of(py);
        assert!(imports.brings_from("Queue", "queues.py"));
        assert!(!imports.brings_from("Queue", "other.py"));
        // Modules imported as modules bring all they define.
        assert!(imports.brings_from("Future", "futures.py"));
        assert!(imports.brings_from("formatdate", "email/utils.py"));
        assert!(!imports.brings_from("Future", "tasks.py"));
        let rs = "use crate::sync::batch_semaphore::{self as semaphore, TryAcquireError};\n";
        let imports = Imports::of(rs);
        assert!(imports.brings_from("TryAcquireError", "batch_semaphore.rs"));
        assert!(imports.brings_from("Semaphore", "batch_semaphore.rs"));
        assert!(!imports.brings_from("TryAcquireError", "errors.rs"));
        assert!(!imports.brings_from("Notify", "notify.rs"));
        let rs = "use std::sync::atomic::Ordering::{Acquire, Release};\nuse crate::sync::mpsc;\n";
        let imports = Imports::of(rs);
        // `Acquire` is imported, but not from batch_semaphore.rs, which defines one too.
        assert!(!imports.brings_from("Acquire", "batch_semaphore.rs"));
        assert!(imports.brings_from("channel", "mpsc/mod.rs"));
    }

    #[test]
    fn modules_imported_as_modules() {
        // (a file's imports, a module's path, the names the file refers to it by)
        let cases: &[(&str, &str, &[&str])] = &[
            ("from . import errors\n", "email/errors.py", &["errors"]),
            ("import email.utils\n", "email/utils.py", &["utils"]),
            // A name from the module, not the module.
            ("from .queues import Queue\n", "asyncio/queues.py", &[]),
            ("use crate::sync::mpsc::chan;\n", "mpsc/chan.rs", &["chan"]),
            ("use super::Semaphore;\n", "semaphore.rs", &[]),
            // Aliases: the module goes by its alias, and the alias is no module of its own.
            (
                "from email import _header_value_parser as parser\n",
                "email/_header_value_parser.py",
                &["parser"],
            ),
            (
                "from email import _header_value_parser as parser\n",
                "email/parser.py",
                &[],
            ),
            ("import os.path as osp\n", "os/path.py", &["osp"]),
            (
                "use crate::sync::batch_semaphore::{self as semaphore, TryAcquireError};\n",
                "sync/batch_semaphore.rs",
                &["semaphore"],
            ),
            (
                "use crate::sync::batch_semaphore::{self as semaphore, TryAcquireError};\n",
                "sync/semaphore.rs",
                &[],
            ),
        ];
        for &(text, rel, want) in cases {
            let imports = Imports::of(text);
            assert_eq!(imports.module_refs(rel), want, "{text} {rel}");
            assert_eq!(imports.brings_module(rel), !want.is_empty(), "{text} {rel}");
        }
    }

    #[test]
    fn identifiers_split_into_words() {
        assert_eq!(
            subwords("parse_content_transfer_encoding_header"),
            ["parse", "content", "transfer", "encoding", "header"]
        );
        assert_eq!(subwords("MessageIDHeader"), ["message", "id", "header"]);
        assert_eq!(
            subwords("FirstHeaderLineIsContinuationDefect"),
            ["first", "header", "line", "is", "continuation", "defect"]
        );
        assert_eq!(subwords("headers"), ["header"]);
        assert_eq!(subwords("address"), ["address"]);
        assert_eq!(subwords("encode_7or8bit"), ["encode", "7or8bit"]);
        assert_eq!(subwords("_x"), Vec::<String>::new());
        assert_eq!(subwords("HTTPServer2"), ["http", "server2"]);
        assert_eq!(subwords("éÉé"), ["éé"]);
    }

    #[test]
    fn identifiers_skip_keywords_short_words_and_numbers() {
        let got: Vec<&str> =
            identifiers("let value = self.parse_header(0x1f, ab, données);").collect();
        assert_eq!(got, ["value", "parse_header", "données"]);
    }

    #[test]
    fn definitions_across_languages() {
        let check = |line: &str, want: Option<&str>| assert_eq!(definition(line), want, "{line}");
        check("pub(crate) async fn send_all<T>(x: T) {", Some("send_all"));
        check("    def parse(self, text):", Some("parse"));
        check("class Message(Base):", Some("Message"));
        check("pub struct Semaphore {", Some("Semaphore"));
        check("const MAX_PERMITS: usize = 1;", Some("MAX_PERMITS"));
        check("export default function render() {", Some("render"));
        check("impl<T> Sender<T> {", None);
        check("DEFAULT_CHARSET = 'us-ascii'", Some("DEFAULT_CHARSET"));
        check("CRLF: str = '\\r\\n'", Some("CRLF"));
        check("    x = 1", None); // indented: a local
        check("if a == b:", None);
        check("func (s *Server) Serve() error {", None);
        check("func Serve() error {", Some("Serve"));
        check("pub ééé = 1", None);
    }

    #[test]
    fn imports_name_their_modules() {
        assert_eq!(imported_modules("from .queues import Queue"), ["queues"]);
        assert_eq!(
            imported_modules("from email._policybase import Policy"),
            ["email", "_policybase"]
        );
        assert_eq!(
            imported_modules("import asyncio.events as ev"),
            ["asyncio", "events"]
        );
        assert_eq!(
            imported_modules("use crate::sync::mpsc::{self, chan};"),
            ["sync", "mpsc"]
        );
        assert_eq!(
            imported_modules("import { a } from './util/strings.js';"),
            ["util", "strings"]
        );
        assert!(imported_modules("x = 1").is_empty());
    }

    #[test]
    fn any_text_is_scanned_without_panicking() {
        for line in [
            "pub é = 1",
            "é:=",
            "const",
            "fn",
            "pub(crate)",
            "𝔘 = 2",
            "x\u{0}y = 1",
            "  const é",
            "def",
            "export default",
            "import a as",
            "from . import x as",
            "use a::{self as",
            "import as as as",
            "from é import ü as ö",
        ] {
            let _ = definition(line);
            let _ = identifiers(line).count();
            let _ = Imports::of(line).module_refs("x/é.py");
            let _ = subwords(line);
        }
    }
}
