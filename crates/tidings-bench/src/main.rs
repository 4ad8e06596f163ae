//! `tidings-bench SCENARIO [options]`: measures Tidings and its peer in the
//! same run; progress on stderr, the result as the last line on stdout
//! (one JSON object). See BENCHMARKS.md at the workspace root.
//!
//! Exit status: 0 when every side measured cleanly (whether or not the
//! goal was met); 3 when the goal is blocked (a side, the headline pair's
//! or any other the scenario measures, failed a run or lost events:
//! `goal_blocked_by` in the line says which), so a script cannot
//! take a run with a broken peer for a result; 1 when a soak found loss
//! or a stall; any other failure to measure is an error (status 1, with
//! its message on stderr). One exception: `memory` reports its peer as
//! none when no `nats-server` binary is found (its goal is Tidings' own
//! bytes per connection).

use clap::{Parser, Subcommand};
use tidings_bench::scenarios::{
    churn, durable, fanout, inproc, latency, memory, patterns, publish, replay, soak,
};

#[derive(Parser)]
#[command(
    name = "tidings-bench",
    about = "Measures Tidings against a peer in the same run; prints one JSON line last"
)]
struct Cli {
    /// Runs per side: each scenario with a peer measures both sides this
    /// many times, taking turns at going first, and reports median, min
    /// and max (soak and churn have their own schedules).
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Bus::emit + one sync handler vs tokio::sync::broadcast of Arc<Envelope>.
    Inproc(inproc::Args),
    /// Emit rate with 10,000 wildcard subscriptions vs a linear scan.
    Patterns(patterns::Args),
    /// Acknowledged SQLite appends vs JetStream (batch) and the disk's fsync limit (sync), 32 and 1000 in flight.
    Durable(durable::Args),
    /// Server WebSocket fan-out to 100 subscribers vs NATS core.
    Fanout(fanout::Args),
    /// Catch-up reads from the SQLite log vs rusqlite with the same threads, read-ahead and pragmas.
    Replay(replay::Args),
    /// Publish -> WebSocket / SSE latency at 10k events/s (open loop) vs NATS core.
    Latency(latency::Args),
    /// RSS per idle WebSocket connection (separate server process) vs nats-server.
    Memory(memory::Args),
    /// Long run of a server process: RSS over time, loss, stalled clients dropped.
    Soak(soak::Args),
    /// Delivery throughput and latency with and without subscribe/unsubscribe churn.
    Churn(churn::Args),
    /// Acknowledged single-event HTTP publishes/s of server processes on SQLite, NATS and Redis.
    Publish(publish::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (report, ok) = match &cli.scenario {
        Scenario::Soak(a) => soak::run(a)?,
        other => (run_other(other, cli.runs)?, true),
    };
    println!("{}", report.to_line());
    if !ok {
        std::process::exit(1);
    }
    if let Some(why) = report.blocked_by() {
        eprintln!("goal blocked: {why}");
        std::process::exit(3);
    }
    Ok(())
}

fn run_other(scenario: &Scenario, runs: usize) -> anyhow::Result<tidings_bench::Report> {
    Ok(match scenario {
        Scenario::Inproc(a) => inproc::run(a, runs)?,
        Scenario::Patterns(a) => patterns::run(a, runs)?,
        Scenario::Durable(a) => durable::run(a, runs)?,
        Scenario::Fanout(a) => fanout::run(a, runs)?,
        Scenario::Replay(a) => replay::run(a, runs)?,
        Scenario::Latency(a) => latency::run(a, runs)?,
        Scenario::Memory(a) => memory::run(a, runs)?,
        Scenario::Churn(a) => churn::run(a)?,
        Scenario::Publish(a) => publish::run(a, runs)?,
        Scenario::Soak(_) => unreachable!("soak is run by main"),
    })
}
