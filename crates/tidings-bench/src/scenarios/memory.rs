//! `memory`: resident memory per idle WebSocket connection.
//!
//! The release `tidings` binary runs as a **separate process**
//! (`tidings serve --listen 127.0.0.1:0 --store memory:`, found with
//! `--tidings-bin`, by default `tidings` next to this executable: build it
//! with `cargo build --release -p tidings-server`). Its `VmRSS` (from
//! `/proc/PID/status`) is read once it has started and settled, then again
//! after this process opened `--connections` (10,000) WebSockets to
//! `/ws?pattern=mem.<i>.>` (each its own pattern, each welcome message
//! received) and let them settle; the connections are held here, idle.
//! `bytes_per_connection = (after − before) / connections`. The fd limit
//! is raised with `setrlimit` first (the server inherits it).
//!
//! Peer: a `nats-server` started here the same way (on a random loopback
//! port, no JetStream), with the same number of plain TCP clients, each
//! sending `CONNECT`, `SUB mem.<i>.> 1` and `PING` and waiting for `PONG`.
//! If no `nats-server` binary is found the peer is reported as "none".
//!
//! Each run starts fresh server processes; the sides take turns going
//! first. `bytes_per_connection` is reported **signed**: an RSS that fell
//! while connections were opened (the allocator returned memory) gives a
//! negative figure, kept as measured, and such a run has no per-GiB
//! figure, which makes the run count as failed (the goal is blocked).
//!
//! `per_s` here is **connections per GiB of server RSS** (2^30 /
//! bytes_per_connection), so the ratio (higher is better) is
//! `peer_bytes_per_connection / tidings_bytes_per_connection`.
//! Goal: median <= 8 KiB per connection.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{stream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::clients::{q, ws_subscribe};
use crate::progress;
use crate::repeat::{alternate, Alternated, Run, Series};
use crate::Report;

/// Options of `memory`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// The `tidings` binary (default: `tidings` next to this executable).
    #[arg(long)]
    pub tidings_bin: Option<PathBuf>,
    /// The `nats-server` binary of the peer (looked up in PATH).
    #[arg(long, default_value = "nats-server")]
    pub nats_server_bin: String,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to wait before each RSS reading.
    #[arg(long, default_value_t = 2.0)]
    pub settle_secs: f64,
    /// Measure Tidings only.
    #[arg(long)]
    pub no_peer: bool,
}

/// Server RSS before and after opening `args.connections` idle
/// connections with `open(i)` (`args.concurrency` at a time), each time
/// after `args.settle_secs`; the connections are held until measured.
async fn measure_connections<C, F, Fut>(
    pid: u32,
    args: &Args,
    label: &str,
    open: F,
) -> Result<Measured>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<C>>,
{
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let before = rss_bytes(pid)?;
    let pb = progress::bar(args.connections as u64, label);
    let conns: Vec<_> = stream::iter(0..args.connections)
        .map(open)
        .buffer_unordered(args.concurrency.max(1))
        .inspect(|_| pb.inc(1))
        .collect()
        .await;
    pb.finish_and_clear();
    let conns = conns.into_iter().collect::<Result<Vec<_>>>()?;
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let after = rss_bytes(pid)?;
    drop(conns);
    Ok(Measured {
        before,
        after,
        connections: args.connections,
    })
}

/// `VmRSS` of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    parse_vmrss(&status).context("no VmRSS line in /proc/PID/status")
}

/// The `VmRSS:` line of a `/proc/PID/status` text, in bytes.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Raises the soft (and if needed the hard) open-file limit to `needed`.
pub fn raise_nofile(needed: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    let want = libc::rlimit {
        rlim_cur: needed.max(lim.rlim_cur),
        rlim_max: needed.max(lim.rlim_max),
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        // Not allowed to raise the hard limit: go as far as it allows.
        let capped = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
        ensure!(
            lim.rlim_max >= needed,
            "the open-file limit is {} and cannot be raised to {needed}; use fewer --connections",
            lim.rlim_max
        );
        return Ok(lim.rlim_max);
    }
    Ok(want.rlim_cur)
}

fn default_tidings_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("the bench executable has no directory")?
        .join("tidings"))
}

/// Stops a child we started: SIGTERM, then SIGKILL after 5 s.
async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child by its pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

struct Measured {
    before: u64,
    after: u64,
    connections: usize,
}

impl Measured {
    /// Signed: negative when the RSS fell.
    fn per_connection(&self) -> f64 {
        (self.after as f64 - self.before as f64) / self.connections as f64
    }

    fn run(&self) -> Run {
        Run::of(self.per_connection()).detail(serde_json::json!({
            "rss_before_kib": self.before / 1024,
            "rss_after_kib": self.after / 1024,
        }))
    }
}

