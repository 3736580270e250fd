//! Prompts in tokens: plain prefixes cut to a token budget, and fill-in-the-middle prompts
//! assembled from control-token ids. User text is tokenized without special-token parsing,
//! so nothing typed in a file can become a control token. Pure; the tokenizer is passed in.

use crate::{FimTokens, TokenId};

/// The prompt of a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Plain text; BOS added when the model wants it. Must fit the context as it is.
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<TokenId>),
    /// Code before the cursor. Beyond `max_tokens` (BOS included) the oldest tokens are dropped.
    Prefix {
        text: String,
        max_tokens: usize,
        /// Code from other files, before the text.
        context: Context,
    },
    /// Code before and after the cursor, for models with FIM tokens (`<PRE> p <SUF> s <MID>`);
    /// falls back to [`Prompt::Prefix`] for models without them. The prefix gets three
    /// quarters of the budget, the suffix the rest (its end is cut).
    Fim {
        prefix: String,
        /// Code of the middle already written, placed after the FIM middle token
        /// (`<PRE> p <SUF> s <MID> m`): the cursor's line up to the cursor, as llama.vim sends
        /// it, so that typing on a line only appends to the prompt and the KV cache of the
        /// prefix and suffix stays as it is. Empty: the classic `<PRE> p <SUF> s <MID>`.
        middle: String,
        suffix: String,
        max_tokens: usize,
        /// Where the code comes from. Models with repository tokens (Qwen2.5-Coder) are
        /// prompted the way they were trained on repositories:
        /// `<|repo_name|>{repo}\n<|file_sep|>{path}\n<|fim_prefix|>…`.
        file: Option<RepoFile>,
        /// Code from other files, before the current file's.
        context: Context,
    },
}

/// Code from elsewhere in the project, put in front of the current file's code: for models with
/// repository tokens as the files before it (`<|file_sep|>{path}\n{text}`), for the others as
/// blocks headed by a comment line with their path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// In the order they go into the prompt. Keep it stable: a chunk's KV cache stays valid
    /// while the chunks before it stay the same.
    pub chunks: Vec<ContextChunk>,
    /// What starts a line comment in the current file's language (`//`, `#`): the path lines
    /// of models without repository tokens.
    pub line_comment: String,
    /// At most this many tokens for all chunks (and never more than half the prompt's budget);
    /// a chunk that would pass it is left out, the ones after it still go in if they fit.
    pub max_tokens: usize,
}

/// A piece of another file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextChunk {
    /// The file's path relative to its project, `/`-separated.
    pub path: String,
    pub text: String,
}

/// A file's place in its project, for prompts of models with repository tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    /// The project's name (its folder's name).
    pub repo: String,
    /// The file's path relative to the project's root, `/`-separated.
    pub path: String,
}

/// What prompt building needs to know about the model.
pub(crate) struct PromptModel<'a> {
    pub(crate) bos: Option<TokenId>,
    pub(crate) fim: Option<FimTokens>,
    /// Tokenizes user text: no BOS, no special-token parsing.
    pub(crate) tokenize: &'a dyn Fn(&str) -> Vec<TokenId>,
    /// Tokenizes user text that continues other text: as `tokenize`, without the space a
    /// SentencePiece tokenizer puts in front of each separately tokenized text (CodeLlama's
    /// reference infilling format has none before the suffix).
    pub(crate) tokenize_continuation: &'a dyn Fn(&str) -> Vec<TokenId>,
}

/// A prompt in tokens, and where the text before the cursor ends in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Built {
    pub(crate) tokens: Vec<TokenId>,
    /// `tokens[..prefix_end]` ends with the last token of the code before the cursor, and
    /// `tokens[prefix_start..prefix_end]` is that code (for [`Prompt::Prefix`] and
    /// [`Prompt::Fim`]; the range is empty for the others).
    pub(crate) prefix_start: usize,
    pub(crate) prefix_end: usize,
}

