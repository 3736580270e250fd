//! A generation in flight outlives the keystroke that started it. While the user types what
//! the model is writing, each keystroke's request follows the generation instead of
//! cancelling it, and is answered with the rest once it lands; the first keystroke that
//! disagrees with it cancels it. Without this, on a 2-core laptop a 16-token suggestion
//! (~0.5 s) never outlives the gap between two keys (~0.15 s), and a typist who pauses only
//! briefly never sees one.
//!
//! A flight is keyed by where it was asked (a [`Shown`] with no text yet), like the
//! type-through cache: the same line, the same text around it, and only characters typed at
//! the cursor since.

use std::sync::Arc;

use amd_engine::{CancelToken, CompletionRequest, Engine, Outcome};
use tokio::sync::watch;
use tower_lsp_server::gen_lsp_types::Uri;

use super::plan::{placement, Gate, Judged};
use super::typethrough::Shown;
use super::window::CursorWindow;
use crate::lsp::state::ServerState;

/// How far a flight has got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leg {
    /// Generating; the raw text so far.
    Running(String),
    /// Done: the cleaned suggestion at the flight's origin (`None`: nothing worth showing).
    Landed(Option<String>),
    /// Cancelled, or refused by the engine (a bad prompt: nothing to show).
    Lost,
    /// The engine failed.
    Failed(String),
}

/// A document's generation in flight (or just landed).
#[derive(Clone, Debug)]
pub struct Flight {
    origin: Shown,
    leg: watch::Receiver<Leg>,
    cancel: CancelToken,
}

impl Flight {
    /// Submits `request` (made for `at` in the document `uri`) and returns its flight. The
    /// job runs to its end whoever waits for it, until [`Flight::cancel`].
    pub(crate) fn start(
        state: &Arc<ServerState>,
        engine: &Engine,
        mut request: CompletionRequest,
        uri: &Uri,
        at: &CursorWindow,
        multi_line: bool,
        gate: Gate,
    ) -> Flight {
        let (tx, rx) = watch::channel(Leg::Running(String::new()));
        let tx = Arc::new(tx);
        let progress = Arc::clone(&tx);
        request.on_progress = Some(Box::new(move |p| {
            if p.n_generated > 0 {
                progress.send_if_modified(|leg| match leg {
                    Leg::Running(text) if text != p.text => {
                        p.text.clone_into(text);
                        true
                    }
                    _ => false,
                });
            }
        }));
        let cancel = CancelToken::new();
        let job = engine.submit_with_cancel(request, cancel.clone());
        ServerState::bump(&state.counters.n_flights);
        let origin = Shown::new(at, String::new());
        let (state, at, uri) = (Arc::clone(state), at.clone(), uri.clone());
        tokio::spawn(async move {
            let leg = match job.await {
                Ok(Outcome::Completed(c)) => {
                    state.set_last_job(c.stats);
                    state.context.answered(&uri);
                    match gate.judge(&c, &placement(&at, multi_line)) {
                        Judged::Nothing => Leg::Landed(None),
                        Judged::Unsure(text) => {
                            ServerState::bump(&state.counters.n_unsure);
                            super::hold(&state, &uri, &at, text);
                            Leg::Landed(None)
                        }
                        Judged::Show(text) => Leg::Landed(Some(text)),
                    }
                }
                Ok(Outcome::Cancelled(_)) => {
                    ServerState::bump(&state.counters.n_cancelled);
                    Leg::Lost
                }
                Err(e) if e.is_bad_request() => {
                    // An empty prompt (cursor at the top of a file, no BOS), one too long: no
                    // suggestion, and the caches stay.
                    tracing::debug!(error = %e, "no suggestion for this prompt");
                    Leg::Lost
                }
                Err(e) => Leg::Failed(e.to_string()),
            };
            tx.send_replace(leg);
        });
        Flight {
            origin,
            leg: rx,
            cancel,
        }
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether an edit of `lines` (first, last), inserting `text`, leaves the flight a
    /// chance: only typing on the line it was asked on does.
    pub fn survives_edit(&self, lines: (u32, u32), text: &str) -> bool {
        typing_on(self.origin.line, lines, text)
    }

    /// What a request at `at` makes of this flight now.
    pub fn judge(&mut self, at: &CursorWindow) -> Verdict {
        judge(&self.origin, at, &self.leg.borrow_and_update())
    }

    /// Waits until the flight has moved on from what was last judged; `false` when it never
    /// will (its task is gone without a last word).
    pub async fn changed(&mut self) -> bool {
        self.leg.changed().await.is_ok()
    }
}

/// What a request makes of a flight.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It may still write what was typed: wait for it.
    Wait,
    /// It landed: the rest of its suggestion after what was typed (`None`: nothing to show).
    Answer(Option<String>),
    /// It disagrees with the document (or is lost): the request asks the model itself.
    Leave,
    /// The engine failed (for the request that started it).
    Failed(String),
}

/// Whether an edit of `lines` inserting `text` is typing on `line` (no line break).
fn typing_on(line: usize, lines: (u32, u32), text: &str) -> bool {
    lines.0 as usize == line && lines.1 as usize == line && !text.contains(['\n', '\r'])
}

