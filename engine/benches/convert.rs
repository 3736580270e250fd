//! Conversion time and peak memory for an AMD-Llama-135m-shaped Hugging Face checkpoint.
//!
//! `cargo bench -p amd-engine --bench convert -- [--reps N] [--types q8_0,f16]`
//!
//! Writes a random F32 checkpoint of the 135M shape (12 layers, hidden 768, 12 heads, FFN 2048,
//! vocabulary 32000; the fixture's tokenizer.model) under `target/bench-models/hf-amd135m-f32/`
//! on first use, then converts it in a child process per run and reports the wall time and the
//! child's peak resident memory (VmHWM).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use amd_engine::convert::{convert, OutType};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use safetensors::tensor::TensorView;
use safetensors::{serialize_to_file, Dtype};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1], &args[2], &args[3]);
        return;
    }
    let opt = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    let reps: usize = opt("--reps", "3").parse().expect("--reps N");
    let types = opt("--types", "q8_0");
    let checkpoint = checkpoint();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "| F32 checkpoint → | wall s (median of {reps}) | peak RSS MiB | output MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for t in types.split(',') {
        let target = checkpoint.with_file_name(format!("converted-{t}.gguf"));
        let mut runs: Vec<(f64, f64)> = (0..reps)
            .map(|_| {
                let o = Command::new(std::env::current_exe().expect("exe"))
                    .args([
                        "--child",
                        &checkpoint.display().to_string(),
                        &target.display().to_string(),
                        t,
                    ])
                    .output()
                    .expect("child");
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                let v: Vec<f64> = String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(|x| x.parse().expect("number"))
                    .collect();
                (v[0], v[1])
            })
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (secs, rss) = runs[runs.len() / 2];
        let size = std::fs::metadata(&target).map_or(0.0, |m| m.len() as f64 / 1048576.0);
        let _ = writeln!(out, "| {t} | {secs:.2} | {rss:.0} | {size:.0} |");
    }
}

fn child(checkpoint: &str, target: &str, t: &str) {
    let out_type = match t {
        "f16" => OutType::F16,
        "f32" => OutType::F32,
        "q4_k_m" => OutType::Q4KM,
        _ => OutType::Q8_0,
    };
    let started = Instant::now();
    convert(Path::new(checkpoint), Path::new(target), out_type).expect("convert");
    let secs = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let _ = writeln!(std::io::stdout(), "{secs} {}", hwm_kib / 1024.0);
}

/// The 135M-shaped random checkpoint, written once.
fn checkpoint() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/bench-models/hf-amd135m-f32");
    if dir.join("model.safetensors").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).expect("dir");
    let fixture = root.join("tests/fixtures/tiny-llama-hf");
    for f in ["tokenizer.model", "tokenizer_config.json"] {
        std::fs::copy(fixture.join(f), dir.join(f)).expect("copy");
    }
    let (embd, ff, layers, vocab) = (768usize, 2048usize, 12usize, 32000usize);
    let config = format!(
        r#"{{"architectures":["LlamaForCausalLM"],"hidden_size":{embd},"intermediate_size":{ff},
"num_attention_heads":12,"num_key_value_heads":12,"num_hidden_layers":{layers},"rms_norm_eps":1e-5,
"rope_theta":10000.0,"max_position_embeddings":2048,"vocab_size":{vocab},"tie_word_embeddings":false,
"bos_token_id":1,"eos_token_id":2}}"#
    );
    std::fs::write(dir.join("config.json"), config).expect("config");
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, embd]),
        ("lm_head.weight".into(), vec![vocab, embd]),
        ("model.norm.weight".into(), vec![embd]),
    ];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (n, s) in [
            ("input_layernorm", vec![embd]),
            ("post_attention_layernorm", vec![embd]),
            ("self_attn.q_proj", vec![embd, embd]),
            ("self_attn.k_proj", vec![embd, embd]),
            ("self_attn.v_proj", vec![embd, embd]),
            ("self_attn.o_proj", vec![embd, embd]),
            ("mlp.gate_proj", vec![ff, embd]),
            ("mlp.up_proj", vec![ff, embd]),
            ("mlp.down_proj", vec![embd, ff]),
        ] {
            shapes.push((format!("{p}.{n}.weight"), s));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let dist = Normal::new(0.0f32, 0.02).expect("normal");
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(_, s)| {
            let n: usize = s.iter().product();
            (0..n)
                .flat_map(|_| dist.sample(&mut rng).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = shapes
        .iter()
        .zip(&data)
        .map(|((name, s), d)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).expect("view"),
            )
        })
        .collect();
    serialize_to_file(views, None, &dir.join("model.safetensors")).expect("write checkpoint");
    dir
}
