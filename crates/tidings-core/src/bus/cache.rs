//! The bounded cache in front of the trie: event name -> matched
//! subscriptions.
//!
//! Direct-mapped: a name has exactly one slot (its hash modulo the
//! capacity), and inserting overwrites whatever was there. Lookups and
//! inserts are O(1) with no eviction scan and no rehashing, and memory
//! is bounded by the capacity. Two hot names sharing a slot evict each
//! other; they still match correctly, through the trie.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::registry::Matches;

struct Slot {
    name: Box<str>,
    matches: Matches,
}

pub(crate) struct MatchCache {
    /// Invariant: every occupied slot holds what the trie matched for its
    /// name since the last `clear` (the registry clears on every change).
    slots: Box<[Option<Slot>]>,
    hasher: RandomState,
    /// Invariant: the number of occupied slots (so `clear` on an empty
    /// cache, e.g. while subscribing many before any emit, costs nothing).
    occupied: usize,
}

impl MatchCache {
    /// A cache of at most `capacity` names (`capacity >= 1`).
    pub fn new(capacity: usize) -> Self {
        MatchCache {
            slots: (0..capacity.max(1)).map(|_| None).collect(),
            hasher: RandomState::default(),
            occupied: 0,
        }
    }

    fn index(&self, name: &str) -> usize {
        (self.hasher.hash_one(name) % self.slots.len() as u64) as usize
    }

    pub fn get(&self, name: &str) -> Option<&Matches> {
        match &self.slots[self.index(name)] {
            Some(slot) if &*slot.name == name => Some(&slot.matches),
            _ => None,
        }
    }

    pub fn insert(&mut self, name: &str, matches: Matches) {
        let i = self.index(name);
        let slot = &mut self.slots[i];
        if slot.is_none() {
            self.occupied += 1;
        }
        *slot = Some(Slot {
            name: name.into(),
            matches,
        });
    }

    /// Empties the cache, dropping what it held (so a removed
    /// subscription is not kept alive by a stale entry).
    pub fn clear(&mut self) {
        if self.occupied > 0 {
            self.slots.iter_mut().for_each(|s| *s = None);
            self.occupied = 0;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.occupied
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn bounded_exact_and_cleared() {
        let mut c = MatchCache::new(3);
        for i in 0..100 {
            c.insert(&format!("n{i}"), Arc::new([]));
            assert!(c.len() <= 3);
            assert!(c.get(&format!("n{i}")).is_some(), "the last insert is kept");
        }
        // Every hit is for the name asked, never a slot-mate.
        let hits = (0..100)
            .filter(|i| c.get(&format!("n{i}")).is_some())
            .count();
        assert_eq!(hits, c.len());
        c.clear();
        assert_eq!(c.len(), 0);
        assert!((0..100).all(|i| c.get(&format!("n{i}")).is_none()));
    }
}
