//! The engine's error types. Cancellation is not among them: it is an [`crate::Outcome`].

use std::path::PathBuf;

/// Loading a model or creating its context failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model file {path} does not exist")]
    Missing { path: PathBuf },
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("{path} is not a model amd-lsp can run: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error(
        "a context of {n_ctx} tokens needs {needed_mib} MiB of KV cache and only \
         {available_mib} MiB of memory is available (set a smaller context size)"
    )]
    ContextTooLarge {
        n_ctx: u32,
        needed_mib: u64,
        available_mib: u64,
    },
    #[error("llama.cpp backend: {0}")]
    Backend(String),
    #[error("llama.cpp could not load {path}: {message}")]
    Llama { path: PathBuf, message: String },
    #[error("llama.cpp could not create a context: {0} (try a smaller context size)")]
    Context(String),
    #[error("quantize: {0}")]
    Quantize(String),
    #[error("the engine thread could not be started: {0}")]
    Thread(String),
    #[error("a KV cache with quantized values needs flash attention (llama.cpp quantizes values only there)")]
    QuantizedValues,
    #[error("{draft} cannot draft for {target}: {reason}")]
    Incompatible {
        draft: PathBuf,
        target: PathBuf,
        reason: String,
    },
}

/// A job failed. The engine keeps running and the next job starts from a consistent state.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("prompt of {n_prompt} tokens does not fit the context of {n_ctx} tokens")]
    PromptTooLong { n_prompt: usize, n_ctx: usize },
    #[error("empty prompt")]
    EmptyPrompt,
    #[error("token id {token} is outside the vocabulary of {n_vocab}")]
    BadToken { token: i32, n_vocab: u32 },
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    #[error("no target model is configured")]
    NoTarget,
    #[error("{0}")]
    BadRequest(String),
    #[error("the engine stopped")]
    Stopped,
    #[error("internal engine error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The request itself was wrong (found before the KV cache was touched): the caches
    /// stay, and a server answers it empty rather than as a failure.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            EngineError::PromptTooLong { .. }
                | EngineError::EmptyPrompt
                | EngineError::BadToken { .. }
                | EngineError::NoTarget
                | EngineError::BadRequest(_)
        )
    }
}
