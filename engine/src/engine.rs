//! The engine thread and its handle: jobs go in over a channel, answers come back on oneshots.
//!
//! The thread owns the llama.cpp model and context (a context is not `Send`), so nothing else
//! ever touches llama.cpp. A panic inside a job is caught, the session is reset and the job
//! gets an error; the thread keeps serving.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{EngineError, LoadError};
use crate::llama::{ContextParams, Model, ModelParams};
use crate::prompt::{self, PromptModel};
use crate::session::Session;
use crate::speculative::{self, DraftSource};
use crate::text::Utf8Stream;
use crate::validate;
use crate::{
    CompletionRequest, Drafter, EngineConfig, KvType, KvTypes, ModelInfo, ModelRole, Outcome,
    Prompt, TokenId,
};

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
    /// Reused tokens taken back from the park at shifted positions.
    pub n_tokens_shifted: AtomicU64,
    pub n_tokens_evaluated: AtomicU64,
    pub n_tokens_generated: AtomicU64,
    /// Prompt tokens that differed from the same document's previous prompt (the minimum).
    pub n_tokens_changed: AtomicU64,
    /// Jobs that evaluated their prompt from nothing (whole, or its first chunks before they
    /// were cancelled) although more than half of it was known from the document's previous
    /// prompts (a reuse path that gave up; 0 is the goal).
    pub n_whole_reevaluations: AtomicU64,
    /// Process CPU time spent in jobs, and in jobs that ended cancelled, in microseconds.
    pub cpu_us: AtomicU64,
    pub cpu_us_cancelled: AtomicU64,
    /// CPU time thrown away: what cancelled jobs spent generating (their prompt evaluation
    /// stays in the cache for the next job; `n_tokens_evaluated` against `n_tokens_changed`
    /// shows whether it was used), or all they spent without KV reuse, in microseconds.
    pub cpu_us_superseded: AtomicU64,
    /// Jobs whose document's KV cache was put back from memory.
    pub n_restored: AtomicU64,
    /// Documents whose KV caches are kept in memory now, and their bytes.
    pub saved_documents: AtomicU64,
    pub saved_bytes: AtomicU64,
    /// llama.cpp calls run with all their threads, and with one because other processes were
    /// using the cores (only with the default thread settings, see `cpu.rs`).
    pub n_calls_all_threads: AtomicU64,
    pub n_calls_one_thread: AtomicU64,
    /// Prompt evaluation speed of the main model, tokens per second (an `f64`'s bits; 0: not
    /// measured yet): a moving average over jobs that evaluated at least
    /// [`PREFILL_RATE_MIN_TOKENS`] prompt tokens.
    pub prefill_tokens_per_s: AtomicU64,
}

/// Jobs that evaluate fewer prompt tokens than this say little about prefill speed.
pub(crate) const PREFILL_RATE_MIN_TOKENS: usize = 32;

impl EngineCounters {
    /// The measured prompt evaluation speed (tokens per second), once there is one.
    pub fn prefill_rate(&self) -> Option<f64> {
        let rate = f64::from_bits(self.prefill_tokens_per_s.load(Ordering::Relaxed));
        (rate > 0.0).then_some(rate)
    }

