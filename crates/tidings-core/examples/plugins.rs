//! Seed 001's trivia and stats plugins, and its `!plugin list` and
//! `!plugin reload` commands: the stats plugin is reloaded (a new version)
//! in the middle of a game and counts the win that ends it; nothing is
//! missed or counted twice. Typed events keep both plugins away from raw
//! JSON.
//!
//! Run: `cargo run -p tidings-core --example plugins`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tidings_core::{typed_event, Bus, Plugin, PluginContext, PluginError, PluginHost, TypedEvent};

#[derive(Debug, Serialize, Deserialize)]
struct TriviaStarted {
    question: String,
    timeout: u32,
}
typed_event!(TriviaStarted => "trivia.started");

#[derive(Debug, Serialize, Deserialize)]
struct TriviaEnded {
    winner: String,
    answer: String,
}
typed_event!(TriviaEnded => "trivia.ended");

/// Publishes trivia events. Cloneable: the host keeps one copy, the game
/// loop another; both share the context handed over at setup.
#[derive(Clone, Default)]
struct Trivia {
    ctx: Arc<OnceLock<PluginContext>>,
}

impl Plugin for Trivia {
    fn name(&self) -> &str {
        "trivia"
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        let _ = self.ctx.set(ctx.clone());
        Ok(())
    }
}

impl Trivia {
    fn ctx(&self) -> &PluginContext {
        self.ctx.get().expect("loaded")
    }
    fn start(&self, question: &str) {
        self.ctx()
            .emit_typed(&TriviaStarted {
                question: question.into(),
                timeout: 30,
            })
            .unwrap();
    }
    fn end(&self, winner: &str, answer: &str) {
        self.ctx()
            .emit_typed(&TriviaEnded {
                winner: winner.into(),
                answer: answer.into(),
            })
            .unwrap();
    }
}

/// Tracks trivia participation. Its state lives outside the instance (as
/// a database would), so a reloaded instance carries on counting.
struct Stats {
    version: &'static str,
    wins: Arc<Mutex<HashMap<String, u32>>>,
}

impl Plugin for Stats {
    fn name(&self) -> &str {
        "stats"
    }
    fn version(&self) -> &str {
        self.version
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        let version = self.version;
        ctx.handler(TriviaStarted::PATTERN)
            .typed(move |t: &TriviaStarted, e| {
                println!(
                    "  [stats {version}] #{} trivia started: {}",
                    e.seq, t.question
                )
            })?
            .keep();
        let wins = self.wins.clone();
        ctx.handler(TriviaEnded::PATTERN)
            .typed(move |t: &TriviaEnded, e| {
                println!("  [stats {version}] #{} {} wins", e.seq, t.winner);
                *wins.lock().unwrap().entry(t.winner.clone()).or_default() += 1;
            })?
            .keep();
        Ok(())
    }
    fn teardown(&mut self, _ctx: &PluginContext) {
        println!("  [stats {}] torn down", self.version);
    }
}

/// Seed 001's plugin management commands.
fn command(host: &PluginHost, line: &str) {
    println!("> {line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["!plugin", "list"] => {
            for p in host.list() {
                let patterns: Vec<String> =
                    p.subscriptions.iter().map(|s| s.pattern.clone()).collect();
                println!(
                    "  {} {} (reloads {}): {:?}, {} calls, {} errors, {} panics",
                    p.name,
                    p.version,
                    p.reloads,
                    patterns,
                    p.stats.calls,
                    p.stats.errors,
                    p.stats.panics
                );
            }
        }
        ["!plugin", "reload", name] => match host.reload(name) {
            Ok(r) => println!(
                "  reloaded {name}: {} -> {}, the new instance takes over after #{}",
                r.previous_version, r.version, r.after
            ),
            Err(e) => println!("  error: {e}"),
        },
        _ => println!("  usage: !plugin list | !plugin reload NAME"),
    }
}

fn main() {
    let bus = Bus::new();
    let host = PluginHost::new(bus.clone());
    bus.on("plugin.*", |e| {
        println!("  [host] #{} {} {}", e.seq, e.name, e.data)
    })
    .unwrap()
    .keep();

    let wins = Arc::new(Mutex::new(HashMap::new()));
    // The "deployed" version: the factory builds whatever is deployed.
    let upgraded = Arc::new(AtomicBool::new(false));
    let (w, u) = (wins.clone(), upgraded.clone());
    host.load_with(move || Stats {
        version: if u.load(Ordering::SeqCst) {
            "1.1.0"
        } else {
            "1.0.0"
        },
        wins: w.clone(),
    })
    .unwrap();
    let trivia = Trivia::default();
    host.load(trivia.clone()).unwrap();
    command(&host, "!plugin list");

    trivia.start("What is 6 x 7?");
    trivia.end("ann", "42");

    // A new stats version is deployed in the middle of the next game.
    trivia.start("Capital of France?");
    upgraded.store(true, Ordering::SeqCst);
    command(&host, "!plugin reload stats");
    trivia.end("bob", "Paris");
    command(&host, "!plugin reload trivia");
    command(&host, "!plugin list");
    println!("wins: {:?}", wins.lock().unwrap());

    let removed = host.unload("stats").unwrap();
    println!("unloaded stats: {removed} subscriptions removed");
    trivia.end("cat", "late");
    println!("wins after unload (unchanged): {:?}", wins.lock().unwrap());
    for e in bus.history(20, Some("trivia.>")).unwrap() {
        println!("  #{} {} from {}", e.seq, e.name, e.source);
    }
}
