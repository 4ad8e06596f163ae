//! Seed 001's trivia and stats plugins: the stats plugin owns its
//! subscriptions and loses them when unloaded. Typed events keep both
//! plugins away from raw JSON.
//!
//! Run: `cargo run -p tidings-core --example plugins`

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tidings_core::{typed_event, Bus, Plugin, PluginContext, PluginError, PluginHost};

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

/// Tracks trivia participation.
struct Stats {
    wins: Arc<Mutex<HashMap<String, u32>>>,
}

impl Plugin for Stats {
    fn name(&self) -> &str {
        "stats"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        ctx.on_typed(|t: &TriviaStarted, e| {
            println!("  [stats] #{} trivia started: {}", e.seq, t.question)
        })?;
        let wins = self.wins.clone();
        ctx.on_typed(move |t: &TriviaEnded, _| {
            *wins.lock().unwrap().entry(t.winner.clone()).or_default() += 1;
        })?;
        Ok(())
    }
}

fn main() {
    let bus = Bus::new();
    let host = PluginHost::new(bus.clone());
    let wins = Arc::new(Mutex::new(HashMap::new()));
    host.load(Stats { wins: wins.clone() }).unwrap();
    println!(
        "stats owns {} subscriptions",
        host.subscriptions("stats").len()
    );

    let trivia = Trivia::default();
    host.load(trivia.clone()).unwrap();

    trivia.start("What is 6 x 7?");
    trivia.end("ann", "42");
    trivia.start("Capital of France?");
    trivia.end("ann", "Paris");
    println!("wins: {:?}", wins.lock().unwrap());

    let removed = host.unload("stats").unwrap();
    println!("unloaded stats: {removed} subscriptions removed");
    trivia.end("bob", "late");
    println!("wins after unload (unchanged): {:?}", wins.lock().unwrap());
    for e in bus.history(10, Some("trivia.>")).unwrap() {
        println!("  #{} {} from {}", e.seq, e.name, e.source);
    }
}
