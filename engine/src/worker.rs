//! The engine thread: loads the models, then serves the handle's messages one at a time.
//!
//! The thread owns the llama.cpp models and contexts (a context is not `Send`), so nothing
//! else ever touches llama.cpp. A panic inside a job is caught, the sessions are reset and the
//! job gets an error; the thread keeps serving.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use crate::error::{EngineError, LoadError};
use crate::job::CancelToken;
use crate::llama::{ContextParams, Model, ModelParams};
use crate::prompt::{self, PromptModel};
use crate::session::Session;
use crate::speculative::{self, DraftSource};
use crate::stats::{process_cpu_us, EngineCounters, JobCpu, LastPrompts, PREFILL_RATE_MIN_TOKENS};
use crate::text::Utf8Stream;
use crate::{
    CompletionRequest, Drafter, EngineConfig, ModelInfo, ModelRole, Outcome, Prompt, TokenId,
};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

pub(crate) enum Msg {
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

/// What the engine thread tells [`crate::Engine::start`] once loading is done.
pub(crate) type Ready = Result<(ModelInfo, Option<ModelInfo>), LoadError>;

/// The engine thread's body: loads, says it is ready, and serves until the handle is dropped.
pub(crate) fn run(
    config: EngineConfig,
    rx: mpsc::Receiver<Msg>,
    ready: mpsc::Sender<Ready>,
    counters: Arc<EngineCounters>,
) {
    let models = match load_models(&config) {
        Ok(models) => models,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut sessions = match Sessions::new(&models, &config, &counters) {
        Ok(sessions) => sessions,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    for m in std::iter::once(&models.main).chain(models.target.as_ref()) {
        tracing::info!(
            path = %m.info().path.display(),
            n_params = m.info().n_params,
            load_ms = m.info().load_ms,
            "model loaded"
        );
    }
    if let Some(main) = sessions.main.as_mut() {
        measure_prefill(main, &counters);
    }
    let infos = (
        models.main.info().clone(),
        models.target.as_ref().map(|m| m.info().clone()),
    );
    if ready.send(Ok(infos)).is_err() {
        return;
    }
    serve(&models.main, &mut sessions, &rx, &counters);
    tracing::debug!("engine thread stopping");
}

/// Measures the main model's prompt speed before the first request: one evaluation of
/// [`PREFILL_RATE_MIN_TOKENS`] tokens, then a clean cache. The server sizes a window with
/// nothing cached by this speed (`firstSuggestionMs`); without it the first file of a session
/// got a guessed window (1024 characters, ~480 SmolLM2 tokens: 2.3 s on 2 cores) instead of
/// one that is ready in about the time asked for.
fn measure_prefill(session: &mut Session<'_>, counters: &EngineCounters) {
    let n = PREFILL_RATE_MIN_TOKENS.min(session.n_ctx() / 2);
    // Any valid token will do for timing; 0 is one in every vocabulary.
    let tokens: Vec<TokenId> = vec![0; n];
    let started = std::time::Instant::now();
    match session.eval(&tokens, crate::llama::Logits::Last) {
        Ok(()) => counters.record_prefill(n, started.elapsed().as_secs_f64() * 1000.0),
        Err(e) => tracing::debug!(error = %e, "prompt speed not measured at start"),
    }
    session.reset();
}

/// The main model and the target it drafts for, when one is configured.
struct Models {
    main: Model,
    target: Option<Model>,
}

fn load_models(config: &EngineConfig) -> Result<Models, LoadError> {
    let params = ModelParams {
        gpu_layers: config.gpu_layers,
        vocab_only: config.vocab_only,
    };
    let mut main = Model::load(&config.model_path, &params)?;
    let mut target = match &config.target {
        Some(t) if !config.vocab_only => {
            let params = ModelParams {
                gpu_layers: t.gpu_layers,
                vocab_only: false,
            };
            let target = Model::load(&t.model_path, &params)?;
            check_draft_pair(&main, &target)?;
            Some(target)
        }
        _ => None,
    };
    // Set by `Engine::start` from the validated headers when the configuration said 0.
    if !config.vocab_only {
        main.set_n_ctx(config.n_ctx);
    }
    if let Some(t) = target.as_mut() {
        t.set_n_ctx(config.n_ctx);
    }
    Ok(Models { main, target })
}

/// The KV sessions over the loaded models (none for a vocabulary-only model).
struct Sessions<'m> {
    main: Option<Session<'m>>,
    target: Option<Session<'m>>,
}

impl<'m> Sessions<'m> {
    fn new(
        models: &'m Models,
        config: &EngineConfig,
        counters: &Arc<EngineCounters>,
    ) -> Result<Sessions<'m>, LoadError> {
        let (n_threads, n_threads_batch) = crate::cpu::thread_counts(
            config.n_threads,
            config.n_threads_batch,
            Arc::clone(counters),
        );
        let params = ContextParams {
            kv_types: config.kv_types,
            flash_attention: config.flash_attention,
            n_ctx: config.n_ctx,
            n_batch: 512,
            n_threads,
            n_threads_batch,
        };
        if config.vocab_only {
            return Ok(Sessions {
                main: None,
                target: None,
            });
        }
        let main = new_session(&models.main, &params, config)?;
        let target = models
            .target
            .as_ref()
            .map(|m| new_session(m, &params, config))
            .transpose()?;
        Ok(Sessions {
            main: Some(main),
            target,
        })
    }

    /// Documents whose caches are kept in memory, and their bytes, over both sessions.
    fn saved(&self) -> (usize, usize) {
        self.main
            .iter()
            .chain(self.target.iter())
            .map(Session::saved_documents)
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }
}

fn serve(
    model: &Model,
    sessions: &mut Sessions<'_>,
    rx: &mpsc::Receiver<Msg>,
    counters: &EngineCounters,
) {
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
                let _ = reply.send(Ok(detokenize(model, &tokens)));
            }
            Msg::Complete {
                mut req,
                cancel,
                reply,
            } => {
                let gone = cancel.is_cancelled() || reply.is_closed();
                let result = complete(
                    sessions,
                    &mut req,
                    &cancel,
                    gone,
                    &mut last_prompts,
                    counters,
                );
                let _ = reply.send(result);
            }
        }
    }
}

