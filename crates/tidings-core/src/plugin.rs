//! Plugins: components that own their subscriptions, loaded, listed,
//! reloaded and unloaded by a [`PluginHost`].
//!
//! # Contract
//!
//! * **Ownership.** A [`Plugin`] subscribes through its [`PluginContext`],
//!   which hands out the bus's own builders with the plugin's name applied
//!   once: [`PluginContext::handler`] as the owner of the subscription,
//!   [`PluginContext::event`] as the source of the event. Whatever a plugin
//!   owns is removed when it is unloaded, even if its `teardown` forgets
//!   (seed 001's "plugin unload doesn't unsubscribe" risk, closed by
//!   construction).
//! * **Between two events.** Load, unload and reload run while no event is
//!   dispatched on the bus (emits from other threads are committed and
//!   queued meanwhile, and dispatched right after). So all the
//!   subscriptions a `setup` makes start after the same seq, and an unload
//!   removes them all at one seq. The price: sync emitters on other
//!   threads wait while a change runs, so setup and teardown should be
//!   short, and, like a sync handler, must not block on another thread's
//!   emit to the same bus (emits they make themselves are queued and
//!   dispatched right after the change).
//! * **Reload** (`reload(name)`), in this order: the old instance's
//!   subscriptions are handed over at a seq `after` (they got every
//!   matching event up to it and get none after it); its `teardown` runs;
//!   a fresh instance is built by the factory the plugin was loaded with
//!   ([`PluginHost::load_with`]); it is set up. No event is dispatched in
//!   between, so the new instance's subscriptions start right after
//!   `after`: every event the plugin subscribes to reaches exactly one of
//!   the two instances, none is lost and none is delivered twice, for sync
//!   and async handlers alike.
//!   - The old instance's *async* handlers finish their share (the events
//!     up to `after`, from their queue, or from the log if their queue had
//!     overflowed) in the background and then end: they may still run after
//!     its teardown and alongside the new instance's first events.
//!   - Called from inside a handler, the event being dispatched is the
//!     boundary: the old instance's handlers that come after the caller in
//!     that event's dispatch order still get it (after its teardown); the
//!     new instance starts with the next event.
//!   - Reload reads no log for sync handlers, so it holds whatever the
//!     log keeps; async handlers read the log only when their queue
//!     overflowed, as every async handler does, and skip (with a warning,
//!     counted in `Stats::lagged`) what retention pruned meanwhile.
//!   - A reload whose setup fails or panics, or whose factory panics or
//!     builds a plugin of another name, leaves the plugin unloaded (the old
//!     instance was torn down first, as the order says) and returns the
//!     error. A panicking teardown is logged and the change goes on.
//!   - A plugin's own setup or teardown asking the host to change that
//!     same plugin gets [`PluginError::Busy`].
//! * **Host events.** After a change the host emits `plugin.loaded`,
//!   `plugin.unloaded` or `plugin.reloaded` with source `plugin-host` and
//!   data `{"name", "version"}` (a reload adds `previous_version` and
//!   `after`). They are emitted after the change, so a new instance
//!   subscribed to `plugin.*` sees its own `plugin.reloaded`. A failed emit
//!   is logged, not returned: the change happened.
//! * **Version.** [`Plugin::version`] defaults to `"0.0.0"`, meaning
//!   "unversioned" (the host's crate version would be wrong for a plugin).
//! * **Stats.** [`PluginHost::list`] gives each plugin's handler calls,
//!   errors and panics ([`Bus::owner_stats`]), counted per plugin name
//!   since it was loaded, across reloads (the registry keeps a plugin's
//!   counters while the host has it loaded).
//!
//! The host itself is in `plugin/host.rs`.

mod host;

use std::sync::Arc;

use crate::bus::{Bus, EmitBuilder, EmitError, HandlerBuilder, SubscribeError};
use crate::event::SharedEvent;
use crate::name::IntoPattern;
use crate::typed::TypedEvent;

/// The source of the host's own events.
pub const HOST_SOURCE: &str = "plugin-host";

/// The version of a plugin that does not say.
pub const UNVERSIONED: &str = "0.0.0";

/// Why loading, reloading or unloading a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A plugin of that name is already loaded.
    #[error("a plugin named {0:?} is already loaded")]
    AlreadyLoaded(String),
    /// No plugin of that name is loaded.
    #[error("no plugin named {0:?} is loaded")]
    NotLoaded(String),
    /// The plugin was loaded as an instance, without a factory.
    #[error("plugin {0:?} cannot be reloaded: it was loaded without a factory (use load_with)")]
    NotReloadable(String),
    /// The plugin's own code (its setup or teardown) asked the host to
    /// change it while the host was changing it.
    #[error("plugin {0:?} is being loaded, reloaded or unloaded")]
    Busy(String),
    /// The factory built a plugin with another name; the plugin is now
    /// unloaded.
    #[error("the factory of plugin {expected:?} built a plugin named {got:?}; it is unloaded")]
    NameMismatch { expected: String, got: String },
    /// The plugin's setup failed; its subscriptions were removed.
    #[error("plugin {plugin:?} failed to set up: {reason}")]
    Setup { plugin: String, reason: String },
    /// The plugin subscribed with a bad pattern (or no runtime).
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// An emit the plugin made (in its setup, say) failed.
    #[error(transparent)]
    Emit(#[from] EmitError),
}

/// A component reacting to events. Implementors subscribe in `setup`.
pub trait Plugin: Send + 'static {
    /// Unique name; it owns the plugin's subscriptions and is the default
    /// source of its events.
    fn name(&self) -> &str;

    /// The plugin's version, shown by [`PluginHost::list`] and in the
    /// host's events; [`UNVERSIONED`] unless overridden.
    fn version(&self) -> &str {
        UNVERSIONED
    }

    /// Subscribes (through `ctx`) and initialises.
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError>;

    /// Called on unload, before the host removes what the plugin still
    /// owns; on reload, after its subscriptions were handed over.
    fn teardown(&mut self, _ctx: &PluginContext) {}
}

/// A plugin's view of the bus: the bus's own builders, with the plugin's
/// name applied as the owner of handlers and the source of events.
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

    /// [`Bus::handler`], owned by this plugin.
    ///
    /// ```
    /// # use tidings_core::{Bus, Plugin, PluginContext, PluginError, PluginHost, Priority};
    /// struct Logger;
    /// impl Plugin for Logger {
    ///     fn name(&self) -> &str { "logger" }
    ///     fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
    ///         ctx.handler("trivia.*").priority(Priority::Low)
    ///             .sync(|e| println!("{e}"))?.keep();
    ///         Ok(())
    ///     }
    /// }
    /// let host = PluginHost::new(Bus::new());
    /// host.load_with(|| Logger).unwrap();
    /// assert_eq!(host.subscriptions("logger").len(), 1);
    /// ```
    pub fn handler<P: IntoPattern>(&self, pattern: P) -> HandlerBuilder<'_, P> {
        self.bus.handler(pattern).owner(self.owner.clone())
    }

    /// [`Bus::event`], with this plugin as the source.
    pub fn event(&self, name: impl Into<String>) -> EmitBuilder<'_> {
        self.bus.event(name).source(&*self.owner)
    }

    /// Emits a typed event through [`PluginContext::event`].
    pub fn emit_typed<T: TypedEvent>(&self, value: &T) -> Result<SharedEvent, EmitError> {
        EmitBuilder::typed(value, |name| self.event(name))
    }
}

pub use host::{PluginHost, PluginInfo, Reloaded};
