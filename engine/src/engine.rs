//! The engine thread and its handle: jobs go in over a channel, answers come back on oneshots.
//!
//! The thread owns the llama.cpp model and context (a context is not `Send`), so nothing else
//! ever touches llama.cpp. A panic inside a job is caught, the session is reset and the job
//! gets an error; the thread keeps serving.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{EngineError, LoadError};
use crate::gguf;
use crate::llama::{ContextParams, Model, ModelParams};
use crate::prompt::{self, PromptModel};
use crate::session::Session;
use crate::text::Utf8Stream;
use crate::{CompletionRequest, EngineConfig, ModelInfo, Outcome, TokenId};

/// Largest context chosen automatically when the configuration says 0.
const AUTO_N_CTX_MAX: u32 = 4096;

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

enum Msg {
    Complete {
        req: Box<CompletionRequest>,
        cancel: CancelToken,
        reply: Reply<Outcome>,
    },
    Tokenize {
        text: String,
        add_bos: bool,
        reply: Reply<Vec<TokenId>>,
    },
    Detokenize {
        tokens: Vec<TokenId>,
        reply: Reply<Vec<String>>,
    },
}

/// A flag a job checks between prefill chunks and between decode steps.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Counters kept by the engine thread, readable from anywhere.
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub n_jobs: AtomicU64,
    pub n_completed: AtomicU64,
    pub n_cancelled: AtomicU64,
    pub n_failed: AtomicU64,
    pub n_tokens_reused: AtomicU64,
    pub n_tokens_evaluated: AtomicU64,
    pub n_tokens_generated: AtomicU64,
}

/// The answer to a submitted job. Await it (or [`JobHandle::wait`] outside async code);
/// dropping it cancels the job.
#[derive(Debug)]
pub struct JobHandle {
    rx: oneshot::Receiver<Result<Outcome, EngineError>>,
    cancel: CancelToken,
}

impl JobHandle {
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Blocks the current thread until the job ends. Not for use inside an async runtime.
    pub fn wait(mut self) -> Result<Outcome, EngineError> {
        let rx = std::mem::replace(&mut self.rx, oneshot::channel().1);
        rx.blocking_recv().unwrap_or(Err(EngineError::Stopped))
    }
}

