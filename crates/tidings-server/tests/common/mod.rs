//! Shared test harness: a real server on 127.0.0.1:0 and real clients.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tidings_server::config::Config;
use tidings_server::server::{start, RunningServer};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub base: String,
    pub ws_base: String,
    pub http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

/// A server over the in-memory store.
pub async fn memory_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        store: Some("memory:".into()),
        ..Config::default()
    };
    tweak(&mut config);
    launch(config, None).await
}

/// A server over SQLite in a temporary directory.
pub async fn sqlite_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    tweak(&mut config);
    launch(config, Some(dir)).await
}

async fn launch(config: Config, dir: Option<tempfile::TempDir>) -> TestServer {
    config.validate().unwrap();
    let server = start(config).await.unwrap();
    let addr = server.addr;
    TestServer {
        server: Some(server),
        base: format!("http://{addr}"),
        ws_base: format!("ws://{addr}"),
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/events"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The body of `GET path` as text (`/metrics`, say).
    pub async fn text(&self, path: &str) -> String {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn ws(&self, path: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{}{path}", self.ws_base))
            .await
            .unwrap();
        ws
    }

    pub async fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// The next text message as JSON (pings skipped), within 5 s.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no message within 5 s")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Asserts no text message arrives within `ms`.
pub async fn quiet(ws: &mut Ws, ms: u64) {
    if let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(ms), ws.next()).await
    {
        panic!("unexpected message {t}");
    }
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Minimal SSE client: yields (id, event, data) per event.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

pub async fn sse(
    server: &TestServer,
    query: &str,
    last_event_id: Option<&str>,
) -> Result<Sse, (u16, Value)> {
    let mut r = server.http.get(server.url(&format!("/sse?{query}")));
    if let Some(id) = last_event_id {
        r = r.header("Last-Event-ID", id);
    }
    let resp = r.send().await.unwrap();
    if !resp.status().is_success() {
        let s = resp.status().as_u16();
        return Err((s, resp.json().await.unwrap_or(Value::Null)));
    }
    Ok(Sse {
        body: Box::pin(resp.bytes_stream()),
        buf: String::new(),
    })
}

impl Sse {
    /// The next raw chunk (None at the end of the stream).
    pub async fn body_next(&mut self) -> Option<reqwest::Result<bytes::Bytes>> {
        self.body.next().await
    }

    pub async fn next(&mut self) -> (Option<String>, Option<String>, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keepalive comment
                }
                return (id, event, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.body.next())
                .await
                .expect("no SSE data within 5 s")
                .expect("SSE stream ended")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// Starts the real `tidings` binary: `serve --listen 127.0.0.1:0` plus
/// `args`; returns the process and the base URL from its banner.
pub fn spawn_binary(args: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("TIDINGS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn tidings");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:"),
        "unexpected banner {line:?}"
    );
    (child, base)
}

/// The body of `GET url`, as text.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// A server's whole history, paging `GET /events`.
pub async fn all_events(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = http
            .get(format!("{base}/events?after={after}&limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        after = page["next_after"].as_u64().unwrap();
        out.extend(events);
    }
}
