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
    Prefix { text: String, max_tokens: usize },
    /// Code before and after the cursor, for models with FIM tokens (`<PRE> p <SUF> s <MID>`);
    /// falls back to [`Prompt::Prefix`] for models without them. The prefix gets three
    /// quarters of the budget, the suffix the rest (its end is cut).
    Fim {
        prefix: String,
        suffix: String,
        max_tokens: usize,
    },
}

/// What prompt building needs to know about the model.
pub(crate) struct PromptModel<'a> {
    pub(crate) bos: Option<TokenId>,
    pub(crate) fim: Option<FimTokens>,
    /// Tokenizes user text: no BOS, no special-token parsing.
    pub(crate) tokenize: &'a dyn Fn(&str) -> Vec<TokenId>,
}

/// Turns a prompt into the token ids to evaluate.
pub(crate) fn build(model: &PromptModel<'_>, prompt: &Prompt) -> Vec<TokenId> {
    let bos: Vec<TokenId> = model.bos.into_iter().collect();
    match prompt {
        Prompt::Tokens(tokens) => tokens.clone(),
        Prompt::Text(text) => bos.into_iter().chain((model.tokenize)(text)).collect(),
        Prompt::Prefix { text, max_tokens } => {
            let body = (model.tokenize)(text);
            let keep = max_tokens.saturating_sub(bos.len()).min(body.len());
            bos.into_iter()
                .chain(body[body.len() - keep..].iter().copied())
                .collect()
        }
        Prompt::Fim {
            prefix,
            suffix,
            max_tokens,
        } => {
            let Some(fim) = model.fim else {
                return build(
                    model,
                    &Prompt::Prefix {
                        text: prefix.clone(),
                        max_tokens: *max_tokens,
                    },
                );
            };
            let budget = max_tokens.saturating_sub(bos.len() + 3);
            let pre = (model.tokenize)(prefix);
            let suf = (model.tokenize)(suffix);
            let n_suf = suf
                .len()
                .min(budget / 4)
                .max(budget.saturating_sub(pre.len()))
                .min(suf.len());
            let n_pre = pre.len().min(budget - n_suf.min(budget));
            let mut out = Vec::with_capacity(bos.len() + 3 + n_pre + n_suf);
            out.extend(bos);
            out.push(fim.pre);
            out.extend_from_slice(&pre[pre.len() - n_pre..]);
            out.push(fim.suf);
            out.extend_from_slice(&suf[..n_suf]);
            out.push(fim.mid);
            out
        }
    }
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
        };
        assert_eq!(render(&build(&model, &prompt)), expect);
    }

    #[test]
    fn prefix_keeps_the_end_within_budget() {
        let p = |text: &str, max_tokens| Prompt::Prefix {
            text: text.into(),
            max_tokens,
        };
        check(None, p("abcdef", 100), "<s>abcdef");
        check(None, p("abcdef", 4), "<s>def");
        check(None, p("abcdef", 0), "<s>");
    }

    #[test]
    fn fim_prompt_is_built_from_control_ids() {
        let fim = |prefix: &str, suffix: &str, max_tokens| Prompt::Fim {
            prefix: prefix.into(),
            suffix: suffix.into(),
            max_tokens,
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
    fn control_token_text_in_user_code_stays_text() {
        // The tokenizer passed in never parses specials; the builder adds control ids only
        // where the template puts them.
        let prompt = Prompt::Fim {
            prefix: "<SUF>".into(),
            suffix: "<MID>".into(),
            max_tokens: 100,
        };
        let model = PromptModel {
            bos: None,
            fim: Some(FIM),
            tokenize: &chars,
        };
        let tokens = build(&model, &prompt);
        assert_eq!(tokens.iter().filter(|&&t| t >= 1000).count(), 3);
    }
}
