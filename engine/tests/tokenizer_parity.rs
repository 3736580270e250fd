//! Tokenizer parity: llama.cpp on a GGUF our converter wrote and the `tokenizers` crate on
//! Hugging Face's `tokenizer.json` give identical ids, on llama.cpp's 47 test vectors and on
//! more than 1 MB of real code (the Python standard library of the machine).

mod common;

use std::path::PathBuf;
use std::process::Command;

use amd_engine::convert::{convert, OutType};
use amd_engine::{Engine, EngineConfig};
use common::{block_on, fixtures};

const MIN_CORPUS_BYTES: usize = 1 << 20;

fn python_stdlib() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .expect("python3 is installed by scripts/setup.sh");
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
}

/// Python files of the standard library, in a fixed order, until there is enough text.
fn corpus() -> Vec<String> {
    let root = python_stdlib();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("stdlib directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    paths.sort();
    let mut texts = Vec::new();
    let mut n_bytes = 0;
    for p in paths {
        if let Ok(text) = std::fs::read_to_string(&p) {
            n_bytes += text.len();
            texts.push(text);
        }
        if n_bytes >= MIN_CORPUS_BYTES + (MIN_CORPUS_BYTES >> 3) {
            break;
        }
    }
    assert!(
        n_bytes >= MIN_CORPUS_BYTES,
        "only {n_bytes} bytes of Python under {}",
        root.display()
    );
    texts
}

#[test]
fn llama_cpp_on_our_gguf_matches_hugging_face_tokenizers() {
    let gguf = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("parity-{}.gguf", std::process::id()));
    convert(&fixtures().join("tiny-llama-hf"), &gguf, OutType::F16).expect("convert");
    let mut config = EngineConfig::new(&gguf);
    config.vocab_only = true;
    let engine = Engine::start(config).expect("load vocabulary");
    let hf = tokenizers::Tokenizer::from_file(fixtures().join("llama2-vocab/tokenizer.json"))
        .expect("tokenizer.json");

    let cases = std::fs::read_to_string(fixtures().join("llama2-vocab/tokenizer-cases.inp"))
        .expect("cases");
    let mut texts: Vec<String> = cases
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_owned)
        .collect();
    let n_vectors = texts.len();
    let code = corpus();
    let n_code_bytes: usize = code.iter().map(String::len).sum();
    texts.extend(code);

    let mut n_tokens = 0;
    for (i, text) in texts.iter().enumerate() {
        let ours = block_on(engine.tokenize(text.clone(), false)).expect("tokenize");
        let want: Vec<i32> = hf
            .encode(text.as_str(), false)
            .expect("encode")
            .get_ids()
            .iter()
            .map(|&id| id as i32)
            .collect();
        if ours != want {
            let at = ours.iter().zip(&want).take_while(|(a, b)| a == b).count();
            panic!(
                "text {i} differs at token {at}: llama.cpp {:?} vs tokenizers {:?}",
                &ours[at..(at + 5).min(ours.len())],
                &want[at..(at + 5).min(want.len())]
            );
        }
        n_tokens += ours.len();
    }
    eprintln!("{n_vectors} vectors and {} files ({n_code_bytes} bytes, {n_tokens} tokens in all) identical", texts.len() - n_vectors);
    let _ = std::fs::remove_file(&gguf);
}
