use serde_json::json;
use std::time::{Duration, Instant};
use tidings_core::{EventLog, NewEvent};
use tidings_redis::{RedisLog, RedisOptions};
type Error = Box<dyn std::error::Error + Send + Sync>;
fn event(i: u64) -> NewEvent {
    NewEvent::new(
        "bench.order.placed",
        json!({"order": i, "customer": "c-1042", "total": 129.5, "items": [1, 2, 3]}),
    )
    .unwrap()
    .source("figures")
}
fn raw_fields(i: u64) -> Vec<(String, String)> {
    let e = event(i);
    vec![
        ("id".into(), e.id.to_string()),
        ("name".into(), e.name),
        ("source".into(), e.source.into_owned()),
        ("time".into(), e.time.timestamp_micros().to_string()),
        ("data".into(), serde_json::to_string(&e.data).unwrap()),
    ]
}
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let side = std::env::args().nth(1).unwrap();
    let secs: u64 = std::env::args().nth(2).unwrap().parse()?;
    let key = format!("tidings-scratch:{}", uuid::Uuid::now_v7().simple());
    let log = RedisLog::open("redis://127.0.0.1:6379", &key, RedisOptions::default()).await?;
    let client = redis::Client::open("redis://127.0.0.1:6379")?;
    let raw = client.get_multiplexed_async_connection().await?;
    let stop = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let hs: Vec<_> = (0..32u64)
        .map(|t| {
            let log = log.clone();
            let mut conn = raw.clone();
            let side = side.clone();
            let key = format!("{key}:raw");
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop {
                    let i = t * 1_000_000 + n;
                    if side == "log" {
                        log.append(vec![event(i)], None).await.unwrap();
                    } else {
                        let mut c = redis::cmd("XADD");
                        c.arg(&key).arg("*");
                        for (f, v) in raw_fields(i) {
                            c.arg(f).arg(v);
                        }
                        c.query_async::<String>(&mut conn).await.unwrap();
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in hs {
        total += h.await?;
    }
    println!(
        "{side}: {:.0}/s",
        total as f64 / started.elapsed().as_secs_f64()
    );
    log.destroy().await?;
    redis::cmd("DEL")
        .arg(format!("{key}:raw"))
        .query_async::<()>(&mut raw.clone())
        .await?;
    Ok(())
}
