//! amd-engine: code completion inference on llama.cpp, behind one thread and a message API.
//!
//! The engine knows nothing of LSP, JSON or URIs. Callers start an [`Engine`] with an
//! [`EngineConfig`], submit [`CompletionRequest`]s and await a [`JobHandle`]. One OS thread owns
//! llama.cpp (model, context, KV cache); the KV cache is reused across requests by longest
//! common prefix, so a keystroke costs only the tokens that changed.

// Top-down: the handle and the engine thread, then what a job runs on (sessions,
// speculation), then llama.cpp's wall and the pure modules. No module imports one above it
// except for the API types in this file and `error`.
mod engine;
mod job;
mod worker;

mod cpu;
mod kv_states;
mod session;
pub mod speculative;
mod stats;

mod llama;

mod logits;
mod prompt;
pub mod reuse;
pub mod text;

pub mod convert;
mod error;
pub mod gguf;

#[doc(hidden)]
pub mod testing;

use std::path::PathBuf;

pub use engine::Engine;
pub use error::{EngineError, LoadError};
pub use job::{CancelToken, JobHandle};
pub use llama::{quantize, QuantType};
pub use prompt::{Context, ContextChunk, Prompt, RepoFile};
pub use stats::EngineCounters;
pub use text::StopRules;

/// A token id in the model's vocabulary.
pub type TokenId = i32;

pub use llama::{devices, Device};

/// The llama.cpp backends this build runs on, CPU first: the ones compiled in (cargo
/// features), and the GPU backends of a llama.cpp linked as shared libraries that was built
/// with one (`LLAMA_BUILD_SHARED_LIBS=1`, the libraries swapped for a GPU build of the same
/// tree: how `tests/gpu/cuda-h200.sh` runs on a GPU machine that has no Rust).
pub fn compiled_backends() -> Vec<&'static str> {
    static BACKENDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    BACKENDS
        .get_or_init(|| {
            let mut backends = vec!["cpu"];
            for (on, name) in [
                (cfg!(feature = "hip"), "hip"),
                (cfg!(feature = "cuda"), "cuda"),
                (cfg!(feature = "vulkan"), "vulkan"),
                (cfg!(feature = "metal"), "metal"),
            ] {
                if on {
                    backends.push(name);
                }
            }
            for device in devices().into_iter().filter(|d| d.gpu) {
                let name = match device.backend.to_ascii_lowercase().as_str() {
                    "cuda" => "cuda",
                    "rocm" | "hip" => "hip",
                    "vulkan" => "vulkan",
                    "metal" => "metal",
                    _ => continue,
                };
                if !backends.contains(&name) {
                    backends.push(name);
                }
            }
            backends
        })
        .clone()
}

/// `gpu_layers` value meaning "every layer" (llama.cpp's convention).
pub const ALL_LAYERS: u32 = 999;

/// Layers offloaded when the configuration does not say: all of them when a GPU backend is
/// compiled in, none otherwise.
pub fn default_gpu_layers() -> u32 {
    if compiled_backends().len() > 1 {
        ALL_LAYERS
    } else {
        0
    }
}

/// What the engine knows about its model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub name: Option<String>,
    pub architecture: String,
    pub n_vocab: u32,
    pub n_ctx_train: u32,
    /// The context size the engine runs with (0 when only the vocabulary is loaded).
    pub n_ctx: u32,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_params: u64,
    pub size_bytes: u64,
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    /// Whether prompts start with BOS (the GGUF's `tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Fill-in-the-middle tokens, when the vocabulary has them (CodeLlama: ▁<PRE> ▁<SUF> ▁<MID>).
    pub fim: Option<FimTokens>,
    pub load_ms: f64,
    /// Where the model's layers run: a GPU's description, or "CPU".
    pub device: String,
}

/// Fill-in-the-middle control tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FimTokens {
    pub pre: TokenId,
    pub suf: TokenId,
    pub mid: TokenId,
    pub eot: Option<TokenId>,
    /// Repository-level tokens, where the model has them (Qwen2.5-Coder: `<|repo_name|>`,
    /// `<|file_sep|>`): other files of the project go before the current one.
    pub repo_name: Option<TokenId>,
    pub file_sep: Option<TokenId>,
}

