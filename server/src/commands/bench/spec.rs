//! `amd-lsp bench spec`: the model card's speculative-decoding table on HumanEval.
//!
//! For each problem: the draft alone (for the cost ratio c), the target alone, then the
//! target with speculation at each requested draft length. Reports pass@1 of the target and
//! of speculation, the acceptance rate, tokens per target call, decode throughput and
//! speedup, and the speedup Leviathan et al. predict from the measured α, k and c.

use std::io::Write;
use std::time::Duration;

use amd_engine::speculative::math::{expected_tokens, leviathan_speedup};
use amd_engine::{
    Completion, CompletionRequest, DraftLength, Drafter, Engine, EngineConfig, JobStats, ModelRole,
    Outcome, Prompt, Sampling, Speculation, StopRules, TargetConfig,
};
use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::humaneval::{self, Task};
use crate::cli::{DrafterArg, SpecBenchArgs};

/// One configuration's totals over all problems.
#[derive(Debug, Default, Serialize)]
struct Row {
    run: String,
    /// Fixed draft length; `None` for the plain runs and adaptive speculation.
    k: Option<usize>,
    problems: usize,
    passed: usize,
    /// Problems whose output equals the target-only output token for token.
    identical: usize,
    /// Of those, the problems whose top-2 logit margins are the target-only run's to the bit
    /// (every run starts from an empty target cache, so all should be).
    bit_identical: usize,
    /// Problems whose output first differs where the target-only run's top-2 logit margin
    /// was below 1e-3 (a near-tie that batched evaluation may resolve the other way).
    near_tie: usize,
    /// Smallest target-only margin at a first difference that was not a near-tie.
    worst_margin: Option<f32>,
    tokens: usize,
    decode_ms: f64,
    draft_ms: f64,
    drafted: usize,
    accepted: usize,
    rejected: usize,
    target_calls: usize,
}

impl Row {
    fn new(run: &str, k: Option<usize>) -> Row {
        Row {
            run: run.to_owned(),
            k,
            ..Row::default()
        }
    }

    fn add(&mut self, s: &JobStats) {
        self.problems += 1;
        self.tokens += s.n_generated;
        self.decode_ms += s.decode_ms;
        self.draft_ms += s.draft_ms;
        self.drafted += s.n_drafted;
        self.accepted += s.n_accepted;
        self.rejected += s.n_rejected;
        self.target_calls += s.n_target_calls;
    }

    fn stats(&self) -> JobStats {
        JobStats {
            n_generated: self.tokens,
            n_drafted: self.drafted,
            n_accepted: self.accepted,
            n_rejected: self.rejected,
            n_target_calls: self.target_calls,
            ..JobStats::default()
        }
    }

    fn tok_s(&self) -> f64 {
        self.tokens as f64 / (self.decode_ms / 1e3).max(1e-9)
    }

    fn ms_per_token(&self) -> f64 {
        self.decode_ms / self.tokens.max(1) as f64
    }
}

/// Parses `1,2,4,auto` into fixed lengths and `None` for adaptive.
fn parse_lengths(spec: &str) -> Result<Vec<Option<usize>>> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "auto" => Ok(None),
            n => match n.parse::<usize>() {
                Ok(k) if (1..=32).contains(&k) => Ok(Some(k)),
                _ => bail!("--k: {n:?} is neither a draft length 1..=32 nor `auto`"),
            },
        })
        .collect()
}