async fn tidings(args: &Args, bin: &Path) -> Result<Measured> {
    ensure!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build --release -p tidings-server`, or pass --tidings-bin",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory:"])
        .env(
            "TIDINGS_MAX_CONNECTIONS",
            (args.connections + 100).to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id().context("the server exited at once")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(a) = line.strip_prefix("tidings listening on http://") {
                return Ok::<_, anyhow::Error>(a.trim().to_owned());
            }
        }
        bail!("the server exited before saying where it listens")
    })
    .await
    .context("the server did not start within 20 s")??;
    // Keep draining stdout so the child never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let result = measure_connections(pid, args, "tidings ws connections", |i| {
        let url = format!("ws://{addr}/ws?pattern={}", q(&format!("mem.{i}.>")));
        async move { ws_subscribe(&url).await }
    })
    .await;
    stop(child).await;
    result
}

/// One idle NATS client: INFO read, CONNECT + SUB + PING sent, PONG read.
async fn nats_client(port: u16, i: usize) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while !got.contains("\r\n") {
        let n = s.read(&mut buf).await?;
        ensure!(n > 0, "nats-server closed the connection");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    ensure!(got.starts_with("INFO"), "expected INFO, got {got:?}");
    s.write_all(
        format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"version\":\"0\",\"protocol\":1}}\r\nSUB mem.{i}.> 1\r\nPING\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut got = String::new();
    while !got.contains("PONG\r\n") {
        let n = s.read(&mut buf).await?;
        ensure!(n > 0, "nats-server closed the connection: {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        ensure!(!got.contains("-ERR"), "nats-server refused: {got:?}");
    }
    Ok(s)
}

async fn nats_peer(args: &Args) -> Result<Option<Measured>> {
    let dir = tempfile::tempdir()?;
    let spawned = Command::new(&args.nats_server_bin)
        .args(["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "no {} binary: reporting Tidings alone",
                args.nats_server_bin
            );
            return Ok(None);
        }
        Err(e) => return Err(e).context("cannot start nats-server"),
    };
    let pid = child.id().context("nats-server exited at once")?;
    let port = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            for entry in std::fs::read_dir(dir.path())? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "ports") {
                    let text = std::fs::read_to_string(&path)?;
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                        if let Some(url) = v["nats"][0].as_str() {
                            let port = url.rsplit(':').next().unwrap_or("").parse::<u16>()?;
                            return Ok::<_, anyhow::Error>(port);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("nats-server wrote no ports file within 10 s")??;

    let result =
        measure_connections(pid, args, "nats tcp connections", |i| nats_client(port, i)).await;
    stop(child).await;
    result.map(Some)
}

const GIB: f64 = (1u64 << 30) as f64;

/// Connections per GiB from bytes per connection; a run whose RSS did not
/// grow has none (it is recorded as a failed run, with its bytes).
pub fn per_gib(bytes: &Series, name: &str) -> Series {
    let mut s = Series::new(name);
    for (k, &b) in bytes.values.iter().enumerate() {
        if b > 0.0 {
            s.record(k, Ok(Run::of(GIB / b)));
        } else {
            s.record(
                k,
                Err(anyhow::anyhow!(
                    "RSS did not grow ({b:.0} B per connection): no per-GiB figure"
                )),
            );
        }
    }
    s.failures.extend(bytes.failures.iter().cloned());
    s
}

/// Runs the scenario: `runs` runs per side, fresh server processes each.
pub fn run(args: &Args, runs: usize) -> Result<Report> {
    ensure!(args.connections > 0, "--connections must be positive");
    let bin = match &args.tidings_bin {
        Some(b) => b.clone(),
        None => default_tidings_bin()?,
    };
    let limit = raise_nofile(args.connections as u64 + 1024)?;
    progress::phase(&format!(
        "memory: {} idle WebSocket connections to {} (fd limit {limit}), then nats-server, {runs} runs",
        args.connections,
        bin.display()
    ));
    let rt = super::runtime()?;
    let mut tidings_side = |_| {
        let t = rt.block_on(tidings(args, &bin))?;
        eprintln!(
            "tidings: RSS {} KiB -> {} KiB, {:.0} B per connection",
            t.before / 1024,
            t.after / 1024,
            t.per_connection()
        );
        Ok(t.run())
    };
    let mut no_nats = false;
    let mut nats_side = |_| match rt.block_on(nats_peer(args))? {
        Some(p) => {
            eprintln!(
                "nats:    RSS {} KiB -> {} KiB, {:.0} B per connection",
                p.before / 1024,
                p.after / 1024,
                p.per_connection()
            );
            Ok(p.run())
        }
        None => {
            no_nats = true;
            anyhow::bail!("no {} binary", args.nats_server_bin)
        }
    };
    let sides: Alternated = if args.no_peer {
        alternate(runs, &mut [("tidings", &mut tidings_side)], || {})
    } else {
        alternate(
            runs,
            &mut [("tidings", &mut tidings_side), ("nats", &mut nats_side)],
            || {},
        )
    };
    let t_bytes = &sides.series[0];
    let p_bytes = sides.series.get(1).filter(|_| !no_nats);
    let t = per_gib(t_bytes, "tidings");
    let p = p_bytes.map(|b| per_gib(b, "nats"));
    let met = t_bytes.median().is_some_and(|b| b <= 8192.0);
    let mut r = Report::compared(
        "memory",
        "nats-server, idle subscribed TCP clients",
        "median <= 8 KiB RSS per idle WebSocket connection",
        met,
        &t,
        p.as_ref(),
    )
    .orders(&sides)
    .with("per_s_means", "connections per GiB of server RSS")
    .with("connections", args.connections)
    .with("tidings_bytes_per_connection", t_bytes.to_json());
    if let Some(b) = p_bytes {
        r = r.with("peer_bytes_per_connection", b.to_json());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_is_read_in_bytes() {
        let status = "Name:\ttidings\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(1234 * 1024));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }

    #[test]
    fn a_falling_rss_is_negative_and_fails_the_run() {
        let m = Measured {
            before: 10 * 1024 * 1024,
            after: 9 * 1024 * 1024,
            connections: 1024,
        };
        assert_eq!(m.per_connection(), -1024.0);
        let mut bytes = Series::new("tidings");
        bytes.record(0, Ok(m.run()));
        bytes.record(1, Ok(Run::of(4096.0)));
        assert_eq!(bytes.min(), Some(-1024.0));
        let g = per_gib(&bytes, "tidings");
        assert_eq!(g.values, vec![GIB / 4096.0]);
        assert_eq!(g.failures.len(), 1);
        assert!(g.failures[0].contains("-1024"), "{:?}", g.failures);
        assert!(!crate::repeat::verdict(true, &g, None).0);
    }

    #[test]
    fn own_rss_is_positive() {
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
