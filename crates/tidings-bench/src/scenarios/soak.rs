//! `soak`: a long run of a real server process under a steady load, to
//! see whether its memory stays flat and whether anyone loses an event.
//!
//! (Longer than our other files: one scenario whose parts — publisher,
//! live, stalled and churning subscribers, the RSS sampler and the report —
//! share its state and are read together; it is not library code.)
//!
//! * The server: the release `tidings` binary as a **separate process**
//!   (`--tidings-bin`, default `tidings` next to this executable), SQLite
//!   in a temporary directory (`--durability`, default `batch`; retention
//!   `--retain` events), `127.0.0.1:0`. Its send timeout is asked for
//!   with `send_timeout_secs` in its config file and
//!   `TIDINGS_SEND_TIMEOUT_SECS`; a binary that refuses the setting as
//!   unknown is restarted without it (default 30 s), and the report says so.
//! * Publishing: one HTTP client POSTs JSON arrays to `/events`, one
//!   request at a time: every `--tick-ms` (10 ms) it sends every event due
//!   by then at `--rate` (20,000/s: ~200 events per POST, at most
//!   `--max-batch`). Events go round-robin to `--partitions` (50) names
//!   `soak.<p>.tick`; each carries `soak_n`, its index within its
//!   partition. The seqs in each answer are kept per partition. If the
//!   publisher falls more than 2 s behind its schedule, the rate is cut to
//!   90% of what it achieved over the last 5 s (repeatedly if need be);
//!   when it keeps up again (less than 0.2 s behind) it is raised 10%,
//!   up to the target. The report gives the achieved rate and every change
//!   (`rate_changes`: [seconds, new rate]).
//! * `--subscribers` (200): alternately WebSocket (`/ws?pattern=`) and SSE
//!   (`/sse?pattern=&after=`), subscriber i on partition `i % partitions`
//!   with `soak.<p>.*` or `soak.<p>.>`. The last `--stalled` (4) of them,
//!   half WebSocket and half SSE, are raw TCP sockets with a 4 KiB
//!   receive buffer, subscribed to `soak.>`, that send their request and
//!   never read. At the end each stalled socket is read: an end of stream
//!   or a reset within 15 s means the server dropped it.
//! * Churn: `--churn-per-s` (10) extra subscribers a second connect
//!   (alternately WebSocket and SSE, random partition), stay 0.2–2 s, and
//!   disconnect; they check what they received too (order, no gap, the
//!   right first event).
//! * Every `--sample-secs` (5) the server's `VmRSS` (and `RssAnon`,
//!   `RssFile`) is read from `/proc/PID/status` and its connection gauges
//!   from `/metrics`, printed as a series on stderr.
//!
//! Checks: each live subscriber saw every seq of its partition after its
//! start seq exactly once and in order (`soak_n` consecutive, seqs rising,
//! the first being the first after the start, the last being the last
//! published; WebSocket's start is the welcome's `last_seq`, SSE's the
//! `after` it asked for); loss must be 0. RSS: every sample after
//! `--warmup-secs` (default 120, at most half the run) is within ±10% of
//! the first sample after it. The process exits non-zero if either fails.
//! `tidings_per_s` is the achieved publish rate; there is no peer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{q, sse_events};
use crate::process::{self, metrics_connections, rss_kib, ServerProcess};
use crate::progress;
use crate::stats::json_u64;
use crate::workload::Rng;
use crate::Report;

