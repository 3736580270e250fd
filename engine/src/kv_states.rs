//! The KV caches of documents other than the one in the context, kept in memory so that
//! switching back to a document is warm. Least recently used first out, within a byte budget.
//! Pure bookkeeping, generic over what is saved (the engine saves llama.cpp sequence states).

use std::collections::VecDeque;

use crate::TokenId;

/// One saved document: its key, the saved cache, the tokens it holds (position order), size.
struct Entry<S> {
    key: u64,
    saved: S,
    tokens: Vec<TokenId>,
    bytes: usize,
}

pub(crate) struct SavedDocs<S> {
    /// Most recently saved first.
    entries: VecDeque<Entry<S>>,
    budget: usize,
    bytes: usize,
}

impl<S> SavedDocs<S> {
    pub(crate) fn new(budget: usize) -> SavedDocs<S> {
        SavedDocs {
            entries: VecDeque::new(),
            budget,
            bytes: 0,
        }
    }

    /// Whether anything can be kept at all.
    pub(crate) fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// Whether something of `bytes` could be kept (it is not larger than the whole budget).
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        bytes <= self.budget
    }

    /// Keeps `saved` for `key` (replacing an older copy), dropping the least recently used
    /// entries until it fits. Something larger than the whole budget is not kept.
    pub(crate) fn put(&mut self, key: u64, saved: S, tokens: Vec<TokenId>, bytes: usize) {
        drop(self.take(key));
        if bytes > self.budget {
            return;
        }
        while self.bytes + bytes > self.budget {
            match self.entries.pop_back() {
                Some(old) => self.bytes -= old.bytes,
                None => break,
            }
        }
        self.bytes += bytes;
        self.entries.push_front(Entry {
            key,
            saved,
            tokens,
            bytes,
        });
    }

    /// Takes out what was kept for `key`.
    pub(crate) fn take(&mut self, key: u64) -> Option<(S, Vec<TokenId>)> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        let e = self.entries.remove(i)?;
        self.bytes -= e.bytes;
        Some((e.saved, e.tokens))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::SavedDocs;

    #[test]
    fn least_recently_used_goes_first_and_the_budget_holds() {
        let mut docs = SavedDocs::new(100);
        docs.put(1, "a", vec![1], 40);
        docs.put(2, "b", vec![2], 40);
        assert_eq!((docs.len(), docs.bytes()), (2, 80));
        // A third does not fit: the oldest (1) goes.
        docs.put(3, "c", vec![3], 40);
        assert_eq!((docs.len(), docs.bytes()), (2, 80));
        assert!(docs.take(1).is_none());
        assert_eq!(docs.take(2), Some(("b", vec![2])));
        assert_eq!(docs.bytes(), 40);
        // Saving a document again replaces its copy.
        docs.put(3, "c2", vec![3, 3], 50);
        assert_eq!((docs.len(), docs.bytes()), (1, 50));
        assert_eq!(docs.take(3), Some(("c2", vec![3, 3])));
        // Larger than the whole budget: not kept, nothing else dropped.
        docs.put(4, "d", vec![], 10);
        docs.put(5, "e", vec![], 101);
        assert_eq!((docs.len(), docs.bytes()), (1, 10));
        assert!(docs.fits(100) && !docs.fits(101));
        assert!(!SavedDocs::<()>::new(0).enabled());
    }
}
