//! Who listens to what: subscriptions, the pattern trie and the match cache.
//!
//! # Contract
//!
//! * [`Registry`] is the only way to the subscriptions; its lock is its
//!   own, so every change (subscribe, unsubscribe, unlink) and every lookup
//!   is atomic with respect to the others.
//! * A lookup gives the subscriptions matching an event in dispatch order:
//!   higher priority first, then registration (id) order.
//! * Lookups happen in seq order (dispatch is sequenced), so a
//!   subscription registered now receives every event with a seq greater
//!   than the one `register_all` returns, and none with a smaller one.
//! * A removed subscription is inactive from the moment `remove` or
//!   `unlink` returns; `remove` also closes its sink, `unlink` leaves it
//!   open (a stream dropping one of its several patterns).
//! * [`Registry::hand_over`] removes an owner's subscriptions *at a seq*:
//!   they still get every event up to the seq it returns (the last one
//!   looked up, possibly still being dispatched), and none after it; their
//!   sinks deliver up to that seq (from the log if they overflowed) and
//!   then end. A subscription registered afterwards gets the events after
//!   that seq when no lookup happened in between (the plugin host ensures
//!   it by swapping between two events).
//! * Each owner's handler calls are counted in one [`OwnerCounters`] its
//!   subscriptions share. The registry keeps an owner's counters while it
//!   has subscriptions or is pinned (a plugin host pins its plugins, so
//!   their stats outlive a reload), so they never pile up.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::cache::MatchCache;
use super::sink::Sink;
use super::stats::{OwnerCounters, OwnerStats};
use crate::event::{Priority, SharedEvent};
use crate::name::Pattern;
use crate::trie::Trie;

/// A sync handler, already wrapped to report failure as a message.
pub(crate) type SyncFn = Box<dyn Fn(&SharedEvent) -> Result<(), String> + Send + Sync>;

pub(crate) enum SubKind {
    /// Runs inline during dispatch.
    Sync {
        f: SyncFn,
        once: bool,
        /// Events it rejects are not handed to `f` (and do not use up a
        /// `once`).
        filter: Option<crate::filter::SharedFilter>,
    },
    /// Feeds a queue read by a stream (plain streams, async handlers,
    /// `wait_for`).
    Sink(Arc<Sink>),
}

pub(crate) struct Sub {
    pub id: u64,
    pub pattern: Pattern,
    pub priority: Priority,
    pub owner: Option<Arc<str>>,
    /// The owner's shared counters (`None` without an owner).
    pub counters: Option<Arc<OwnerCounters>>,
    pub kind: SubKind,
    /// Invariant: false from the moment the subscription is removed; dispatch
    /// checks it before every call, so no call starts after removal returns.
    /// One exception: a plugin's subscriptions handed over at a seq
    /// (`Registry::hand_over`) stay active, so a dispatch that already
    /// found one still runs it for the events up to that seq.
    pub active: AtomicBool,
    /// For `once` handlers: set by the one dispatch that gets to run it.
    pub fired: AtomicBool,
}

impl Sub {
    pub fn kind_name(&self) -> SubscriptionKind {
        match &self.kind {
            SubKind::Sync { once: true, .. } => SubscriptionKind::Once,
            SubKind::Sync { .. } => SubscriptionKind::Sync,
            SubKind::Sink(s) if s.is_handler() => SubscriptionKind::Async,
            SubKind::Sink(_) => SubscriptionKind::Stream,
        }
    }
}

/// What kind of subscription a [`SubscriptionInfo`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// A sync handler.
    Sync,
    /// A sync handler that runs once.
    Once,
    /// An async handler.
    Async,
    /// A stream (including `wait_for`).
    Stream,
}

/// A description of one live subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// Unique within the bus, increasing in registration order.
    pub id: u64,
    /// The pattern as written.
    pub pattern: String,
    pub priority: Priority,
    pub owner: Option<String>,
    pub kind: SubscriptionKind,
}