/// Options of `soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds of publishing.
    #[arg(long, default_value_t = 600.0)]
    pub duration_secs: f64,
    /// Target events per second (lowered automatically if not sustained).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Milliseconds between POSTs (each carries every event due).
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// Most events per POST.
    #[arg(long, default_value_t = 2_000)]
    pub max_batch: u64,
    /// Event partitions (`soak.<p>.tick`).
    #[arg(long, default_value_t = 50)]
    pub partitions: usize,
    /// Subscribers, including the stalled ones.
    #[arg(long, default_value_t = 200)]
    pub subscribers: usize,
    /// Subscribers that never read (half WebSocket, half SSE).
    #[arg(long, default_value_t = 4)]
    pub stalled: usize,
    /// Short-lived extra subscribers started per second.
    #[arg(long, default_value_t = 10.0)]
    pub churn_per_s: f64,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample_secs: f64,
    /// Seconds before the RSS baseline (at most half the run).
    #[arg(long, default_value_t = 120.0)]
    pub warmup_secs: f64,
    /// Allowed RSS deviation from the baseline after the warm-up.
    #[arg(long, default_value_t = 0.10)]
    pub rss_tolerance: f64,
    /// The server's send timeout asked for (`send_timeout_secs`).
    #[arg(long, default_value_t = 10)]
    pub send_timeout_secs: u64,
    /// SQLite durability: sync, batch or none.
    #[arg(long, default_value = "batch")]
    pub durability: String,
    /// Events the server keeps (`retention_max_count`).
    #[arg(long, default_value_t = 2_000_000)]
    pub retain: u64,
    /// Bytes of padding in each event's data.
    #[arg(long, default_value_t = 64)]
    pub pad_bytes: usize,
    /// The `tidings` binary (default: `tidings` next to this executable).
    #[arg(long)]
    pub tidings_bin: Option<PathBuf>,
}

/// The seqs of each partition's events, by `soak_n`.
type Table = Arc<Vec<Mutex<Vec<u64>>>>;

/// What one subscriber saw.
#[derive(Debug, Default, Clone)]
struct Check {
    partition: usize,
    /// Events after this seq are expected.
    start: u64,
    /// (`soak_n`, seq) of the first event after `start`.
    first: Option<(u64, u64)>,
    last_n: u64,
    last_seq: u64,
    received: u64,
    /// `soak_n` values skipped.
    gaps: u64,
    /// Events received twice or out of order.
    dups: u64,
    /// Events at or before `start` (not expected, not wrong).
    pre_start: u64,
    /// Events reported missed by lag notices.
    lagged: u64,
    /// The connection ended (for a live subscriber: before the end).
    closed: bool,
}

impl Check {
    fn event(&mut self, seq: u64, n: u64) {
        if seq <= self.start {
            self.pre_start += 1;
            return;
        }
        if self.first.is_none() {
            self.first = Some((n, seq));
        } else {
            if seq <= self.last_seq || n <= self.last_n {
                self.dups += 1;
                return;
            }
            self.gaps += n - self.last_n - 1;
        }
        self.last_n = n;
        self.last_seq = seq;
        self.received += 1;
    }

    /// Index in `table` of the first event expected.
    fn expected_first(&self, table: &[u64]) -> u64 {
        table.partition_point(|&s| s <= self.start) as u64
    }

    /// Events missing at the start (a subscriber that left early is not
    /// expected to see the end).
    fn start_miss(&self, table: &[u64]) -> u64 {
        match self.first {
            Some((n, _)) => n.saturating_sub(self.expected_first(table)),
            None => 0,
        }
    }

    /// Events of `table` after `start` this subscriber did not get, if it
    /// was meant to see them all.
    fn loss(&self, table: &[u64]) -> u64 {
        let total = table.len() as u64;
        match self.first {
            None => total.saturating_sub(self.expected_first(table)),
            Some(_) => {
                self.start_miss(table)
                    + self.gaps
                    + (total.saturating_sub(1)).saturating_sub(self.last_n)
            }
        }
    }

    /// Received seqs that are not the seqs published under their `soak_n`.
    fn mismatches(&self, table: &[u64]) -> u64 {
        let Some((n, seq)) = self.first else { return 0 };
        let wrong = |n: u64, seq: u64| table.get(n as usize).is_some_and(|&s| s != seq) as u64;
        wrong(n, seq) + wrong(self.last_n, self.last_seq)
    }

    fn done(&self, table: &[u64]) -> bool {
        match self.first {
            Some(_) => self.last_n + 1 >= table.len() as u64,
            None => self.expected_first(table) >= table.len() as u64,
        }
    }

    /// An envelope or control text from either transport.
    fn text(&mut self, text: &str) {
        // Control messages carry a "type" (keys sorted: not necessarily
        // first); envelopes do not.
        if text.contains("\"type\":\"") && !text.contains("\"soak_n\"") {
            if text.contains("\"type\":\"lagged\"") {
                self.lagged += json_u64(text, "missed").unwrap_or(0);
            }
            return;
        }
        if let (Some(seq), Some(n)) = (json_u64(text, "seq"), json_u64(text, "soak_n")) {
            self.event(seq, n);
        }
    }
}

