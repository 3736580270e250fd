//! The wall around llama.cpp: the only module that imports `llama_cpp_2` (and its sys crate).
//!
//! Everything here runs on the engine thread, except [`quantize`] and [`Model::load`] with
//! `vocab_only`, which touch no context. The rest of the crate sees plain token ids (`i32`),
//! byte pieces and logits slices.

use std::ffi::CString;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::error::{EngineError, LoadError};
use crate::{FimTokens, KvType, KvTypes, ModelInfo, Sampling, TokenId};

/// llama.cpp's "no token" value.
const TOKEN_NULL: i32 = -1;

/// The process-wide llama.cpp backend, initialised on first use; llama.cpp logs go to `tracing`.
fn backend() -> Result<&'static LlamaBackend, LoadError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // SAFETY: `log_to_tracing` matches ggml's log callback type and uses no user data.
            unsafe {
                llama_cpp_sys_2::llama_log_set(Some(log_to_tracing), std::ptr::null_mut());
                llama_cpp_sys_2::ggml_log_set(Some(log_to_tracing), std::ptr::null_mut());
            }
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LoadError::Backend(e.clone()))
}

thread_local! {
    /// llama.cpp's error messages on this thread since [`take_llama_errors`] last took them
    /// (a model that fails to load says why only in its log), and whether the last message
    /// was an error (a continuation belongs to it).
    static LLAMA_ERRORS: std::cell::RefCell<(String, bool)> =
        const { std::cell::RefCell::new((String::new(), false)) };
}

/// The most of llama.cpp's error text kept for one failure.
const LLAMA_ERRORS_MAX: usize = 1024;

/// llama.cpp's and ggml's log callback: every message to `tracing` (target `llama.cpp`), and
/// error messages also kept for the error value of the call that failed.
unsafe extern "C" fn log_to_tracing(
    level: llama_cpp_sys_2::ggml_log_level,
    text: *const std::ffi::c_char,
    _user_data: *mut std::ffi::c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: ggml passes a NUL-terminated message that lives for the call.
    let text = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
    let is_error = match level {
        llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR => true,
        llama_cpp_sys_2::GGML_LOG_LEVEL_CONT => LLAMA_ERRORS.with(|e| e.borrow().1),
        _ => false,
    };
    LLAMA_ERRORS.with(|e| {
        let mut e = e.borrow_mut();
        e.1 = is_error;
        if is_error && e.0.len() < LLAMA_ERRORS_MAX {
            e.0.push_str(&text);
        }
    });
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    match level {
        llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR => tracing::error!(target: "llama.cpp", "{text}"),
        llama_cpp_sys_2::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama.cpp", "{text}"),
        llama_cpp_sys_2::GGML_LOG_LEVEL_INFO => tracing::debug!(target: "llama.cpp", "{text}"),
        _ => tracing::trace!(target: "llama.cpp", "{text}"),
    }
}

/// llama.cpp's error messages on this thread since the last call, on one line.
fn take_llama_errors() -> String {
    LLAMA_ERRORS.with(|e| {
        let mut e = e.borrow_mut();
        let text = std::mem::take(&mut e.0);
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    })
}

/// OpenMP's `omp_set_max_active_levels`, looked up at run time: llama.cpp's CPU backend runs
/// its graphs in OpenMP parallel regions when built with OpenMP (the default), and a build
/// without it has no such symbol.
type SetMaxActiveLevels = unsafe extern "C" fn(libc::c_int);

fn omp_set_max_active_levels() -> Option<SetMaxActiveLevels> {
    static FUNC: OnceLock<Option<SetMaxActiveLevels>> = OnceLock::new();
    *FUNC.get_or_init(|| {
        #[cfg(unix)]
        // SAFETY: dlsym with a NUL-terminated name; a non-null result is the address of the
        // OpenMP runtime's `void omp_set_max_active_levels(int)`, which is what we cast it to.
        unsafe {
            let f = libc::dlsym(libc::RTLD_DEFAULT, c"omp_set_max_active_levels".as_ptr());
            if !f.is_null() {
                return Some(std::mem::transmute::<*mut libc::c_void, SetMaxActiveLevels>(f));
            }
        }
        None
    })
}

/// Whether [`limit_threads`] can take effect (llama.cpp was built with OpenMP).
pub(crate) fn can_limit_threads() -> bool {
    omp_set_max_active_levels().is_some()
}