    fn record_prefill(&self, n_evaluated: usize, prefill_ms: f64) {
        if n_evaluated < PREFILL_RATE_MIN_TOKENS || prefill_ms <= 0.0 {
            return;
        }
        let rate = n_evaluated as f64 * 1000.0 / prefill_ms;
        let next = match self.prefill_rate() {
            None => rate,
            Some(old) => 0.7 * old + 0.3 * rate,
        };
        self.prefill_tokens_per_s
            .store(next.to_bits(), Ordering::Relaxed);
    }
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
            .spawn(move || engine_thread(config, rx, ready_tx, thread_counters))
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

fn n_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Decode threads when the configuration says 0 and the thread count cannot follow the load:
/// one fewer than the cores, so that a busy neighbour does not stall decoding (measured in
/// docs/benchmarks.md).
fn default_decode_threads() -> u32 {
    n_cores().saturating_sub(1).max(1)
}

/// Threads for every call when the count follows the load (`cpu.rs`): all cores on a machine
/// of two, one fewer on larger ones (the editor and the rest of the desktop keep one).
fn adaptive_threads() -> u32 {
    match n_cores() {
        n @ 0..=2 => n.max(1),
        n => n - 1,
    }
}

type Ready = Result<(ModelInfo, Option<ModelInfo>), LoadError>;

fn engine_thread(
    config: EngineConfig,
    rx: mpsc::Receiver<Msg>,
    ready: mpsc::Sender<Ready>,
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
    let mut target_model = match &config.target {
        Some(t) if !config.vocab_only => {
            let params = ModelParams {
                gpu_layers: t.gpu_layers,
                vocab_only: false,
            };
            match Model::load(&t.model_path, &params)
                .and_then(|target| check_draft_pair(&model, &target).map(|()| target))
            {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
        _ => None,
    };
    // Set by `Engine::start` from the validated headers when the configuration said 0.
    let n_ctx = config.n_ctx;
    // With both counts left to us, llama.cpp runs on all `adaptive_threads` only while other
    // processes leave those cores free, and on one thread otherwise.
    let adaptive = config.n_threads == 0
        && config.n_threads_batch == 0
        && crate::cpu::install(n_cores(), adaptive_threads(), Arc::clone(&counters));
    let ctx_params = ContextParams {
        kv_types: config.kv_types,
        flash_attention: config.flash_attention,
        n_ctx,
        n_batch: 512,
        n_threads: if adaptive {
            adaptive_threads()
        } else if config.n_threads == 0 {
            default_decode_threads()
        } else {
            config.n_threads
        },
        n_threads_batch: if adaptive {
            adaptive_threads()
        } else if config.n_threads_batch == 0 {
            n_cores()
        } else {
            config.n_threads_batch
        },
    };
    if !config.vocab_only {
        model.set_n_ctx(n_ctx);
    }
    if let Some(t) = target_model.as_mut() {
        t.set_n_ctx(n_ctx);
    }
    let new_session = |m| new_session(m, &ctx_params, &config);
    let mut session = None;
    let mut target_session = None;
    if !config.vocab_only {
        let sessions = new_session(&model).and_then(|main| {
            let target = target_model.as_ref().map(&new_session).transpose()?;
            Ok((main, target))
        });
        match sessions {
            Ok((main, target)) => {
                session = Some(main);
                target_session = target;
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    for m in std::iter::once(&model).chain(target_model.as_ref()) {
        tracing::info!(
            path = %m.info().path.display(),
            n_params = m.info().n_params,
            load_ms = m.info().load_ms,
            "model loaded"
        );
    }
    let infos = (
        model.info().clone(),
        target_model.as_ref().map(|m| m.info().clone()),
    );
    if ready.send(Ok(infos)).is_err() {
        return;
    }

    let mut last_prompts = LastPrompts::default();
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
                let cpu_start = process_cpu_us();
                let mut result = match session.as_mut() {
                    None => Err(EngineError::Internal(
                        "the model was loaded vocabulary-only".into(),
                    )),
                    Some(_) if cancel.is_cancelled() || reply.is_closed() => {
                        Ok(Outcome::Cancelled(Default::default()))
                    }
                    Some(session) => run_job(
                        session,
                        target_session.as_mut(),
                        &mut req,
                        &cancel,
                        &mut last_prompts,
                    ),
                };
                let cpu_end = process_cpu_us();
                let cpu_us = cpu_end.saturating_sub(cpu_start);
                let decode_from = session
                    .iter_mut()
                    .chain(target_session.iter_mut())
                    .filter_map(Session::take_decode_start)
                    .min();
                let cpu_decode_us = decode_from.map_or(0, |t| cpu_end.saturating_sub(t));
                if let Ok(outcome) = result.as_mut() {
                    let stats = outcome.stats_mut();
                    stats.cpu_ms = cpu_us as f64 / 1000.0;
                    stats.cpu_decode_ms = cpu_decode_us as f64 / 1000.0;
                }
                counters.cpu_us.fetch_add(cpu_us, Ordering::Relaxed);
                if matches!(result, Ok(Outcome::Cancelled(_))) {
                    counters
                        .cpu_us_cancelled
                        .fetch_add(cpu_us, Ordering::Relaxed);
                    counters
                        .cpu_us_superseded
                        .fetch_add(cpu_decode_us, Ordering::Relaxed);
                }
                let (n_saved, saved_bytes) = session
                    .iter()
                    .chain(target_session.iter())
                    .map(Session::saved_documents)
                    .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
                counters
                    .saved_documents
                    .store(n_saved as u64, Ordering::Relaxed);
                counters
                    .saved_bytes
                    .store(saved_bytes as u64, Ordering::Relaxed);
                count(&counters, &result);
                if let (Ok(outcome), ModelRole::Main) = (&result, req.model) {
                    let s = outcome.stats();
                    counters.record_prefill(s.n_evaluated, s.prefill_ms);
                }
                let _ = reply.send(result);
            }
        }
    }
    tracing::debug!("engine thread stopping");
}

fn new_session<'m>(
    model: &'m Model,
    params: &ContextParams,
    config: &EngineConfig,
) -> Result<Session<'m>, LoadError> {
    Ok(Session::new(
        model,
        model.new_context(params)?,
        config.prefill_chunk as usize,
        config.kv_reuse,
        config.kv_shift,
        config.kv_documents_bytes,
    ))
}

/// Checks that `draft` can draft for `target`: the same tokenizer family and special tokens,
/// a vocabulary that is a prefix of the target's (at most 128 tokens shorter), and the same
/// text for every shared token.
fn check_draft_pair(draft: &Model, target: &Model) -> Result<(), LoadError> {
    let (d, t) = (draft.info(), target.info());
    let refuse = |reason: String| LoadError::Incompatible {
        draft: d.path.clone(),
        target: t.path.clone(),
        reason,
    };
    if draft.vocab_kind() != target.vocab_kind() {
        return Err(refuse(format!(
            "tokenizers differ ({} vs {})",
            draft.vocab_kind(),
            target.vocab_kind()
        )));
    }
    if (d.bos, d.eos, d.add_bos) != (t.bos, t.eos, t.add_bos) {
        return Err(refuse(format!(
            "special tokens differ (BOS {:?}/{:?}, EOS {:?}/{:?})",
            d.bos, t.bos, d.eos, t.eos
        )));
    }
    if d.n_vocab > t.n_vocab || t.n_vocab - d.n_vocab > 128 {
        return Err(refuse(format!(
            "vocabularies of {} and {} tokens (the draft's must be the target's first tokens, \
             at most 128 fewer)",
            d.n_vocab, t.n_vocab
        )));
    }
    for id in 0..d.n_vocab as TokenId {
        let (a, b) = (draft.token_text(id), target.token_text(id));
        if a != b {
            return Err(refuse(format!(
                "token {id} is {:?} in the draft but {:?} in the target",
                a.unwrap_or_default(),
                b.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Documents kept by [`LastPrompts`]: more than an editor has open at once.
const LAST_PROMPTS_KEPT: usize = 32;

/// Most tokens remembered of a document.
const KNOWN_TOKENS_MAX: usize = 16 << 10;

/// What the engine has seen of each recent document, to count what a new prompt changed:
/// the prompts spliced together, so that a prompt ending above the old cursor (an edit far
/// up the file) keeps what it did not reach, and coming back changes nothing.
#[derive(Default)]
struct LastPrompts(std::collections::VecDeque<(u64, Vec<TokenId>)>);

impl LastPrompts {
    /// Tokens of `prompt` that differ from what was known of `document`; remembers `prompt`.
    fn changed(&mut self, document: Option<u64>, prompt: &[TokenId]) -> usize {
        let Some(key) = document else {
            return prompt.len();
        };
        let previous = self
            .0
            .iter()
            .position(|(k, _)| *k == key)
            .and_then(|i| self.0.remove(i))
            .map(|(_, p)| p);
        let mut known = prompt.to_vec();
        let changed = match previous {
            None => prompt.len(),
            Some(old) => {
                let diff = crate::reuse::diff(&old, prompt);
                known.extend_from_slice(&old[diff.old_end..]);
                known.truncate(KNOWN_TOKENS_MAX);
                diff.changed
            }
        };
        self.0.push_front((key, known));
        self.0.truncate(LAST_PROMPTS_KEPT);
        changed
    }

    /// Forgets all but the first `n` tokens known of `document` (a cancelled job got no
    /// further).
    fn cut(&mut self, document: Option<u64>, n: usize) {
        if let Some((_, known)) = self.0.iter_mut().find(|(k, _)| Some(*k) == document) {
            known.truncate(n);
        }
    }
}

/// CPU time of the whole process (every thread: llama.cpp's workers included), in µs.
pub(crate) fn process_cpu_us() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
        }
    }
    0
}

fn run_job<'m>(
    main: &mut Session<'m>,
    mut target: Option<&mut Session<'m>>,
    req: &mut CompletionRequest,
    cancel: &CancelToken,
    last_prompts: &mut LastPrompts,
) -> Result<Outcome, EngineError> {
    let mut n_changed = None;
    let mut restored = false;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let marked = |model: &Model, prompt: &Prompt| {
            let info = model.info();
            let tokenize = |text: &str| model.tokenize(text, false);
            let tokenize_continuation = |text: &str| model.tokenize_continuation(text);
            let prompt_model = PromptModel {
                bos: info.bos.filter(|_| info.add_bos),
                fim: info.fim,
                tokenize: &tokenize,
                tokenize_continuation: &tokenize_continuation,
            };
            prompt::build_marked(&prompt_model, prompt)
        };
        let prompt_of = |model: &Model, prompt: &Prompt| marked(model, prompt).tokens;
        let generator: &mut Session<'m> = match req.model {
            ModelRole::Main => &mut *main,
            ModelRole::Target => target.as_deref_mut().ok_or(EngineError::NoTarget)?,
        };
        let mut built = marked(generator.model(), &req.prompt);
        let healed = if req.heal && req.speculation.is_none() {
            let model = generator.model();
            prompt::heal(&mut built, &|t| {
                let mut out = Vec::new();
                model.piece(t, &mut out);
                out
            })
        } else {
            None
        };
        let prompt = built.tokens;
        n_changed = Some(last_prompts.changed(req.document, &prompt));
        restored = generator.switch_document(req.document)?;
        match req.speculation.as_ref().map(|s| &s.drafter) {
            None => generator.run(req, &prompt, healed, cancel),
            Some(Drafter::Lookup(lookup)) => {
                let corpus = lookup
                    .corpus
                    .iter()
                    .map(|text| generator.model().tokenize(text, false))
                    .collect();
                let source = DraftSource::Lookup { corpus };
                speculative::run(generator, source, req, &prompt, cancel)
            }
            Some(Drafter::Model) => {
                let Some(target) = target
                    .as_deref_mut()
                    .filter(|_| req.model == ModelRole::Target)
                else {
                    return Err(EngineError::BadRequest(
                        "drafting with a model needs a target model to draft for".into(),
                    ));
                };
                let draft_prompt = prompt_of(main.model(), &draft_prompt(&req.prompt));
                let draft_prompt = match &req.prompt {
                    // Token prompts may hold ids the draft cannot read: it starts after them.
                    Prompt::Tokens(_) => {
                        let n_vocab = main.model().info().n_vocab;
                        let from = draft_prompt
                            .iter()
                            .rposition(|&t| t < 0 || t as u32 >= n_vocab)
                            .map_or(0, |i| i + 1);
                        draft_prompt[from..].to_vec()
                    }
                    _ => draft_prompt,
                };
                main.switch_document(req.document)?;
                let source = DraftSource::Model {
                    session: main,
                    prompt: draft_prompt,
                };
                speculative::run(target, source, req, &prompt, cancel)
            }
        }
    }));
    let mut result = result.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(EngineError::Internal(what))
    });
    if let (Ok(outcome), Some(n)) = (result.as_mut(), n_changed) {
        let cancelled = matches!(outcome, Outcome::Cancelled(_));
        let s = outcome.stats_mut();
        s.restored = restored;
        s.n_changed = if cancelled {
            // What a cancelled job did not get to is still to do: the document's next prompt
            // counts it as changed, and this job counts only what it evaluated.
            last_prompts.cut(req.document, s.n_reused + s.n_evaluated);
            n.min(s.n_evaluated)
        } else {
            n
        };
    }
    match &result {
        Err(e) if e.is_bad_request() => {
            tracing::debug!(error = %e, "request refused; KV caches kept");
        }
        Err(e) => {
            tracing::warn!(error = %e, "job failed; KV cache reset");
            main.reset();
            if let Some(t) = target {
                t.reset();
            }
        }
        Ok(outcome) => {
            let s = outcome.stats();
            tracing::debug!(
                n_prompt = s.n_prompt,
                n_reused = s.n_reused,
                n_shifted = s.n_shifted,
                n_changed = s.n_changed,
                n_evaluated = s.n_evaluated,
                n_generated = s.n_generated,
                n_drafted = s.n_drafted,
                n_accepted = s.n_accepted,
                prefill_ms = s.prefill_ms,
                decode_ms = s.decode_ms,
                cancelled = matches!(outcome, Outcome::Cancelled(_)),
                "job done"
            );
        }
    }
    result
}

