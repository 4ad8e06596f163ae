//! [`PluginHost`]: loads, lists, reloads and unloads plugins, keeping the
//! contract stated in the parent module (`plugin.rs`): every change runs
//! between two events ([`Bus`]'s exclusive section), a reload hands the old
//! instance's subscriptions over at one seq and the new instance starts
//! right after it, and each change is announced with a host event.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;

use super::{Plugin, PluginContext, PluginError, HOST_SOURCE};
use crate::bus::{panic_message, Bus, OwnerStats, SubscriptionInfo};

/// What [`PluginHost::list`] tells about one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    /// Whether it was loaded with a factory ([`PluginHost::load_with`]).
    pub reloadable: bool,
    /// Reloads since it was loaded.
    pub reloads: u64,
    /// The subscriptions it owns now, in registration order.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// Its handlers' calls, errors and panics (see the module contract).
    pub stats: OwnerStats,
}

/// What [`PluginHost::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub previous_version: String,
    pub version: String,
    /// The old instance got the plugin's events up to this seq, the new
    /// one gets those after it.
    pub after: u64,
}

/// Builds a fresh instance of a plugin.
type Factory = Box<dyn Fn() -> Box<dyn Plugin> + Send + Sync>;

/// One loaded plugin.
struct Entry {
    name: Arc<str>,
    factory: Option<Factory>,
    /// The instance. Locked only inside the host's exclusive sections,
    /// across the plugin's own code (setup, teardown).
    instance: Mutex<Option<Box<dyn Plugin>>>,
    /// What `list` reads; never locked across plugin code.
    info: Mutex<Info>,
}

struct Info {
    version: String,
    reloads: u64,
}

/// Loads, lists, reloads and unloads plugins on one bus.
pub struct PluginHost {
    bus: Bus,
    /// Invariant: names are unique; each entry's setup succeeded. Changed
    /// only inside `Bus::exclusive`, so changes are serialized.
    plugins: Mutex<Vec<Arc<Entry>>>,
}

impl PluginHost {
    /// A host for plugins on `bus`.
    pub fn new(bus: Bus) -> Self {
        PluginHost {
            bus,
            plugins: Mutex::new(Vec::new()),
        }
    }

    fn context(&self, owner: Arc<str>) -> PluginContext {
        PluginContext {
            bus: self.bus.clone(),
            owner,
        }
    }

    /// Sets up and registers a plugin instance; it cannot be reloaded (see
    /// [`PluginHost::load_with`]). If setup fails, whatever it subscribed
    /// is removed and the error returned.
    pub fn load(&self, plugin: impl Plugin) -> Result<(), PluginError> {
        self.load_boxed(Box::new(plugin), None)
    }

