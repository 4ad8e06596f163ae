//! The bounded cache in front of the trie: event name -> what the trie
//! matched for it (the registry stores its dispatch-ordered
//! subscriptions; the cache only needs to clone it).
//!
//! # Contract
//!
//! * A hit is always for the name asked, never for another name sharing
//!   its slot.
//! * The cache holds at most `capacity` names.
//! * Keeping entries right is the owner's job: it calls
//!   [`MatchCache::invalidate_matching`] with the pattern of every
//!   subscription it adds or removes, which drops exactly the names that
//!   pattern matches.
//!
//! Direct-mapped: a name has exactly one slot (its hash modulo the
//! capacity), and inserting overwrites whatever was there. Lookups and
//! inserts are O(1) with no eviction scan and no rehashing, and memory
//! is bounded by the capacity. Two hot names sharing a slot evict each
//! other; they still match correctly, through the trie.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use crate::name::{Pattern, PatternToken};

struct Slot<V> {
    name: Box<str>,
    matches: V,
}

pub(crate) struct MatchCache<V> {
    /// Invariant: every occupied slot holds what the trie matches for its
    /// name now (the registry drops the entries a changed pattern matches).
    slots: Box<[Option<Slot<V>>]>,
    hasher: RandomState,
    /// Invariant: the number of occupied slots (so `clear` on an empty
    /// cache, e.g. while subscribing many before any emit, costs nothing).
    occupied: usize,
}

impl<V> MatchCache<V> {
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

    pub fn get(&self, name: &str) -> Option<&V> {
        match &self.slots[self.index(name)] {
            Some(slot) if &*slot.name == name => Some(&slot.matches),
            _ => None,
        }
    }

    pub fn insert(&mut self, name: &str, matches: V) {
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

    /// Drops the entries of the names `pattern` matches: the only ones a
    /// subscription with that pattern being added or removed changes.
    /// Entries for other names stay valid, so one client's subscribe and
    /// unsubscribe churn does not turn every other name's lookup into a
    /// trie walk. Costs one early-exit match per occupied slot (the same
    /// order as `clear`); a catch-all pattern clears.
    pub fn invalidate_matching(&mut self, pattern: &Pattern) {
        if self.occupied == 0 {
            return;
        }
        if let [PatternToken::Rest] = pattern.tokens() {
            return self.clear();
        }
        for slot in self.slots.iter_mut() {
            if slot.as_ref().is_some_and(|s| pattern.matches(&s.name)) {
                *slot = None;
                self.occupied -= 1;
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.occupied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_exact_and_cleared() {
        let mut c = MatchCache::<()>::new(3);
        for i in 0..100 {
            c.insert(&format!("n{i}"), ());
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

    #[test]
    fn invalidate_drops_only_matched_names() {
        let names = ["a.x", "a:y", "a.x.z", "b.x", "c"];
        // Large enough that the five names are unlikely to share a slot;
        // the assertions below only count names that were kept on insert.
        let mut c = MatchCache::<()>::new(4096);
        let fill = |c: &mut MatchCache<()>| {
            c.clear();
            names.iter().for_each(|n| c.insert(n, ()));
            names
                .iter()
                .filter(|n| c.get(n).is_some())
                .copied()
                .collect::<Vec<_>>()
        };
        let cases: [(&str, &[&str]); 6] = [
            ("a.*", &["a.x", "a:y"]),
            ("a.>", &["a.x", "a:y", "a.x.z"]),
            ("*.x", &["a.x", "b.x"]),
            ("a:x", &["a.x"]),
            ("d.>", &[]),
            ("*", &["a.x", "a:y", "a.x.z", "b.x", "c"]),
        ];
        for (pattern, dropped) in cases {
            let held = fill(&mut c);
            let before = c.len();
            c.invalidate_matching(&Pattern::parse(pattern).unwrap());
            for n in &held {
                assert_eq!(c.get(n).is_none(), dropped.contains(n), "{pattern} on {n}");
            }
            let gone = held.iter().filter(|n| dropped.contains(n)).count();
            assert_eq!(c.len(), before - gone, "{pattern}: occupied count");
        }
    }
}
