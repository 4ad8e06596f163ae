//! Acked appends per second through JetStream: `NatsLog` against raw
//! async-nats JetStream publishes, in the same run, on the same server.
//!
//! ```text
//! cargo run --release -p tidings-nats --example nats_figures [RUNS] [SIDE]
//! ```
//!
//! Each scenario runs RUNS times (default 5), alternating which side goes
//! first; the median, min and max of each side are printed. With SIDE
//! (`log`, `raw` or `raw-read`) only that side's one-at-a-time appends run,
//! RUNS times, each rate printed: a process to profile, or to measure with
//! `perf stat`, one side at a time.
//!
//! The server is `TIDINGS_TEST_NATS` (default `nats://127.0.0.1:4222`); each
//! scenario uses a fresh file-backed stream, deleted afterwards. The payload
//! is the same event envelope in both cases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::json;
use tidings_core::{EventLog, NewEvent};
use tidings_nats::{NatsLog, NatsOptions};

const SEQUENTIAL: u64 = 5_000;
const CONCURRENT: u64 = 20_000;
const IN_FLIGHT: u64 = 64;

fn event(i: u64) -> NewEvent {
    NewEvent::new(
        "figures.order.created",
        json!({"order": i, "amount": 42.5, "currency": "EUR"}),
    )
    .expect("valid name")
    .source("figures")
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn stream_name(tag: &str) -> String {
    format!("FIG_{tag}_{}", uuid::Uuid::now_v7().simple())
}

async fn natslog_sequential(server: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let log = NatsLog::open(server, &stream_name("seq"), NatsOptions::default()).await?;
    let t = Instant::now();
    for i in 0..SEQUENTIAL {
        log.append(vec![event(i)], None).await?;
    }
    let r = rate(SEQUENTIAL, t.elapsed());
    log.destroy().await?;
    Ok(r)
}

async fn natslog_concurrent(server: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let log = Arc::new(NatsLog::open(server, &stream_name("conc"), NatsOptions::default()).await?);
    let t = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < CONCURRENT {
                    log.append(vec![event(i)], None).await?;
                    i += IN_FLIGHT;
                }
                Ok::<_, tidings_core::log::AppendError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let r = rate(CONCURRENT, t.elapsed());
    let last = log.bounds().await?.last;
    assert_eq!(last, CONCURRENT);
    if let Ok(log) = Arc::try_unwrap(log) {
        log.destroy().await?;
    }
    Ok(r)
}

async fn raw(
    server: &str,
    in_flight: u64,
    n: u64,
    reader: bool,
) -> Result<f64, Box<dyn std::error::Error>> {
    let client = async_nats::connect(server).await?;
    let js = jetstream::new(client);
    let name = stream_name("raw");
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.events")],
            ..Default::default()
        })
        .await?;
    // Optionally an ordered consumer reading every message as it is
    // stored, as NatsLog's follower does.
    let reading = if reader {
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await?;
        let mut messages = consumer.messages().await?;
        Some(tokio::spawn(async move {
            let mut got = 0;
            while got < n {
                match messages.next().await {
                    Some(Ok(_)) => got += 1,
                    _ => break,
                }
            }
            got
        }))
    } else {
        None
    };
    let subject = format!("{name}.events");
    let t = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let payload = serde_json::to_vec(&event(i).commit(i + 1))?;
        pending.push_back(js.publish(subject.clone(), payload.into()).await?);
        if pending.len() as u64 >= in_flight {
            if let Some(ack) = pending.pop_front() {
                ack.await?;
            }
        }
    }
    for ack in pending {
        ack.await?;
    }
    let r = rate(n, t.elapsed());
    if let Some(reading) = reading {
        // The reader must have read every message (after the clock
        // stopped, so its tail is not timed), or the figure is not one of
        // a publisher with a reader keeping up.
        let got = tokio::time::timeout(Duration::from_secs(30), reading)
            .await
            .map_err(|_| "the ordered reader fell behind: not done 30 s after the last ack")??;
        if got != n {
            return Err(format!("the ordered reader read {got} of {n} messages").into());
        }
    }
    js.delete_stream(&name).await?;
    Ok(r)
}

/// Median, min and max of `v`.
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The figures of one scenario: NatsLog, raw publishes, raw publishes with
/// a reader.
#[derive(Default)]
struct Sides {
    log: Vec<f64>,
    raw: Vec<f64>,
    raw_read: Vec<f64>,
}

impl Sides {
    fn print(&mut self, label: &str) {
        let (lm, ll, lh) = spread(&mut self.log);
        let (rm, rl, rh) = spread(&mut self.raw);
        let (qm, ql, qh) = spread(&mut self.raw_read);
        println!("{label}:");
        println!("  NatsLog                        {lm:>7.0}/s ({ll:.0}-{lh:.0})");
        println!(
            "  raw publish                    {rm:>7.0}/s ({rl:.0}-{rh:.0})  NatsLog/raw {:.2}",
            lm / rm
        );
        println!(
            "  raw publish + ordered reader   {qm:>7.0}/s ({ql:.0}-{qh:.0})  NatsLog/this {:.2}",
            lm / qm
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server =
        std::env::var("TIDINGS_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the argument is the number of runs"))
        .unwrap_or(5);
    println!(
        "server {server}, file storage, one event per append, {runs} runs rotating which side goes first; median (min-max)"
    );
    if let Some(side) = std::env::args().nth(2) {
        for _ in 0..runs {
            let r = match side.as_str() {
                "log" => natslog_sequential(&server).await?,
                "raw" => raw(&server, 1, SEQUENTIAL, false).await?,
                "raw-read" => raw(&server, 1, SEQUENTIAL, true).await?,
                other => return Err(format!("unknown side {other:?}: log, raw or raw-read").into()),
            };
            println!("{side}, one append at a time: {r:.0}/s");
        }
        return Ok(());
    }
    let mut seq = Sides::default();
    let mut conc = Sides::default();
    for run in 0..runs {
        for k in 0..3 {
            match (run + k) % 3 {
                0 => {
                    seq.log.push(natslog_sequential(&server).await?);
                    conc.log.push(natslog_concurrent(&server).await?);
                }
                1 => {
                    seq.raw.push(raw(&server, 1, SEQUENTIAL, false).await?);
                    conc.raw
                        .push(raw(&server, IN_FLIGHT, CONCURRENT, false).await?);
                }
                _ => {
                    seq.raw_read.push(raw(&server, 1, SEQUENTIAL, true).await?);
                    conc.raw_read
                        .push(raw(&server, IN_FLIGHT, CONCURRENT, true).await?);
                }
            }
        }
    }
    seq.print("one append at a time");
    conc.print(&format!("{IN_FLIGHT} appends in flight"));
    println!(
        "(NatsLog: {IN_FLIGHT} tasks appending concurrently, group-committed into records, and its follower reading every record; raw: {IN_FLIGHT} publish acks outstanding, no ordering guard; the reader is an ordered consumer reading every message as it is stored)"
    );
    Ok(())
}
