//! Engine throughput against the same loop written directly on llama-cpp-2.
//!
//! `cargo bench -p amd-engine --bench decode -- [--reps N] [--types f16,q8_0] [--threads 1,2]
//! [--chunks 64,512] [--fa on,off] [--keys q8_0,f16] [--parked 0,512] [--gen N] [--decode-ctx N]
//! [--busy]`; `--types` also takes paths of GGUF files (a real model, e.g. one from
//! `scripts/fetch-models.sh`); `--threads auto` lets the engine choose by the load (set `GOMP_SPINCOUNT=20000`
//! as `amd-lsp` does; its direct counterpart runs on all cores).
//!
//! Makes the AMD-Llama-135m-shaped random model (F16 and Q8_0) under `target/bench-models/`
//! on first use. Each measurement runs in a child process (llama.cpp's backend can be set up
//! once per process), variants interleaved rep by rep so machine noise hits all alike;
//! medians are printed as a Markdown table. `--busy` keeps one core busy with a spinning
//! process during the runs (a laptop compiling in the background).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use amd_engine::testing::testmodel::{write_random_llama, LlamaShape, WeightType};
use amd_engine::{CompletionRequest, Engine, EngineConfig, KvType, Prompt};

const N_PREFILL: usize = 512;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
        return;
    }
    let opt = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    let list = |s: String| s.split(',').map(str::to_owned).collect::<Vec<_>>();
    let reps: usize = opt("--reps", "5").parse().expect("--reps N");
    let types = list(opt("--types", "q8_0,f16"));
    let threads = list(opt("--threads", "1,2"));
    let chunks = list(opt("--chunks", "128"));
    let fas = list(opt("--fa", "on"));
    // Element type of the KV cache's keys (values are F16).
    let keys = list(opt("--keys", "q8_0"));
    // Ours only: with N > 0, the engine parks the N-token prompt evaluated before the decode
    // prompt (as after an edit far above the cursor) instead of dropping it, and decodes with
    // those cells still in the cache.
    let parked = list(opt("--parked", "0"));
    let n_gen = opt("--gen", "128");
    // Tokens in the context before decoding starts (decode slows as the context grows).
    let decode_ctx = opt("--decode-ctx", "16");
    let busy = args.iter().any(|a| a == "--busy");

    let models: Vec<(String, PathBuf)> = types.iter().map(|t| bench_model(t)).collect();
    let _hog = busy.then(|| {
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .map(KillOnDrop)
            .expect("start busy loop")
    });

    let mut variants: Vec<(String, Vec<String>)> = Vec::new();
    for (t, path) in &models {
        for th in &threads {
            let p = path.display().to_string();
            for (fa, k) in fas.iter().flat_map(|fa| keys.iter().map(move |k| (fa, k))) {
                let direct = vec![
                    "direct".into(),
                    p.clone(),
                    th.clone(),
                    "0".into(),
                    fa.clone(),
                    k.clone(),
                ];
                variants.push((format!("{t} {th}t direct fa {fa} keys {k}"), direct));
                for (c, n) in chunks
                    .iter()
                    .flat_map(|c| parked.iter().map(move |n| (c, n)))
                {
                    let ours = vec![
                        "ours".into(),
                        p.clone(),
                        th.clone(),
                        format!("{c}:{n}"),
                        fa.clone(),
                        k.clone(),
                    ];
                    let name = format!("{t} {th}t ours chunk {c} fa {fa} keys {k} parked {n}");
                    variants.push((name, ours));
                }
            }
        }
    }
    let mut results: Vec<Vec<[f64; 3]>> = vec![Vec::new(); variants.len()];
    for rep in 0..reps {
        for (i, (name, child_args)) in variants.iter().enumerate() {
            let out = Command::new(std::env::current_exe().expect("exe"))
                .arg("--child")
                .args(child_args)
                .arg(&n_gen)
                .arg(&decode_ctx)
                .output()
                .expect("run child");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().expect("number"))
                .collect();
            results[i].push([v[0], v[1], v[2]]);
            eprintln!(
                "rep {rep} {name}: load {:.0} ms, prefill {:.0} tok/s, decode {:.1} tok/s",
                v[0], v[1], v[2]
            );
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n| model | threads | variant | load ms | prefill tok/s ({N_PREFILL}) | decode tok/s | prefill vs direct | decode vs direct |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let mut direct: &[[f64; 3]] = &[];
    for ((name, _), r) in variants.iter().zip(&results) {
        let med = |k: usize| median(r.iter().map(|x| x[k]).collect());
        let parts: Vec<&str> = name.splitn(3, ' ').collect();
        if parts[2].starts_with("direct") {
            direct = r;
        }
        // Paired: each rep's ratio to the direct run just before it, then the median, so
        // drifting machine load cancels out.
        let ratio = |k: usize| median(r.iter().zip(direct).map(|(o, d)| o[k] / d[k]).collect());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.3} | {:.3} |",
            parts[0],
            parts[1].trim_end_matches('t'),
            parts[2],
            med(0),
            med(1),
            med(2),
            ratio(1),
            ratio(2)
        );
    }
    let _ = writeln!(
        out,
        "\nmedians of {reps} interleaved runs (ratios: median of per-rep ratios); busy core: {busy}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The model to run and its label: a GGUF file given by path, or the random 135M-shaped model
/// of that weight type.
fn bench_model(wtype: &str) -> (String, PathBuf) {
    if wtype.ends_with(".gguf") {
        let path = PathBuf::from(wtype);
        let label = path
            .file_stem()
            .map(|s| s.to_string_lossy().replace(' ', "_"))
            .unwrap_or_default();
        return (label, path);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-models");
    std::fs::create_dir_all(&dir).expect("bench model dir");
    let (w, name) = match wtype {
        "f16" => (WeightType::F16, "amd135m-random-f16.gguf"),
        "q8_0" => (WeightType::Q8_0, "amd135m-random-q8_0.gguf"),
        other => panic!("unknown type {other}"),
    };
    let path = dir.join(name);
    if !path.exists() {
        let vocab = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/llama2-vocab/llama2-vocab.gguf");
        eprintln!("writing {}", path.display());
        write_random_llama(&vocab, &LlamaShape::amd_135m(), w, 1, &path)
            .expect("write bench model");
    }
    (wtype.to_owned(), path)
}

/// Deterministic prompt tokens: BOS then ordinary vocabulary ids.
fn prompt_tokens(n: usize, salt: u32) -> Vec<i32> {
    std::iter::once(1)
        .chain(
            (1..n as u32).map(|i| (259 + (i.wrapping_mul(2_654_435_761) ^ salt) % 31_000) as i32),
        )
        .collect()
}

/// Prints "load_ms prefill_tok_s decode_tok_s" for one variant.
fn child(args: &[String]) {
    let (kind, model, threads, chunk, fa) = (
        args[0].as_str(),
        PathBuf::from(&args[1]),
        // `auto`: ours leaves both counts to the engine (all cores while other processes
        // leave them free, one otherwise); direct runs on all cores.
        match args[2].as_str() {
            "auto" => 0,
            n => n.parse::<u32>().expect("threads"),
        },
        args[3]
            .split(':')
            .next()
            .unwrap_or("0")
            .parse::<u32>()
            .expect("chunk"),
        args[4] == "on",
    );
    let parked: usize = args[3]
        .split(':')
        .nth(1)
        .unwrap_or("0")
        .parse()
        .expect("parked");
    let keys = match args[5].as_str() {
        "f16" => KvType::F16,
        "f32" => KvType::F32,
        "q8_0" => KvType::Q8_0,
        other => panic!("unknown key type {other}"),
    };
    let n_gen = args[6].parse::<usize>().expect("gen");
    let decode_ctx = args[7].parse::<usize>().expect("decode ctx");
    let r = match kind {
        "ours" => ours(&model, threads, chunk, fa, keys, parked, n_gen, decode_ctx),
        _ => direct::run(&model, threads, fa, keys, n_gen, decode_ctx),
    };
    let _ = writeln!(std::io::stdout(), "{} {} {}", r[0], r[1], r[2]);
}

// One argument per measured dimension, as the child's command line gives them.
#[allow(clippy::too_many_arguments)]
fn ours(
    model: &Path,
    threads: u32,
    chunk: u32,
    fa: bool,
    keys: KvType,
    parked: usize,
    n_gen: usize,
    decode_ctx: usize,
) -> [f64; 3] {
    let started = Instant::now();
    let mut config = EngineConfig::new(model);
    config.n_ctx = 2048;
    config.n_threads = threads;
    config.n_threads_batch = threads;
    config.prefill_chunk = chunk;
    config.flash_attention = fa;
    config.kv_types.keys = keys;
    // The three prompts are unrelated: parking would keep each one's cells beside the next.
    config.kv_shift = parked > 0;
    let engine = Engine::start(config).expect("start");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let run = |tokens: Vec<i32>, max_tokens: usize| {
        let req = CompletionRequest::greedy(Prompt::Tokens(tokens), max_tokens as u32);
        engine
            .submit(req)
            .wait()
            .expect("job")
            .completion()
            .expect("completed")
    };
    run(prompt_tokens(64, 1), 0); // warm-up
    let prefill = run(prompt_tokens(N_PREFILL, 2), 0);
    let prefill_tok_s = prefill.stats.n_evaluated as f64 / (prefill.stats.prefill_ms / 1e3);
    if parked > 0 {
        // Evaluated, then parked by the decode prompt, which shares only BOS with it.
        run(prompt_tokens(parked, 4), 0);
    }
    let decode = run(prompt_tokens(decode_ctx, 3), n_gen);
    let decode_tok_s = decode.stats.n_generated as f64 / (decode.stats.decode_ms / 1e3);
    [load_ms, prefill_tok_s, decode_tok_s]
}

/// The baseline: llama-cpp-2 used directly, nothing of ours around it.
mod direct {
    use std::num::NonZeroU32;
    use std::path::Path;
    use std::time::Instant;

    use amd_engine::KvType;
    use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;
    use llama_cpp_2::sampling::LlamaSampler;
    use llama_cpp_2::token::LlamaToken;
    use llama_cpp_2::{send_logs_to_tracing, LogOptions};

    pub(super) fn run(
        path: &Path,
        threads: u32,
        fa: bool,
        keys: KvType,
        n_gen: usize,
        decode_ctx: usize,
    ) -> [f64; 3] {
        send_logs_to_tracing(LogOptions::default().with_logs_enabled(false));
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        } else {
            threads
        };
        let started = Instant::now();
        let backend = LlamaBackend::init().expect("backend");
        let model =
            LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default()).expect("load");
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(2048))
            .with_n_batch(2048)
            .with_n_ubatch(512)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32)
            .with_type_k(match keys {
                KvType::F16 => KvCacheType::F16,
                KvType::F32 => KvCacheType::F32,
                KvType::Q8_0 => KvCacheType::Q8_0,
            })
            .with_flash_attention_policy(if fa {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO
            } else {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
            });
        let mut ctx = model.new_context(&backend, params).expect("context");
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut batch = LlamaBatch::new(2048, 1);
        let mut prefill = |ctx: &mut llama_cpp_2::context::LlamaContext, tokens: &[i32]| {
            ctx.clear_kv_cache();
            batch.clear();
            for (i, &t) in tokens.iter().enumerate() {
                batch
                    .add(LlamaToken(t), i as i32, &[0], i + 1 == tokens.len())
                    .expect("add");
            }
            let t = Instant::now();
            ctx.decode(&mut batch).expect("decode");
            t.elapsed().as_secs_f64()
        };
        prefill(&mut ctx, &super::prompt_tokens(64, 1));
        let secs = prefill(&mut ctx, &super::prompt_tokens(super::N_PREFILL, 2));
        let prefill_tok_s = super::N_PREFILL as f64 / secs;

        let prompt = super::prompt_tokens(decode_ctx, 3);
        prefill(&mut ctx, &prompt);
        let mut sampler = LlamaSampler::greedy();
        let mut one = LlamaBatch::new(1, 1);
        let mut idx = prompt.len() as i32 - 1;
        let t = Instant::now();
        for (pos, i) in (prompt.len() as i32..).zip(0..n_gen) {
            let token = sampler.sample(&ctx, idx);
            if i + 1 == n_gen {
                break;
            }
            one.clear();
            one.add(token, pos, &[0], true).expect("add");
            ctx.decode(&mut one).expect("decode");
            idx = 0;
        }
        let decode_tok_s = n_gen as f64 / t.elapsed().as_secs_f64();
        [load_ms, prefill_tok_s, decode_tok_s]
    }
}
