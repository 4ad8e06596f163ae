//! Acked appends per second through JetStream: `NatsLog` against raw
//! async-nats JetStream publishes, in the same run, on the same server.
//!
//! ```text
//! cargo run --release -p tidings-nats --example nats_figures
//! ```
//!
//! The server is `TIDINGS_TEST_NATS` (default `nats://127.0.0.1:4222`); each
//! scenario uses a fresh file-backed stream, deleted afterwards. The payload
//! is the same event envelope in both cases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::json;
use tidings_core::{EventLog, NewEvent};
use tidings_nats::{NatsLog, NatsOptions};

const SEQUENTIAL: u64 = 3_000;
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

async fn raw(server: &str, in_flight: u64, n: u64) -> Result<f64, Box<dyn std::error::Error>> {
    let client = async_nats::connect(server).await?;
    let js = jetstream::new(client);
    let name = stream_name("raw");
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.events")],
        ..Default::default()
    })
    .await?;
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
    js.delete_stream(&name).await?;
    Ok(r)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server =
        std::env::var("TIDINGS_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    println!("server {server}, file storage, one event per append");
    let raw_seq = raw(&server, 1, SEQUENTIAL).await?;
    let log_seq = natslog_sequential(&server).await?;
    println!(
        "one at a time      : NatsLog {log_seq:>9.0} appends/s | raw JetStream publish {raw_seq:>9.0} msgs/s | ratio {:.2}",
        log_seq / raw_seq
    );
    let raw_conc = raw(&server, IN_FLIGHT, CONCURRENT).await?;
    let log_conc = natslog_concurrent(&server).await?;
    println!(
        "{IN_FLIGHT} in flight       : NatsLog {log_conc:>9.0} appends/s | raw JetStream publish {raw_conc:>9.0} msgs/s | ratio {:.2}",
        log_conc / raw_conc
    );
    println!(
        "(NatsLog: {IN_FLIGHT} tasks appending concurrently, group-committed into records; raw: {IN_FLIGHT} publish acks outstanding, no ordering guard)"
    );
    Ok(())
}