/// Turns a prompt into the token ids to evaluate.
#[cfg(test)]
pub(crate) fn build(model: &PromptModel<'_>, prompt: &Prompt) -> Vec<TokenId> {
    build_marked(model, prompt).tokens
}

/// [`build`], also saying where the code before the cursor is.
pub(crate) fn build_marked(model: &PromptModel<'_>, prompt: &Prompt) -> Built {
    let bos: Vec<TokenId> = model.bos.into_iter().collect();
    let plain = |tokens: Vec<TokenId>| Built {
        prefix_start: tokens.len(),
        prefix_end: tokens.len(),
        tokens,
    };
    match prompt {
        Prompt::Tokens(tokens) => plain(tokens.clone()),
        Prompt::Text(text) => plain(bos.into_iter().chain((model.tokenize)(text)).collect()),
        Prompt::Prefix {
            text,
            max_tokens,
            context,
        } => {
            let context = context_tokens(model, None, context, *max_tokens);
            let body = (model.tokenize)(text);
            let keep = max_tokens
                .saturating_sub(bos.len() + context.len())
                .min(body.len());
            let prefix_start = bos.len() + context.len();
            let tokens: Vec<TokenId> = bos
                .into_iter()
                .chain(context)
                .chain(body[body.len() - keep..].iter().copied())
                .collect();
            Built {
                prefix_start,
                prefix_end: tokens.len(),
                tokens,
            }
        }
        Prompt::Fim {
            prefix,
            middle,
            suffix,
            max_tokens,
            file,
            context,
        } => {
            let Some(fim) = model.fim else {
                return build_marked(
                    model,
                    &Prompt::Prefix {
                        text: format!("{prefix}{middle}"),
                        max_tokens: *max_tokens,
                        context: context.clone(),
                    },
                );
            };
            // `<|repo_name|>{repo}\n`, the other files, `<|file_sep|>{path}\n`.
            let (repo, path) = match (file, fim.repo_name, fim.file_sep) {
                (Some(file), Some(repo_name), Some(file_sep)) => {
                    let mut repo = vec![repo_name];
                    repo.extend((model.tokenize_continuation)(&format!("{}\n", file.repo)));
                    let mut path = vec![file_sep];
                    path.extend((model.tokenize_continuation)(&format!("{}\n", file.path)));
                    (repo, path)
                }
                _ => (Vec::new(), Vec::new()),
            };
            // A header that would take more than a quarter of the budget is left out.
            let (repo, path) = if repo.len() + path.len() > max_tokens / 4 {
                (Vec::new(), Vec::new())
            } else {
                (repo, path)
            };
            let context = context_tokens(model, Some(fim), context, *max_tokens);
            let header: Vec<TokenId> = [repo, context, path].concat();
            let mid = if middle.is_empty() {
                Vec::new()
            } else {
                (model.tokenize_continuation)(middle)
            };
            let budget = max_tokens.saturating_sub(bos.len() + 3 + header.len() + mid.len());
            let pre = (model.tokenize)(prefix);
            let suf = (model.tokenize_continuation)(suffix);
            let n_suf = suf
                .len()
                .min(budget / 4)
                .max(budget.saturating_sub(pre.len()))
                .min(suf.len());
            let n_pre = pre.len().min(budget - n_suf.min(budget));
            let mut out = Vec::with_capacity(bos.len() + 3 + n_pre + n_suf);
            out.extend(bos);
            out.extend(header);
            out.push(fim.pre);
            let mut prefix_start = out.len();
            out.extend_from_slice(&pre[pre.len() - n_pre..]);
            let mut prefix_end = out.len();
            out.push(fim.suf);
            out.extend_from_slice(&suf[..n_suf]);
            out.push(fim.mid);
            if !mid.is_empty() {
                // The code just before the cursor is the middle's.
                prefix_start = out.len();
                out.extend_from_slice(&mid);
                prefix_end = out.len();
            }
            Built {
                tokens: out,
                prefix_start,
                prefix_end,
            }
        }
    }
}