/// How the engine is set up. `0` means "choose" for the numeric fields.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub model_path: PathBuf,
    /// Context size in tokens; 0 = the model's training context, at most 4096.
    pub n_ctx: u32,
    /// Threads for single-token decode steps; 0 = the default policy (see docs/configuration.md).
    pub n_threads: u32,
    /// Threads for prompt evaluation; 0 = all cores.
    pub n_threads_batch: u32,
    /// Layers offloaded to a GPU backend (ignored on CPU builds); default
    /// [`default_gpu_layers`].
    pub gpu_layers: u32,
    /// Prompt tokens evaluated per llama.cpp call; cancellation is checked between calls.
    pub prefill_chunk: u32,
    /// Reuse the KV cache across requests (off only for baselines and tests).
    pub kv_reuse: bool,
    /// Keep cached tokens a prompt moved away from (an edit far above the cursor, a window
    /// start that moved) and take them back at shifted positions when a later prompt continues
    /// with them. Approximate (their keys were computed before the edit; the first
    /// tokens after it are evaluated again); off leaves the longest common prefix, which is
    /// exact.
    pub kv_shift: bool,
    /// Memory for the KV caches of documents other than the one being completed, so that
    /// switching back is warm (least recently used dropped first; 0 = one cache only).
    pub kv_documents_bytes: usize,
    /// Load only the vocabulary: tokenize and detokenize, no completions.
    pub vocab_only: bool,
    /// Element types of the KV cache's keys and values (default: Q8_0 keys, F16 values).
    pub kv_types: KvTypes,
    /// Flash attention (llama.cpp decides per backend when on). Off by default: on CPU it
    /// speeds up prompt evaluation by ~20% but slows decoding at realistic contexts (Q8_0,
    /// 1 thread, 800-token context: 49 vs 70 tok/s; docs/benchmarks.md), and its F16
    /// accumulation makes logits depend on how a prompt was split into batches by ~1e-3.
    pub flash_attention: bool,
    /// A larger model the main model drafts for (speculative decoding). It shares the
    /// context size and threads; requests choose it with [`ModelRole::Target`].
    pub target: Option<TargetConfig>,
}

/// The optional target model.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    pub model_path: PathBuf,
    /// Layers offloaded to a GPU backend (ignored on CPU builds).
    pub gpu_layers: u32,
}

/// Element type of the KV cache's keys or values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
    Q8_0,
}

/// Element types of the KV cache.
///
/// The default, Q8_0 keys and F16 values, decodes fastest on CPU at the context lengths
/// completions use: without flash attention, each decode step takes one short dot product
/// per cached position and head against the keys, and Q8_0 keys halve what it reads
/// (docs/benchmarks.md, "KV cache types"). Values stay F16, since llama.cpp quantizes values
/// only with flash attention, which decodes slower on CPU. F32 for both makes results
/// independent of how a prompt was split into batches up to float summation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvTypes {
    pub keys: KvType,
    pub values: KvType,
}

impl KvTypes {
    /// The same type for keys and values.
    pub const fn both(t: KvType) -> KvTypes {
        KvTypes { keys: t, values: t }
    }
}

impl Default for KvTypes {
    fn default() -> KvTypes {
        KvTypes {
            keys: KvType::Q8_0,
            values: KvType::F16,
        }
    }
}

impl EngineConfig {
    pub fn new(model_path: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            model_path: model_path.into(),
            n_ctx: 0,
            n_threads: 0,
            n_threads_batch: 0,
            gpu_layers: default_gpu_layers(),
            prefill_chunk: 128,
            kv_reuse: true,
            kv_shift: true,
            kv_documents_bytes: 128 << 20,
            vocab_only: false,
            kv_types: KvTypes::default(),
            flash_attention: false,
            target: None,
        }
    }
}

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties: the lowest id).
    Greedy,
    /// Seeded sampling through llama.cpp's top-k → top-p → temperature → dist chain.
    Random {
        temperature: f32,
        /// 0 = no top-k cut.
        top_k: u32,
        /// 1.0 = no top-p cut.
        top_p: f32,
        seed: u32,
    },
}

/// Called on the engine thread after each prefill chunk and each generated token.
pub type ProgressFn = Box<dyn for<'a> FnMut(&Progress<'a>) + Send>;

/// How far a job has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress<'a> {
    pub n_evaluated: usize,
    pub n_generated: usize,
    /// The completion so far, to its last whole character (empty during the prompt). A stop
    /// string that later tokens complete can still cut its end off.
    pub text: &'a str,
}

