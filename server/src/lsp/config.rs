//! Server configuration: `initializationOptions` and `workspace/didChangeConfiguration`
//! (camelCase keys, every key optional). Each key is documented in docs/configuration.md,
//! and a test keeps that page and these defaults in step.

use std::path::{Path, PathBuf};

use amd_engine::{default_gpu_layers, EngineConfig, KvType, TargetConfig};
use serde::{Deserialize, Serialize};

/// When to ask for more than one line.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum MultiLine {
    /// Multi-line at an empty line or after a block opener, single-line mid-line.
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether to offer `textDocument/completion` (the popup) besides inline completions.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CompletionPopup {
    /// Only for clients that do not declare inline completion support.
    #[default]
    Auto,
    Always,
    Never,
}

/// When completions come from the target model (`targetModel`) instead of the main one.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum UseTarget {
    /// Multi-line and explicitly invoked completions; single lines stay on the main model.
    #[default]
    Auto,
    Always,
    Never,
}

/// Speculative decoding (its output is what the generating model alone would give).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SpeculationMode {
    /// The main model drafts for the target; the main model alone does not speculate.
    #[default]
    Auto,
    /// The main model drafts for the target.
    Model,
    /// Prompt lookup from the document and the other open files, for either model.
    Lookup,
    Off,
}

/// Element type of the KV cache's keys (`cacheTypeK`, llama.cpp's `--cache-type-k`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CacheTypeK {
    /// Fastest decoding on CPU at completion-length contexts, half the memory of F16.
    #[default]
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    F32,
}

