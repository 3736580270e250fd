//! Latest wins, per document: a new completion request supersedes the one before it. The
//! older request is woken at once, answers empty, and drops its engine job (which cancels it).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use tower_lsp_server::gen_lsp_types::Uri;

/// A request's claim on its document.
#[derive(Debug)]
pub struct Ticket {
    /// Fires when a newer request for the same document arrives.
    pub superseded: CancellationToken,
    /// Which claim this is (claims of one server never share a number).
    id: u64,
}

#[derive(Debug, Default)]
pub struct LatestWins {
    slots: Mutex<HashMap<Uri, (u64, CancellationToken)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl LatestWins {
    /// Starts a request for `uri`, superseding the one in flight.
    pub fn begin(&self, uri: &Uri) -> Ticket {
        let ticket = self.ticket();
        let previous = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uri.clone(), (ticket.id, ticket.superseded.clone()));
        if let Some((_, previous)) = previous {
            previous.cancel();
        }
        ticket
    }

    /// Hands `ticket`'s claim on `uri` on to follow-up work (the next suggestion computed in
    /// the background), only while it is still the newest: a request that arrived meanwhile
    /// keeps its claim, and `None` is returned.
    pub fn pass_on(&self, uri: &Uri, ticket: &Ticket) -> Option<Ticket> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get(uri) {
            Some((id, _)) if *id == ticket.id && !ticket.superseded.is_cancelled() => {
                let next = self.ticket();
                slots.insert(uri.clone(), (next.id, next.superseded.clone()));
                Some(next)
            }
            _ => None,
        }
    }

    fn ticket(&self) -> Ticket {
        Ticket {
            superseded: CancellationToken::new(),
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Cancels whatever is in flight for `uri` (the document was closed).
    pub fn cancel(&self, uri: &Uri) {
        let previous = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uri);
        if let Some((_, previous)) = previous {
            previous.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_request_supersedes_the_previous_one_of_the_same_document() {
        let latest = LatestWins::default();
        let (a, b) = (Uri::from("file:///a"), Uri::from("file:///b"));
        let first = latest.begin(&a);
        let other = latest.begin(&b);
        assert!(!first.superseded.is_cancelled());
        let second = latest.begin(&a);
        assert!(first.superseded.is_cancelled());
        assert!(!second.superseded.is_cancelled());
        assert!(
            !other.superseded.is_cancelled(),
            "other documents are not affected"
        );
        latest.cancel(&a);
        assert!(second.superseded.is_cancelled());
    }

    #[test]
    fn follow_up_work_never_takes_the_claim_of_a_newer_request() {
        let latest = LatestWins::default();
        let a = Uri::from("file:///a");
        let first = latest.begin(&a);
        let follow_up = latest.pass_on(&a, &first).expect("still the newest");
        assert!(
            !first.superseded.is_cancelled(),
            "passing on is not superseding"
        );
        let newer = latest.begin(&a);
        assert!(follow_up.superseded.is_cancelled());
        // The request that finished before `newer` arrived cannot claim the slot back.
        assert!(latest.pass_on(&a, &first).is_none());
        assert!(latest.pass_on(&a, &follow_up).is_none());
        assert!(!newer.superseded.is_cancelled());
    }
}