type Shared = Arc<Mutex<Check>>;

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Check> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn pattern_of(partition: usize, shape: usize) -> String {
    if shape.is_multiple_of(2) {
        format!("soak.{partition}.*")
    } else {
        format!("soak.{partition}.>")
    }
}

/// Opens a WebSocket subscriber; its start seq is the welcome's `last_seq`.
/// The returned task reads until `stop` is set or the socket ends.
async fn ws_sub(
    base: &str,
    pattern: &str,
    check: Shared,
    stop: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let url = format!("{base}/ws?pattern={}", q(pattern));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .with_context(|| format!("no welcome from {url} within 10 s"))?;
    let start = match first {
        Some(Ok(Message::Text(t))) if t.as_str().contains("\"connection\"") => {
            json_u64(t.as_str(), "last_seq").context("no last_seq in the welcome")?
        }
        other => bail!("unexpected first message from {url}: {other:?}"),
    };
    lock(&check).start = start;
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = wait_flag(&stop) => break,
            };
            match msg {
                Some(Ok(Message::Text(t))) => lock(&check).text(t.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    lock(&check).closed = true;
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
        let _ = ws.close(None).await;
    }))
}

/// Opens an SSE subscriber with `after` = the server's last seq now.
async fn sse_sub(
    http: &reqwest::Client,
    base: &str,
    pattern: &str,
    check: Shared,
    stop: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let start = process::last_seq(http, base).await?;
    lock(&check).start = start;
    let resp = http
        .get(format!("{base}/sse?pattern={}&after={start}", q(pattern)))
        .send()
        .await
        .context("GET /sse")?;
    ensure!(
        resp.status().is_success(),
        "GET /sse answered {}",
        resp.status()
    );
    Ok(tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        loop {
            let chunk = tokio::select! {
                c = body.next() => c,
                _ = wait_flag(&stop) => break,
            };
            match chunk {
                Some(Ok(c)) => {
                    buf.push_str(&String::from_utf8_lossy(&c));
                    let events = sse_events(&mut buf);
                    let mut ch = lock(&check);
                    for (kind, data) in events {
                        if kind.as_deref() == Some("lagged") {
                            ch.lagged += json_u64(&data, "missed").unwrap_or(0);
                        } else {
                            ch.text(&data);
                        }
                    }
                }
                _ => {
                    lock(&check).closed = true;
                    break;
                }
            }
        }
    }))
}

async fn wait_flag(flag: &AtomicBool) {
    while !flag.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A raw TCP subscriber that sends its request and never reads.
async fn stalled_sub(addr: &str, ws: bool) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    let mut s = sock.connect(addr.parse()?).await?;
    let pattern = q("soak.>");
    let req = if ws {
        format!(
            "GET /ws?pattern={pattern} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    } else {
        format!(
            "GET /sse?pattern={pattern} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
    };
    s.write_all(req.as_bytes()).await?;
    Ok(s)
}

/// Reads a stalled socket: true if it ends (EOF or reset) within 15 s.
async fn was_dropped(mut s: TcpStream) -> (bool, u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, bytes),
            Ok(Ok(n)) => bytes += n as u64,
            Err(_) => return (false, bytes),
        }
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

struct Published {
    events: u64,
    elapsed: f64,
    cuts: Vec<(f64, f64)>,
    posts: u64,
    max_batch_sent: u64,
}

/// Publishes until `end`, one POST at a time.
async fn publish(
    args: &Args,
    http: &reqwest::Client,
    base: &str,
    table: &Table,
    counter: &AtomicU64,
    end: tokio::time::Instant,
) -> Result<Published> {
    let url = format!("{base}/events");
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
        let t = super::mono_ns();
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
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST /events")?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        ensure!(
            status.is_success(),
            "POST /events answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
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

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    rss: u64,
    anon: u64,
    file: u64,
    ws: Option<i64>,
    sse: Option<i64>,
    published: u64,
}

/// Whether every sample from the first at or after `warmup` on is within
/// `tol` of that first one; (flat, baseline KiB, min, max).
fn rss_flat(samples: &[(f64, u64)], warmup: f64, tol: f64) -> Option<(bool, u64, u64, u64)> {
    let after: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= warmup)
        .map(|(_, r)| *r)
        .collect();
    let base = *after.first()?;
    let min = *after.iter().min()?;
    let max = *after.iter().max()?;
    let lo = base as f64 * (1.0 - tol);
    let hi = base as f64 * (1.0 + tol);
    Some((
        min as f64 >= lo && max as f64 <= hi && after.len() >= 2,
        base,
        min,
        max,
    ))
}