impl From<CacheTypeK> for KvType {
    fn from(t: CacheTypeK) -> KvType {
        match t {
            CacheTypeK::Q8_0 => KvType::Q8_0,
            CacheTypeK::F16 => KvType::F16,
            CacheTypeK::F32 => KvType::F32,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Path of the GGUF model. Falls back to `--model`, then `AMD_LSP_MODEL`.
    pub model: Option<PathBuf>,
    /// Decode threads; 0 = the engine's default policy.
    pub threads: u32,
    /// Context size in tokens; 0 = the model's training context (at most 4096).
    pub context_size: u32,
    /// Layers offloaded to the GPU (GPU builds only); `None` = all of them in a GPU build.
    pub gpu_layers: Option<u32>,
    /// Most tokens generated per suggestion.
    pub max_tokens: u32,
    /// Quiet time after a keystroke before the model generates, in milliseconds.
    pub debounce_ms: u64,
    /// The debounce adapts to the user's typing rhythm up to this; `<= debounceMs` fixes it.
    pub debounce_max_ms: u64,
    pub multi_line: MultiLine,
    /// Candidates returned for an explicitly invoked inline completion.
    pub inline_candidates: u32,
    pub completion_popup: CompletionPopup,
    /// Prompt window: characters before the cursor it may grow to before its start moves.
    pub window_max_chars: usize,
    /// A window that starts where nothing is cached (a file just opened, a jump elsewhere) is
    /// cut to what the model evaluates in about this many milliseconds at the measured prompt
    /// speed (at least 512 characters, at most `windowMaxChars / 2`); it then grows as the user
    /// types. 0: such windows keep `windowMaxChars / 2` like a window that moves.
    pub first_suggestion_ms: u32,
    /// A larger model (e.g. CodeLlama-7b GGUF) that `model` drafts for.
    pub target_model: Option<PathBuf>,
    pub use_target: UseTarget,
    pub speculation: SpeculationMode,
    /// Most tokens drafted per verification (the draft length adapts up to it).
    pub draft_max: u32,
    /// Memory for the KV caches of documents other than the one being completed (MiB).
    pub document_cache_mb: u32,
    /// Once a suggestion is shown, compute the next one as if it were accepted.
    pub precompute_next: bool,
    /// Keep a generation running while the user types what it is writing: the keystrokes'
    /// requests wait for it and are answered with the rest (the first key that disagrees
    /// cancels it).
    pub keep_generating: bool,
    /// Until a document has shown a suggestion, automatic requests wait only `debounce_ms`
    /// (not the typing rhythm), so the first suggestion in a file just opened comes while the
    /// user is still typing.
    pub eager_first_suggestion: bool,
    /// Evaluate a newly opened document that fits the prompt window while the user is idle,
    /// so that the first keystroke in it, wherever it is, finds its prompt in the KV cache.
    pub prefill_on_open: bool,
    /// Element type of the KV cache's keys (values stay F16).
    pub cache_type_k: CacheTypeK,
    /// FIM prompts put the cursor's line up to the cursor after the middle token
    /// (`<PRE> lines before <SUF> after <MID> line`), as llama.vim does: typing on a line then
    /// only appends to the prompt. `false`: the whole prefix before `<SUF>`.
    pub fim_line_in_middle: bool,
    /// Show a suggestion only when the geometric mean of the probabilities the model gave its
    /// generated tokens is at least this (0: always show).
    pub min_confidence: f32,
    /// Show a suggestion only when its confidence (as for `min_confidence`) times its
    /// characters less one, the keystrokes taking it would save if it is right, is at least
    /// this (0: always show).
    pub min_expected_saving: f32,
    /// Token healing: the prompt ends at a token boundary before the cursor and the model
    /// writes the rest of the cursor's token itself (no stray space after indentation).
    pub token_healing: bool,
    /// When a suggestion's first line comes out as the document's next line (a FIM model that
    /// skipped the line it was asked for; the cleaning would drop it), the engine goes back to
    /// its first token once and takes the most likely other one.
    pub avoid_next_line: bool,
    /// Put chunks of other files of the project (those that share or define the identifiers
    /// around the cursor) in front of the current file's code in the prompt.
    pub context: bool,
    /// Most tokens the other files' chunks take in a prompt (and at most half of it).
    pub context_max_tokens: u32,
    /// Most files of the workspace indexed for `context`.
    pub context_max_files: u32,
    /// With `context`: the definition lines of the names the document uses from the files it
    /// imports (an outline of those files) go first in the context, up to half its budget.
    pub context_definitions: bool,
    /// With `context`: the top-level definitions of the modules the document imports as
    /// modules (`from . import errors`) whose names share words with the lines around the
    /// cursor, and that the window does not name yet, go in as the context's best chunk.
    pub context_members: bool,
    /// A shared inference server (llama-server, an OpenAI-compatible endpoint) that generates
    /// instead of a local model.
    pub backend: Option<crate::backend::BackendConfig>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            model: None,
            threads: 0,
            context_size: 0,
            gpu_layers: None,
            max_tokens: 64,
            debounce_ms: 40,
            debounce_max_ms: 250,
            multi_line: MultiLine::Auto,
            inline_candidates: 3,
            completion_popup: CompletionPopup::Auto,
            window_max_chars: 4096,
            first_suggestion_ms: 700,
            target_model: None,
            use_target: UseTarget::Auto,
            speculation: SpeculationMode::Auto,
            draft_max: 8,
            document_cache_mb: 128,
            precompute_next: true,
            keep_generating: true,
            eager_first_suggestion: true,
            prefill_on_open: true,
            cache_type_k: CacheTypeK::Q8_0,
            token_healing: true,
            avoid_next_line: true,
            min_confidence: 0.0,
            min_expected_saving: 0.0,
            fim_line_in_middle: true,
            context: false,
            context_max_tokens: 512,
            context_max_files: 10_000,
            context_definitions: true,
            context_members: true,
            backend: None,
        }
    }
}

/// How much of the KV cache completions reuse. Not a setting: `amd-lsp bench replay` starts
/// servers with `AMD_LSP_BENCH_REUSE` to measure the baselines side by side with the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReuseMode {
    /// Everything this server does: the longest common prefix with a prompt window whose
    /// start stays put while typing, tokens taken back at shifted positions after a far edit,
    /// the prompt evaluated during the debounce, and other documents' caches kept in memory.
    #[default]
    Full,
    /// The longest common prefix only, with a window that moves with every new line, as
    /// llama.vim drives llama-server's `cache_prompt`.
    Prefix,
    /// No reuse: every request evaluates its whole prompt.
    Cold,
}

