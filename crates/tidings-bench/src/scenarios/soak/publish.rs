//! The soak's publisher: one POST at a time on a schedule, cutting its rate
//! when it falls behind and raising it again when it keeps up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::process::{post_events, SeqOnly};

use super::check::Table;
use super::Args;

pub(super) struct Published {
    pub(super) events: u64,
    pub(super) elapsed: f64,
    pub(super) cuts: Vec<(f64, f64)>,
    pub(super) posts: u64,
    pub(super) max_batch_sent: u64,
}

/// Publishes until `end`, one POST at a time.
pub(super) async fn publish(
    args: &Args,
    http: &reqwest::Client,
    base: &str,
    table: &Table,
    counter: &AtomicU64,
    end: tokio::time::Instant,
) -> Result<Published> {
    let parts = args.partitions;
    let pad = "x".repeat(args.pad_bytes);
    let mut next_n = vec![0u64; parts];
    let mut k = 0u64; // events sent
    let start = tokio::time::Instant::now();
    let mut rate = args.rate as f64;
    let (mut base_t, mut base_sent) = (start, 0u64);
    let (mut win_t, mut win_sent) = (start, 0u64);
    let mut cuts = Vec::new();
    let mut posts = 0u64;
    let mut max_batch_sent = 0u64;
    let tick = Duration::from_millis(args.tick_ms.max(1));
    let mut next_tick = start;
    loop {
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        let due = base_sent + (rate * (now - base_t).as_secs_f64()) as u64;
        // Every 5 s: more than 2 s behind? Cut the rate.
        if now - win_t >= Duration::from_secs(5) {
            let achieved = (k - win_sent) as f64 / (now - win_t).as_secs_f64();
            if due.saturating_sub(k) as f64 > 2.0 * rate {
                rate = (achieved * 0.9).max(100.0);
                let t = (now - start).as_secs_f64();
                eprintln!("soak: publisher behind schedule; rate cut to {rate:.0}/s at {t:.0} s");
                cuts.push((t, rate));
                base_t = now;
                base_sent = k;
            } else if rate < args.rate as f64 && (due.saturating_sub(k) as f64) < 0.2 * rate {
                // Keeping up again: try 10% more, up to the target.
                rate = (rate * 1.1).min(args.rate as f64);
                cuts.push(((now - start).as_secs_f64(), rate));
                base_t = now;
                base_sent = k;
            }
            win_t = now;
            win_sent = k;
        }
        let n = due.saturating_sub(k).min(args.max_batch);
        if n < 2 {
            next_tick += tick;
            if next_tick > now {
                tokio::time::sleep_until(next_tick).await;
            } else {
                next_tick = now;
            }
            continue;
        }
        let t = crate::scenarios::mono_ns();
        let mut body = String::with_capacity(n as usize * (100 + pad.len()));
        body.push('[');
        let mut order = Vec::with_capacity(n as usize);
        for i in 0..n {
            let p = ((k + i) % parts as u64) as usize;
            let sn = next_n[p];
            next_n[p] += 1;
            order.push(p);
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                "{{\"name\":\"soak.{p}.tick\",\"data\":{{\"soak_n\":{sn},\"t\":{t},\"pad\":\"{pad}\"}}}}"
            ));
        }
        body.push(']');
        let bytes = post_events(http, base, body).await?;
        let seqs: Vec<SeqOnly> =
            serde_json::from_slice(&bytes).context("POST /events answer is not an array")?;
        ensure!(
            seqs.len() == order.len(),
            "POST of {} events answered {}",
            order.len(),
            seqs.len()
        );
        for (p, s) in order.iter().zip(&seqs) {
            table[*p]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(s.seq);
        }
        k += n;
        posts += 1;
        max_batch_sent = max_batch_sent.max(n);
        counter.store(k, Relaxed);
    }
    Ok(Published {
        events: k,
        elapsed: start.elapsed().as_secs_f64(),
        cuts,
        posts,
        max_batch_sent,
    })
}