/// Runs llama.cpp's next graphs on one thread (`true`) or on the threads its context was
/// given (`false`). With no active parallel levels allowed, OpenMP runs a parallel region on
/// its calling thread alone, and ggml's CPU backend takes the thread count OpenMP gives it
/// (`omp_get_num_threads`) instead of the one it planned for. The setting is the calling
/// thread's (OpenMP's max-active-levels-var belongs to its data environment): the engine
/// thread sets it for its own llama.cpp calls.
pub(crate) fn limit_threads(one: bool) {
    if let Some(set) = omp_set_max_active_levels() {
        // SAFETY: a plain setter of an OpenMP runtime variable.
        unsafe { set(if one { 0 } else { 1 }) }
    }
}

/// A device llama.cpp can run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub description: String,
    pub backend: String,
    pub gpu: bool,
    pub memory_total: usize,
}

/// The devices of the compiled-in backends (the CPU among them).
pub fn devices() -> Vec<Device> {
    if backend().is_err() {
        return Vec::new();
    }
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            gpu: matches!(
                d.device_type,
                llama_cpp_2::LlamaBackendDeviceType::Gpu
                    | llama_cpp_2::LlamaBackendDeviceType::IntegratedGpu
            ),
            name: d.name,
            description: d.description,
            backend: d.backend,
            memory_total: d.memory_total,
        })
        .collect()
}

/// Where layers go: the first GPU when layers are offloaded and there is one. A GPU build on a
/// machine without a GPU says so once and runs on the CPU.
fn placement(gpu_layers: u32) -> String {
    if gpu_layers == 0 || crate::compiled_backends().len() == 1 {
        return "CPU".into();
    }
    match devices().into_iter().find(|d| d.gpu) {
        Some(d) => format!("{} ({})", d.description, d.backend),
        None => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    backends = ?crate::compiled_backends(),
                    "this build has a GPU backend but no GPU was found; running on the CPU"
                );
            });
            "CPU".into()
        }
    }
}

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub(crate) struct ModelParams {
    pub(crate) gpu_layers: u32,
    pub(crate) vocab_only: bool,
}

/// A loaded model and the facts the rest of the engine needs about it.
pub(crate) struct Model {
    inner: LlamaModel,
    info: ModelInfo,
    /// What tokenizing "\n" gives: one token for tokenizers that add nothing in front of a
    /// text, two (a space and the newline) for SentencePiece ones that add a space.
    newline: Vec<TokenId>,
    /// Every token's text, for token healing (made on first use).
    pieces: OnceLock<Vec<Vec<u8>>>,
}

impl Model {
    /// Loads (mmaps) a GGUF file. The header has already been validated by the caller.
    pub(crate) fn load(path: &Path, params: &ModelParams) -> Result<Model, LoadError> {
        let backend = backend()?;
        let started = Instant::now();
        let model_params = LlamaModelParams::default()
            .with_n_gpu_layers(params.gpu_layers)
            .with_vocab_only(params.vocab_only);
        take_llama_errors();
        let inner = LlamaModel::load_from_file(backend, path, &model_params).map_err(|e| {
            let said = take_llama_errors();
            LoadError::Llama {
                path: path.to_path_buf(),
                message: if said.is_empty() {
                    e.to_string()
                } else {
                    format!("{e}: {said}")
                },
            }
        })?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let vocab = inner.vocab();
        let token = |t: LlamaToken| (t.0 != TOKEN_NULL).then_some(t.0);
        let fim = match (
            token(vocab.fim_pre()),
            token(vocab.fim_suf()),
            token(vocab.fim_mid()),
        ) {
            (Some(pre), Some(suf), Some(mid)) => Some(FimTokens {
                pre,
                suf,
                mid,
                eot: token(vocab.eot()),
                repo_name: token(vocab.fim_rep()),
                file_sep: token(vocab.fim_sep()),
            }),
            _ => None,
        };
        let meta = |key: &str| inner.meta_val_str(key).ok();
        let info = ModelInfo {
            path: path.to_path_buf(),
            name: meta("general.name"),
            architecture: meta("general.architecture").unwrap_or_default(),
            n_vocab: inner.n_vocab().max(0) as u32,
            n_ctx_train: inner.n_ctx_train(),
            n_ctx: 0,
            n_layer: inner.n_layer(),
            n_embd: inner.n_embd().max(0) as u32,
            n_params: inner.n_params(),
            size_bytes: inner.size(),
            bos: token(vocab.bos()),
            eos: token(vocab.eos()),
            add_bos: vocab.should_add_bos(),
            fim,
            load_ms,
            device: if params.vocab_only {
                "CPU".into()
            } else {
                placement(params.gpu_layers)
            },
        };
        let mut model = Model {
            inner,
            info,
            newline: Vec::new(),
            pieces: OnceLock::new(),
        };
        model.newline = model.tokenize("\n", false);
        Ok(model)
    }