/// What the draft model is prompted with: the other files' code and the code before the
/// cursor (FIM prompts lose their suffix and control tokens).
fn draft_prompt(prompt: &Prompt) -> Prompt {
    match prompt {
        Prompt::Fim {
            prefix,
            middle,
            max_tokens,
            context,
            ..
        } => Prompt::Prefix {
            text: format!("{prefix}{middle}"),
            max_tokens: *max_tokens,
            context: context.clone(),
        },
        other => other.clone(),
    }
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
                .n_tokens_shifted
                .fetch_add(s.n_shifted as u64, Ordering::Relaxed);
            counters
                .n_tokens_generated
                .fetch_add(s.n_generated as u64, Ordering::Relaxed);
            counters
                .n_tokens_changed
                .fetch_add(s.n_changed as u64, Ordering::Relaxed);
            if s.restored {
                counters.n_restored.fetch_add(1, Ordering::Relaxed);
            }
            // Evaluated from nothing although most of it was known: the whole prompt at once,
            // or the first chunks of it (a job cancelled between chunks counts as changed
            // only what it evaluated, so a first prompt cut short is not counted).
            if s.n_reused == 0
                && s.n_evaluated > 0
                && s.n_changed * 2 < s.n_prompt.min(s.n_evaluated)
            {
                counters
                    .n_whole_reevaluations
                    .fetch_add(1, Ordering::Relaxed);
            }
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

#[cfg(test)]
mod last_prompts_tests {
    use super::LastPrompts;

    #[test]
    fn an_edit_far_above_and_back_changes_only_what_was_typed() {
        let mut seen = LastPrompts::default();
        let doc: Vec<i32> = (1..=100).collect();
        assert_eq!(seen.changed(Some(7), &doc), 100, "first prompt: all of it");
        assert_eq!(seen.changed(Some(7), &doc[..101 - 1]), 0);
        // The cursor goes up to position 40 and types two tokens there.
        let mut up = doc[..40].to_vec();
        up.extend([900, 901]);
        assert_eq!(seen.changed(Some(7), &up), 2);
        // Back at the end: the document is the old one with the two tokens inserted.
        let mut back = up.clone();
        back.extend(&doc[40..]);
        assert_eq!(seen.changed(Some(7), &back), 0, "nothing new since");
        // Another document does not disturb this one; without a key, all of it counts.
        assert_eq!(seen.changed(Some(8), &doc[..10]), 10);
        assert_eq!(seen.changed(Some(7), &back), 0);
        assert_eq!(seen.changed(None, &back), back.len());
    }
}

#[cfg(test)]
mod prefill_rate_tests {
    use super::EngineCounters;

    #[test]
    fn the_prefill_rate_is_a_moving_average_of_jobs_that_evaluated_enough() {
        let c = EngineCounters::default();
        assert_eq!(c.prefill_rate(), None);
        c.record_prefill(8, 10.0); // too few tokens to say anything
        assert_eq!(c.prefill_rate(), None);
        c.record_prefill(200, 1000.0); // 200 tok/s
        assert_eq!(c.prefill_rate(), Some(200.0));
        c.record_prefill(100, 250.0); // 400 tok/s: 0.7 * 200 + 0.3 * 400
        assert!((c.prefill_rate().unwrap() - 260.0).abs() < 1e-9);
        c.record_prefill(100, 0.0); // no time measured: ignored
        assert!((c.prefill_rate().unwrap() - 260.0).abs() < 1e-9);
    }
}
