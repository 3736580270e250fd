//! The server's state: documents, configuration, the engine slot and counters. Every field
//! sits behind its own short lock or is atomic; no lock is ever held across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use amd_engine::{Engine, JobStats};
use tokio_util::sync::CancellationToken;
use tower_lsp_server::gen_lsp_types::Uri;
use tower_lsp_server::Client;

use super::completion::flight::Flight;
use super::completion::latest::LatestWins;
use super::completion::typethrough::Shown;
use super::config::{ReuseMode, ServerConfig};
use super::context::ContextState;
use super::documents::{DocumentStore, PositionEncoding};

/// Where the model stands.
#[derive(Clone, Debug, Default)]
pub enum EngineSlot {
    /// No model path was given anywhere.
    #[default]
    Unconfigured,
    Loading,
    Ready(Arc<Engine>),
    Failed(String),
    /// Generation goes to a shared inference server (`backend`); no local model.
    Remote(Arc<crate::backend::Backend>),
}

/// What the client told us in `initialize`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientFacts {
    pub encoding: PositionEncoding,
    pub inline_completion: bool,
    pub work_done_progress: bool,
}

/// Counters for `amd/status`.
#[derive(Debug, Default)]
pub struct Counters {
    pub n_requests: AtomicU64,
    pub n_superseded: AtomicU64,
    /// Answers dropped because the document changed while they were computed.
    pub n_stale: AtomicU64,
    pub n_cancelled: AtomicU64,
    pub n_cache_hits: AtomicU64,
    /// Generations started that outlive their request (`keepGenerating`), and requests
    /// answered by one an earlier keystroke started.
    pub n_flights: AtomicU64,
    pub n_followed: AtomicU64,
    /// Next suggestions computed in the background, and requests they answered.
    pub n_precomputed: AtomicU64,
    pub n_precomputed_hits: AtomicU64,
    /// Documents evaluated when opened (`prefillOnOpen`), to the end.
    pub n_open_prefills: AtomicU64,
    /// Suggestions the confidence gate (`minConfidence`) did not show.
    pub n_unsure: AtomicU64,
    /// Requests answered with the rest of a suggestion the gate hid, once the user typed its
    /// start ([`ServerState::held`]).
    pub n_revealed: AtomicU64,
    pub n_suggestions: AtomicU64,
    pub n_empty: AtomicU64,
    pub n_errors: AtomicU64,
}

/// Latencies (request received → answer ready) of the last requests that reached the model
/// or the type-through cache.
#[derive(Debug, Default)]
pub struct Latencies {
    samples_ms: VecDeque<f64>,
}

impl Latencies {
    const N_KEPT: usize = 1024;

    pub fn record(&mut self, ms: f64) {
        if self.samples_ms.len() == Self::N_KEPT {
            self.samples_ms.pop_front();
        }
        self.samples_ms.push_back(ms);
    }

    /// The q-quantile (0..=1) by nearest rank, or `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut v: Vec<f64> = self.samples_ms.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }
}

pub struct ServerState {
    pub client: Client,
    pub docs: DocumentStore,
    /// The model from `--model` / `AMD_LSP_MODEL`, used when the configuration names none.
    pub cli_model: Option<PathBuf>,
    /// How much of the KV cache completions reuse, read once at start-up.
    pub reuse: ReuseMode,
    config: Mutex<Arc<ServerConfig>>,
    init_options: Mutex<serde_json::Value>,
    client_facts: Mutex<ClientFacts>,
    /// The workspace roots from `initialize`.
    roots: Mutex<Arc<Vec<PathBuf>>>,
    engine: Mutex<EngineSlot>,
    /// Bumped by every (re)load; a load whose number is no longer current is discarded.
    pub load_generation: AtomicU64,
    pub latest: LatestWins,
    shown: Mutex<HashMap<Uri, Shown>>,
    /// The suggestion that follows the shown one, as if it were accepted.
    next: Mutex<HashMap<Uri, Shown>>,
    /// The last suggestion the confidence gate hid: shown once the user types its start.
    held: Mutex<HashMap<Uri, Shown>>,
    /// The generation in flight (or just landed) per document.
    flights: Mutex<HashMap<Uri, Flight>>,
    windows: Mutex<HashMap<Uri, usize>>,
    /// Open documents that have not shown a suggestion yet (`eagerFirstSuggestion`).
    unshown: Mutex<HashSet<Uri>>,
    pub counters: Counters,
    latencies: Mutex<Latencies>,
    /// Time spent in the server outside the debounce wait and the engine, per model request.
    overheads: Mutex<Latencies>,
    /// Time to answer a type-through cache hit.
    cache_hits: Mutex<Latencies>,
    /// How long requests that reached the model waited for the debounce, and how long they
    /// took from then on.
    debounces: Mutex<Latencies>,
    after_debounce: Mutex<Latencies>,
    /// The user's typing rhythm (adaptive debounce).
    rhythm: Mutex<super::completion::rhythm::Rhythm>,
    last_job: Mutex<Option<JobStats>>,
    /// Background work that gives way to the user (`prefillOnOpen`): cancelled by the next
    /// completion request of any document.
    idle_work: Mutex<CancellationToken>,
    /// The workspace index and the chunks chosen per document (`context`).
    pub context: ContextState,
    pub shutting_down: AtomicBool,
}