    pub(crate) fn set_n_ctx(&mut self, n_ctx: u32) {
        self.info.n_ctx = n_ctx;
    }

    pub(crate) fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Tokenizes user text. Special-token text (`<s>`, `<PRE>`, …) is never parsed as a
    /// control token: it is tokenized as the plain text it is.
    pub(crate) fn tokenize(&self, text: &str, add_bos: bool) -> Vec<TokenId> {
        let vocab = self.inner.vocab();
        let mut tokens = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            if let Some(bos) = self.info.bos {
                tokens.push(bos);
            }
        }
        let raw = vocab.tokenize(text.as_bytes(), false, false);
        tokens.extend(raw.into_iter().map(|t| t.0));
        tokens
    }

    /// Tokenizes text that continues other text, without the space a SentencePiece tokenizer
    /// puts in front of every separately tokenized text: "\n" is put in front instead (a
    /// byte token that merges with nothing) and its tokens taken off again, the way
    /// CodeLlama's reference tokenizes infilling suffixes.
    pub(crate) fn tokenize_continuation(&self, text: &str) -> Vec<TokenId> {
        if self.newline.len() < 2 {
            return self.tokenize(text, false);
        }
        let mut tokens = self.tokenize(&format!("\n{text}"), false);
        if tokens.starts_with(&self.newline) {
            tokens.drain(..self.newline.len());
            tokens
        } else {
            self.tokenize(text, false)
        }
    }

    /// Every token's text (control tokens: empty), by id.
    pub(crate) fn pieces(&self) -> &[Vec<u8>] {
        self.pieces.get_or_init(|| {
            (0..self.info.n_vocab as TokenId)
                .map(|t| {
                    let mut out = Vec::new();
                    self.piece(t, &mut out);
                    out
                })
                .collect()
        })
    }

    /// The bytes a token stands for in generated text; control tokens give nothing.
    pub(crate) fn piece(&self, token: TokenId, out: &mut Vec<u8>) {
        self.inner
            .vocab()
            .token_to_piece_into(LlamaToken(token), out, false, None);
    }

    pub(crate) fn is_eog(&self, token: TokenId) -> bool {
        self.inner.vocab().is_eog(LlamaToken(token))
    }

    /// The vocabulary's own text of a token (SentencePiece form, `▁` for spaces).
    pub(crate) fn token_text(&self, token: TokenId) -> Option<String> {
        self.inner
            .vocab()
            .text(LlamaToken(token))
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// The tokenizer family (SPM, BPE, …), as llama.cpp names it.
    pub(crate) fn vocab_kind(&self) -> String {
        format!("{:?}", self.inner.vocab().vocab_type())
    }

    pub(crate) fn new_context(&self, params: &ContextParams) -> Result<Context<'_>, LoadError> {
        let backend = backend()?;
        let threads = params.n_threads.max(1) as i32;
        let threads_batch = params.n_threads_batch.max(1) as i32;
        let n_batch = params.n_batch.max(1);
        let ctx_params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(params.n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            // Sequence 1 parks KV entries that a prompt moved away from (an edit far above
            // the cursor), in the same cells (unified), until a later prompt takes them back.
            .with_n_seq_max(2)
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads_batch)
            .with_type_k(kv_type(params.kv_types.keys))
            .with_type_v(kv_type(params.kv_types.values))
            .with_flash_attention_policy(if params.flash_attention {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO
            } else {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
            });
        let ctx = self
            .inner
            .new_context(backend, ctx_params)
            .map_err(|e| LoadError::Context(e.to_string()))?;
        Ok(Context {
            ctx,
            batch: LlamaBatch::new(n_batch as usize, 1),
            n_batch: n_batch as usize,
            outputs: 0,
        })
    }
}

fn kv_type(t: KvType) -> KvCacheType {
    match t {
        KvType::F16 => KvCacheType::F16,
        KvType::F32 => KvCacheType::F32,
        KvType::Q8_0 => KvCacheType::Q8_0,
    }
}

/// Context settings, chosen by the engine's configuration.
#[derive(Clone, Debug)]
pub(crate) struct ContextParams {
    pub(crate) kv_types: KvTypes,
    pub(crate) flash_attention: bool,
    pub(crate) n_ctx: u32,
    pub(crate) n_batch: u32,
    pub(crate) n_threads: u32,
    pub(crate) n_threads_batch: u32,
}