impl From<&Sub> for SubscriptionInfo {
    fn from(s: &Sub) -> Self {
        SubscriptionInfo {
            id: s.id,
            pattern: s.pattern.as_str().to_owned(),
            priority: s.priority,
            owner: s.owner.as_deref().map(str::to_owned),
            kind: s.kind_name(),
        }
    }
}

/// Matched subscriptions of one name, dispatch-ordered.
pub(crate) type Matches = Arc<[Arc<Sub>]>;

/// A subscription in the trie, equal to another by id (what removal
/// compares), so a match yields the subscriptions themselves.
#[derive(Clone)]
struct ById(Arc<Sub>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

/// The subscriptions of a bus, behind their own lock.
pub(crate) struct Registry {
    table: Mutex<Table>,
}

impl Registry {
    /// An empty registry whose first lookup will be for a seq after
    /// `looked_up`, caching the matches of up to `cache_cap` names.
    pub fn new(cache_cap: usize, looked_up: u64) -> Self {
        Registry {
            table: Mutex::new(Table::new(cache_cap, looked_up)),
        }
    }

    /// Registers a subscription.
    pub fn register(
        &self,
        pattern: Pattern,
        priority: Priority,
        owner: Option<Arc<str>>,
        kind: SubKind,
    ) -> Arc<Sub> {
        self.table.lock().insert(pattern, priority, owner, kind).0
    }

    /// Registers one subscription per pattern, all at once; returns them
    /// and the seq after which they receive events.
    pub fn register_all(
        &self,
        patterns: Vec<Pattern>,
        priority: Priority,
        owner: Option<Arc<str>>,
        kind: impl Fn() -> SubKind,
    ) -> (Vec<Arc<Sub>>, u64) {
        let mut table = self.table.lock();
        let subs = patterns
            .into_iter()
            .map(|p| table.insert(p, priority, owner.clone(), kind()).0)
            .collect();
        (subs, table.looked_up())
    }

    /// Removes a subscription and closes its sink; returns whether it
    /// existed.
    pub fn remove(&self, id: u64) -> bool {
        self.table.lock().remove(id).is_some()
    }

    /// Removes several subscriptions at once, closing their sinks.
    pub fn remove_all(&self, ids: impl IntoIterator<Item = u64>) {
        let mut table = self.table.lock();
        for id in ids {
            table.remove(id);
        }
    }

    /// Removes a subscription but leaves its sink open.
    pub fn unlink(&self, id: u64) {
        self.table.lock().unlink(id);
    }

    /// Removes every subscription of `owner`; returns how many.
    pub fn remove_owner(&self, owner: &str) -> usize {
        let mut table = self.table.lock();
        let ids: Vec<u64> = table.by_owner(owner).iter().map(|s| s.id).collect();
        for id in &ids {
            table.remove(*id);
        }
        ids.len()
    }

    /// Removes every subscription of `owner` at a seq, which it returns
    /// with how many were removed: they still get the events up to it (one
    /// may be being dispatched now) and none after it; their sinks deliver
    /// up to it, then end.
    pub fn hand_over(&self, owner: &str) -> (usize, u64) {
        let mut table = self.table.lock();
        let at = table.looked_up();
        let ids: Vec<u64> = table.by_owner(owner).iter().map(|s| s.id).collect();
        for id in &ids {
            if let Some(sub) = table.take(*id) {
                if let SubKind::Sink(s) = &sub.kind {
                    s.finish_at(at);
                }
            }
        }
        (ids.len(), at)
    }

    /// Keeps `owner`'s counters while it has no subscription (`true`), or
    /// stops keeping them (`false`; dropped now if it has none).
    pub fn pin_owner(&self, owner: &Arc<str>, pinned: bool) {
        let mut table = self.table.lock();
        table.owner(owner).pinned = pinned;
        table.forget_owner_if_idle(owner);
    }

    /// A snapshot of `owner`'s counters, if it has subscriptions or is
    /// pinned.
    pub fn owner_stats(&self, owner: &str) -> Option<OwnerStats> {
        let table = self.table.lock();
        table.owners.get(owner).map(|o| o.counters.snapshot())
    }

    /// The last seq whose matches were looked up: dispatch has reached it.
    pub fn looked_up(&self) -> u64 {
        self.table.lock().looked_up()
    }

    /// The dispatch-ordered subscriptions matching the event.
    pub fn lookup(&self, event: &SharedEvent) -> Matches {
        self.table.lock().lookup(event)
    }

    /// The live subscriptions, of one owner or all, in registration order.
    pub fn infos(&self, owner: Option<&str>) -> Vec<SubscriptionInfo> {
        let table = self.table.lock();
        match owner {
            Some(o) => table
                .by_owner(o)
                .iter()
                .map(|s| SubscriptionInfo::from(&**s))
                .collect(),
            None => table.all().map(|s| SubscriptionInfo::from(&**s)).collect(),
        }
    }

    /// Subscriptions an event named `name` would reach.
    pub fn count_matching(&self, name: &str) -> usize {
        self.table.lock().count_matching(name)
    }

    /// Subscriptions registered with exactly this pattern.
    pub fn count_with_pattern(&self, pattern: &Pattern) -> usize {
        self.table.lock().count_with_pattern(pattern)
    }

    /// How many subscriptions are live.
    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    /// The state itself, for tests that look at the cache.
    #[cfg(test)]
    pub fn lock(&self) -> parking_lot::MutexGuard<'_, Table> {
        self.table.lock()
    }
}