/// One completion job.
pub struct CompletionRequest {
    pub prompt: Prompt,
    pub max_tokens: u32,
    pub sampling: Sampling,
    pub stop: StopRules,
    /// Record the top-1/top-2 logit margin of every generated token (greedy analysis).
    pub record_margins: bool,
    /// Record this many most likely tokens, with log-probabilities, at every generated position.
    pub top_logprobs: usize,
    /// Which model generates.
    pub model: ModelRole,
    /// Draft-and-verify decoding; the output is what the generating model alone gives
    /// (token-identical when greedy, the same distribution when sampled).
    pub speculation: Option<Speculation>,
    pub on_progress: Option<ProgressFn>,
    /// The document the prompt comes from, as an opaque key (the server hashes its URI). The
    /// engine counts the prompt tokens that differ from that document's previous prompt
    /// ([`JobStats::n_changed`]): the least any cache could evaluate.
    pub document: Option<u64>,
    /// Token healing at the cursor: the prompt's last token of user text is taken back and
    /// the first generated token(s) must reproduce its text, so the model chooses how the text
    /// before the cursor continues (a BPE model writes `    return` as one space token and
    /// ` return`; a prompt cut after the fourth space otherwise makes it start with a space).
    /// The completion holds only what follows the cursor. Not applied with speculation.
    pub heal: bool,
    /// Evaluate the prompt into an empty KV cache of the generating model (a draft model keeps
    /// its cache). Where earlier jobs left their cells decides the order in which attention
    /// sums over them, so two runs are bit-identical only from the same cache state; this
    /// gives every run the same one (benchmarks and exactness checks; editors never set it).
    pub fresh_cache: bool,
    /// A first line the output must not be (the caller's: the document's next line after the
    /// cursor's, less the text before the cursor). A fill-in-the-middle model that writes it
    /// has skipped the line it was asked for and written the suffix's, an answer the caller
    /// would drop. When the output's first line comes out as exactly this text, generation
    /// goes back to its first token and continues from the most likely other one, once; the
    /// text is not reported as progress while it could still become this line. Greedy only,
    /// not with speculation.
    pub not_first_line: Option<String>,
}

/// The models an engine can hold: the main (small, fast) model, and optionally a larger
/// target that the main model drafts for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModelRole {
    #[default]
    Main,
    Target,
}

/// How speculative decoding drafts.
#[derive(Clone, Debug, PartialEq)]
pub struct Speculation {
    pub drafter: Drafter,
    pub k: DraftLength,
}

impl Speculation {
    /// The main model drafts for the target, k adapting from `k_init` up to 8.
    pub fn draft_model(k_init: usize) -> Speculation {
        Speculation {
            drafter: Drafter::Model,
            k: DraftLength::Adaptive {
                init: k_init,
                max: 8,
            },
        }
    }

    /// Prompt lookup: continuations of the last n-gram found in the prompt, the output so far
    /// and `corpus`.
    pub fn lookup(corpus: Vec<String>) -> Speculation {
        Speculation {
            drafter: Drafter::Lookup(Lookup {
                ngram_min: 2,
                ngram_max: 4,
                corpus,
            }),
            k: DraftLength::Adaptive { init: 4, max: 10 },
        }
    }
}

/// Where drafts come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Drafter {
    /// The main model drafts greedily for the target. It is fed its own token stream (the
    /// code before the cursor and the accepted tokens), never the target's FIM tokens.
    Model,
    /// Prompt-lookup (n-gram) drafting: no second model.
    Lookup(Lookup),
}

/// Prompt-lookup settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// Shortest and longest n-gram matched against the text before the cursor.
    pub ngram_min: usize,
    pub ngram_max: usize,
    /// Other text to look continuations up in (other open files).
    pub corpus: Vec<String>,
}

/// How many tokens are drafted per verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftLength {
    Fixed(usize),
    /// Chosen before each verification from measured costs and acceptance (`speculative::math::CostModel`,
    /// kept across jobs): one plain step first, `init` until a draft has been timed, then the
    /// length with the best expected tokens per millisecond up to `max`, 0 (plain decoding)
    /// included; drafting must be expected to win by 5 %.
    Adaptive {
        init: usize,
        max: usize,
    },
}

