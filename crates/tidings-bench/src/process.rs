//! A `tidings serve` running as a separate process (so its RSS is its
//! own), configured by a TOML file in a temporary directory, listening on
//! 127.0.0.1:0. Shared by `soak`, `churn` and `publish`; [`post_events`]
//! publishes to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// `tidings` next to this executable (`cargo build --release -p tidings-server`).
pub fn default_tidings_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("the bench executable has no directory")?
        .join("tidings"))
}

/// A running server process.
pub struct ServerProcess {
    child: Option<Child>,
    /// Its process id (for `/proc/PID/status`).
    pub pid: u32,
    /// `host:port`.
    pub addr: String,
    /// Where its config file and data live.
    pub dir: tempfile::TempDir,
}

/// Why a start failed: the server's own words (its stderr), if it said any.
#[derive(Debug)]
pub struct StartError {
    pub stderr: String,
    pub error: anyhow::Error,
}

impl ServerProcess {
    /// Starts `bin serve --config <dir>/tidings.toml` with `config` as the
    /// file's text (`data_dir` is set to `<dir>/data` unless `config` sets
    /// it) and `env` added to the environment.
    pub async fn start(
        bin: &Path,
        config: &str,
        env: &[(&str, String)],
    ) -> std::result::Result<ServerProcess, StartError> {
        let fail = |e: anyhow::Error| StartError {
            stderr: String::new(),
            error: e,
        };
        if !bin.exists() {
            return Err(fail(anyhow::anyhow!(
                "{} does not exist: build it with `cargo build --release -p tidings-server`, or pass --tidings-bin",
                bin.display()
            )));
        }
        let dir = tempfile::tempdir().map_err(|e| fail(e.into()))?;
        let data = dir.path().join("data");
        let mut text = String::new();
        if !config.contains("data_dir") {
            text.push_str(&format!("data_dir = {:?}\n", data.display().to_string()));
        }
        text.push_str(config);
        let file = dir.path().join("tidings.toml");
        std::fs::write(&file, text).map_err(|e| fail(e.into()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--config")
            .arg(&file)
            .env("TIDINGS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))
            .map_err(fail)?;
        let pid = child
            .id()
            .context("the server exited at once")
            .map_err(fail)?;
        let stdout = child.stdout.take().context("no stdout").map_err(fail)?;
        let mut stderr = child.stderr.take().context("no stderr").map_err(fail)?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("tidings listening on http://") {
                    return Ok::<_, anyhow::Error>(a.trim().to_owned());
                }
            }
            bail!("the server exited before saying where it listens")
        })
        .await;
        let addr = match found {
            Ok(Ok(a)) => a,
            other => {
                let mut said = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), stderr.read_to_string(&mut said))
                        .await;
                let _ = child.kill().await;
                let error = match other {
                    Ok(Err(e)) => e,
                    _ => anyhow::anyhow!("the server did not start within 30 s"),
                };
                return Err(StartError {
                    stderr: said,
                    error,
                });
            }
        };
        // Keep draining both pipes so the child never blocks on them;
        // warnings go to our stderr.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("[tidings] {l}");
            }
        });
        Ok(ServerProcess {
            child: Some(child),
            pid,
            addr,
            dir,
        })
    }

    /// `http://addr`.
    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://addr`.
    pub fn ws(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: sending a signal to our own child by its pid.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// `VmRSS`, `RssAnon` and `RssFile` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let rss = field("VmRSS:").context("no VmRSS line")?;
    Ok((
        rss,
        field("RssAnon:").unwrap_or(0),
        field("RssFile:").unwrap_or(0),
    ))
}

/// The open connections per transport in a `/metrics` text: (ws, sse).
pub fn metrics_connections(text: &str) -> (Option<i64>, Option<i64>) {
    let get = |t: &str| {
        let key = format!("tidings_connections{{transport=\"{t}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    };
    (get("ws"), get("sse"))
}

/// A committed event as `POST /events` answers it: only its seq is read.
#[derive(serde::Deserialize)]
pub struct SeqOnly {
    pub seq: u64,
}

/// `POST {base}/events` with the JSON `body` (one event or an array);
/// returns the answer's bytes, or an error quoting its start unless the
/// status is a success.
pub async fn post_events(http: &reqwest::Client, base: &str, body: String) -> Result<bytes::Bytes> {
    let resp = http
        .post(format!("{base}/events"))
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
    Ok(bytes)
}

/// `last_seq` from `GET /healthz`.
pub async fn last_seq(http: &reqwest::Client, base: &str) -> Result<u64> {
    let v: serde_json::Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .context("GET /healthz")?
        .json()
        .await?;
    let s = v["last_seq"].as_u64();
    ensure!(s.is_some(), "no last_seq in /healthz: {v}");
    Ok(s.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_read_from_metrics() {
        let text = "# TYPE tidings_connections gauge\ntidings_connections{transport=\"ws\"} 98\ntidings_connections{transport=\"sse\"} 7\n";
        assert_eq!(metrics_connections(text), (Some(98), Some(7)));
        assert_eq!(metrics_connections(""), (None, None));
    }

    #[test]
    fn own_rss_is_read() {
        let (rss, _, _) = rss_kib(std::process::id()).unwrap();
        assert!(rss > 0);
    }
}