/// An owner's counters and what keeps them.
#[derive(Default)]
struct Owner {
    counters: Arc<OwnerCounters>,
    /// Its subscriptions in the table.
    live: usize,
    /// Kept with no subscription (by a plugin host).
    pinned: bool,
}

/// The registry's state, behind its lock.
pub(crate) struct Table {
    trie: Trie<ById>,
    /// Invariant: exactly the subscriptions stored in `trie`, by id.
    subs: BTreeMap<u64, Arc<Sub>>,
    /// What a name no subscription matches gets, without allocating.
    no_match: Matches,
    next_id: u64,
    /// Name -> matches. Invariant: every entry equals what the trie gives
    /// now; a subscribe or unsubscribe drops the entries of the names its
    /// pattern matches (no other entry changes). At most `cache_cap`
    /// entries. Names nobody matches are not cached: the trie rejects them
    /// within a token or two, and they would crowd out names that match.
    cache: MatchCache<Matches>,
    /// The highest seq whose matches were looked up. Lookups happen in seq
    /// order (dispatch is sequenced), so a subscription registered now gets
    /// every event with a greater seq and none with a smaller one.
    looked_up: u64,
    /// Counters per owner. Invariant: an entry exists only while its
    /// owner has subscriptions here or is pinned.
    owners: HashMap<Arc<str>, Owner>,
    /// Lookups answered by the cache.
    #[cfg(test)]
    cache_hits: u64,
}

impl Table {
    fn new(cache_cap: usize, looked_up: u64) -> Self {
        Table {
            trie: Trie::new(),
            subs: BTreeMap::new(),
            no_match: Arc::new([]),
            next_id: 1,
            cache: MatchCache::new(cache_cap),
            looked_up,
            owners: HashMap::new(),
            #[cfg(test)]
            cache_hits: 0,
        }
    }

    /// Registers a subscription; returns it and the seq after which it
    /// receives events.
    fn insert(
        &mut self,
        pattern: Pattern,
        priority: Priority,
        owner: Option<Arc<str>>,
        kind: SubKind,
    ) -> (Arc<Sub>, u64) {
        let id = self.next_id;
        self.next_id += 1;
        let counters = owner.as_ref().map(|o| {
            let entry = self.owner(o);
            entry.live += 1;
            entry.counters.clone()
        });
        let sub = Arc::new(Sub {
            id,
            pattern,
            priority,
            owner,
            counters,
            kind,
            active: AtomicBool::new(true),
            fired: AtomicBool::new(false),
        });
        self.trie.insert(&sub.pattern, ById(sub.clone()));
        self.subs.insert(id, sub.clone());
        self.cache.invalidate_matching(&sub.pattern);
        (sub, self.looked_up)
    }

