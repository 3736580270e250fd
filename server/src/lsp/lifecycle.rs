//! Loading (and reloading) the model off the async runtime, with `$/progress` and one clear
//! message when there is no model or it cannot be loaded. The server keeps serving either way.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use amd_engine::Engine;
use tower_lsp_server::gen_lsp_types::{MessageType, ProgressToken};

use super::state::{EngineSlot, ServerState};
use crate::models::{self, Explicit, Found, Locations};

pub(crate) const NO_MODEL: &str = "amd-lsp: no model found, so there are no completions. \
Set `model` to a GGUF file in the server settings, pass `--model`, or set AMD_LSP_MODEL; \
or fetch the default model once with `amd-lsp model pull`. \
`amd-lsp model list` shows where amd-lsp looks.";

/// Loads the model the current configuration names, replacing any loaded one.
pub(crate) async fn load_engine(state: Arc<ServerState>) {
    let generation = state.load_generation.fetch_add(1, Ordering::SeqCst) + 1;
    let config = state.config();
    if let Some(backend) = &config.backend {
        use_backend(&state, backend.clone()).await;
        return;
    }
    let explicit = Explicit {
        flag: state.cli_model.clone(),
        setting: config.model.clone(),
        env: std::env::var_os("AMD_LSP_MODEL")
            .filter(|v| !v.is_empty())
            .map(Into::into),
    };
    let Some(found) = models::discover(&explicit, &Locations::from_env()) else {
        retire(state.set_engine_slot(EngineSlot::Unconfigured));
        tracing::warn!("no model configured");
        state
            .client
            .show_message(MessageType::Warning, NO_MODEL)
            .await;
        return;
    };
    retire(state.set_engine_slot(EngineSlot::Loading));
    let path = match &found {
        Found::Gguf { path, .. } => path.display().to_string(),
        Found::Checkpoint { snapshot, .. } => snapshot.display().to_string(),
    };
    let progress = if state.client_facts().work_done_progress {
        let token = ProgressToken::String(format!("amd-lsp/load/{generation}"));
        match state.client.create_work_done_progress(token.clone()).await {
            Ok(()) => Some(
                state
                    .client
                    .progress(token, "amd-lsp: loading model")
                    .with_message(path.clone())
                    .begin()
                    .await,
            ),
            Err(_) => None,
        }
    } else {
        None
    };
    let reuse = state.reuse;
    let result = tokio::task::spawn_blocking(move || {
        let gguf = models::resolve(&found).map_err(|e| format!("{e:#}"))?;
        Engine::start(config.engine_config(&gguf, reuse)).map_err(|e| e.to_string())
    })
    .await;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    let result = match result {
        Ok(r) => r,
        Err(e) => Err(format!("loading {path} failed: {e}")),
    };
    if state.load_generation.load(Ordering::SeqCst) != generation {
        // A newer configuration started another load; this one is stale.
        if let Ok(engine) = result {
            retire(EngineSlot::Ready(Arc::new(engine)));
        }
        return;
    }
    match result {
        Ok(engine) => {
            let info = engine.info();
            tracing::info!(
                path,
                n_params = info.n_params,
                n_ctx = info.n_ctx,
                load_ms = info.load_ms,
                "model ready"
            );
            retire(state.set_engine_slot(EngineSlot::Ready(Arc::new(engine))));
        }
        Err(message) => {
            tracing::error!(path, error = %message, "model failed to load");
            retire(state.set_engine_slot(EngineSlot::Failed(message.clone())));
            let text = format!(
                "amd-lsp: {message}. There are no completions until a model loads: \
                 set `model` in the server settings, pass `--model`, or set AMD_LSP_MODEL."
            );
            state.client.show_message(MessageType::Error, text).await;
        }
    }
}

/// Sends generation to the configured inference server instead of a local model (none is
/// loaded; a loaded one is let go).
async fn use_backend(state: &ServerState, config: crate::backend::BackendConfig) {
    match crate::backend::Backend::new(config) {
        Ok(backend) => {
            tracing::info!(url = backend.url(), api = ?backend.api(), "completions from a backend");
            retire(state.set_engine_slot(EngineSlot::Remote(Arc::new(backend))));
        }
        Err(e) => {
            let message = format!("backend: {e}");
            tracing::error!("{message}");
            retire(state.set_engine_slot(EngineSlot::Failed(message.clone())));
            let text = format!("amd-lsp: {message}. There are no completions until it is fixed.");
            state.client.show_message(MessageType::Error, text).await;
        }
    }
}

/// Drops a replaced slot on a blocking thread: dropping the last handle of an engine joins its
/// thread, which may finish a job first.
pub(crate) fn retire(slot: EngineSlot) {
    if let EngineSlot::Ready(engine) = slot {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            drop(handle.spawn_blocking(move || drop(engine)));
        }
    }
}

/// How often the editor's process is checked.
const PARENT_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Exits the process when the editor that started us (the `processId` it sent) is gone, so a
/// crashed editor leaves no server behind. Unix only: it asks the kernel with `kill(pid, 0)`, which
/// needs no `/proc` (a sandbox's `/proc` may belong to another PID namespace). A `processId` that
/// is not a process here (an editor in another container, say) is not watched. That first
/// check runs now, inside `initialize`: done in the spawned task it could run after the editor
/// had already died, and the watch would never start.
pub(crate) fn watch_parent(pid: u32) {
    if !process_exists(pid) {
        tracing::warn!(pid, "processId is not a process here; not watching it");
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PARENT_CHECK).await;
            if !process_exists(pid) {
                exit_now("the editor is gone");
            }
        }
    });
}

/// Whether `pid` names a live process. `EPERM` (someone else's process) counts as alive.
#[cfg(unix)]
fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Not checked off Unix: the editor is assumed alive (the server still exits on `exit` or EOF).
#[cfg(not(unix))]
fn process_exists(_pid: u32) -> bool {
    false
}

/// Ends the process at once, for when nobody is left to talk to (the editor died) or we were
/// told to stop (a signal): temporary files are removed, then `_exit`, so no destructor or C
/// `atexit` handler (llama.cpp's, OpenMP's) runs while the engine thread may be inside
/// llama.cpp. Nothing is lost: documents live in the editor, models are written atomically.
pub(crate) fn exit_now(reason: &str) -> ! {
    let removed = amd_engine::gguf::scratch::remove_all();
    tracing::info!(reason, removed_temp_files = removed, "exiting now");
    #[cfg(unix)]
    // SAFETY: `_exit` is async-signal-safe and takes no pointers; it never returns.
    unsafe {
        libc::_exit(0)
    }
    #[cfg(not(unix))]
    std::process::exit(0)
}

/// Exits on SIGTERM, SIGINT or SIGHUP (see [`exit_now`]).
#[cfg(unix)]
pub(crate) async fn exit_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot install signal handlers; signals end the process abruptly");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    };
    exit_now(name);
}