/// One llama.cpp context with one sequence (id 0) in its KV cache.
pub(crate) struct Context<'m> {
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// How many positions of the last batch produced logits (they were its last ones).
    outputs: usize,
}

fn pos32(pos: usize) -> Result<u32, EngineError> {
    u32::try_from(pos).map_err(|_| EngineError::Decode("position overflow".into()))
}

/// KV entries saved from a context (see [`Context::save`]); opaque outside this module.
pub(crate) struct SavedKv(SeqState);

impl SavedKv {
    pub(crate) fn bytes(&self) -> usize {
        self.0.byte_len()
    }
}

/// Which positions of a batch produce logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Logits {
    None,
    Last,
    All,
}

impl Context<'_> {
    pub(crate) fn n_ctx(&self) -> u32 {
        self.ctx.n_ctx()
    }

    pub(crate) fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Drops every KV entry at position `pos` or later.
    pub(crate) fn truncate(&mut self, pos: usize) -> Result<(), EngineError> {
        let pos =
            u32::try_from(pos).map_err(|_| EngineError::Decode("position overflow".into()))?;
        self.ctx
            .kv_cache_seq_rm(0, Some(pos), None)
            .map_err(|e| EngineError::Decode(format!("removing KV cells from {pos}: {e}")))
    }

    /// Empties the KV cache.
    pub(crate) fn clear(&mut self) {
        self.ctx.clear_kv_cache();
        self.outputs = 0;
    }

    /// Moves sequence 0's entries at positions `from..` into sequence 1 (the park), where no
    /// evaluation of sequence 0 sees them.
    pub(crate) fn park(&mut self, from: usize) -> Result<(), EngineError> {
        let from = pos32(from)?;
        self.ctx
            .kv_cache_seq_rm(1, None, None)
            .and_then(|()| self.ctx.kv_cache_seq_cp(0, 1, Some(from), None))
            .and_then(|()| self.ctx.kv_cache_seq_rm(0, Some(from), None))
            .map_err(|e| EngineError::Decode(format!("parking KV cells from {from}: {e}")))
    }

    /// Empties the park.
    pub(crate) fn drop_parked(&mut self) -> Result<(), EngineError> {
        self.ctx
            .kv_cache_seq_rm(1, None, None)
            .map_err(|e| EngineError::Decode(format!("emptying the park: {e}")))
    }

    /// Takes the parked entries at positions `src..src + len` back into sequence 0 at
    /// `dst..dst + len` (their keys rotated by the position shift, RoPE being relative) and
    /// empties the park. Sequence 0 must end at `dst - 1`.
    pub(crate) fn unpark(&mut self, src: usize, len: usize, dst: usize) -> Result<(), EngineError> {
        let (s0, s1, d0, d1) = (
            pos32(src)?,
            pos32(src + len)?,
            pos32(dst)?,
            pos32(dst + len)?,
        );
        let delta = i32::try_from(dst as i64 - src as i64)
            .map_err(|_| EngineError::Decode("position shift overflow".into()))?;
        self.ctx
            .kv_cache_seq_rm(1, None, Some(s0))
            .and_then(|()| self.ctx.kv_cache_seq_rm(1, Some(s1), None))
            .and_then(|()| self.ctx.kv_cache_seq_add(1, Some(s0), Some(s1), delta))
            .and_then(|()| self.ctx.kv_cache_seq_cp(1, 0, Some(d0), Some(d1)))
            .and_then(|()| self.ctx.kv_cache_seq_rm(1, None, None))
            .map_err(|e| EngineError::Decode(format!("taking parked KV cells back: {e}")))
    }

    /// Bytes [`Context::save`] would copy (llama.cpp sizes it without copying).
    pub(crate) fn saved_bytes(&self) -> usize {
        self.ctx
            .state_seq_get_size_ext(0, LlamaStateSeqFlags::empty())
    }

    /// A copy of sequence 0's KV entries (positions and K/V data), to put back later with
    /// [`Context::restore`].
    pub(crate) fn save(&self) -> Result<SavedKv, EngineError> {
        self.ctx
            .state_seq_get(0, LlamaStateSeqFlags::empty())
            .map(SavedKv)
            .map_err(|e| EngineError::Internal(format!("saving the KV cache: {e}")))
    }

    /// Replaces sequence 0's KV entries with a saved copy. On `Err` the cache is empty.
    pub(crate) fn restore(&mut self, saved: &SavedKv) -> Result<(), EngineError> {
        self.clear();
        self.ctx.state_seq_set(&saved.0, 0).map_err(|e| {
            self.clear();
            EngineError::Internal(format!("restoring a saved KV cache: {e}"))
        })
    }

    /// Evaluates `tokens` at positions `start_pos..` in one llama.cpp call (at most `n_batch`
    /// tokens), keeping the logits `logits` asks for.
    pub(crate) fn decode(
        &mut self,
        tokens: &[TokenId],
        start_pos: usize,
        logits: Logits,
    ) -> Result<(), EngineError> {
        debug_assert!(tokens.len() <= self.n_batch);
        self.batch.clear();
        self.outputs = 0;
        for (i, &t) in tokens.iter().enumerate() {
            let out = match logits {
                Logits::None => false,
                Logits::Last => i + 1 == tokens.len(),
                Logits::All => true,
            };
            let pos = i32::try_from(start_pos + i)
                .map_err(|_| EngineError::Decode("position overflow".into()))?;
            self.batch
                .add(LlamaToken(t), pos, &[0], out)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| EngineError::Decode(e.to_string()))?;
        self.outputs = match logits {
            Logits::None => 0,
            Logits::Last => usize::from(!tokens.is_empty()),
            Logits::All => tokens.len(),
        };
        Ok(())
    }

    /// The logits of the last decoded position that asked for them.
    pub(crate) fn logits(&self) -> Option<&[f32]> {
        self.outputs.checked_sub(1).and_then(|i| self.logits_at(i))
    }

    /// The logits of output `i` of the last batch (in batch order).
    pub(crate) fn logits_at(&self, i: usize) -> Option<&[f32]> {
        let n = self.outputs;
        // llama.cpp numbers a batch's positions, and every one of ours that has logits is
        // among its last `n`.
        let idx = self.batch.n_tokens() as usize - n + i;
        (i < n).then(|| self.ctx.get_logits_ith(idx as i32))
    }

    /// Samples from the last logits with llama.cpp's sampler chain.
    pub(crate) fn sample(&self, sampler: &mut Sampler) -> Option<TokenId> {
        let idx = (self.batch.n_tokens() as usize).checked_sub(1)?;
        (self.outputs > 0).then(|| sampler.inner.sample(&self.ctx, idx as i32).0)
    }
}

