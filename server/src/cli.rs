//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The version, with the llama.cpp backends compiled in (`amd-lsp --version`).
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (llama.cpp backends: {})",
            env!("CARGO_PKG_VERSION"),
            amd_engine::compiled_backends().join(", ")
        )
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "amd-lsp",
    version = version(),
    about = "Offline inline code completions from a small local model"
)]
pub struct Cli {
    /// Serve LSP on stdin/stdout (what editors run).
    // Repeatable: vscode-languageclient appends `--stdio` to the arguments it is given.
    #[arg(long, overrides_with = "stdio")]
    pub stdio: bool,
    /// Model for the server; it wins over the client's `model` setting and AMD_LSP_MODEL.
    #[arg(long, value_name = "GGUF")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Write logs to this file instead of stderr (stdout is never used for logs).
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    /// AMD_LSP_LOG overrides it.
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a completion for a prompt or a file position (the model card's quickstart).
    Complete(CompleteArgs),
    /// Model files: convert Hugging Face checkpoints to GGUF.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Developer tools: test models.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Speculative decoding on HumanEval: target-only and speculative pass@1, acceptance rate,
    /// throughput speedup, and the speedup Leviathan et al. predict (the model card's table).
    Spec(SpecBenchArgs),
    /// Reliability soak: types a file for N keystrokes against `amd-lsp --stdio` with a
    /// completion request per keystroke; checks every request is answered exactly once and
    /// reports resident-memory growth.
    Soak(SoakBenchArgs),
    /// Replays human editing of real source files (default: the Python standard library)
    /// into `amd-lsp --stdio`: keystroke-to-suggestion latency, tokens evaluated against
    /// tokens changed, CPU on superseded work, memory; with the baselines (prefix-only reuse,
    /// no reuse) in the same run. Writes JSON and an SVG plot.
    Replay(ReplayBenchArgs),
    /// Suggestion quality on positions sampled from real code, driven through the real server
    /// (didOpen, then inline completion): exact match of the first line, edit similarity,
    /// empty answers, characters a user would keep, block exact match, latency; with
    /// `--baseline URL`, the same positions sent to a llama-server side by side.
    Quality(QualityBenchArgs),
    /// The workspace index behind `context`: files, chunks, time and memory to build it, and
    /// the time to rank chunks for a query.
    Index(IndexBenchArgs),
}

#[derive(Debug, Args)]
pub struct IndexBenchArgs {
    /// Workspace folders.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// Most files indexed (the `contextMaxFiles` setting).
    #[arg(long, default_value_t = 10_000)]
    pub max_files: u32,
    /// Queries ranked after the build (drawn from the indexed files' own lines).
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Also sample this many cross-file `line` positions (as `bench quality --cross-file
    /// --seed` does) and report how often the chunks `context` chooses for them hold a
    /// definition their expected text uses (no model needed).
    #[arg(long, default_value_t = 0)]
    pub positions: usize,
    /// Seeds the positions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The context's token budget for those positions (`contextMaxTokens`).
    #[arg(long, default_value_t = 512)]
    pub context_tokens: usize,
    /// Leave out the outlines of the definitions the file uses (`contextDefinitions` false).
    #[arg(long)]
    pub no_definitions: bool,
    /// Leave out the members of the modules the file imports (`contextMembers` false).
    #[arg(long)]
    pub no_members: bool,
    /// Write the figures, and each position's chunks, as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct QualityBenchArgs {
    /// Directories (or files) of source code; the workspace folders the server is told of.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// The model the server loads.
    #[arg(long, value_name = "GGUF")]
    pub model: PathBuf,
    /// A llama-server (e.g. `http://127.0.0.1:8012`) given the same positions and prompt text.
    #[arg(long, value_name = "URL")]
    pub baseline: Option<String>,
    /// Seeds the choice of positions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Positions of each kind.
    #[arg(long, default_value_t = 20)]
    pub positions: usize,
    /// Kinds of position: `line` (the rest of a line from after its indentation), `mid` (the
    /// rest of a line from inside it), `block` (a block's body after the line that opens it).
    #[arg(long, value_delimiter = ',', default_value = "line,mid,block")]
    pub kinds: Vec<String>,
    /// The server's `maxTokens` (and the baseline's `n_predict`).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Also measure warm requests: the line's start was asked for first (as after typing up
    /// to it), then the cursor.
    #[arg(long)]
    pub warm: bool,
    /// Only positions whose expected text uses a name defined in another file of the corpus
    /// and not in its own (what `context` is for).
    #[arg(long)]
    pub cross_file: bool,
    /// Any other server setting, as KEY=JSON (e.g. `--set tokenHealing=false`); repeatable.
    #[arg(long = "set", value_name = "KEY=JSON", value_parser = parse_setting)]
    pub settings: Vec<(String, serde_json::Value)>,
    /// Write every answer and the figures as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayBenchArgs {
    /// Directories (or files) of source code; default: this machine's Python standard library.
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// The model the server loads.
    #[arg(long, value_name = "GGUF")]
    pub model: PathBuf,
    /// Seeds the choice of files and the whole editing script.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keystrokes per variant.
    #[arg(long, default_value_t = 600)]
    pub keystrokes: usize,
    /// Files drawn from the corpus.
    #[arg(long, default_value_t = 12)]
    pub files: usize,
    /// Variants, replayed in this order each round: `full` (this server), `prefix` (longest
    /// common prefix only, the window moving with every line, as llama.vim drives
    /// llama-server), `cold` (no reuse), `backend` (this server generating on `--backend URL`),
    /// `llama-server` (llama.vim's requests to `--baseline URL`).
    #[arg(long, value_delimiter = ',', default_value = "full,prefix,cold")]
    pub variants: Vec<String>,
    /// Rounds: each replays every variant once; figures are medians over rounds.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// The server's `debounceMs`.
    #[arg(long, default_value_t = 40)]
    pub debounce_ms: u64,
    /// The server's `debounceMaxMs` (the adaptive debounce's ceiling; `--debounce-ms` or less
    /// fixes the debounce).
    #[arg(long, default_value_t = 250)]
    pub debounce_max_ms: u64,
    /// The server's `maxTokens`.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// The server's `threads` (0: its default policy).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Any other server setting, as KEY=JSON (e.g. `--set windowMaxChars=2048`); repeatable.
    #[arg(long = "set", value_name = "KEY=JSON", value_parser = parse_setting)]
    pub settings: Vec<(String, serde_json::Value)>,
    /// Typing speed against a person's (2: twice as fast). For short harness checks.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Milliseconds the person looks at a newly opened file before typing in it (0: types at
    /// once, as in the scripts of the recorded figures).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub look_ms: u64,
    /// The typist accepts: when the suggestion on screen agrees with what the script types
    /// next, they take it (whole, lines or words, one keystroke each) and type on from there.
    #[arg(long)]
    pub accept: bool,
    /// How long a suggestion must have been on screen before the accepting typist takes it
    /// (at a person's speed; `--speed` shortens it like the rest of the script).
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub reaction_ms: u64,
    /// llama-server to replay against as variant `llama-server` (driven as llama.vim drives
    /// it: `/infill` for FIM models, `/completion` otherwise, one request in flight, its
    /// client-side type-through), e.g. `http://127.0.0.1:8012`.
    #[arg(long, value_name = "URL")]
    pub baseline: Option<String>,
    /// An inference server for variant `backend`: this server with the `backend` setting
    /// pointing there (llama-server, or an OpenAI-compatible URL ending in `/v1`).
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,
    /// Fail unless the accepting typist took at least one suggestion (a CI harness check).
    #[arg(long, requires = "accept")]
    pub expect_accepts: bool,
    /// The directories are the workspace (`context` indexes them) and documents are named by
    /// their real paths, so context comes from the other files. The files on disk hold what the
    /// script types, so other documents of the same file may show it: use for latency and
    /// cost, not for the typist's acceptance.
    #[arg(long)]
    pub workspace: bool,
    /// Write the report as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the latency plot (SVG) here.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SoakBenchArgs {
    /// The model the server loads.
    #[arg(long, value_name = "GGUF")]
    pub model: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    pub keystrokes: usize,
    /// The file typed, one character per keystroke (starting over in a new document at its end).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "tests/fixtures/documents/heapq.py"
    )]
    pub source: PathBuf,
    /// Pause between keystrokes, in microseconds.
    #[arg(long, default_value_t = 5_000)]
    pub interval_us: u64,
    /// The server's debounce (the `debounceMs` setting).
    #[arg(long, default_value_t = 0)]
    pub debounce_ms: u64,
    /// The server's `maxTokens` setting: short suggestions finish between keystrokes, so the
    /// soak exercises finished completions as well as superseded ones.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Keystrokes of warm-up (default: a quarter). Memory grows until the document outgrows
    /// the prompt window (`windowMaxChars`, 4096 characters: about 4 100 keystrokes of the
    /// default file); growth is measured after it.
    #[arg(long)]
    pub warm_up: Option<usize>,
    /// Fail if resident memory at the end exceeds that after the warm-up by more than this
    /// many percent.
    #[arg(long)]
    pub max_rss_growth: Option<f64>,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DrafterArg {
    /// The draft model (--draft) drafts for the target.
    Model,
    /// Prompt lookup (n-grams of the prompt and the output so far); --draft only measures c.
    Lookup,
}

