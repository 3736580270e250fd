//! A submitted job as its caller sees it: the cancel flag and the answer to await.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tokio::sync::oneshot;

use crate::error::EngineError;
use crate::Outcome;

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

/// The answer to a submitted job. Await it (or [`JobHandle::wait`] outside async code);
/// dropping it cancels the job.
#[derive(Debug)]
pub struct JobHandle {
    rx: oneshot::Receiver<Result<Outcome, EngineError>>,
    cancel: CancelToken,
}

impl JobHandle {
    pub(crate) fn new(
        rx: oneshot::Receiver<Result<Outcome, EngineError>>,
        cancel: CancelToken,
    ) -> JobHandle {
        JobHandle { rx, cancel }
    }

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