/// A llama.cpp sampler chain for seeded sampling (greedy decoding does not need one).
pub(crate) struct Sampler {
    inner: LlamaSampler,
}

impl Sampler {
    pub(crate) fn new(sampling: &Sampling) -> Option<Sampler> {
        match *sampling {
            Sampling::Greedy => None,
            Sampling::Random {
                temperature,
                top_k,
                top_p,
                seed,
            } => {
                let mut chain = Vec::with_capacity(4);
                if top_k > 0 {
                    chain.push(LlamaSampler::top_k(top_k as i32));
                }
                if top_p < 1.0 {
                    chain.push(LlamaSampler::top_p(top_p, 1));
                }
                chain.push(LlamaSampler::temp(temperature));
                chain.push(LlamaSampler::dist(seed));
                Some(Sampler {
                    inner: LlamaSampler::chain_simple(chain),
                })
            }
        }
    }
}

/// Quantization targets that `quantize` accepts (llama.cpp's `llama_ftype` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    F16,
    Bf16,
    Q8_0,
    Q4KM,
}

impl QuantType {
    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        match self {
            QuantType::F16 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_F16,
            QuantType::Bf16 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_BF16,
            QuantType::Q8_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
            QuantType::Q4KM => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        }
    }
}

/// Quantizes a GGUF model with llama.cpp's own quantizer (`llama_model_quantize`).
pub fn quantize(
    input: &Path,
    output: &Path,
    to: QuantType,
    n_threads: u32,
) -> Result<(), LoadError> {
    backend()?;
    let c_path = |p: &Path| {
        p.to_str()
            .and_then(|s| CString::new(s).ok())
            .ok_or_else(|| {
                LoadError::Quantize(format!(
                    "path {} is not valid UTF-8 without NULs",
                    p.display()
                ))
            })
    };
    let (inp, out) = (c_path(input)?, c_path(output)?);
    // SAFETY: plain C call on a struct of defaults; the pointers outlive the call.
    let rc = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.ftype = to.ftype();
        params.nthread = n_threads as i32;
        llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(LoadError::Quantize(format!(
            "llama.cpp could not quantize {} (code {rc})",
            input.display()
        )))
    }
}