/// Locks a short-held mutex; a panic elsewhere while it was held does not poison the server.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets (`Some`) or removes (`None`) a document's entry.
fn put<T>(map: &Mutex<HashMap<Uri, T>>, uri: &Uri, value: Option<T>) {
    let mut map = lock(map);
    match value {
        Some(v) => map.insert(uri.clone(), v),
        None => map.remove(uri),
    };
}

impl ServerState {
    pub fn new(client: Client, cli_model: Option<PathBuf>, reuse: ReuseMode) -> ServerState {
        ServerState {
            client,
            reuse,
            docs: DocumentStore::default(),
            cli_model,
            config: Mutex::new(Arc::new(ServerConfig::default())),
            init_options: Mutex::new(serde_json::Value::Null),
            client_facts: Mutex::new(ClientFacts::default()),
            roots: Mutex::new(Arc::new(Vec::new())),
            engine: Mutex::new(EngineSlot::Unconfigured),
            load_generation: AtomicU64::new(0),
            latest: LatestWins::default(),
            shown: Mutex::new(HashMap::new()),
            next: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            unshown: Mutex::new(HashSet::new()),
            counters: Counters::default(),
            latencies: Mutex::new(Latencies::default()),
            overheads: Mutex::new(Latencies::default()),
            cache_hits: Mutex::new(Latencies::default()),
            debounces: Mutex::new(Latencies::default()),
            after_debounce: Mutex::new(Latencies::default()),
            rhythm: Mutex::default(),
            last_job: Mutex::new(None),
            idle_work: Mutex::new(CancellationToken::new()),
            context: ContextState::default(),
            shutting_down: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&lock(&self.config))
    }

    /// The client's `initializationOptions`, which settings changes are layered over.
    pub fn init_options(&self) -> serde_json::Value {
        lock(&self.init_options).clone()
    }

    pub fn set_init_options(&self, options: serde_json::Value) {
        *lock(&self.init_options) = options;
    }

    /// Replaces the configuration; returns the previous one.
    pub fn set_config(&self, config: ServerConfig) -> Arc<ServerConfig> {
        std::mem::replace(&mut *lock(&self.config), Arc::new(config))
    }

    pub fn client_facts(&self) -> ClientFacts {
        *lock(&self.client_facts)
    }

    pub fn set_client_facts(&self, facts: ClientFacts) {
        *lock(&self.client_facts) = facts;
    }

    pub fn roots(&self) -> Arc<Vec<PathBuf>> {
        Arc::clone(&lock(&self.roots))
    }

    pub fn set_roots(&self, roots: Vec<PathBuf>) {
        *lock(&self.roots) = Arc::new(roots);
    }

    pub fn encoding(&self) -> PositionEncoding {
        self.client_facts().encoding
    }

    pub fn engine_slot(&self) -> EngineSlot {
        lock(&self.engine).clone()
    }

    /// The engine, when one is loaded.
    pub fn engine(&self) -> Option<Arc<Engine>> {
        match &*lock(&self.engine) {
            EngineSlot::Ready(engine) => Some(Arc::clone(engine)),
            _ => None,
        }
    }

    /// The shared inference server, when `backend` is configured.
    pub fn backend(&self) -> Option<Arc<crate::backend::Backend>> {
        match &*lock(&self.engine) {
            EngineSlot::Remote(backend) => Some(Arc::clone(backend)),
            _ => None,
        }
    }

    /// Installs a new slot; returns the old one (drop an old engine off the async runtime:
    /// dropping it joins its thread).
    pub fn set_engine_slot(&self, slot: EngineSlot) -> EngineSlot {
        std::mem::replace(&mut *lock(&self.engine), slot)
    }

    pub fn shown(&self, uri: &Uri) -> Option<Shown> {
        lock(&self.shown).get(uri).cloned()
    }

    pub fn set_shown(&self, uri: &Uri, shown: Option<Shown>) {
        put(&self.shown, uri, shown);
    }

    pub fn next(&self, uri: &Uri) -> Option<Shown> {
        lock(&self.next).get(uri).cloned()
    }

    pub fn set_next(&self, uri: &Uri, next: Option<Shown>) {
        put(&self.next, uri, next);
    }

    pub fn held(&self, uri: &Uri) -> Option<Shown> {
        lock(&self.held).get(uri).cloned()
    }

    pub fn set_held(&self, uri: &Uri, held: Option<Shown>) {
        put(&self.held, uri, held);
    }

    pub fn flight(&self, uri: &Uri) -> Option<Flight> {
        lock(&self.flights).get(uri).cloned()
    }

    /// Makes `flight` the document's one, cancelling the one before.
    pub fn set_flight(&self, uri: &Uri, flight: Flight) {
        if let Some(old) = lock(&self.flights).insert(uri.clone(), flight) {
            old.cancel();
        }
    }

