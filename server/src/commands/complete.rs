//! `amd-lsp complete`: one completion from the command line.

use std::io::Write;

use amd_engine::{
    CompletionRequest, Engine, EngineConfig, ModelRole, Outcome, Prompt, Sampling, Speculation,
    StopRules, TargetConfig,
};
use anyhow::{bail, Context, Result};

use crate::cli::{CompleteArgs, EngineArgs, SpeculateArg};

pub(crate) fn engine_config(args: &EngineArgs) -> EngineConfig {
    let mut config = EngineConfig::new(&args.model);
    config.n_threads = args.threads;
    config.n_ctx = args.ctx_size;
    config.kv_types.keys = args.cache_type_k.into();
    config.gpu_layers = args
        .gpu_layers
        .unwrap_or_else(amd_engine::default_gpu_layers);
    config
}

pub(crate) fn run(args: &CompleteArgs) -> Result<()> {
    let prefix = match (&args.prompt, &args.file) {
        (Some(prompt), _) => prompt.clone(),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (line, col) = (args.line.unwrap_or(1), args.col.unwrap_or(1));
            text_before(&text, line, col)
                .with_context(|| {
                    format!(
                        "{}:{line}:{col} is not a position in the file",
                        file.display()
                    )
                })?
                .to_owned()
        }
        (None, None) => bail!("give --prompt or --file with --line and --col"),
    };
    let mut config = engine_config(&args.engine);
    config.target = args.target.as_ref().map(|path| TargetConfig {
        model_path: path.clone(),
        gpu_layers: config.gpu_layers,
    });
    let engine = Engine::start(config)
        .with_context(|| format!("cannot load model {}", args.engine.model.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut prompt = runtime.block_on(engine.tokenize(prefix, engine.info().add_bos))?;
    // Keep the end of a long prefix: BOS, then the last tokens that leave room to generate.
    let budget = (engine.info().n_ctx as usize)
        .saturating_sub(args.max_tokens as usize + 1)
        .max(16);
    if prompt.len() > budget {
        let bos = engine.info().add_bos.then_some(engine.info().bos).flatten();
        let tail = prompt.split_off(prompt.len() - (budget - usize::from(bos.is_some())));
        prompt = bos.into_iter().chain(tail).collect();
    }
    let sampling = match args.temperature {
        None => Sampling::Greedy,
        Some(temperature) => Sampling::Random {
            temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    let req = CompletionRequest {
        prompt: Prompt::Tokens(prompt),
        max_tokens: args.max_tokens,
        sampling,
        stop: StopRules {
            stop_strings: args.stop.clone(),
            single_line: args.single_line,
        },
        record_margins: false,
        top_logprobs: 0,
        model: if args.target.is_some() {
            ModelRole::Target
        } else {
            ModelRole::Main
        },
        speculation: match args.speculate {
            SpeculateArg::Model if args.target.is_some() => {
                Some(Speculation::draft_model(if engine.info().device != "CPU" {
                    4
                } else {
                    2
                }))
            }
            SpeculateArg::Lookup => Some(Speculation::lookup(Vec::new())),
            SpeculateArg::Model | SpeculateArg::Off => None,
        },
        on_progress: None,
        document: None,
        heal: false,
        fresh_cache: false,
        not_first_line: None,
    };
    let outcome = runtime.block_on(engine.submit(req))?;
    let Outcome::Completed(completion) = outcome else {
        bail!("the completion was cancelled");
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(completion.text.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    if args.stats {
        let s = completion.stats;
        eprintln!(
            "device={:?} n_prompt={} n_evaluated={} n_generated={} n_drafted={} n_accepted={} stop={:?} load_ms={:.1} prefill_ms={:.1} decode_ms={:.1} decode_tok_s={:.1}",
            engine.target_info().unwrap_or(engine.info()).device,
            s.n_prompt,
            s.n_evaluated,
            s.n_generated,
            s.n_drafted,
            s.n_accepted,
            completion.stop,
            engine.info().load_ms,
            s.prefill_ms,
            s.decode_ms,
            s.n_generated as f64 / (s.decode_ms / 1e3).max(1e-9),
        );
    }
    Ok(())
}

/// The text before a 1-based line and 1-based character column; `None` when out of range.
fn text_before(text: &str, line: usize, col: usize) -> Option<&str> {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)?
    };
    let rest = &text[line_start..];
    let line_len = rest.find('\n').unwrap_or(rest.len());
    let byte_col = match rest[..line_len].char_indices().nth(col.checked_sub(1)?) {
        Some((i, _)) => i,
        None if col - 1 == rest[..line_len].chars().count() => line_len,
        None => return None,
    };
    Some(&text[..line_start + byte_col])
}

#[cfg(test)]
mod tests {
    use super::text_before;

    #[test]
    fn position_to_prefix() {
        let text = "ab\nçd\n";
        assert_eq!(text_before(text, 1, 1), Some(""));
        assert_eq!(text_before(text, 1, 3), Some("ab"));
        assert_eq!(text_before(text, 2, 2), Some("ab\nç"));
        assert_eq!(text_before(text, 2, 3), Some("ab\nçd"));
        assert_eq!(text_before(text, 3, 1), Some("ab\nçd\n"));
        assert_eq!(text_before(text, 2, 5), None);
        assert_eq!(text_before(text, 9, 1), None);
        assert_eq!(text_before(text, 1, 0), None);
    }
}