/// Runs one completion job (unless its caller is `gone`) and does its accounting.
fn complete(
    sessions: &mut Sessions<'_>,
    req: &mut CompletionRequest,
    cancel: &CancelToken,
    gone: bool,
    last_prompts: &mut LastPrompts,
    counters: &EngineCounters,
) -> Result<Outcome, EngineError> {
    counters.n_jobs.fetch_add(1, Ordering::Relaxed);
    let cpu_start = process_cpu_us();
    let mut result = match sessions.main.as_mut() {
        None => Err(EngineError::Internal(
            "the model was loaded vocabulary-only".into(),
        )),
        Some(_) if gone => Ok(Outcome::Cancelled(Default::default())),
        Some(main) => run_job(main, sessions.target.as_mut(), req, cancel, last_prompts),
    };
    let cpu_end = process_cpu_us();
    let decode_from = sessions
        .main
        .iter_mut()
        .chain(sessions.target.iter_mut())
        .filter_map(Session::take_decode_start)
        .min();
    let cpu = JobCpu {
        total_us: cpu_end.saturating_sub(cpu_start),
        decode_us: decode_from.map_or(0, |t| cpu_end.saturating_sub(t)),
    };
    if let Ok(outcome) = result.as_mut() {
        let stats = outcome.stats_mut();
        stats.cpu_ms = cpu.total_us as f64 / 1000.0;
        stats.cpu_decode_ms = cpu.decode_us as f64 / 1000.0;
    }
    counters.record_job(&result, cpu, sessions.saved(), req.model);
    result
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
            prompt::heal(
                &mut built,
                &|t| {
                    let mut out = Vec::new();
                    model.piece(t, &mut out);
                    out
                },
                &|text| model.tokenize_continuation(text),
            )
        } else {
            None
        };
        let prompt = built.tokens;
        n_changed = Some(last_prompts.changed(req.document, &prompt));
        restored = generator.switch_document(req.document)?;
        if req.fresh_cache {
            generator.reset();
        }
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
