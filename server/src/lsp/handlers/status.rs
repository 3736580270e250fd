//! `amd/status`: model facts, counters and latency, for editors' health checks.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::lsp::documents::PositionEncoding;
use crate::lsp::state::{EngineSlot, ServerState};

pub(crate) fn handle_status(state: &ServerState) -> Value {
    let (state_name, error, engine) = match state.engine_slot() {
        EngineSlot::Unconfigured => (
            "unconfigured",
            Some(crate::lsp::lifecycle::NO_MODEL.to_owned()),
            None,
        ),
        EngineSlot::Loading => ("loading", None, None),
        EngineSlot::Ready(engine) => ("ready", None, Some(engine)),
        EngineSlot::Failed(message) => ("failed", Some(message), None),
        EngineSlot::Remote(_) => ("ready", None, None),
    };
    let backend = state.backend().map(|b| {
        json!({
            "url": b.url(),
            "api": b.api(),
            "reachable": b.reachable(),
        })
    });
    let describe = |i: &amd_engine::ModelInfo| {
        json!({
            "path": i.path,
            "name": i.name,
            "architecture": i.architecture,
            "nParams": i.n_params,
            "nVocab": i.n_vocab,
            "nCtx": i.n_ctx,
            "nCtxTrain": i.n_ctx_train,
            "fim": i.fim.is_some(),
            "loadMs": i.load_ms,
            "device": i.device,
        })
    };
    let model = engine.as_ref().map(|e| describe(e.info())).or_else(|| {
        let b = state.backend()?;
        Some(json!({ "name": b.model().unwrap_or(b.url()), "device": "remote" }))
    });
    let target = engine.as_ref().and_then(|e| e.target_info().map(describe));
    let c = &state.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let engine_counters = engine.as_ref().map(|e| {
        let ec = e.counters();
        json!({
            "jobs": get(&ec.n_jobs),
            "completed": get(&ec.n_completed),
            "cancelled": get(&ec.n_cancelled),
            "failed": get(&ec.n_failed),
            "tokensReused": get(&ec.n_tokens_reused),
            "tokensShifted": get(&ec.n_tokens_shifted),
            "tokensEvaluated": get(&ec.n_tokens_evaluated),
            "tokensGenerated": get(&ec.n_tokens_generated),
            "tokensChanged": get(&ec.n_tokens_changed),
            "wholeReevaluations": get(&ec.n_whole_reevaluations),
            "prefillTokensPerS": ec.prefill_rate(),
            "cpuMs": get(&ec.cpu_us) as f64 / 1000.0,
            "cpuMsCancelled": get(&ec.cpu_us_cancelled) as f64 / 1000.0,
            "cpuMsSuperseded": get(&ec.cpu_us_superseded) as f64 / 1000.0,
            "restored": get(&ec.n_restored),
            "avoidedLines": get(&ec.n_avoided_lines),
            "callsAllThreads": get(&ec.n_calls_all_threads),
            "callsOneThread": get(&ec.n_calls_one_thread),
            "savedDocuments": get(&ec.saved_documents),
            "savedMb": get(&ec.saved_bytes) as f64 / f64::from(1u32 << 20),
        })
    });
    let [(p50, p95), (overhead_p50, overhead_p95), (hit_p50, hit_p95)] = state.latency_quantiles();
    let [debounce, after_debounce] = state
        .debounce_quantiles()
        .map(|[p50, p95, p99]| json!({ "p50": p50, "p95": p95, "p99": p99 }));
    let last_job = state.last_job().map(|s| {
        json!({
            "nPrompt": s.n_prompt,
            "nReused": s.n_reused,
            "nEvaluated": s.n_evaluated,
            "nGenerated": s.n_generated,
            "nChanged": s.n_changed,
            "cpuMs": s.cpu_ms,
            "cpuDecodeMs": s.cpu_decode_ms,
            "restored": s.restored,
            "prefillMs": s.prefill_ms,
            "decodeMs": s.decode_ms,
            "nDrafted": s.n_drafted,
            "nAccepted": s.n_accepted,
            "nTargetCalls": s.n_target_calls,
        })
    });
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backends": amd_engine::compiled_backends(),
        "state": state_name,
        "error": error,
        "model": model,
        "targetModel": target,
        "backend": backend,
        "positionEncoding": match state.encoding() {
            PositionEncoding::Utf8 => "utf-8",
            PositionEncoding::Utf16 => "utf-16",
            PositionEncoding::Utf32 => "utf-32",
        },
        "documents": state.docs.n_open(),
        "counters": {
            "requests": get(&c.n_requests),
            "superseded": get(&c.n_superseded),
            "stale": get(&c.n_stale),
            "cancelled": get(&c.n_cancelled),
            "cacheHits": get(&c.n_cache_hits),
            "flights": get(&c.n_flights),
            "followed": get(&c.n_followed),
            "precomputed": get(&c.n_precomputed),
            "precomputedHits": get(&c.n_precomputed_hits),
            "openPrefills": get(&c.n_open_prefills),
            "unsure": get(&c.n_unsure),
            "revealed": get(&c.n_revealed),
            "suggestions": get(&c.n_suggestions),
            "empty": get(&c.n_empty),
            "errors": get(&c.n_errors),
        },
        "engine": engine_counters,
        "latencyMs": { "p50": p50, "p95": p95 },
        "overheadMs": { "p50": overhead_p50, "p95": overhead_p95 },
        "cacheHitMs": { "p50": hit_p50, "p95": hit_p95 },
        "debounceMs": debounce,
        "afterDebounceMs": after_debounce,
        "lastJob": last_job,
        "context": state.context.status(&state.config()),
    })
}