impl CompletionRequest {
    pub fn greedy(prompt: Prompt, max_tokens: u32) -> CompletionRequest {
        CompletionRequest {
            prompt,
            max_tokens,
            sampling: Sampling::Greedy,
            stop: StopRules::default(),
            record_margins: false,
            top_logprobs: 0,
            model: ModelRole::Main,
            speculation: None,
            on_progress: None,
            document: None,
            heal: false,
            fresh_cache: false,
            not_first_line: None,
        }
    }
}

impl std::fmt::Debug for CompletionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionRequest")
            .field("max_tokens", &self.max_tokens)
            .field("sampling", &self.sampling)
            .field("stop", &self.stop)
            .field("model", &self.model)
            .field("speculation", &self.speculation)
            .finish_non_exhaustive()
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndOfGeneration,
    MaxTokens,
    StopString,
    LineEnd,
    ContextFull,
}

/// What a job cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JobStats {
    pub n_prompt: usize,
    /// Prompt tokens whose KV entries were kept from earlier jobs.
    pub n_reused: usize,
    /// Of those, tokens taken back from the park at shifted positions (after an edit far
    /// above the cursor, or a window start that moved).
    pub n_shifted: usize,
    /// Prompt tokens evaluated by this job.
    pub n_evaluated: usize,
    pub n_generated: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Tokens proposed by a drafter (speculative decoding).
    pub n_drafted: usize,
    /// Drafted tokens the target accepted.
    pub n_accepted: usize,
    /// Verifications that rejected a drafted token (each ends a run of accepted ones).
    pub n_rejected: usize,
    /// Generation calls to the generating model (single steps and verify batches).
    pub n_target_calls: usize,
    /// Time spent drafting (included in `decode_ms`).
    pub draft_ms: f64,
    /// The draft length in use when the job ended (adaptive speculation).
    pub k_final: usize,
    /// Prompt tokens that differ from the previous prompt of the same document (all of them
    /// for a document's first prompt, or without a document key).
    pub n_changed: usize,
    /// CPU time the process spent on this job (all threads), in milliseconds.
    pub cpu_ms: f64,
    /// The part of `cpu_ms` spent generating (after the prompt was in the cache).
    pub cpu_decode_ms: f64,
    /// The document's KV cache was put back from memory (it had been switched away from).
    pub restored: bool,
    /// The output's first line came out as the request's `not_first_line`, and generation
    /// went back to take another first token.
    pub avoided_line: bool,
}

impl JobStats {
    /// Accepted ÷ drafted tokens, when anything was drafted. It falls with k even at a
    /// constant per-token acceptance: tokens drafted after a rejection are never examined.
    pub fn accepted_share(&self) -> Option<f64> {
        (self.n_drafted > 0).then(|| self.n_accepted as f64 / self.n_drafted as f64)
    }

    /// The per-token acceptance probability α of Leviathan et al.: accepted ÷ examined
    /// drafted tokens (each run of acceptances ends at a rejection or at the draft's end).
    pub fn alpha(&self) -> Option<f64> {
        let examined = self.n_accepted + self.n_rejected;
        (examined > 0).then(|| self.n_accepted as f64 / examined as f64)
    }

    /// Generated tokens per call to the generating model.
    pub fn tokens_per_call(&self) -> Option<f64> {
        (self.n_target_calls > 0).then(|| self.n_generated as f64 / self.n_target_calls as f64)
    }
}

/// A finished completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<TokenId>,
    pub stop: StopReason,
    pub stats: JobStats,
    /// Top-1 minus top-2 logit for each generated token, when asked for.
    pub margins: Vec<f32>,
    /// The most likely tokens and their log-probabilities at each generated position, when
    /// asked for (`CompletionRequest::top_logprobs`), most likely first.
    pub top_logprobs: Vec<Vec<(TokenId, f32)>>,
}

/// How a job ended. Cancellation is an outcome, not an error.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed(Completion),
    Cancelled(JobStats),
}

impl Outcome {
    pub fn completion(self) -> Option<Completion> {
        match self {
            Outcome::Completed(c) => Some(c),
            Outcome::Cancelled(_) => None,
        }
    }

    pub fn stats(&self) -> &JobStats {
        match self {
            Outcome::Completed(c) => &c.stats,
            Outcome::Cancelled(s) => s,
        }
    }

    pub fn stats_mut(&mut self) -> &mut JobStats {
        match self {
            Outcome::Completed(c) => &mut c.stats,
            Outcome::Cancelled(s) => s,
        }
    }
}