/// The tokens of `context`'s chunks that fit its budget and half of `max_tokens`, each chunk
/// tokenized on its own (so its tokens do not depend on its neighbours).
fn context_tokens(
    model: &PromptModel<'_>,
    fim: Option<FimTokens>,
    context: &Context,
    max_tokens: usize,
) -> Vec<TokenId> {
    let limit = context.max_tokens.min(max_tokens / 2);
    let mut out = Vec::new();
    for chunk in &context.chunks {
        let mut text = chunk.text.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let block: Vec<TokenId> = match fim.and_then(|f| f.file_sep) {
            Some(file_sep) => std::iter::once(file_sep)
                .chain((model.tokenize_continuation)(&format!(
                    "{}\n{text}",
                    chunk.path
                )))
                .collect(),
            None => (model.tokenize_continuation)(&format!(
                "{} {}\n{text}\n",
                context.line_comment, chunk.path
            )),
        };
        if out.len() + block.len() <= limit {
            out.extend(block);
        }
    }
    out
}

/// Token healing ([`crate::CompletionRequest::heal`]): takes the last token of the code
/// before the cursor out of `built` and returns its text, which the generated text must start
/// with. `None` (nothing taken) when there is no such token or its text is not whole UTF-8
/// (a byte token of a longer character).
///
/// A token of two or more whitespace characters ending in a space or tab (the indentation a
/// cursor sits after) gives back only its last character: the rest is tokenized again
/// (`tokenize`, a continuation) and stays in the prompt. Both kinds of vocabulary write
/// `<indent> word` as the indentation less one space, then ` word` (GPT-2's pre-tokenizer
/// splits a space run before a word that way; SentencePiece's `▁word` does the same), so one
/// space left to heal is what the model saw in training. Healing the whole run let the model
/// rebuild it from short space tokens, a split it never saw, and it then wrote spaces until
/// the budget ran out (Qwen2.5-Coder-0.5B: 7 + 1 + 1 … after 12 spaces).
pub(crate) fn heal(
    built: &mut Built,
    piece: &dyn Fn(TokenId) -> Vec<u8>,
    tokenize: &dyn Fn(&str) -> Vec<TokenId>,
) -> Option<Vec<u8>> {
    if built.prefix_end <= built.prefix_start {
        return None;
    }
    let at = built.prefix_end - 1;
    let text = String::from_utf8(piece(built.tokens[at])).ok()?;
    if text.is_empty() {
        return None;
    }
    let last = text.chars().next_back()?;
    let kept = &text[..text.len() - last.len_utf8()];
    if matches!(last, ' ' | '\t') && !kept.is_empty() && kept.chars().all(char::is_whitespace) {
        let retokenized = tokenize(kept);
        let n = retokenized.len();
        built.tokens.splice(at..=at, retokenized);
        built.prefix_end = at + n;
        return Some(last.to_string().into_bytes());
    }
    built.tokens.remove(at);
    built.prefix_end = at;
    Some(text.into_bytes())
}