#[derive(Debug, Args)]
pub struct SpecBenchArgs {
    /// The target model (e.g. CodeLlama-7b GGUF).
    #[arg(long, value_name = "GGUF")]
    pub target: PathBuf,
    /// The draft model (e.g. AMD-Llama-135m-code GGUF).
    #[arg(long, value_name = "GGUF")]
    pub draft: PathBuf,
    /// HumanEval problems (HumanEval.jsonl or .jsonl.gz).
    #[arg(long, value_name = "JSONL")]
    pub tasks: PathBuf,
    /// Only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Sample (temperature 0.8, top-p 0.95, seed = problem number) instead of greedy decoding.
    #[arg(long)]
    pub sample: bool,
    /// Draft lengths to run, comma-separated numbers and/or `auto` (adaptive), e.g. 1,2,4,8,auto.
    #[arg(long, default_value = "auto")]
    pub k: String,
    #[arg(long, value_enum, default_value = "model")]
    pub drafter: DrafterArg,
    /// Decode threads (0 = default policy).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Threads for prompts and verify batches (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads_batch: u32,
    /// Context size (0 = the models', at most 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx_size: u32,
    /// Layers of each model to offload to the GPU (GPU builds only; default: all of them).
    #[arg(long)]
    pub gpu_layers: Option<u32>,
    /// Seconds each problem's tests may run.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Skip running the tests (no pass@1).
    #[arg(long)]
    pub no_exec: bool,
    /// Turn KV-cache reuse off for both models (the draft then evaluates its whole stream at
    /// each draft). The target's runs start from an empty cache either way, so that the target
    /// alone and each speculative run start from the same state.
    #[arg(long)]
    pub no_reuse: bool,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// The GGUF model file.
    #[arg(long, env = "AMD_LSP_MODEL", value_name = "GGUF")]
    pub model: PathBuf,
    /// Threads for decoding (0 = default policy).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Context size in tokens (0 = the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx_size: u32,
    /// Layers to offload to the GPU (GPU builds only; default: all of them).
    #[arg(long)]
    pub gpu_layers: Option<u32>,
    /// Element type of the KV cache's keys, as the server's `cacheTypeK` (llama.cpp's
    /// `--cache-type-k`; values stay F16).
    #[arg(long, value_enum, default_value = "q8_0")]
    pub cache_type_k: crate::lsp::config::CacheTypeK,
}