    /// Builds a plugin with `factory`, sets it up and registers it; the
    /// factory is kept so [`PluginHost::reload`] can build a fresh one.
    pub fn load_with<P, F>(&self, factory: F) -> Result<(), PluginError>
    where
        P: Plugin,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let first = Box::new(factory());
        self.load_boxed(first, Some(Box::new(move || Box::new(factory()))))
    }

    fn load_boxed(
        &self,
        mut plugin: Box<dyn Plugin>,
        factory: Option<Factory>,
    ) -> Result<(), PluginError> {
        let name: Arc<str> = plugin.name().into();
        let version = plugin.version().to_owned();
        self.bus.exclusive(|| {
            if self.find(&name).is_some() {
                return Err(PluginError::AlreadyLoaded(name.to_string()));
            }
            self.bus.pin_owner(&name, true);
            set_up(&mut *plugin, &self.context(name.clone())).inspect_err(|_| {
                self.remove_owned(&name);
            })?;
            self.plugins.lock().push(Arc::new(Entry {
                name: name.clone(),
                factory,
                instance: Mutex::new(Some(plugin)),
                info: Mutex::new(Info {
                    version: version.clone(),
                    reloads: 0,
                }),
            }));
            Ok(())
        })?;
        self.announce("plugin.loaded", json!({"name": &*name, "version": version}));
        Ok(())
    }

    /// Replaces a plugin with a fresh instance from its factory, neither
    /// losing nor doubling any event it is subscribed to (see the module
    /// contract for the order and the guarantees).
    pub fn reload(&self, name: &str) -> Result<Reloaded, PluginError> {
        let (before, out) = self.bus.exclusive(|| {
            let before = self.find(name).map(|e| e.info.lock().version.clone());
            (before, self.reload_now(name))
        });
        match &out {
            Ok(r) => self.announce(
                "plugin.reloaded",
                json!({"name": name, "version": r.version,
                       "previous_version": r.previous_version, "after": r.after}),
            ),
            // The old instance was torn down and no new one runs.
            Err(PluginError::Setup { .. } | PluginError::NameMismatch { .. }) => {
                self.announce("plugin.unloaded", json!({"name": name, "version": before}))
            }
            Err(_) => {}
        }
        out
    }

    /// The body of `reload`, between two events.
    fn reload_now(&self, name: &str) -> Result<Reloaded, PluginError> {
        let entry = self
            .find(name)
            .ok_or_else(|| PluginError::NotLoaded(name.to_owned()))?;
        let factory = entry
            .factory
            .as_ref()
            .ok_or_else(|| PluginError::NotReloadable(name.to_owned()))?;
        let mut slot = entry
            .instance
            .try_lock()
            .ok_or_else(|| PluginError::Busy(name.to_owned()))?;
        let ctx = self.context(entry.name.clone());
        let (_, after) = self.bus.hand_over(&entry.name);
        if let Some(old) = slot.take() {
            tear_down(old, &ctx);
        }
        // Anything its teardown subscribed is not the new instance's.
        self.bus.unsubscribe_all(&entry.name);
        let built = catch_unwind(AssertUnwindSafe(factory)).map_err(|p| PluginError::Setup {
            plugin: name.to_owned(),
            reason: format!("its factory panicked: {}", panic_message(&*p)),
        });
        let mut fresh = match built {
            Ok(fresh) if fresh.name() == &*entry.name => fresh,
            other => {
                self.forget(&entry);
                self.remove_owned(&entry.name);
                return Err(match other {
                    Ok(fresh) => PluginError::NameMismatch {
                        expected: name.to_owned(),
                        got: fresh.name().to_owned(),
                    },
                    Err(e) => e,
                });
            }
        };
        if let Err(e) = set_up(&mut *fresh, &ctx) {
            self.forget(&entry);
            self.remove_owned(&entry.name);
            return Err(e);
        }
        let version = fresh.version().to_owned();
        *slot = Some(fresh);
        let mut info = entry.info.lock();
        info.reloads += 1;
        let previous_version = std::mem::replace(&mut info.version, version.clone());
        Ok(Reloaded {
            previous_version,
            version,
            after,
        })
    }

    /// Tears a plugin down and removes every subscription it still owns;
    /// returns how many were removed.
    pub fn unload(&self, name: &str) -> Result<usize, PluginError> {
        let (removed, version) = self.bus.exclusive(|| {
            let entry = self
                .find(name)
                .ok_or_else(|| PluginError::NotLoaded(name.to_owned()))?;
            let mut slot = entry
                .instance
                .try_lock()
                .ok_or_else(|| PluginError::Busy(name.to_owned()))?;
            self.forget(&entry);
            if let Some(plugin) = slot.take() {
                tear_down(plugin, &self.context(entry.name.clone()));
            }
            let version = entry.info.lock().version.clone();
            Ok::<_, PluginError>((self.remove_owned(&entry.name), version))
        })?;
        self.announce("plugin.unloaded", json!({"name": name, "version": version}));
        Ok(removed)
    }

    /// Every loaded plugin, in load order: name, version, subscriptions and
    /// stats (seed 001's `!plugin list`).
    pub fn list(&self) -> Vec<PluginInfo> {
        let entries: Vec<Arc<Entry>> = self.plugins.lock().clone();
        entries
            .iter()
            .map(|e| {
                let (version, reloads) = {
                    let info = e.info.lock();
                    (info.version.clone(), info.reloads)
                };
                PluginInfo {
                    name: e.name.to_string(),
                    version,
                    reloadable: e.factory.is_some(),
                    reloads,
                    subscriptions: self.bus.subscriptions(Some(&e.name)),
                    stats: self.bus.owner_stats(&e.name).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Whether a plugin of that name is loaded.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Names of the loaded plugins, in load order.
    pub fn loaded(&self) -> Vec<String> {
        self.plugins
            .lock()
            .iter()
            .map(|e| e.name.to_string())
            .collect()
    }

    /// The subscriptions a plugin owns.
    pub fn subscriptions(&self, name: &str) -> Vec<SubscriptionInfo> {
        self.bus.subscriptions(Some(name))
    }

    fn find(&self, name: &str) -> Option<Arc<Entry>> {
        self.plugins
            .lock()
            .iter()
            .find(|e| &*e.name == name)
            .cloned()
    }

    /// Removes whatever `owner` still subscribes and stops keeping its
    /// counters; returns how many subscriptions were removed.
    fn remove_owned(&self, owner: &Arc<str>) -> usize {
        let removed = self.bus.unsubscribe_all(owner);
        self.bus.pin_owner(owner, false);
        removed
    }

    /// Drops an entry from the list.
    fn forget(&self, entry: &Arc<Entry>) {
        self.plugins.lock().retain(|e| !Arc::ptr_eq(e, entry));
    }

    fn announce(&self, name: &'static str, data: serde_json::Value) {
        let emitted = self.bus.event(name).source(HOST_SOURCE).data(data).emit();
        if let Err(error) = emitted {
            tracing::warn!(event = name, %error, "plugin host could not emit");
        }
    }
}

/// Runs a plugin's setup; an error or a panic becomes
/// [`PluginError::Setup`], named after the plugin.
fn set_up(plugin: &mut dyn Plugin, ctx: &PluginContext) -> Result<(), PluginError> {
    let reason = match catch_unwind(AssertUnwindSafe(|| plugin.setup(ctx))) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e @ PluginError::Setup { .. })) => return Err(e),
        Ok(Err(other)) => other.to_string(),
        Err(panic) => format!("it panicked: {}", panic_message(&*panic)),
    };
    Err(PluginError::Setup {
        plugin: ctx.owner().to_owned(),
        reason,
    })
}