/// Least-squares slope of (t, kib) in KiB per minute.
fn slope_kib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mt = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mr = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.0 - mt) * (s.1 as f64 - mr)).sum();
    let var: f64 = samples.iter().map(|s| (s.0 - mt).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var * 60.0
    }
}

struct Churned {
    check: Shared,
    ok: bool,
}

async fn start_server(args: &Args, bin: &std::path::Path) -> Result<(ServerProcess, String)> {
    let base = format!(
        "durability = {:?}\nretention_max_count = {}\nmax_connections = 5000\n",
        args.durability, args.retain
    );
    let with = format!("{base}send_timeout_secs = {}\n", args.send_timeout_secs);
    let env = [(
        "TIDINGS_SEND_TIMEOUT_SECS",
        args.send_timeout_secs.to_string(),
    )];
    match ServerProcess::start(bin, &with, &env).await {
        Ok(s) => Ok((
            s,
            format!(
                "send_timeout_secs = {} accepted (config file and TIDINGS_SEND_TIMEOUT_SECS)",
                args.send_timeout_secs
            ),
        )),
        Err(e) if e.stderr.contains("send_timeout_secs") || e.stderr.contains("unknown field") => {
            eprintln!(
                "soak: this tidings binary refuses send_timeout_secs ({}); using its default send timeout (30 s)",
                e.stderr.lines().last().unwrap_or("").trim()
            );
            let s = ServerProcess::start(bin, &base, &[])
                .await
                .map_err(|e| e.error.context(e.stderr))?;
            Ok((
                s,
                "send_timeout_secs refused as unknown by this binary: server default (30 s) in force"
                    .to_owned(),
            ))
        }
        Err(e) => Err(e.error.context(e.stderr)),
    }
}