    /// Removes a subscription; closes its sink so its stream ends.
    fn remove(&mut self, id: u64) -> Option<Arc<Sub>> {
        let sub = self.unlink(id)?;
        if let SubKind::Sink(s) = &sub.kind {
            s.close();
        }
        Some(sub)
    }

    /// Removes a subscription but leaves its sink open (a stream dropping
    /// one of its several patterns).
    fn unlink(&mut self, id: u64) -> Option<Arc<Sub>> {
        let sub = self.take(id)?;
        sub.active.store(false, Ordering::Release);
        Some(sub)
    }

    /// Takes a subscription out of the trie, leaving it active: lookups
    /// from now on do not find it, but a dispatch that found it already
    /// still calls it.
    fn take(&mut self, id: u64) -> Option<Arc<Sub>> {
        let sub = self.subs.remove(&id)?;
        self.trie.remove(&sub.pattern, &ById(sub.clone()));
        self.cache.invalidate_matching(&sub.pattern);
        if let Some(o) = &sub.owner {
            if let Some(entry) = self.owners.get_mut(o) {
                entry.live -= 1;
            }
            self.forget_owner_if_idle(o);
        }
        Some(sub)
    }

    /// `owner`'s entry, created if new.
    fn owner(&mut self, owner: &Arc<str>) -> &mut Owner {
        self.owners.entry(owner.clone()).or_default()
    }

    fn forget_owner_if_idle(&mut self, owner: &str) {
        if self
            .owners
            .get(owner)
            .is_some_and(|o| o.live == 0 && !o.pinned)
        {
            self.owners.remove(owner);
        }
    }

    /// The dispatch-ordered subscriptions matching the event.
    fn lookup(&mut self, event: &SharedEvent) -> Matches {
        self.looked_up = event.seq;
        if let Some(m) = self.cache.get(event.name.as_str()) {
            #[cfg(test)]
            {
                self.cache_hits += 1;
            }
            return m.clone();
        }
        let mut found = Vec::new();
        self.trie.matches(&event.name, &mut found);
        if found.is_empty() {
            return self.no_match.clone();
        }
        let mut subs: Vec<Arc<Sub>> = found.into_iter().map(|s| s.0).collect();
        subs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        let m: Matches = subs.into();
        self.cache.insert(&event.name, m.clone());
        m
    }

    /// The last seq whose matches were looked up.
    fn looked_up(&self) -> u64 {
        self.looked_up
    }

    /// Subscriptions an event named `name` would reach.
    fn count_matching(&self, name: &str) -> usize {
        let mut found = Vec::new();
        self.trie.matches(name, &mut found);
        found.len()
    }

    /// Subscriptions registered with exactly this pattern.
    fn count_with_pattern(&self, pattern: &Pattern) -> usize {
        self.subs.values().filter(|s| &s.pattern == pattern).count()
    }

    fn by_owner(&self, owner: &str) -> Vec<Arc<Sub>> {
        self.subs
            .values()
            .filter(|s| s.owner.as_deref() == Some(owner))
            .cloned()
            .collect()
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Sub>> {
        self.subs.values()
    }

    fn len(&self) -> usize {
        self.subs.len()
    }

    #[cfg(test)]
    pub(super) fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the cache holds an entry for `name`.
    #[cfg(test)]
    pub(super) fn cached(&self, name: &str) -> bool {
        self.cache.get(name).is_some()
    }

    #[cfg(test)]
    pub(super) fn cache_hits(&self) -> u64 {
        self.cache_hits
    }
}