#[derive(Debug, Args)]
pub struct CompleteArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The text to complete.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub prompt: Option<String>,
    /// Complete at a position in this file (the text before the position is the prompt).
    #[arg(long, requires_all = ["line", "col"])]
    pub file: Option<PathBuf>,
    /// 1-based line of the cursor in --file.
    #[arg(long)]
    pub line: Option<usize>,
    /// 1-based column of the cursor in --file, in characters.
    #[arg(long)]
    pub col: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Stop at the end of the line.
    #[arg(long)]
    pub single_line: bool,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Sample at this temperature instead of greedy decoding.
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long, default_value_t = 40)]
    pub top_k: u32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Print token counts and timings to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Generate with this larger model, --model drafting for it (speculative decoding).
    #[arg(long, value_name = "GGUF")]
    pub target: Option<PathBuf>,
    /// Speculative decoding: `model` (needs --target), `lookup` (prompt lookup), or `off`.
    #[arg(long, value_enum, default_value = "model")]
    pub speculate: SpeculateArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpeculateArg {
    Model,
    Lookup,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Show where amd-lsp looks for a model, in order, and which one the server would use.
    List,
    /// Download a checkpoint from the Hugging Face hub, verify, convert and cache it; or, with
    /// `--file`, a ready GGUF file of a repository, verified and cached as it is.
    Pull(PullArgs),
    /// Convert a Hugging Face Llama checkpoint (config.json, safetensors, tokenizer.model) to GGUF.
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The hub repository.
    #[arg(default_value = "amd/AMD-Llama-135m-code")]
    pub repo: String,
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// The quantization the checkpoint is converted to.
    #[arg(long = "type", value_enum, default_value = "q8_0")]
    pub out_type: ConvertType,
    /// Download this GGUF file of the repository as it is, instead of converting a checkpoint
    /// (e.g. `Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF --file qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`).
    #[arg(long, value_name = "NAME.gguf", conflicts_with = "out_type")]
    pub file: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConvertType {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_k_m")]
    Q4KM,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The checkpoint directory.
    pub hf_dir: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long = "type", value_enum, default_value = "q8_0")]
    pub out_type: ConvertType,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Write a random-weight Llama with the real Llama-2 vocabulary (for tests and benchmarks).
    MakeModel(MakeModelArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModelSize {
    /// 2 layers, hidden 64.
    Tiny,
    /// AMD-Llama-135m's shape: 12 layers, hidden 768, 12 heads, FFN 2048.
    #[value(name = "135m")]
    Amd135m,
    /// CodeLlama-7b's shape with its vocabulary (for timing a speculative target; tiled noise).
    #[value(name = "codellama-7b")]
    Codellama7b,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModelType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

#[derive(Debug, Args)]
pub struct MakeModelArgs {
    #[arg(long, value_enum, default_value = "tiny")]
    pub size: ModelSize,
    /// Instead of a fresh model, write a speculative-decoding target stacked on this draft
    /// (F32/F16 GGUF): its layers, then --extra-layers random layers whose residual writes
    /// are scaled by --scale (smaller: the pair agrees more often).
    #[arg(long, value_name = "GGUF")]
    pub stack_on: Option<PathBuf>,
    #[arg(long, default_value_t = 12, requires = "stack_on")]
    pub extra_layers: u32,
    #[arg(long, default_value_t = 0.1, requires = "stack_on")]
    pub scale: f32,
    /// Give the model CodeLlama's 32016-token vocabulary (FIM tokens).
    #[arg(long)]
    pub codellama_vocab: bool,
    #[arg(long = "type", value_enum, default_value = "f32")]
    pub wtype: ModelType,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Vocabulary-only GGUF to take the tokenizer from.
    #[arg(long, default_value = "tests/fixtures/llama2-vocab/llama2-vocab.gguf")]
    pub vocab: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `KEY=JSON` (a bare word that is not JSON is taken as a string).
fn parse_setting(arg: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not KEY=JSON"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::json!(value));
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn stdio_may_be_repeated() {
        // vscode-languageclient adds `--stdio` to the arguments it is configured with.
        let cli = Cli::try_parse_from(["amd-lsp", "--stdio", "--stdio"]).expect("parses");
        assert!(cli.stdio);
        assert!(Cli::try_parse_from(["amd-lsp", "--stdio", "--bogus"]).is_err());
    }

    #[test]
    fn complete_takes_the_cache_type_of_the_keys_by_the_settings_name() {
        use crate::lsp::config::CacheTypeK;
        let keys = |extra: &[&str]| {
            let args = ["amd-lsp", "complete", "--model", "m.gguf", "--prompt", "x"];
            let cli = Cli::try_parse_from(args.iter().chain(extra)).map_err(|e| e.to_string())?;
            match cli.command {
                Some(super::Command::Complete(c)) => Ok(c.engine.cache_type_k),
                _ => Err("not complete".to_owned()),
            }
        };
        assert_eq!(keys(&[]), Ok(CacheTypeK::Q8_0));
        assert_eq!(keys(&["--cache-type-k", "f16"]), Ok(CacheTypeK::F16));
        assert_eq!(keys(&["--cache-type-k", "q8_0"]), Ok(CacheTypeK::Q8_0));
        assert!(keys(&["--cache-type-k", "q4_0"]).is_err());
    }
}