async fn soak(args: &Args) -> Result<(Report, bool)> {
    let bin = match &args.tidings_bin {
        Some(b) => b.clone(),
        None => process::default_tidings_bin()?,
    };
    let (mut server, timeout_note) = start_server(args, &bin).await?;
    progress::phase(&format!(
        "soak: server pid {} at {} ({}); {}",
        server.pid,
        server.addr,
        bin.display(),
        timeout_note
    ));
    let http = reqwest::Client::new();
    let (hb, wb) = (server.http(), server.ws());
    let parts = args.partitions.max(1);
    let table: Table = Arc::new((0..parts).map(|_| Mutex::new(Vec::new())).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = Arc::new(AtomicBool::new(false));

    // Live subscribers.
    let live_n = args.subscribers.saturating_sub(args.stalled);
    let mut live: Vec<(Shared, &'static str, tokio::task::JoinHandle<()>)> = Vec::new();
    for i in 0..live_n {
        let p = i % parts;
        let pattern = pattern_of(p, i / parts);
        let check = Shared::new(Mutex::new(Check {
            partition: p,
            ..Check::default()
        }));
        let (kind, task) = if i.is_multiple_of(2) {
            (
                "ws",
                ws_sub(&wb, &pattern, check.clone(), stop.clone()).await?,
            )
        } else {
            (
                "sse",
                sse_sub(&http, &hb, &pattern, check.clone(), stop.clone()).await?,
            )
        };
        live.push((check, kind, task));
    }
    let mut stalled = Vec::new();
    for i in 0..args.stalled {
        let ws = i.is_multiple_of(2);
        stalled.push((ws, stalled_sub(&server.addr, ws).await?));
    }
    progress::phase(&format!(
        "soak: {live_n} live subscribers, {} stalled; publishing {}/s for {} s",
        args.stalled, args.rate, args.duration_secs
    ));

    let published = Arc::new(AtomicU64::new(0));
    let run_start = tokio::time::Instant::now();
    let end = run_start + Duration::from_secs_f64(args.duration_secs);

    // RSS sampler.
    let sampler = {
        let (pid, hb, http, published, every) = (
            server.pid,
            hb.clone(),
            http.clone(),
            published.clone(),
            Duration::from_secs_f64(args.sample_secs.max(0.5)),
        );
        let stop = sampling.clone();
        tokio::spawn(async move {
            let mut out: Vec<Sample> = Vec::new();
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if stop.load(Relaxed) {
                    break;
                }
                let Ok((rss, anon, file)) = rss_kib(pid) else {
                    break;
                };
                let metrics = match http.get(format!("{hb}/metrics")).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let (ws, sse) = metrics_connections(&metrics);
                let s = Sample {
                    t: run_start.elapsed().as_secs_f64(),
                    rss,
                    anon,
                    file,
                    ws,
                    sse,
                    published: published.load(Relaxed),
                };
                eprintln!(
                    "soak: t={:>5.0}s rss={:>7} KiB anon={:>7} file={:>7} ws={} sse={} published={}",
                    s.t,
                    s.rss,
                    s.anon,
                    s.file,
                    s.ws.unwrap_or(-1),
                    s.sse.unwrap_or(-1),
                    s.published
                );
                out.push(s);
            }
            out
        })
    };

    // Churn: short-lived subscribers.
    let churn = {
        let (wb, hb, http, stop) = (wb.clone(), hb.clone(), http.clone(), stop.clone());
        let per_s = args.churn_per_s;
        tokio::spawn(async move {
            let mut records: Vec<tokio::task::JoinHandle<Churned>> = Vec::new();
            if per_s <= 0.0 {
                return records;
            }
            let mut rng = Rng::new(42);
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s));
            let mut i = 0usize;
            while tokio::time::Instant::now() < end {
                tick.tick().await;
                let p = rng.below(parts as u64) as usize;
                let life = Duration::from_millis(200 + rng.below(1800));
                let (wb, hb, http) = (wb.clone(), hb.clone(), http.clone());
                let pattern = pattern_of(p, i);
                let ws = i.is_multiple_of(2);
                i += 1;
                let _ = &stop;
                records.push(tokio::spawn(async move {
                    let check = Shared::new(Mutex::new(Check {
                        partition: p,
                        ..Check::default()
                    }));
                    let leave = Arc::new(AtomicBool::new(false));
                    let task = if ws {
                        ws_sub(&wb, &pattern, check.clone(), leave.clone()).await
                    } else {
                        sse_sub(&http, &hb, &pattern, check.clone(), leave.clone()).await
                    };
                    let Ok(task) = task else {
                        return Churned { check, ok: false };
                    };
                    tokio::time::sleep(life).await;
                    leave.store(true, Relaxed);
                    let _ = task.await;
                    Churned { check, ok: true }
                }));
            }
            records
        })
    };

    let pb = progress::timed(args.duration_secs, "soak publishing");
    let pb_task = {
        let pb = pb.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                pb.set_position(run_start.elapsed().as_millis() as u64);
            }
        })
    };
    let pubres = publish(args, &http, &hb, &table, &published, end).await;
    pb_task.abort();
    pb.finish_and_clear();
    let pubres = pubres?;
    // RSS is judged over the publishing window only: the end checks below
    // (reading the stalled sockets) make the server read its log.
    progress::phase(&format!(
        "soak: published {} events in {:.1} s ({:.0}/s); waiting for the live subscribers",
        pubres.events,
        pubres.elapsed,
        pubres.events as f64 / pubres.elapsed
    ));

    // Let the live subscribers catch up (20 s without progress ends it).
    sampling.store(true, Relaxed);
    let snapshot: Vec<Vec<u64>> = table
        .iter()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    let mut last = (0u64, Instant::now());
    loop {
        let (mut done, mut got) = (true, 0u64);
        for (c, _, _) in &live {
            let c = lock(c);
            got += c.received;
            if !c.done(&snapshot[c.partition]) && !c.closed {
                done = false;
            }
        }
        if done {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) {
            eprintln!("soak: live subscribers made no progress for 20 s; counting what is missing");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up_secs = run_start.elapsed().as_secs_f64() - pubres.elapsed;

    // Stalled subscribers: did the server drop them?
    let mut stalled_res = Vec::new();
    for (ws, s) in stalled {
        let (dropped, bytes) = was_dropped(s).await;
        stalled_res.push(json!({"transport": if ws {"ws"} else {"sse"}, "dropped": dropped, "bytes_read_at_end": bytes}));
    }
    let rss_after_checks = rss_kib(server.pid).ok();
    let churn_tasks = churn.await.unwrap_or_default();
    let alive = server.alive();
    stop.store(true, Relaxed);
    let samples = sampler.await.unwrap_or_default();
    for (_, _, t) in live.iter() {
        t.abort();
    }

    // Live subscriber checks.
    let (mut loss, mut dups, mut gaps, mut lagged, mut closed, mut mismatch, mut received) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut pre_start = 0u64;
    let mut by_kind = std::collections::BTreeMap::<&str, u64>::new();
    for (c, kind, _) in &live {
        let c = lock(c);
        let t = &snapshot[c.partition];
        let l = c.loss(t);
        loss += l;
        *by_kind.entry(kind).or_default() += l;
        dups += c.dups;
        gaps += c.gaps;
        lagged += c.lagged;
        closed += c.closed as u64;
        mismatch += c.mismatches(t);
        received += c.received;
        pre_start += c.pre_start;
    }
    // Churn checks.
    let (mut ch_ok, mut ch_failed, mut ch_gaps, mut ch_dups, mut ch_start_miss, mut ch_recv) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for t in churn_tasks {
        let Ok(r) = t.await else { continue };
        if !r.ok {
            ch_failed += 1;
            continue;
        }
        ch_ok += 1;
        let c = lock(&r.check);
        let t = &snapshot[c.partition];
        ch_gaps += c.gaps;
        ch_dups += c.dups;
        ch_start_miss += c.start_miss(t);
        ch_recv += c.received;
    }

    server.stop().await;

    let rss: Vec<(f64, u64)> = samples.iter().map(|s| (s.t, s.rss)).collect();
    let anon: Vec<(f64, u64)> = samples.iter().map(|s| (s.t, s.anon)).collect();
    let warmup = args.warmup_secs.min(args.duration_secs / 2.0);
    let flat = rss_flat(&rss, warmup, args.rss_tolerance);
    let anon_flat = rss_flat(&anon, warmup, args.rss_tolerance);
    let after: Vec<(f64, u64)> = rss.iter().copied().filter(|(t, _)| *t >= warmup).collect();
    let rss_ok = flat.is_some_and(|f| f.0);
    let stalled_dropped = stalled_res.iter().filter(|v| v["dropped"] == true).count();
    let loss_ok = loss == 0 && dups == 0 && mismatch == 0 && closed == 0;
    let achieved = pubres.events as f64 / pubres.elapsed;

    eprintln!("soak: RSS series (t s, VmRSS KiB, RssAnon KiB, RssFile KiB):");
    for s in &samples {
        eprintln!("  {:>6.0} {:>8} {:>8} {:>8}", s.t, s.rss, s.anon, s.file);
    }
    if let Some((ok, base, min, max)) = flat {
        eprintln!(
            "soak: after the {warmup:.0} s warm-up VmRSS {min}..{max} KiB around {base} KiB ({:+.1}%..{:+.1}%): {}",
            (min as f64 / base as f64 - 1.0) * 100.0,
            (max as f64 / base as f64 - 1.0) * 100.0,
            if ok { "flat" } else { "NOT flat" }
        );
    }
    eprintln!(
        "soak: live loss {loss} (gaps {gaps}, duplicates {dups}, closed early {closed}, seq mismatches {mismatch}), stalled dropped {stalled_dropped}/{}",
        stalled_res.len()
    );

    let ok = loss_ok && rss_ok;
    let r = Report::new("soak", achieved, "none", None)
        .goal(
            "loss 0 to live subscribers; server VmRSS within ±10% of its post-warm-up baseline; stalled subscribers dropped",
            ok && stalled_dropped == stalled_res.len(),
        )
        .with("per_s_means", "achieved publish rate (events/s)")
        .with("duration_secs", pubres.elapsed)
        .with("target_rate", args.rate)
        .with("achieved_rate", achieved)
        .with("rate_changes", json!(pubres.cuts))
        .with("events", pubres.events)
        .with("posts", pubres.posts)
        .with("mean_batch", pubres.events as f64 / pubres.posts.max(1) as f64)
        .with("max_batch_sent", pubres.max_batch_sent)
        .with("durability", args.durability.clone())
        .with("partitions", parts)
        .with("live_subscribers", live_n)
        .with("live_by_transport", json!({"ws": live.iter().filter(|l| l.1 == "ws").count(), "sse": live.iter().filter(|l| l.1 == "sse").count()}))
        .with("live_received", received)
        .with("loss", loss)
        .with("loss_by_transport", json!(by_kind))
        .with("gaps", gaps)
        .with("duplicates", dups)
        .with("lagged", lagged)
        .with("closed_early", closed)
        .with("seq_mismatches", mismatch)
        .with("pre_start_events", pre_start)
        .with("catch_up_secs", catch_up_secs)
        .with("stalled", json!(stalled_res))
        .with("stalled_dropped", stalled_dropped)
        .with("send_timeout", timeout_note)
        .with("churn_subscribers", ch_ok)
        .with("churn_connect_failures", ch_failed)
        .with("churn_received", ch_recv)
        .with("churn_gaps", ch_gaps)
        .with("churn_duplicates", ch_dups)
        .with("churn_start_miss", ch_start_miss)
        .with("server_alive_at_end", alive)
        .with(
            "rss_after_stalled_reads_kib",
            json!(rss_after_checks.map(|r| json!({"rss": r.0, "anon": r.1, "file": r.2}))),
        )
        .with("rss_warmup_secs", warmup)
        .with("rss_flat", rss_ok)
        .with(
            "rss_baseline_min_max_kib",
            json!(flat.map(|f| [f.1, f.2, f.3])),
        )
        .with(
            "rss_anon_baseline_min_max_kib",
            json!(anon_flat.map(|f| [f.1, f.2, f.3])),
        )
        .with("rss_anon_flat", anon_flat.is_some_and(|f| f.0))
        .with("rss_slope_after_warmup_kib_per_min", slope_kib_per_min(&after))
        .with(
            "rss_series_kib",
            json!(samples
                .iter()
                .map(|s| [s.t.round() as u64, s.rss])
                .collect::<Vec<_>>()),
        )
        .with(
            "connections_series",
            json!(samples
                .iter()
                .map(|s| [s.t.round() as i64, s.ws.unwrap_or(-1), s.sse.unwrap_or(-1)])
                .collect::<Vec<_>>()),
        );
    Ok((r, ok))
}

/// Runs the scenario; the bool is false when loss > 0 or the RSS check
/// failed (the process then exits non-zero).
pub fn run(args: &Args) -> Result<(Report, bool)> {
    ensure!(args.duration_secs > 0.0, "--duration-secs must be positive");
    ensure!(args.rate > 0, "--rate must be positive");
    ensure!(
        args.subscribers > args.stalled,
        "--subscribers must exceed --stalled"
    );
    crate::scenarios::memory::raise_nofile(4096)?;
    let rt = super::runtime()?;
    rt.block_on(soak(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_gaps_duplicates_and_the_edges() {
        // Partition seqs: n=0..5 at seqs 10,20,30,40,50,60.
        let table = [10, 20, 30, 40, 50, 60];
        let mut c = Check {
            start: 25,
            ..Check::default()
        };
        c.event(20, 1); // before the start: ignored
        c.event(30, 2);
        c.event(40, 3);
        c.event(40, 3); // duplicate
        c.event(60, 5); // gap of one
        assert_eq!(c.pre_start, 1);
        assert_eq!(c.dups, 1);
        assert_eq!(c.gaps, 1);
        assert_eq!(c.loss(&table), 1);
        assert_eq!(c.mismatches(&table), 0);
        assert!(c.done(&table));

        let mut late = Check {
            start: 25,
            ..Check::default()
        };
        late.event(40, 3); // missed n=2 at the start
        assert_eq!(late.start_miss(&table), 1);
        assert_eq!(late.loss(&table), 1 + 2);
        let none = Check {
            start: 25,
            ..Check::default()
        };
        assert_eq!(none.loss(&table), 4);
    }

    #[test]
    fn rss_flatness_uses_the_first_sample_after_warmup() {
        let s = [(0.0, 50), (10.0, 100), (20.0, 105), (30.0, 109)];
        assert_eq!(rss_flat(&s, 10.0, 0.1), Some((true, 100, 100, 109)));
        let s = [(10.0, 100), (20.0, 111)];
        assert!(!rss_flat(&s, 10.0, 0.1).unwrap().0);
        assert!((slope_kib_per_min(&[(0.0, 0), (60.0, 100)]) - 100.0).abs() < 1e-9);
    }
}