impl ReuseMode {
    pub const ENV: &'static str = "AMD_LSP_BENCH_REUSE";

    /// The mode named by `AMD_LSP_BENCH_REUSE` (`full`, `prefix`, `cold`). Read once, when
    /// the server starts, into its options.
    pub fn from_env() -> ReuseMode {
        match std::env::var(Self::ENV).as_deref() {
            Ok("prefix") => ReuseMode::Prefix,
            Ok("cold") => ReuseMode::Cold,
            _ => ReuseMode::Full,
        }
    }
}

/// Our part of a settings object: under `amdLsp` / `amd-lsp` / `amd_lsp` when there is one.
fn section(value: &serde_json::Value) -> &serde_json::Value {
    ["amdLsp", "amd-lsp", "amd_lsp"]
        .iter()
        .find_map(|k| value.get(k))
        .unwrap_or(value)
}

impl ServerConfig {
    /// Reads a settings object: either our keys directly, or under `amdLsp` / `amd-lsp`
    /// (how VS Code and Neovim users often nest them). `null` means defaults.
    pub fn from_json(value: &serde_json::Value) -> Result<ServerConfig, serde_json::Error> {
        let inner = section(value);
        if inner.is_null() {
            return Ok(ServerConfig::default());
        }
        ServerConfig::deserialize(inner)
    }

    /// Reads a settings object leniently, as a server must: every valid key is kept, and the
    /// unknown keys (a typo, a newer client's key) and invalid values are left at their
    /// defaults and listed, so the caller says once what was ignored (as rust-analyzer does)
    /// while the rest, `model` included, still applies.
    pub fn read(value: &serde_json::Value) -> (ServerConfig, Vec<String>) {
        let inner = section(value);
        let map = match inner {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => return (ServerConfig::default(), Vec::new()),
            other => {
                return (
                    ServerConfig::default(),
                    vec![format!("settings must be an object, not {other}")],
                )
            }
        };
        let known = serde_json::to_value(ServerConfig::default()).unwrap_or_default();
        let mut kept = serde_json::Map::new();
        let mut problems = Vec::new();
        for (key, value) in map {
            if known.get(key).is_none() {
                problems.push(format!("unknown setting `{key}`"));
                continue;
            }
            let one = serde_json::json!({ key: value });
            match ServerConfig::deserialize(&one) {
                Ok(_) => {
                    kept.insert(key.clone(), value.clone());
                }
                Err(e) => problems.push(format!("`{key}`: {e}")),
            }
        }
        let config =
            ServerConfig::deserialize(&serde_json::Value::Object(kept)).unwrap_or_default();
        (config, problems)
    }