impl Future for JobHandle {
    type Output = Result<Outcome, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(EngineError::Stopped)))
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The running engine. Dropping it stops the thread after the job in progress.
pub struct Engine {
    tx: Option<mpsc::Sender<Msg>>,
    info: ModelInfo,
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
    pub fn start(config: EngineConfig) -> Result<Engine, LoadError> {
        validate_model_file(&config.model_path, config.vocab_only)?;
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let counters = Arc::new(EngineCounters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("amd-engine".into())
            .spawn(move || engine_thread(config, rx, ready_tx, thread_counters))
            .map_err(|e| LoadError::Thread(e.to_string()))?;
        let info = match ready_rx.recv() {
            Ok(Ok(info)) => info,
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
            counters,
            thread: Some(thread),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
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
        JobHandle { rx, cancel }
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
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checks the file before llama.cpp parses it: it exists, is a well-formed GGUF, is a llama
/// model, and has weights unless only the vocabulary is wanted.
fn validate_model_file(path: &Path, vocab_only: bool) -> Result<(), LoadError> {
    if !path.is_file() {
        return Err(LoadError::Missing {
            path: path.to_path_buf(),
        });
    }
    let header = gguf::read_header(path)?;
    let architecture = header
        .get_str("general.architecture")
        .unwrap_or("")
        .to_owned();
    if architecture != "llama" {
        return Err(LoadError::Architecture {
            path: path.to_path_buf(),
            architecture,
        });
    }
    if header.tensors.is_empty() && !vocab_only {
        return Err(LoadError::VocabOnly {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn n_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Decode threads when the configuration says 0: one fewer than the cores. A single-token
/// step is too small to share well, and a spare core keeps decoding steady when another
/// process is busy (measured in docs/benchmarks.md).
fn default_decode_threads() -> u32 {
    n_cores().saturating_sub(1).max(1)
}

fn engine_thread(
    config: EngineConfig,
    rx: mpsc::Receiver<Msg>,
    ready: mpsc::Sender<Result<ModelInfo, LoadError>>,
    counters: Arc<EngineCounters>,
) {
    let params = ModelParams {
        gpu_layers: config.gpu_layers,
        vocab_only: config.vocab_only,
    };
    let mut model = match Model::load(&config.model_path, &params) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut session = if config.vocab_only {
        None
    } else {
        let n_ctx = match config.n_ctx {
            0 => model.info().n_ctx_train.clamp(256, AUTO_N_CTX_MAX),
            n => n,
        };
        let ctx_params = ContextParams {
            kv_type: config.kv_type,
            flash_attention: config.flash_attention,
            n_ctx,
            n_batch: 512,
            n_threads: if config.n_threads == 0 {
                default_decode_threads()
            } else {
                config.n_threads
            },
            n_threads_batch: if config.n_threads_batch == 0 {
                n_cores()
            } else {
                config.n_threads_batch
            },
        };
        model.set_n_ctx(n_ctx);
        match model.new_context(&ctx_params) {
            Ok(ctx) => Some(Session::new(
                &model,
                ctx,
                config.prefill_chunk as usize,
                config.kv_reuse,
            )),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    };
    tracing::info!(
        path = %model.info().path.display(),
        n_params = model.info().n_params,
        load_ms = model.info().load_ms,
        "model loaded"
    );
    if ready.send(Ok(model.info().clone())).is_err() {
        return;
    }

    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Tokenize {
                text,
                add_bos,
                reply,
            } => {
                let _ = reply.send(Ok(model.tokenize(&text, add_bos)));
            }
            Msg::Detokenize { tokens, reply } => {
                let _ = reply.send(Ok(detokenize(&model, &tokens)));
            }
            Msg::Complete {
                mut req,
                cancel,
                reply,
            } => {
                counters.n_jobs.fetch_add(1, Ordering::Relaxed);
                let result = match session.as_mut() {
                    None => Err(EngineError::Internal(
                        "the model was loaded vocabulary-only".into(),
                    )),
                    Some(_) if cancel.is_cancelled() || reply.is_closed() => {
                        Ok(Outcome::Cancelled(Default::default()))
                    }
                    Some(session) => run_job(&model, session, &mut req, &cancel),
                };
                count(&counters, &result);
                let _ = reply.send(result);
            }
        }
    }
    tracing::debug!("engine thread stopping");
}

fn run_job(
    model: &Model,
    session: &mut Session<'_>,
    req: &mut CompletionRequest,
    cancel: &CancelToken,
) -> Result<Outcome, EngineError> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let info = model.info();
        let tokenize = |text: &str| model.tokenize(text, false);
        let prompt_model = PromptModel {
            bos: info.bos.filter(|_| info.add_bos),
            fim: info.fim,
            tokenize: &tokenize,
        };
        let prompt = prompt::build(&prompt_model, &req.prompt);
        session.run(req, &prompt, cancel)
    }));
    let result = result.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(EngineError::Internal(what))
    });
    match &result {
        Err(e) => {
            tracing::warn!(error = %e, "job failed; KV cache reset");
            session.reset();
        }
        Ok(outcome) => {
            let s = outcome.stats();
            tracing::debug!(
                n_prompt = s.n_prompt,
                n_reused = s.n_reused,
                n_evaluated = s.n_evaluated,
                n_generated = s.n_generated,
                prefill_ms = s.prefill_ms,
                decode_ms = s.decode_ms,
                cancelled = matches!(outcome, Outcome::Cancelled(_)),
                "job done"
            );
        }
    }
    result
}

fn count(counters: &EngineCounters, result: &Result<Outcome, EngineError>) {
    match result {
        Ok(outcome) => {
            let s = outcome.stats();
            counters
                .n_tokens_reused
                .fetch_add(s.n_reused as u64, Ordering::Relaxed);
            counters
                .n_tokens_evaluated
                .fetch_add(s.n_evaluated as u64, Ordering::Relaxed);
            counters
                .n_tokens_generated
                .fetch_add(s.n_generated as u64, Ordering::Relaxed);
            match outcome {
                Outcome::Completed(_) => counters.n_completed.fetch_add(1, Ordering::Relaxed),
                Outcome::Cancelled(_) => counters.n_cancelled.fetch_add(1, Ordering::Relaxed),
            };
        }
        Err(_) => {
            counters.n_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn detokenize(model: &Model, tokens: &[TokenId]) -> Vec<String> {
    let mut stream = Utf8Stream::new();
    let mut piece = Vec::new();
    let mut out: Vec<String> = tokens
        .iter()
        .map(|&t| {
            piece.clear();
            if t >= 0 && (t as u32) < model.info().n_vocab {
                model.piece(t, &mut piece);
            }
            let mut s = String::new();
            stream.push(&piece, &mut s);
            s
        })
        .collect();
    if let Some(last) = out.last_mut() {
        stream.finish(last);
    }
    out
}
