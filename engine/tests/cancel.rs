//! Cancellation: a cancelled job stops within one prefill chunk or decode step, dropping a
//! handle cancels, and the session stays exact afterwards.

mod common;

use std::sync::atomic::Ordering;
use std::sync::mpsc;

use amd_engine::{CancelToken, CompletionRequest, Outcome, Prompt, Sampling};
use common::{block_on, fixtures, tiny_engine};

fn long_prompt() -> String {
    let text = std::fs::read_to_string(fixtures().join("documents/heapq.py")).expect("heapq.py");
    text[..2500].to_owned()
}

#[test]
fn cancel_during_prefill_stops_after_the_current_chunk() {
    let engine = tiny_engine(true);
    let cancel = CancelToken::new();
    let mut req = CompletionRequest::greedy(Prompt::Text(long_prompt()), 16);
    let flag = cancel.clone();
    req.on_progress = Some(Box::new(move |_| flag.cancel()));
    let outcome = block_on(engine.submit_with_cancel(req, cancel)).expect("job");
    let Outcome::Cancelled(stats) = outcome else {
        panic!("expected a cancelled job, got {outcome:?}")
    };
    assert!(stats.n_prompt > 500, "{stats:?}");
    assert_eq!(
        stats.n_evaluated, 128,
        "exactly one chunk of 128 tokens ran"
    );
    assert_eq!(stats.n_generated, 0);
}

#[test]
fn cancel_during_decode_stops_after_the_current_step() {
    let engine = tiny_engine(true);
    let cancel = CancelToken::new();
    let mut req = CompletionRequest::greedy(Prompt::Text(long_prompt()), 64);
    let flag = cancel.clone();
    req.on_progress = Some(Box::new(move |p| {
        if p.n_generated == 3 {
            flag.cancel();
        }
    }));
    let outcome = block_on(engine.submit_with_cancel(req, cancel)).expect("job");
    let Outcome::Cancelled(stats) = outcome else {
        panic!("expected a cancelled job, got {outcome:?}")
    };
    assert_eq!(stats.n_generated, 3);
    assert_eq!(stats.n_evaluated, stats.n_prompt);
}

#[test]
fn session_is_exact_after_cancellations() {
    let warm = tiny_engine(true);
    let cold = tiny_engine(false);
    let prompt = long_prompt();
    // Cancel in prefill, then in decode, leaving a partial prompt and partial generation in KV.
    for cancel_at_generated in [0, 5] {
        let cancel = CancelToken::new();
        let mut req = CompletionRequest::greedy(Prompt::Text(prompt[..2000].to_owned()), 32);
        let flag = cancel.clone();
        req.on_progress = Some(Box::new(move |p| {
            if p.n_generated == cancel_at_generated
                && (cancel_at_generated > 0 || p.n_evaluated >= 128)
            {
                flag.cancel();
            }
        }));
        let outcome = block_on(warm.submit_with_cancel(req, cancel)).expect("job");
        assert!(matches!(outcome, Outcome::Cancelled(_)), "{outcome:?}");
        let run = |engine: &amd_engine::Engine| {
            let req = CompletionRequest::greedy(Prompt::Text(prompt.clone()), 24);
            block_on(engine.submit(req))
                .expect("job")
                .completion()
                .expect("completed")
        };
        let (got, want) = (run(&warm), run(&cold));
        assert!(
            got.stats.n_reused > 0,
            "the cancelled job's prefix is reused"
        );
        assert_eq!(got.tokens, want.tokens);
        assert_eq!(got.text, want.text);
    }
    assert_eq!(warm.counters().n_cancelled.load(Ordering::Relaxed), 2);
}

#[test]
fn dropping_the_handle_cancels_the_job() {
    let engine = tiny_engine(true);
    // Hold the engine thread inside a first job until the second job's handle is dropped.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let mut blocker = CompletionRequest::greedy(Prompt::Text("x = 1".into()), 1);
    let release_rx = std::sync::Mutex::new(release_rx);
    blocker.on_progress = Some(Box::new(move |_| {
        let _ = release_rx.lock().expect("lock").recv();
    }));
    let first = engine.submit(blocker);
    let dropped = engine.submit(CompletionRequest::greedy(Prompt::Text(long_prompt()), 64));
    drop(dropped);
    release_tx.send(()).expect("release");
    drop(release_tx);
    let first = block_on(first).expect("job");
    assert!(matches!(first, Outcome::Completed(_)));
    // A later job runs normally, and the dropped one was counted as cancelled.
    let mut req = CompletionRequest::greedy(Prompt::Text("def f(x):".into()), 4);
    req.sampling = Sampling::Random {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed: 3,
    };
    let done = block_on(engine.submit(req)).expect("job");
    assert_eq!(done.stats().n_generated, 4);
    assert_eq!(engine.counters().n_cancelled.load(Ordering::Relaxed), 1);
    // The dropped job never evaluated a token.
    let n_evaluated = first.stats().n_evaluated + done.stats().n_evaluated;
    assert_eq!(
        engine.counters().n_tokens_evaluated.load(Ordering::Relaxed),
        n_evaluated as u64
    );
}

/// Dropping the last handle of an engine on an async runtime's thread (a request task that
/// outlived a configuration reload) does not wait for the engine thread to finish the
/// llama.cpp call it is in: the join happens on a thread of its own. Here the engine thread is
/// held inside a job until the drop has returned; a drop that joined would never return.
#[test]
fn dropping_an_engine_on_a_runtime_does_not_wait_for_its_thread() {
    let engine = tiny_engine(true);
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let mut req = CompletionRequest::greedy(Prompt::Text(long_prompt()), 4);
    req.on_progress = Some(Box::new(move |_| {
        let _ = entered_tx.send(());
        let _ = released
            .lock()
            .expect("lock")
            .recv_timeout(std::time::Duration::from_secs(60));
    }));
    let job = engine.submit(req);
    entered
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the job started");
    let (dropped_tx, dropped) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            drop(job);
            drop(engine);
        });
        let _ = dropped_tx.send(());
    });
    let returned = dropped.recv_timeout(std::time::Duration::from_secs(30));
    let _ = release.send(());
    returned.expect("the drop returned while the engine thread was busy");
}

/// The server sizes a first window (nothing cached) by the measured prompt speed: it is
/// measured while the engine starts (no job has run yet here), so the first file of a session
/// gets a window like every later one instead of a guess.
#[test]
fn the_prompt_speed_is_measured_before_the_first_request() {
    let engine = tiny_engine(true);
    let rate = engine.counters().prefill_rate();
    assert!(rate.is_some_and(|r| r > 0.0), "{rate:?}");
}
