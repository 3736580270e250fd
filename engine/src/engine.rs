//! The engine's handle: what callers hold. Jobs go to the engine thread ([`crate::worker`])
//! over a channel; answers come back on oneshots.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{EngineError, LoadError};
use crate::gguf::validate;
use crate::job::{CancelToken, JobHandle};
use crate::stats::EngineCounters;
use crate::worker::{self, Msg};
use crate::{CompletionRequest, EngineConfig, KvType, KvTypes, ModelInfo, TokenId};

/// Largest context chosen automatically when the configuration says 0.
const AUTO_N_CTX_MAX: u32 = 4096;

/// The running engine. Dropping it stops the thread after the job in progress.
pub struct Engine {
    tx: Option<mpsc::Sender<Msg>>,
    info: ModelInfo,
    target_info: Option<ModelInfo>,
    kv_types: KvTypes,
    counters: Arc<EngineCounters>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Validates the model file, starts the engine thread and waits until the model is loaded.
    pub fn start(mut config: EngineConfig) -> Result<Engine, LoadError> {
        let main = validate::check_model_file(&config.model_path, config.vocab_only)?;
        if config.kv_types.values == KvType::Q8_0 && !config.flash_attention {
            return Err(LoadError::QuantizedValues);
        }
        let target = match &config.target {
            Some(t) if !config.vocab_only => {
                Some(validate::check_model_file(&t.model_path, false)?)
            }
            _ => None,
        };
        if !config.vocab_only {
            if config.n_ctx == 0 {
                config.n_ctx = std::iter::once(&main)
                    .chain(target.as_ref())
                    .map(|c| c.shape.n_ctx_train)
                    .min()
                    .unwrap_or(AUTO_N_CTX_MAX)
                    .clamp(256, AUTO_N_CTX_MAX);
            }
            let shapes = std::iter::once(&main)
                .chain(target.as_ref())
                .map(|c| &c.shape);
            let types = validate::effective_kv_types(config.kv_types, shapes);
            if types != config.kv_types {
                tracing::info!(
                    requested = ?config.kv_types,
                    using = ?types,
                    "quantized keys need a head size that is a multiple of 64 in llama.cpp"
                );
                config.kv_types = types;
            }
            // Both caches (the target's too) must fit.
            let needed = std::iter::once(&main)
                .chain(target.as_ref())
                .map(|c| validate::kv_cache_bytes(&c.shape, config.n_ctx, config.kv_types))
                .sum();
            validate::check_context_fits(needed, config.n_ctx, validate::available_memory())?;
        }
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let counters = Arc::new(EngineCounters::default());
        let thread_counters = Arc::clone(&counters);
        let kv_types = config.kv_types;
        let thread = std::thread::Builder::new()
            .name("amd-engine".into())
            .spawn(move || worker::run(config, rx, ready_tx, thread_counters))
            .map_err(|e| LoadError::Thread(e.to_string()))?;
        let (info, target_info) = match ready_rx.recv() {
            Ok(Ok(infos)) => infos,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(LoadError::Thread(
                    "the engine thread died while loading".into(),
                ));
            }
        };
        Ok(Engine {
            tx: Some(tx),
            info,
            target_info,
            kv_types,
            counters,
            thread: Some(thread),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The KV cache's element types in use (the configured ones, or F16 keys where
    /// llama.cpp cannot shift quantized keys of a model; `validate::effective_kv_types`).
    pub fn kv_types(&self) -> KvTypes {
        self.kv_types
    }

    /// The target model, when one is configured.
    pub fn target_info(&self) -> Option<&ModelInfo> {
        self.target_info.as_ref()
    }

    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Queues a completion. The handle resolves once; dropping it cancels the job.
    pub fn submit(&self, req: CompletionRequest) -> JobHandle {
        self.submit_with_cancel(req, CancelToken::new())
    }

    /// Like [`Engine::submit`], with a cancel token the caller already holds.
    pub fn submit_with_cancel(&self, req: CompletionRequest, cancel: CancelToken) -> JobHandle {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Complete {
            req: Box::new(req),
            cancel: cancel.clone(),
            reply,
        });
        JobHandle::new(rx, cancel)
    }

    /// Tokenizes text as prompts are tokenized (no special-token parsing).
    pub async fn tokenize(&self, text: String, add_bos: bool) -> Result<Vec<TokenId>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Tokenize {
            text,
            add_bos,
            reply,
        });
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Turns tokens into text the way generation does; one string per token, holding what
    /// that token completed (a character split over tokens appears with its last byte).
    pub async fn detokenize(&self, tokens: Vec<TokenId>) -> Result<Vec<String>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Detokenize { tokens, reply });
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    fn send(&self, msg: Msg) {
        // If the thread is gone the message (and its reply sender) is dropped, so the
        // caller's receiver resolves to `Stopped`.
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }
}

impl Drop for Engine {
    /// Stops the engine thread. The thread finishes the llama.cpp call it is in (a prefill
    /// chunk of a 7B target on a CPU takes seconds): on an async runtime's worker the join
    /// moves to a thread of its own, so no worker waits for it.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let joiner = std::thread::Builder::new()
                    .name("amd-engine-join".into())
                    .spawn(move || drop(thread.join()));
                if joiner.is_err() {
                    tracing::warn!("could not start a thread to join the engine; left running");
                }
            } else {
                let _ = thread.join();
            }
        }
    }
}