/// Pure: the request at `at`, for a flight asked at `origin` that has got to `leg`.
pub fn judge(origin: &Shown, at: &CursorWindow, leg: &Leg) -> Verdict {
    let Some(typed) = origin.typed(at) else {
        return Verdict::Leave;
    };
    match leg {
        Leg::Running(raw) => {
            let raw = raw.replace("\r\n", "\n");
            if raw.starts_with(typed) || typed.starts_with(raw.as_str()) {
                Verdict::Wait
            } else {
                Verdict::Leave
            }
        }
        Leg::Landed(Some(text)) => {
            let landed = Shown {
                text: text.clone(),
                ..origin.clone()
            };
            match landed.remaining(at) {
                Some(rest) => Verdict::Answer(Some(rest.to_owned())),
                None if typed.is_empty() => Verdict::Answer(None),
                None => Verdict::Leave,
            }
        }
        Leg::Failed(e) if typed.is_empty() => Verdict::Failed(e.clone()),
        Leg::Landed(None) | Leg::Lost if typed.is_empty() => Verdict::Answer(None),
        // Nothing at the origin; somewhere else the model may have something.
        Leg::Landed(None) | Leg::Lost | Leg::Failed(_) => Verdict::Leave,
    }
}

#[cfg(test)]
mod tests {
    use super::super::window::window_at as at;
    use super::*;

    /// The flight was asked at `print($0)`; a request at `doc` (`$0`: its cursor) judges
    /// it at `leg`.
    #[track_caller]
    fn check(doc: &str, leg: &Leg, expect: Verdict) {
        let origin = Shown::new(&at("x = 1\nprint($0)\n"), String::new());
        assert_eq!(judge(&origin, &at(doc), leg), expect, "{doc:?} at {leg:?}");
    }

    fn running(text: &str) -> Leg {
        Leg::Running(text.into())
    }

    #[test]
    fn a_request_waits_while_the_model_may_still_write_what_was_typed() {
        use Verdict::{Leave, Wait};
        for (doc, written, expect) in [
            ("x = 1\nprint($0)\n", "", Wait),
            ("x = 1\nprint(x +$0)\n", "x", Wait),
            ("x = 1\nprint(x$0)\n", "x + 1", Wait),
            ("x = 1\nprint(y$0)\n", "x", Leave),
            ("x = 1\nprint(x -$0)\n", "x + 1", Leave),
            // Anything else changed: another line, the text after the cursor, the lines around.
            ("x = 1\nprint()\n$0", "x + 1", Leave),
            ("x = 1\nprint(x$0))\n", "x + 1", Leave),
            ("x = 2\nprint(x$0)\n", "x + 1", Leave),
        ] {
            check(doc, &running(written), expect);
        }
    }

    #[test]
    fn a_flight_whose_task_is_gone_is_not_waited_for() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let flight = |tx_then: fn(watch::Sender<Leg>)| {
            let (tx, rx) = watch::channel(running(""));
            tx_then(tx);
            Flight {
                origin: Shown::new(&at("x = 1\nprint($0)\n"), String::new()),
                leg: rx,
                cancel: CancelToken::new(),
            }
        };
        let here = at("x = 1\nprint($0)\n");
        // Gone without a last word: judged as still running (judging reads what it wrote
        // last), and no change will ever come.
        let mut gone = flight(|tx| {
            tx.send_replace(running("x"));
        });
        assert_eq!(gone.judge(&here), Verdict::Wait);
        assert!(!runtime.block_on(gone.changed()));
        // Its last word is read even after the task is gone, and only once.
        let mut landed = flight(|tx| {
            tx.send_replace(Leg::Landed(Some("x".into())));
        });
        assert!(runtime.block_on(landed.changed()));
        assert_eq!(landed.judge(&here), Verdict::Answer(Some("x".into())));
        assert!(!runtime.block_on(landed.changed()));
    }

    #[test]
    fn only_typing_on_its_line_leaves_a_flight_a_chance() {
        assert!(typing_on(6, (6, 6), "x"));
        assert!(
            typing_on(6, (6, 6), ""),
            "a deletion on the line: the next request judges"
        );
        assert!(!typing_on(6, (5, 5), "x"));
        assert!(!typing_on(6, (5, 6), ""), "lines joined");
        assert!(!typing_on(6, (6, 6), "\n"));
        assert!(!typing_on(6, (6, 6), "a\r\nb"));
    }

    #[test]
    fn a_landed_flight_answers_with_the_rest_or_lets_the_request_ask_again() {
        use Verdict::{Answer, Failed, Leave};
        let landed = Leg::Landed(Some("x + 1".into()));
        let (nothing, failed) = (Leg::Landed(None), Leg::Failed("boom".into()));
        for (doc, leg, expect) in [
            ("x = 1\nprint($0)\n", &landed, Answer(Some("x + 1".into()))),
            ("x = 1\nprint(x $0)\n", &landed, Answer(Some("+ 1".into()))),
            // Typed past it, or typed something the cleaned text does not have.
            ("x = 1\nprint(x + 1$0)\n", &landed, Leave),
            ("x = 1\nprint(x * $0)\n", &landed, Leave),
            // Nothing to show where it was asked: the request that asked gets nothing, a
            // later keystroke asks the model.
            ("x = 1\nprint($0)\n", &nothing, Answer(None)),
            ("x = 1\nprint(x$0)\n", &nothing, Leave),
            ("x = 1\nprint($0)\n", &Leg::Lost, Answer(None)),
            ("x = 1\nprint(x$0)\n", &Leg::Lost, Leave),
            ("x = 1\nprint($0)\n", &failed, Failed("boom".into())),
            ("x = 1\nprint(x$0)\n", &failed, Leave),
        ] {
            check(doc, leg, expect);
        }
    }
}
