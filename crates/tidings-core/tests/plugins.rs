//! Plugins own their subscriptions; unloading removes them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tidings_core::{Bus, Plugin, PluginContext, PluginError, PluginHost, Priority};

struct Stats {
    started: Arc<AtomicUsize>,
    torn_down: Arc<AtomicBool>,
}

impl Plugin for Stats {
    fn name(&self) -> &str {
        "stats"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        let started = self.started.clone();
        ctx.handler("trivia.started")
            .sync(move |_| {
                started.fetch_add(1, Ordering::SeqCst);
            })?
            .keep();
        ctx.handler("trivia.*")
            .priority(Priority::Low)
            .sync(|_| ())?
            .keep();
        Ok(())
    }
    fn teardown(&mut self, _ctx: &PluginContext) {
        self.torn_down.store(true, Ordering::SeqCst);
    }
}

fn stats() -> (Stats, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let started = Arc::new(AtomicUsize::new(0));
    let torn = Arc::new(AtomicBool::new(false));
    (
        Stats {
            started: started.clone(),
            torn_down: torn.clone(),
        },
        started,
        torn,
    )
}

#[test]
fn unloading_removes_everything_the_plugin_owns() {
    let bus = Bus::new();
    let host = PluginHost::new(bus.clone());
    let (plugin, started, torn) = stats();
    host.load(plugin).unwrap();
    assert_eq!(host.loaded(), vec!["stats"]);
    assert_eq!(host.subscriptions("stats").len(), 2);
    bus.emit("trivia.started", json!({"question": "?"}))
        .unwrap();
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert_eq!(host.unload("stats").unwrap(), 2);
    assert!(torn.load(Ordering::SeqCst));
    bus.emit("trivia.started", json!({"question": "?"}))
        .unwrap();
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert_eq!(bus.stats().subscriptions, 0);
}

#[test]
fn names_are_unique_and_unknown_unloads_fail() {
    let host = PluginHost::new(Bus::new());
    host.load(stats().0).unwrap();
    assert!(matches!(host.load(stats().0), Err(PluginError::AlreadyLoaded(n)) if n == "stats"));
    assert!(matches!(
        host.unload("nope"),
        Err(PluginError::NotLoaded(_))
    ));
}

struct Broken;
impl Plugin for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        ctx.handler("fine.pattern").sync(|_| ())?.keep();
        ctx.handler("bad..pattern").sync(|_| ())?.keep();
        Ok(())
    }
}

#[test]
fn a_failed_setup_leaves_no_subscription_behind() {
    let bus = Bus::new();
    let host = PluginHost::new(bus.clone());
    let err = host.load(Broken).unwrap_err();
    assert!(matches!(err, PluginError::Setup { .. }), "{err}");
    assert!(err.to_string().contains("empty token"), "{err}");
    assert!(!host.is_loaded("broken"));
    assert_eq!(bus.stats().subscriptions, 0);
}

struct Echo(Arc<Mutex<Vec<String>>>);
impl Plugin for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        let out = self.0.clone();
        let me = ctx.clone();
        ctx.handler("ping")
            .sync(move |e| {
                out.lock().unwrap().push(e.source.to_string());
                me.event("pong").emit().map(|_| ())
            })?
            .keep();
        Ok(())
    }
}

#[test]
fn plugin_emits_carry_its_name_as_source() {
    let bus = Bus::new();
    let host = PluginHost::new(bus.clone());
    host.load(Echo(Arc::new(Mutex::new(Vec::new())))).unwrap();
    bus.emit("ping", json!(null)).unwrap();
    let h = bus.history(10, Some("pong")).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].source, "echo");
}

#[test]
fn dropping_the_host_unloads_its_plugins() {
    let bus = Bus::new();
    let (plugin, _, torn) = stats();
    {
        let host = PluginHost::new(bus.clone());
        host.load(plugin).unwrap();
        assert_eq!(bus.stats().subscriptions, 2);
    }
    assert!(torn.load(Ordering::SeqCst));
    assert_eq!(bus.stats().subscriptions, 0);
}

/// Watches the host's events and says hello in its setup.
struct Greeter(Arc<Mutex<Vec<String>>>);
impl Plugin for Greeter {
    fn name(&self) -> &str {
        "greeter"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        let seen = self.0.clone();
        ctx.handler("plugin.>")
            .sync(move |e| {
                let line = format!("{} {}", e.name, e.data["name"].as_str().unwrap_or("?"));
                seen.lock().unwrap().push(line);
            })?
            .keep();
        // An emit from setup is queued and dispatched after the change.
        ctx.event("greeter.ready").emit()?;
        Ok(())
    }
}

#[test]
fn a_new_instance_sees_its_own_host_event_and_its_setup_emits() {
    let bus = Bus::new();
    let host = PluginHost::new(bus.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    host.load_with(move || Greeter(s.clone())).unwrap();
    let r = host.reload("greeter").unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["plugin.loaded greeter", "plugin.reloaded greeter"],
        "each instance sees the event announcing it, the old one not the reload"
    );
    let names: Vec<(u64, String, String)> = bus
        .history(10, None)
        .unwrap()
        .iter()
        .map(|e| (e.seq, e.name.to_string(), e.source.to_string()))
        .collect();
    let strs: Vec<(&str, &str)> = names
        .iter()
        .map(|(_, n, s)| (n.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        strs,
        [
            ("greeter.ready", "greeter"),
            ("plugin.loaded", "plugin-host"),
            ("greeter.ready", "greeter"),
            ("plugin.reloaded", "plugin-host"),
        ]
    );
    // The handover seq is the last event before the reload.
    assert_eq!(r.after, names[1].0);
}