    /// Cancels and forgets the document's flight.
    pub fn end_flight(&self, uri: &Uri) {
        if let Some(old) = lock(&self.flights).remove(uri) {
            old.cancel();
        }
    }

    pub fn window_start(&self, uri: &Uri) -> Option<usize> {
        lock(&self.windows).get(uri).copied()
    }

    pub fn set_window_start(&self, uri: &Uri, start: usize) {
        lock(&self.windows).insert(uri.clone(), start);
    }

    /// A document was opened: it has shown nothing yet.
    pub fn opened(&self, uri: &Uri) {
        lock(&self.unshown).insert(uri.clone());
    }

    /// A suggestion from the model is shown in the document (counted).
    pub fn showed(&self, uri: &Uri) {
        Self::bump(&self.counters.n_suggestions);
        lock(&self.unshown).remove(uri);
    }

    /// Whether the document (open) has shown no suggestion since it was opened.
    pub fn shown_nothing(&self, uri: &Uri) -> bool {
        lock(&self.unshown).contains(uri)
    }

    /// Starts background work that gives way to the user; newer background work cancels it,
    /// and so does [`ServerState::interrupt_idle_work`].
    pub fn begin_idle_work(&self) -> CancellationToken {
        let token = CancellationToken::new();
        std::mem::replace(&mut *lock(&self.idle_work), token.clone()).cancel();
        token
    }

    /// A completion request arrived: background work stops (its engine job is dropped).
    pub fn interrupt_idle_work(&self) {
        lock(&self.idle_work).cancel();
    }

    /// Forgets everything kept for a closed document.
    pub fn forget(&self, uri: &Uri) {
        lock(&self.shown).remove(uri);
        lock(&self.next).remove(uri);
        lock(&self.held).remove(uri);
        lock(&self.windows).remove(uri);
        lock(&self.unshown).remove(uri);
        self.end_flight(uri);
        self.context.forget(uri);
        self.latest.cancel(uri);
    }

    pub fn record_latency(&self, ms: f64) {
        lock(&self.latencies).record(ms);
    }

    pub fn record_overhead(&self, ms: f64) {
        lock(&self.overheads).record(ms);
    }

    pub fn record_cache_hit(&self, ms: f64) {
        lock(&self.cache_hits).record(ms);
    }

    /// Notes a keystroke (an automatic request) at `at`, for the adaptive debounce.
    pub fn record_key(&self, at: std::time::Instant) {
        lock(&self.rhythm).key(at);
    }

    /// How long the user's typing rhythm says to wait for a pause: `config.debounce_ms` raised
    /// to it, at most `config.debounce_max_ms`.
    pub fn rhythm_wait_ms(&self, config: &ServerConfig) -> u64 {
        lock(&self.rhythm).wait_ms(config.debounce_ms, config.debounce_max_ms)
    }

    /// How long a request in `uri` waits before the model generates
    /// ([`super::completion::rhythm::debounce_ms`]).
    pub fn debounce_wait_ms(&self, config: &ServerConfig, uri: &Uri, invoked: bool) -> u64 {
        // Read before the rhythm is locked: one lock at a time.
        let shown_nothing = self.shown_nothing(uri);
        super::completion::rhythm::debounce_ms(
            &lock(&self.rhythm),
            (config.debounce_ms, config.debounce_max_ms),
            invoked,
            config.eager_first_suggestion,
            shown_nothing,
        )
    }

    /// Records a model request's debounce wait and the time from its end to the answer.
    pub fn record_debounce(&self, waited_ms: f64, after_ms: f64) {
        lock(&self.debounces).record(waited_ms);
        lock(&self.after_debounce).record(after_ms);
    }

    /// p50, p95 and p99 of the debounce waits and of the time after them.
    pub fn debounce_quantiles(&self) -> [[Option<f64>; 3]; 2] {
        [&self.debounces, &self.after_debounce].map(|m| {
            let l = lock(m);
            [l.quantile(0.5), l.quantile(0.95), l.quantile(0.99)]
        })
    }

    /// p50 and p95 of: request latency, server overhead, type-through hits.
    pub fn latency_quantiles(&self) -> [(Option<f64>, Option<f64>); 3] {
        [&self.latencies, &self.overheads, &self.cache_hits].map(|m| {
            let l = lock(m);
            (l.quantile(0.5), l.quantile(0.95))
        })
    }

    pub fn set_last_job(&self, stats: JobStats) {
        *lock(&self.last_job) = Some(stats);
    }

    pub fn last_job(&self) -> Option<JobStats> {
        *lock(&self.last_job)
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile(0.5), None);
        for ms in [5.0, 1.0, 3.0, 2.0, 4.0] {
            l.record(ms);
        }
        assert_eq!(l.quantile(0.5), Some(3.0));
        assert_eq!(l.quantile(0.95), Some(5.0));
        for _ in 0..2000 {
            l.record(7.0);
        }
        assert_eq!(l.quantile(0.0), Some(7.0), "old samples roll off");
    }
}
