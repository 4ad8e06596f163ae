//! Plugins: components that own their subscriptions.
//!
//! A [`Plugin`] subscribes through its [`PluginContext`], so every
//! subscription it makes is owned by its name. [`PluginHost::unload`] calls
//! its `teardown` and then removes whatever it still owns, so a plugin that
//! forgets to unsubscribe leaks nothing (seed 001's "plugin unload doesn't
//! unsubscribe" risk, closed by construction).

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::bus::{Bus, EmitError, HandlerResult, SubscribeError, SubscriptionInfo};
use crate::event::{Event, Priority, SharedEvent};
use crate::name::IntoPattern;
use crate::typed::TypedEvent;

/// Why loading or unloading a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A plugin of that name is already loaded.
    #[error("a plugin named {0:?} is already loaded")]
    AlreadyLoaded(String),
    /// No plugin of that name is loaded.
    #[error("no plugin named {0:?} is loaded")]
    NotLoaded(String),
    /// The plugin's setup failed; its subscriptions were removed.
    #[error("plugin {plugin:?} failed to set up: {reason}")]
    Setup { plugin: String, reason: String },
    /// The plugin subscribed with a bad pattern (or no runtime).
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
}

/// A component reacting to events. Implementors subscribe in `setup`.
pub trait Plugin: Send + 'static {
    /// Unique name; it owns the plugin's subscriptions and is the default
    /// source of its events.
    fn name(&self) -> &str;

    /// Subscribes (through `ctx`) and initialises.
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError>;

    /// Called on unload, before the host removes what the plugin still owns.
    fn teardown(&mut self, _ctx: &PluginContext) {}
}

/// A plugin's view of the bus: subscriptions made here are owned by it.
#[derive(Clone)]
pub struct PluginContext {
    bus: Bus,
    owner: Arc<str>,
}

impl PluginContext {
    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The owning plugin's name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// An owned sync handler at `priority`; returns its id.
    pub fn on_with<P, F, R>(
        &self,
        pattern: P,
        priority: Priority,
        f: F,
    ) -> Result<u64, SubscribeError>
    where
        P: IntoPattern,
        F: Fn(&SharedEvent) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        Ok(self
            .bus
            .handler(pattern)
            .owner(self.owner.clone())
            .priority(priority)
            .sync(f)?
            .detach())
    }

    /// An owned sync handler (normal priority); returns its id.
    pub fn on<P, F, R>(&self, pattern: P, f: F) -> Result<u64, SubscribeError>
    where
        P: IntoPattern,
        F: Fn(&SharedEvent) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.on_with(pattern, Priority::Normal, f)
    }

    /// An owned async handler; returns its id.
    pub fn on_async<P, F, Fut, R>(&self, pattern: P, f: F) -> Result<u64, SubscribeError>
    where
        P: IntoPattern,
        F: Fn(SharedEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
    {
        Ok(self
            .bus
            .handler(pattern)
            .owner(self.owner.clone())
            .run_async(f)?
            .detach())
    }

    /// An owned typed handler; returns its id.
    pub fn on_typed<T, F, R>(&self, f: F) -> Result<u64, SubscribeError>
    where
        T: TypedEvent,
        F: Fn(&T, &Event) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        Ok(self
            .bus
            .handler(T::PATTERN)
            .owner(self.owner.clone())
            .typed(f)?
            .detach())
    }

    /// Emits with this plugin as the source.
    pub fn emit(
        &self,
        name: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<SharedEvent, EmitError> {
        self.bus.event(name).data(data).source(&*self.owner).emit()
    }

    /// Emits a typed event with this plugin as the source.
    pub fn emit_typed<T: TypedEvent>(&self, value: &T) -> Result<SharedEvent, EmitError> {
        let data = serde_json::to_value(value).map_err(EmitError::Serialize)?;
        self.bus
            .event(value.name().into_owned())
            .data(data)
            .source(&*self.owner)
            .emit()
    }
}

/// A loaded plugin and the name that owns its subscriptions.
type Loaded = (Arc<str>, Box<dyn Plugin>);

/// Loads and unloads plugins on one bus.
pub struct PluginHost {
    bus: Bus,
    /// Invariant: names are unique; each loaded plugin's setup succeeded.
    plugins: Mutex<Vec<Loaded>>,
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

    /// Sets up and registers a plugin. If setup fails, whatever it
    /// subscribed is removed and the error returned.
    pub fn load(&self, mut plugin: impl Plugin) -> Result<(), PluginError> {
        let name: Arc<str> = plugin.name().into();
        if self.is_loaded(&name) {
            return Err(PluginError::AlreadyLoaded(name.to_string()));
        }
        let ctx = self.context(name.clone());
        if let Err(e) = plugin.setup(&ctx) {
            self.bus.unsubscribe_all(&name);
            return Err(match e {
                PluginError::Setup { .. } => e,
                other => PluginError::Setup {
                    plugin: name.to_string(),
                    reason: other.to_string(),
                },
            });
        }
        self.plugins.lock().push((name, Box::new(plugin)));
        Ok(())
    }

    /// Tears a plugin down and removes every subscription it still owns;
    /// returns how many were removed.
    pub fn unload(&self, name: &str) -> Result<usize, PluginError> {
        let (owner, mut plugin) = {
            let mut plugins = self.plugins.lock();
            let i = plugins
                .iter()
                .position(|(n, _)| &**n == name)
                .ok_or_else(|| PluginError::NotLoaded(name.to_owned()))?;
            plugins.remove(i)
        };
        let ctx = self.context(owner.clone());
        plugin.teardown(&ctx);
        Ok(self.bus.unsubscribe_all(&owner))
    }

    /// Whether a plugin of that name is loaded.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.plugins.lock().iter().any(|(n, _)| &**n == name)
    }

    /// Names of the loaded plugins, in load order.
    pub fn loaded(&self) -> Vec<String> {
        self.plugins
            .lock()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// The subscriptions a plugin owns.
    pub fn subscriptions(&self, name: &str) -> Vec<SubscriptionInfo> {
        self.bus.subscriptions(Some(name))
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        let names: Vec<Arc<str>> = self.plugins.lock().iter().map(|(n, _)| n.clone()).collect();
        for n in names.iter().rev() {
            let _ = self.unload(n);
        }
    }
}