/// Whether a token whose text is `piece` may come next while `pending` (the rest of the
/// healed text) has not been generated yet: it must cover `pending` or be part of it.
pub(crate) fn heals(pending: &[u8], piece: &[u8]) -> bool {
    !piece.is_empty() && (piece.starts_with(pending) || pending.starts_with(piece))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per character: 'a' → 97. Control ids are ≥ 1000.
    fn chars(text: &str) -> Vec<TokenId> {
        text.chars().map(|c| c as TokenId).collect()
    }

    const FIM: FimTokens = FimTokens {
        pre: 1001,
        suf: 1002,
        mid: 1003,
        eot: Some(1004),
        repo_name: None,
        file_sep: None,
    };

    fn render(tokens: &[TokenId]) -> String {
        tokens
            .iter()
            .map(|&t| match t {
                1 => "<s>".to_owned(),
                1001 => "<PRE>".to_owned(),
                1002 => "<SUF>".to_owned(),
                1003 => "<MID>".to_owned(),
                t => char::from_u32(t as u32)
                    .map(String::from)
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn check(fim: Option<FimTokens>, prompt: Prompt, expect: &str) {
        let model = PromptModel {
            bos: Some(1),
            fim,
            tokenize: &chars,
            tokenize_continuation: &chars,
        };
        assert_eq!(render(&build(&model, &prompt)), expect);
    }

    #[test]
    fn prefix_keeps_the_end_within_budget() {
        let p = |text: &str, max_tokens| Prompt::Prefix {
            text: text.into(),
            max_tokens,
            context: Context::default(),
        };
        check(None, p("abcdef", 100), "<s>abcdef");
        check(None, p("abcdef", 4), "<s>def");
        check(None, p("abcdef", 0), "<s>");
    }

    #[test]
    fn fim_prompt_is_built_from_control_ids() {
        let fim = |prefix: &str, suffix: &str, max_tokens| Prompt::Fim {
            prefix: prefix.into(),
            middle: String::new(),
            suffix: suffix.into(),
            max_tokens,
            file: None,
            context: Default::default(),
        };
        check(
            Some(FIM),
            fim("def f(", "):", 100),
            "<s><PRE>def f(<SUF>):<MID>",
        );
        // Budget 4 + 16: the suffix gets a quarter (4), the prefix the rest (12).
        check(
            Some(FIM),
            fim("0123456789abcdefghij", "ABCDEFGHIJ", 20),
            "<s><PRE>89abcdefghij<SUF>ABCD<MID>",
        );
        // A short prefix leaves its unused budget to the suffix.
        check(
            Some(FIM),
            fim("ab", "ABCDEFGHIJ", 12),
            "<s><PRE>ab<SUF>ABCDEF<MID>",
        );
        // Without FIM tokens the suffix is not part of the prompt.
        check(None, fim("def f(", "):", 100), "<s>def f(");
    }

    #[test]
    fn the_cursor_line_after_the_middle_token_makes_typing_append() {
        let model = PromptModel {
            bos: Some(1),
            fim: Some(FIM),
            tokenize: &chars,
            tokenize_continuation: &chars,
        };
        let fim = |middle: &str| Prompt::Fim {
            prefix: "def f(x):\n".into(),
            middle: middle.into(),
            suffix: "\nprint(f(1))".into(),
            max_tokens: 100,
            file: None,
            context: Default::default(),
        };
        let built = build_marked(&model, &fim("    re"));
        assert_eq!(
            render(&built.tokens),
            "<s><PRE>def f(x):\n<SUF>\nprint(f(1))<MID>    re"
        );
        // The code before the cursor (what healing takes its last token from) is the middle's.
        assert_eq!(
            render(&built.tokens[built.prefix_start..built.prefix_end]),
            "    re"
        );
        let longer = build(&model, &fim("    ret"));
        assert!(
            longer.starts_with(&built.tokens),
            "a typed character only appends"
        );
        // Without FIM tokens: the prefix and the middle, in order.
        let plain = PromptModel { fim: None, ..model };
        assert_eq!(
            render(&build(&plain, &fim("    re"))),
            "<s>def f(x):\n    re"
        );
    }

    #[test]
    fn control_token_text_in_user_code_stays_text() {
        // The tokenizer passed in never parses specials; the builder adds control ids only
        // where the template puts them.
        let prompt = Prompt::Fim {
            prefix: "<SUF>".into(),
            middle: String::new(),
            suffix: "<MID>".into(),
            max_tokens: 100,
            file: None,
            context: Default::default(),
        };
        let model = PromptModel {
            bos: None,
            fim: Some(FIM),
            tokenize: &chars,
            tokenize_continuation: &chars,
        };
        let tokens = build(&model, &prompt);
        assert_eq!(tokens.iter().filter(|&&t| t >= 1000).count(), 3);
    }

    /// SentencePiece-like: every separately tokenized text gets a leading '_' (id 95).
    fn spm(text: &str) -> Vec<TokenId> {
        std::iter::once('_' as TokenId).chain(chars(text)).collect()
    }

    #[test]
    fn the_suffix_gets_no_space_in_front() {
        let model = PromptModel {
            bos: Some(1),
            fim: Some(FIM),
            tokenize: &spm,
            tokenize_continuation: &chars,
        };
        let prompt = Prompt::Fim {
            prefix: "f(".into(),
            middle: String::new(),
            suffix: "x)".into(),
            max_tokens: 100,
            file: None,
            context: Default::default(),
        };
        // The prefix keeps its space (CodeLlama's "<PRE> {pre}"), the suffix has none.
        assert_eq!(render(&build(&model, &prompt)), "<s><PRE>_f(<SUF>x)<MID>");
    }

    #[test]
    fn healing_takes_back_the_last_token_of_the_code_before_the_cursor() {
        let model = PromptModel {
            bos: Some(1),
            fim: Some(FIM),
            tokenize: &chars,
            tokenize_continuation: &chars,
        };
        let piece = |t: TokenId| {
            if t >= 1000 || t == 1 {
                Vec::new()
            } else {
                char::from_u32(t as u32)
                    .map(String::from)
                    .unwrap_or_default()
                    .into_bytes()
            }
        };
        let fim = Prompt::Fim {
            prefix: "ab ".into(),
            middle: String::new(),
            suffix: "}".into(),
            max_tokens: 100,
            file: None,
            context: Default::default(),
        };
        let mut built = build_marked(&model, &fim);
        assert_eq!(heal(&mut built, &piece, &chars), Some(b" ".to_vec()));
        assert_eq!(render(&built.tokens), "<s><PRE>ab<SUF>}<MID>");
        let mut built = build_marked(
            &model,
            &Prompt::Prefix {
                text: "x=".into(),
                max_tokens: 100,
                context: Context::default(),
            },
        );
        assert_eq!(heal(&mut built, &piece, &chars), Some(b"=".to_vec()));
        assert_eq!(render(&built.tokens), "<s>x");
        // Nothing before the cursor: nothing to take back (never BOS or a control token).
        let mut empty = build_marked(
            &model,
            &Prompt::Fim {
                prefix: String::new(),
                middle: String::new(),
                suffix: "x".into(),
                max_tokens: 100,
                file: None,
                context: Default::default(),
            },
        );
        assert_eq!(heal(&mut empty, &piece, &chars), None);
        assert_eq!(render(&empty.tokens), "<s><PRE><SUF>x<MID>");

        // A run of spaces (token 2000, four of them) gives back its last space only; the
        // other three are tokenized again. A one-space token and a newline-ended run are
        // taken back whole.
        let piece = |t: TokenId| match t {
            2000 => b"    ".to_vec(),
            2001 => b"\t\n".to_vec(),
            t => piece(t),
        };
        for (last, healed, rest) in [
            (2000, " ", "<s>x   "),
            (' ' as TokenId, " ", "<s>x"),
            (2001, "\t\n", "<s>x"),
        ] {
            let mut built = Built {
                tokens: vec![1, 'x' as TokenId, last],
                prefix_start: 1,
                prefix_end: 3,
            };
            let got = heal(&mut built, &piece, &chars);
            assert_eq!(got.as_deref(), Some(healed.as_bytes()), "token {last}");
            assert_eq!(render(&built.tokens), rest, "token {last}");
            assert_eq!(built.prefix_end, built.tokens.len(), "token {last}");
        }

        assert!(heals(b"    ", b"    return"));
        assert!(heals(b"    ", b"  "));
        assert!(!heals(b"    ", b"\treturn"));
        assert!(!heals(b"  ", b""));
    }

    /// A model with Qwen2.5-Coder's kind of FIM: repository tokens 1005 and 1006, no BOS.
    fn repo_model() -> PromptModel<'static> {
        PromptModel {
            bos: None,
            fim: Some(FimTokens {
                repo_name: Some(1005),
                file_sep: Some(1006),
                ..FIM
            }),
            tokenize: &chars,
            tokenize_continuation: &chars,
        }
    }

    fn render_repo(tokens: &[TokenId]) -> String {
        tokens
            .iter()
            .map(|&t| match t {
                1005 => "<REPO>".to_owned(),
                1006 => "<FILE>".to_owned(),
                t => render(&[t]),
            })
            .collect()
    }

    #[test]
    fn repository_tokens_name_the_file_before_the_prefix() {
        let model = repo_model();
        let prompt = |max_tokens| Prompt::Fim {
            prefix: "x = ".into(),
            middle: String::new(),
            suffix: "\n".into(),
            max_tokens,
            file: Some(RepoFile {
                repo: "r".into(),
                path: "src/a.py".into(),
            }),
            context: Default::default(),
        };
        let render = render_repo;
        assert_eq!(
            render(&build(&model, &prompt(100))),
            "<REPO>r\n<FILE>src/a.py\n<PRE>x = <SUF>\n<MID>"
        );
        // Without room for it, the header is left out rather than the code.
        assert_eq!(render(&build(&model, &prompt(40))), "<PRE>x = <SUF>\n<MID>");
    }

    fn context(chunks: &[(&str, &str)], max_tokens: usize) -> Context {
        Context {
            chunks: chunks
                .iter()
                .map(|(path, text)| ContextChunk {
                    path: (*path).into(),
                    text: (*text).into(),
                })
                .collect(),
            line_comment: "#".into(),
            max_tokens,
        }
    }

    #[test]
    fn other_files_go_between_the_repository_and_the_current_file() {
        let model = repo_model();
        let prompt = |context| Prompt::Fim {
            prefix: "x = ".into(),
            middle: String::new(),
            suffix: "\n".into(),
            max_tokens: 200,
            file: Some(RepoFile {
                repo: "r".into(),
                path: "a.py".into(),
            }),
            context,
        };
        let render = render_repo;
        let two = [("b.py", "def f():\n"), ("c.py", "Y = 1")];
        assert_eq!(
            render(&build(&model, &prompt(context(&two, 100)))),
            "<REPO>r\n<FILE>b.py\ndef f():\n<FILE>c.py\nY = 1\n<FILE>a.py\n<PRE>x = <SUF>\n<MID>"
        );
        // A chunk over the budget is left out; the next one still goes in if it fits.
        let long = [
            ("b.py", "0123456789012345678901234567890"),
            ("c.py", "Y = 1"),
        ];
        assert_eq!(
            render(&build(&model, &prompt(context(&long, 20)))),
            "<REPO>r\n<FILE>c.py\nY = 1\n<FILE>a.py\n<PRE>x = <SUF>\n<MID>"
        );
    }

    #[test]
    fn without_repository_tokens_other_files_are_commented_blocks() {
        let model = PromptModel {
            bos: Some(1),
            fim: None,
            tokenize: &chars,
            tokenize_continuation: &chars,
        };
        let prompt = |max_tokens| Prompt::Prefix {
            text: "abcdefghijklmnopqrstuvwxyz".into(),
            max_tokens,
            context: context(&[("b.py", "Y = 1")], 100),
        };
        assert_eq!(
            render(&build(&model, &prompt(100))),
            "<s># b.py\nY = 1\n\nabcdefghijklmnopqrstuvwxyz"
        );
        // The context takes at most half the budget; the code before the cursor is cut first
        // (its oldest tokens), never the context's middle.
        assert_eq!(
            render(&build(&model, &prompt(30))),
            "<s># b.py\nY = 1\n\nlmnopqrstuvwxyz"
        );
        assert_eq!(
            render(&build(&model, &prompt(20))),
            "<s>hijklmnopqrstuvwxyz"
        );
    }
}
