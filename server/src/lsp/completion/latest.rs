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
}

#[derive(Debug, Default)]
pub struct LatestWins {
    slots: Mutex<HashMap<Uri, CancellationToken>>,
}

impl LatestWins {
    /// Starts a request for `uri`, superseding the one in flight.
    pub fn begin(&self, uri: &Uri) -> Ticket {
        let superseded = CancellationToken::new();
        let previous = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uri.clone(), superseded.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        Ticket { superseded }
    }

    /// Cancels whatever is in flight for `uri` (the document was closed).
    pub fn cancel(&self, uri: &Uri) {
        let previous = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uri);
        if let Some(previous) = previous {
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
}
