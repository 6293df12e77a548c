//! Counted slots per key: at most `limit` held at once for one key (live
//! streams per token, connections per client address). A slot is given
//! back when it is dropped, however its holder ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Slots of one kind, by key.
#[derive(Debug)]
pub(crate) struct Slots<K: Eq + Hash> {
    limit: usize,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One slot held for `key`.
#[derive(Debug)]
pub(crate) struct Slot<K: Eq + Hash> {
    key: Option<K>,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    pub(crate) fn new(limit: usize) -> Slots<K> {
        Slots {
            limit: limit.max(1),
            held: Arc::default(),
        }
    }

    /// The limit per key.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for `key`, unless it holds `limit` already.
    pub(crate) fn take(&self, key: K) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            key: Some(key),
            held: self.held.clone(),
        })
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_the_limit_and_dropping_gives_back() {
        let slots = Slots::new(2);
        let a = slots.take("ci").unwrap();
        let _b = slots.take("ci").unwrap();
        assert!(slots.take("ci").is_none());
        assert!(slots.take("alice").is_some());
        drop(a);
        assert!(slots.take("ci").is_some());
        // Keys with nothing held are forgotten.
        assert_eq!(slots.held.lock().unwrap().get("alice"), None);
    }
}