/// Runs a plugin's teardown; a panic is logged (the host goes on removing
/// what the plugin owns).
fn tear_down(mut plugin: Box<dyn Plugin>, ctx: &PluginContext) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| plugin.teardown(ctx))) {
        let message = panic_message(&*panic);
        tracing::error!(plugin = ctx.owner(), %message, "plugin teardown panicked");
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        for n in self.loaded().iter().rev() {
            let _ = self.unload(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::plugin::UNVERSIONED;

    /// Counts `tick`s; its version and name come from the factory.
    struct Ticker {
        name: &'static str,
        version: &'static str,
        seen: Arc<AtomicUsize>,
        fail: bool,
    }

    impl Plugin for Ticker {
        fn name(&self) -> &str {
            self.name
        }
        fn version(&self) -> &str {
            self.version
        }
        fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
            let seen = self.seen.clone();
            ctx.handler("tick")
                .sync(move |_| {
                    seen.fetch_add(1, Ordering::SeqCst);
                })?
                .keep();
            if self.fail {
                return Err(PluginError::Setup {
                    plugin: self.name.into(),
                    reason: "no config".into(),
                });
            }
            Ok(())
        }
    }

    fn ticker(seen: &Arc<AtomicUsize>) -> Ticker {
        Ticker {
            name: "ticker",
            version: "1.0.0",
            seen: seen.clone(),
            fail: false,
        }
    }

    struct Bare;
    impl Plugin for Bare {
        fn name(&self) -> &str {
            "bare"
        }
        fn setup(&mut self, _: &PluginContext) -> Result<(), PluginError> {
            Ok(())
        }
    }

    fn host_events(bus: &Bus) -> Vec<(String, serde_json::Value)> {
        bus.history(100, Some("plugin.*"))
            .unwrap()
            .iter()
            .inspect(|e| assert_eq!(e.source, HOST_SOURCE))
            .map(|e| (e.name.to_string(), e.data.clone()))
            .collect()
    }

    #[test]
    fn an_instance_is_unversioned_and_cannot_be_reloaded() {
        let host = PluginHost::new(Bus::new());
        host.load(Bare).unwrap();
        let list = host.list();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].version.as_str(), list[0].reloadable),
            (UNVERSIONED, false)
        );
        let err = host.reload("bare").unwrap_err();
        assert!(
            matches!(&err, PluginError::NotReloadable(n) if n == "bare"),
            "{err}"
        );
        assert!(err.to_string().contains("load_with"), "{err}");
        assert!(host.is_loaded("bare"));
        assert!(matches!(
            host.reload("nope"),
            Err(PluginError::NotLoaded(_))
        ));
    }

    #[test]
    fn the_host_announces_load_reload_and_unload() {
        let bus = Bus::new();
        let host = PluginHost::new(bus.clone());
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        host.load_with(move || ticker(&s)).unwrap();
        bus.emit("tick", json!(null)).unwrap();
        let r = host.reload("ticker").unwrap();
        assert_eq!(
            (r.previous_version.as_str(), r.version.as_str()),
            ("1.0.0", "1.0.0")
        );
        assert_eq!(
            r.after,
            bus.last_seq() - 1,
            "after = the last seq before the event"
        );
        bus.emit("tick", json!(null)).unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert_eq!(host.unload("ticker").unwrap(), 1);
        let ev = host_events(&bus);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["plugin.loaded", "plugin.reloaded", "plugin.unloaded"]
        );
        assert_eq!(ev[0].1, json!({"name": "ticker", "version": "1.0.0"}));
        assert_eq!(ev[1].1["after"], json!(r.after));
        assert_eq!(ev[2].1, json!({"name": "ticker", "version": "1.0.0"}));
    }

    #[test]
    fn a_factory_that_renames_the_plugin_unloads_it() {
        let bus = Bus::new();
        let host = PluginHost::new(bus.clone());
        let seen = Arc::new(AtomicUsize::new(0));
        let (s, builds) = (seen.clone(), AtomicUsize::new(0));
        host.load_with(move || Ticker {
            name: if builds.fetch_add(1, Ordering::SeqCst) == 0 {
                "ticker"
            } else {
                "other"
            },
            ..ticker(&s)
        })
        .unwrap();
        let err = host.reload("ticker").unwrap_err();
        assert!(
            matches!(&err, PluginError::NameMismatch { expected, got } if expected == "ticker" && got == "other"),
            "{err}"
        );
        assert!(!host.is_loaded("ticker"));
        assert_eq!(bus.stats().subscriptions, 0);
        assert_eq!(
            host_events(&bus).last().unwrap(),
            &(
                "plugin.unloaded".to_owned(),
                json!({"name": "ticker", "version": "1.0.0"})
            )
        );
    }

    /// Panics in teardown, and in setup from the second build on.
    struct Fragile(usize);
    impl Plugin for Fragile {
        fn name(&self) -> &str {
            "fragile"
        }
        fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
            ctx.handler("x").sync(|_| ())?.keep();
            assert!(self.0 < 2, "setup exploded");
            Ok(())
        }
        fn teardown(&mut self, _: &PluginContext) {
            panic!("teardown exploded");
        }
    }

    #[test]
    fn panics_in_teardown_and_setup_are_contained() {
        let bus = Bus::new();
        let host = PluginHost::new(bus.clone());
        let builds = AtomicUsize::new(0);
        host.load_with(move || Fragile(builds.fetch_add(1, Ordering::SeqCst)))
            .unwrap();
        // The old teardown panics: logged, the reload goes on.
        host.reload("fragile").unwrap();
        assert_eq!(host.subscriptions("fragile").len(), 1);
        // The third build's setup panics: an error, the plugin is unloaded.
        let err = host.reload("fragile").unwrap_err();
        assert!(matches!(err, PluginError::Setup { .. }), "{err}");
        assert!(err.to_string().contains("setup exploded"), "{err}");
        assert!(!host.is_loaded("fragile"));
        assert_eq!(bus.stats().subscriptions, 0);
        assert_eq!(bus.owner_stats("fragile"), None, "its counters are dropped");
        // The bus still dispatches.
        bus.emit("x", json!(null)).unwrap();
    }

    /// Asks its own host to reload it from its teardown.
    struct Selfish {
        host: Arc<std::sync::OnceLock<std::sync::Weak<PluginHost>>>,
        answer: Arc<Mutex<Option<String>>>,
    }
    impl Plugin for Selfish {
        fn name(&self) -> &str {
            "selfish"
        }
        fn setup(&mut self, _: &PluginContext) -> Result<(), PluginError> {
            Ok(())
        }
        fn teardown(&mut self, _: &PluginContext) {
            // (Gone when the host itself is being dropped.)
            let Some(host) = self.host.get().and_then(|h| h.upgrade()) else {
                return;
            };
            let answer = host
                .reload("selfish")
                .map(|_| ())
                .map_err(|e| e.to_string());
            *self.answer.lock() = answer.err();
        }
    }

    #[test]
    fn a_plugin_changing_itself_from_its_own_teardown_gets_busy() {
        let host = Arc::new(PluginHost::new(Bus::new()));
        let cell = Arc::new(std::sync::OnceLock::new());
        cell.set(Arc::downgrade(&host)).unwrap();
        let answer = Arc::new(Mutex::new(None));
        let (c, a) = (cell.clone(), answer.clone());
        host.load_with(move || Selfish {
            host: c.clone(),
            answer: a.clone(),
        })
        .unwrap();
        host.reload("selfish").unwrap();
        let answer = answer.lock().clone().expect("the inner reload failed");
        assert!(
            answer.contains("is being loaded, reloaded or unloaded"),
            "{answer}"
        );
        assert_eq!(host.list()[0].reloads, 1, "the outer reload went through");
    }

    #[test]
    fn counters_of_an_owner_without_subscriptions_are_dropped() {
        let bus = Bus::new();
        let sub = bus.handler("x").owner("temp").sync(|_| ()).unwrap();
        bus.emit("x", json!(null)).unwrap();
        assert_eq!(bus.owner_stats("temp").map(|s| s.calls), Some(1));
        drop(sub);
        assert_eq!(bus.owner_stats("temp"), None);
    }

    #[test]
    fn a_reload_whose_setup_fails_leaves_nothing_behind() {
        let bus = Bus::new();
        let host = PluginHost::new(bus.clone());
        let seen = Arc::new(AtomicUsize::new(0));
        let (s, builds) = (seen.clone(), AtomicUsize::new(0));
        host.load_with(move || Ticker {
            fail: builds.fetch_add(1, Ordering::SeqCst) > 0,
            ..ticker(&s)
        })
        .unwrap();
        let err = host.reload("ticker").unwrap_err();
        assert!(err.to_string().contains("no config"), "{err}");
        assert!(!host.is_loaded("ticker"));
        assert_eq!(bus.stats().subscriptions, 0);
        bus.emit("tick", json!(null)).unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }
}