    /// The settings object after `workspace/didChangeConfiguration`: the settings' keys over
    /// the `initializationOptions`. Settings that are `null` or `{}` (eglot and others send
    /// those when the user configured nothing there) leave the initialization options in force.
    pub fn merged(init: &serde_json::Value, settings: &serde_json::Value) -> serde_json::Value {
        let mut merged = match section(init) {
            serde_json::Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        match section(settings) {
            serde_json::Value::Object(map) => merged.extend(map.clone()),
            serde_json::Value::Null => {}
            other => return other.clone(),
        }
        serde_json::Value::Object(merged)
    }

    /// [`ServerConfig::merged`], read strictly.
    pub fn layered(
        init: &serde_json::Value,
        settings: &serde_json::Value,
    ) -> Result<ServerConfig, serde_json::Error> {
        ServerConfig::from_json(&ServerConfig::merged(init, settings))
    }

    /// The engine settings these keys imply, for the model at `model`, with `reuse`.
    pub fn engine_config(&self, model: &Path, reuse: ReuseMode) -> EngineConfig {
        let mut config = EngineConfig::new(model);
        config.n_threads = self.threads;
        config.n_ctx = self.context_size;
        config.gpu_layers = self.gpu_layers.unwrap_or_else(default_gpu_layers);
        config.kv_types.keys = self.cache_type_k.into();
        config.kv_reuse = reuse != ReuseMode::Cold;
        config.kv_shift = reuse == ReuseMode::Full;
        // The baselines (llama-server's one slot, or no reuse) keep one cache.
        config.kv_documents_bytes = match reuse {
            ReuseMode::Full => (self.document_cache_mb as usize) << 20,
            ReuseMode::Prefix | ReuseMode::Cold => 0,
        };
        config.target = self.target_model.as_ref().map(|path| TargetConfig {
            model_path: path.clone(),
            gpu_layers: config.gpu_layers,
        });
        config
    }

    /// Whether a change from `self` to `next` needs the model reloaded.
    pub fn needs_reload(&self, next: &ServerConfig) -> bool {
        (
            &self.backend,
            &self.model,
            &self.target_model,
            self.threads,
            self.context_size,
            self.gpu_layers,
            self.document_cache_mb,
            self.cache_type_k,
        ) != (
            &next.backend,
            &next.model,
            &next.target_model,
            next.threads,
            next.context_size,
            next.gpu_layers,
            next.document_cache_mb,
            next.cache_type_k,
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cache_type_k_reaches_the_engine_and_reloads_the_model() {
        let model = Path::new("m.gguf");
        let default = ServerConfig::default();
        assert_eq!(
            default.engine_config(model, ReuseMode::Full).kv_types.keys,
            KvType::Q8_0
        );
        let f16 = ServerConfig::from_json(&json!({"cacheTypeK": "f16"})).expect("f16");
        assert_eq!(
            f16.engine_config(model, ReuseMode::Full).kv_types.keys,
            KvType::F16
        );
        assert_eq!(
            f16.engine_config(model, ReuseMode::Full).kv_types.values,
            KvType::F16
        );
        assert!(default.needs_reload(&f16));
        assert!(ServerConfig::from_json(&json!({"cacheTypeK": "q4_0"})).is_err());
    }

    #[test]
    fn reads_flat_and_nested_settings() {
        let flat =
            ServerConfig::from_json(&json!({"maxTokens": 16, "multiLine": "never"})).expect("flat");
        assert_eq!(flat.max_tokens, 16);
        assert_eq!(flat.multi_line, MultiLine::Never);
        assert_eq!(flat.debounce_ms, ServerConfig::default().debounce_ms);
        let nested =
            ServerConfig::from_json(&json!({"amdLsp": {"debounceMs": 5}})).expect("nested");
        assert_eq!(nested.debounce_ms, 5);
        assert_eq!(
            ServerConfig::from_json(&json!(null)).expect("null"),
            ServerConfig::default()
        );
    }

    #[test]
    fn settings_change_layers_over_initialization_options() {
        let init = json!({"model": "/m.gguf", "maxTokens": 16});
        let model = Some(PathBuf::from("/m.gguf"));
        for empty in [
            json!(null),
            json!({}),
            json!({"amdLsp": {}}),
            json!({"amdLsp": null}),
        ] {
            let c = ServerConfig::layered(&init, &empty).expect("empty settings");
            assert_eq!(
                (c.model.clone(), c.max_tokens),
                (model.clone(), 16),
                "{empty}"
            );
        }
        let c = ServerConfig::layered(&init, &json!({"amdLsp": {"maxTokens": 8}})).expect("one");
        assert_eq!((c.model, c.max_tokens), (model, 8));
        let c = ServerConfig::layered(&json!(null), &json!({"debounceMs": 3})).expect("no init");
        assert_eq!(c.debounce_ms, 3);
        assert!(ServerConfig::layered(&init, &json!({"maxTokenz": 1})).is_err());
    }

    #[test]
    fn a_bad_key_is_reported_and_every_good_one_kept() {
        let (c, problems) = ServerConfig::read(&json!({
            "model": "/m.gguf", "modelPath": "/x.gguf", "maxTokens": "many", "debounceMs": 7
        }));
        assert_eq!(c.model, Some(PathBuf::from("/m.gguf")));
        assert_eq!(c.debounce_ms, 7);
        assert_eq!(c.max_tokens, ServerConfig::default().max_tokens);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("unknown setting `modelPath`")));
        assert!(problems.iter().any(|p| p.contains("`maxTokens`")));
        let (c, problems) = ServerConfig::read(&json!({"amdLsp": {"maxTokens": 9}}));
        assert_eq!((c.max_tokens, problems.len()), (9, 0));
        let (_, problems) = ServerConfig::read(&json!(3));
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn rejects_unknown_keys_and_wrong_types() {
        let err = ServerConfig::from_json(&json!({"maxTokenz": 16})).expect_err("typo");
        assert!(err.to_string().contains("maxTokenz"), "{err}");
        assert!(ServerConfig::from_json(&json!({"maxTokens": "many"})).is_err());
    }

    /// The VS Code extension contributes one `amdLsp.<key>` setting per server key, with the
    /// server's default and a JSON type that accepts it (editors/vscode/package.json).
    #[test]
    fn vscode_settings_match_the_server_keys() {
        const CLIENT_ONLY: [&str; 2] = ["serverPath", "trace.server"];
        let package: serde_json::Value =
            serde_json::from_str(include_str!("../../../editors/vscode/package.json"))
                .expect("package.json");
        let props = package["contributes"]["configuration"]["properties"]
            .as_object()
            .expect("contributes.configuration.properties");
        let defaults = serde_json::to_value(ServerConfig::default()).expect("json");
        let defaults = defaults.as_object().expect("object");
        let mut vscode_keys: Vec<&str> = props
            .keys()
            .map(|k| {
                k.strip_prefix("amdLsp.")
                    .expect("every setting is under amdLsp.")
            })
            .filter(|k| !CLIENT_ONLY.contains(k))
            .collect();
        let mut server_keys: Vec<&str> = defaults.keys().map(String::as_str).collect();
        vscode_keys.sort_unstable();
        server_keys.sort_unstable();
        assert_eq!(
            vscode_keys, server_keys,
            "editors/vscode/package.json drifted"
        );
        for (key, default) in defaults {
            let prop = &props[&format!("amdLsp.{key}")];
            assert_eq!(&prop["default"], default, "default of amdLsp.{key}");
            let types: Vec<&str> = match &prop["type"] {
                serde_json::Value::String(t) => vec![t.as_str()],
                serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
                other => panic!("amdLsp.{key}: type {other}"),
            };
            let wanted = match default {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "boolean",
                serde_json::Value::Number(n) if n.is_f64() => "number",
                serde_json::Value::Number(_) => "integer",
                serde_json::Value::String(_) => "string",
                other => panic!("{key}: default {other}"),
            };
            assert!(
                types.contains(&wanted),
                "amdLsp.{key}: {types:?} lacks {wanted}"
            );
            // Every value the settings UI offers is one the server accepts.
            for value in prop["enum"].as_array().into_iter().flatten() {
                let one = serde_json::json!({ key: value });
                assert!(
                    ServerConfig::from_json(&one).is_ok(),
                    "amdLsp.{key}: the server refuses {value}"
                );
            }
        }
        // And the server accepts the whole settings object the extension sends.
        let sent: serde_json::Map<String, serde_json::Value> = defaults
            .keys()
            .map(|k| (k.clone(), props[&format!("amdLsp.{k}")]["default"].clone()))
            .collect();
        assert_eq!(
            ServerConfig::from_json(&serde_json::Value::Object(sent)).expect("accepted"),
            ServerConfig::default()
        );
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../../docs/configuration.md");
        let defaults = serde_json::to_value(ServerConfig::default()).expect("json");
        for (key, default) in defaults.as_object().expect("object") {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("docs/configuration.md has no row for `{key}`"));
            let shown = match default {
                serde_json::Value::String(s) => format!("`\"{s}\"`"),
                other => format!("`{other}`"),
            };
            assert!(
                row.contains(&shown),
                "the row for `{key}` should show the default {shown}: {row}"
            );
        }
    }
}