pub(crate) fn run(args: &SpecBenchArgs) -> Result<()> {
    let lengths = parse_lengths(&args.k)?;
    let mut tasks = humaneval::load(&args.tasks)?;
    if let Some(n) = args.limit {
        tasks.truncate(n.max(1));
    }
    if !args.no_exec {
        // The harness itself must work before model outputs are judged by it.
        let task = &tasks[0];
        if let Some(solution) = &task.canonical_solution {
            let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
            if !humaneval::passes(task, solution, timeout)? {
                bail!(
                    "the canonical solution of {} fails its tests here: check python3",
                    task.task_id
                );
            }
        }
    }
    let mut config = EngineConfig::new(&args.draft);
    config.n_threads = args.threads;
    config.n_threads_batch = args.threads_batch;
    config.n_ctx = args.ctx_size;
    config.kv_reuse = !args.no_reuse;
    config.gpu_layers = args
        .gpu_layers
        .unwrap_or_else(amd_engine::default_gpu_layers);
    config.target = Some(TargetConfig {
        model_path: args.target.clone(),
        gpu_layers: config.gpu_layers,
    });
    let engine = Engine::start(config).context("cannot load the model pair")?;
    let target_info = engine.target_info().context("no target loaded")?;
    eprintln!(
        "draft {} ({} params), target {} ({} params), {} problems",
        args.draft.display(),
        engine.info().n_params,
        args.target.display(),
        target_info.n_params,
        tasks.len()
    );
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    let bench = Bench {
        engine: &engine,
        runtime: &runtime,
        max_tokens: args.max_tokens,
        sample: args.sample,
    };
    // Warm-up: page the weights in, size the buffers.
    bench.complete(&tasks[0], 0, ModelRole::Target, None)?;

    let drafter = match args.drafter {
        DrafterArg::Model => Drafter::Model,
        DrafterArg::Lookup => match Speculation::lookup(Vec::new()).drafter {
            d @ Drafter::Lookup(_) => d,
            Drafter::Model => unreachable!("lookup() builds a lookup drafter"),
        },
    };
    let mut draft_row = Row::new("draft only", None);
    let mut target_row = Row::new("target only", None);
    let mut spec_rows: Vec<Row> = lengths
        .iter()
        .map(|&k| Row::new("speculative", k))
        .collect();
    for (i, task) in tasks.iter().enumerate() {
        let draft = bench.complete(task, i, ModelRole::Main, None)?;
        draft_row.add(&draft.stats);
        let plain = bench.complete_with_margins(task, i, None)?;
        target_row.add(&plain.stats);
        target_row.passed += usize::from(!args.no_exec && bench.passes(task, &plain, timeout)?);
        for (row, &k) in spec_rows.iter_mut().zip(&lengths) {
            let speculation = Speculation {
                drafter: drafter.clone(),
                k: match k {
                    Some(k) => DraftLength::Fixed(k),
                    None => DraftLength::Adaptive {
                        init: if engine.info().device == "CPU" { 2 } else { 4 },
                        max: 8,
                    },
                },
            };
            let fast = bench.complete_with_margins(task, i, Some(speculation))?;
            row.add(&fast.stats);
            match first_difference(&plain, &fast) {
                None => {
                    row.identical += 1;
                    row.bit_identical += usize::from(same_bits(&plain.margins, &fast.margins));
                }
                Some(m) if m < NEAR_TIE => row.near_tie += 1,
                Some(m) => row.worst_margin = Some(row.worst_margin.map_or(m, |w| w.min(m))),
            }
            row.passed += usize::from(!args.no_exec && bench.passes(task, &fast, timeout)?);
        }
        eprintln!(
            "[{}/{}] {}: {} tokens, target {:.1} tok/s",
            i + 1,
            tasks.len(),
            task.task_id,
            plain.stats.n_generated,
            plain.stats.n_generated as f64 / (plain.stats.decode_ms / 1e3).max(1e-9)
        );
    }

    let c = draft_row.ms_per_token() / target_row.ms_per_token().max(1e-9);
    let table = render(args, &draft_row, &target_row, &spec_rows, c);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(table.as_bytes())?;
    stdout.flush()?;
    if let Some(path) = &args.json {
        let rows: Vec<&Row> = [&draft_row, &target_row]
            .into_iter()
            .chain(&spec_rows)
            .collect();
        let json = serde_json::json!({
            "draft": args.draft,
            "target": args.target,
            "problems": tasks.len(),
            "max_tokens": args.max_tokens,
            "sample": args.sample,
            "c": c,
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

struct Bench<'a> {
    engine: &'a Engine,
    runtime: &'a tokio::runtime::Runtime,
    max_tokens: u32,
    sample: bool,
}

impl Bench<'_> {
    fn complete(
        &self,
        task: &Task,
        i: usize,
        model: ModelRole,
        speculation: Option<Speculation>,
    ) -> Result<Completion> {
        let req = self.request(task, i, model, speculation);
        self.submit(task, req)
    }

    fn request(
        &self,
        task: &Task,
        i: usize,
        model: ModelRole,
        speculation: Option<Speculation>,
    ) -> CompletionRequest {
        let mut req = CompletionRequest::greedy(Prompt::Text(task.prompt.clone()), self.max_tokens);
        req.model = model;
        req.speculation = speculation;
        // The target alone and each speculative run start from the same (empty) target cache:
        // where earlier jobs left cells changes attention's summation order, and with it, at
        // a near-tie, a token (docs/architecture.md, "Speculative decoding"). The draft keeps
        // its cache, as it does in the editor.
        req.fresh_cache = model == ModelRole::Target;
        req.stop = StopRules {
            stop_strings: humaneval::STOP.iter().map(|s| (*s).to_owned()).collect(),
            single_line: false,
        };
        if self.sample {
            req.sampling = Sampling::Random {
                temperature: 0.8,
                top_k: 0,
                top_p: 0.95,
                seed: i as u32,
            };
        }
        req
    }

    fn submit(&self, task: &Task, req: CompletionRequest) -> Result<Completion> {
        match self.runtime.block_on(self.engine.submit(req)) {
            Ok(Outcome::Completed(c)) => Ok(c),
            Ok(Outcome::Cancelled(_)) => bail!("{}: the completion was cancelled", task.task_id),
            Err(e) => Err(e).with_context(|| format!("{}: completion failed", task.task_id)),
        }
    }

    /// A run of the target that records the top-2 logit margin of every generated token.
    fn complete_with_margins(
        &self,
        task: &Task,
        i: usize,
        speculation: Option<Speculation>,
    ) -> Result<Completion> {
        let mut req = self.request(task, i, ModelRole::Target, speculation);
        req.record_margins = true;
        self.submit(task, req)
    }

    fn passes(&self, task: &Task, completion: &Completion, timeout: Duration) -> Result<bool> {
        humaneval::passes(task, humaneval::truncate_at_stop(&completion.text), timeout)
    }
}

/// "identical + near-tie of problems", and the differences that are neither.
fn exactness(row: &Row) -> String {
    let differ = row.problems - row.identical - row.near_tie;
    let mut s = format!("{}+{} of {}", row.identical, row.near_tie, row.problems);
    if row.bit_identical < row.identical {
        s.push_str(&format!(
            " ({} with other margins)",
            row.identical - row.bit_identical
        ));
    }
    if let Some(m) = row.worst_margin {
        s.push_str(&format!(", {differ} DIFFER (margin ≥ {m:.4})"));
    }
    s
}

/// Whether two runs' margins are the same floats, bit for bit.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Below this top-2 logit margin a token is a near-tie (see `near_tie`).
const NEAR_TIE: f32 = 1e-3;

/// `None` when both outputs are the same tokens; otherwise the plain run's margin at the
/// first token where they differ (0 when the plain run has no margin there).
fn first_difference(plain: &Completion, fast: &Completion) -> Option<f32> {
    if plain.tokens == fast.tokens {
        return None;
    }
    let i = plain
        .tokens
        .iter()
        .zip(&fast.tokens)
        .take_while(|(a, b)| a == b)
        .count();
    Some(plain.margins.get(i).copied().unwrap_or(0.0))
}

fn render(args: &SpecBenchArgs, draft: &Row, target: &Row, spec: &[Row], c: f64) -> String {
    let pct = |r: &Row| {
        if args.no_exec {
            "—".to_owned()
        } else {
            format!("{:.1}%", 100.0 * r.passed as f64 / r.problems.max(1) as f64)
        }
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\n{} problems, max {} tokens, {}; c (draft ÷ target time per token) = {c:.3}\n\n",
        target.problems,
        args.max_tokens,
        if args.sample {
            "sampled (T 0.8, top-p 0.95)"
        } else {
            "greedy"
        },
    ));
    out.push_str("| run | k | pass@1 | α | accepted/drafted | tokens/call | decode tok/s | speedup | Leviathan | measured ÷ Leviathan | verify call ÷ step | with measured verify cost | same as target (exact+near-tie) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| draft only | | | | | 1.00 | {:.1} | | | | | | |\n",
        draft.tok_s()
    ));
    out.push_str(&format!(
        "| target only | | {} | | | 1.00 | {:.1} | 1.00× | | | 1.00 | | |\n",
        pct(target),
        target.tok_s()
    ));
    let step_ms = target.ms_per_token();
    for row in spec {
        let s = row.stats();
        let alpha = s.alpha().unwrap_or(0.0);
        let speedup = row.tok_s() / target.tok_s().max(1e-9);
        // Adaptive runs: the mean draft length per call.
        let k = row
            .k
            .map_or(row.drafted as f64 / row.target_calls.max(1) as f64, |k| {
                k as f64
            });
        let predicted = leviathan_speedup(alpha, k.round().max(1.0) as usize, c);
        // Where the time went: a target call (verification) in target steps, and the speedup
        // Leviathan's formula gives when verification costs that instead of one step.
        let calls = row.target_calls.max(1) as f64;
        let verify = (row.decode_ms - row.draft_ms) / calls / step_ms.max(1e-9);
        let drafting = row.draft_ms / calls / step_ms.max(1e-9);
        let with_cost = expected_tokens(alpha, k.round().max(1.0) as usize) / (drafting + verify);
        out.push_str(&format!(
            "| speculative | {} | {} | {:.3} | {:.3} | {:.2} | {:.1} | {:.2}× | {:.2}× | {:.0}% | {verify:.2} | {with_cost:.2}× | {} |\n",
            row.k.map_or(format!("auto (k̄ {k:.1})"), |k| k.to_string()),
            pct(row),
            alpha,
            s.accepted_share().unwrap_or(0.0),
            s.tokens_per_call().unwrap_or(0.0),
            row.tok_s(),
            speedup,
            predicted,
            100.0 * speedup / predicted.max(1e-9),
            if args.sample {
                "— (sampled)".to_owned()
            } else {
                exactness(row)
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{exactness, parse_lengths, Row};

    #[test]
    fn draft_lengths_parse() {
        assert_eq!(
            parse_lengths("1, 2,8,auto").expect("valid"),
            [Some(1), Some(2), Some(8), None]
        );
        assert!(parse_lengths("0").is_err());
        assert!(parse_lengths("x").is_err());
    }

    #[test]
    fn exactness_says_what_differs() {
        let mut row = Row::new("speculative", Some(2));
        row.problems = 20;
        row.identical = 20;
        row.bit_identical = 20;
        assert_eq!(exactness(&row), "20+0 of 20");
        row.bit_identical = 19;
        assert_eq!(exactness(&row), "20+0 of 20 (1 with other margins)");
        row.identical = 17;
        row.bit_identical = 17;
        row.near_tie = 1;
        row.worst_margin = Some(0.0123);
        assert_eq!(exactness(&row), "17+1 of 20, 2 DIFFER (margin ≥ 0.0123)");
    }
}
