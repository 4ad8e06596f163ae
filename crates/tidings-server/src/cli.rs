//! The client subcommands of the `tidings` binary: `publish`, `tail`,
//! `history`, `channels`. They reach a server by `--server URL` or
//! `TIDINGS_SERVER` (default `http://127.0.0.1:7700`).

use std::io::Write;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How `tidings tail` follows.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// Start after this seq.
    pub after: Option<u64>,
    /// Print raw envelopes.
    pub json: bool,
    /// A CEL filter.
    pub filter: Option<String>,
    /// Follow as this durable consumer, acknowledging what was printed.
    pub consumer: Option<String>,
}

/// Where and how to reach the server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:7700`).
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn answer(r: reqwest::Response) -> Result<Value> {
        let status = r.status();
        let body: Value = r.json().await.context("the server's answer is not JSON")?;
        if !status.is_success() {
            bail!(
                "{}: {}",
                status,
                body["error"].as_str().unwrap_or(&body.to_string())
            );
        }
        Ok(body)
    }

    /// `POST /events` with one event. `data` is parsed as JSON, or sent as
    /// a string if it is not JSON.
    pub async fn publish(
        &self,
        name: &str,
        data: Option<&str>,
        source: Option<&str>,
        key: Option<&str>,
    ) -> Result<Value> {
        let data = match data {
            None => Value::Null,
            Some(d) => serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned())),
        };
        let mut body = json!({"name": name, "data": data});
        if let Some(s) = source {
            body["source"] = json!(s);
        }
        if let Some(k) = key {
            body["key"] = json!(k);
        }
        let r = self
            .auth(self.http.post(format!("{}/events", self.base)).json(&body))
            .send()
            .await?;
        Self::answer(r).await
    }

    /// `GET /events`.
    pub async fn history(&self, pattern: Option<&str>, after: u64, limit: usize) -> Result<Value> {
        let mut q = vec![("after", after.to_string()), ("limit", limit.to_string())];
        if let Some(p) = pattern {
            q.push(("pattern", p.to_owned()));
        }
        let r = self
            .auth(self.http.get(format!("{}/events", self.base)).query(&q))
            .send()
            .await?;
        Self::answer(r).await
    }

    /// `GET /channels`.
    pub async fn channels(&self) -> Result<Value> {
        let r = self
            .auth(self.http.get(format!("{}/channels", self.base)))
            .send()
            .await?;
        Self::answer(r).await
    }

    /// `GET /consumers`.
    pub async fn consumers(&self) -> Result<Value> {
        let r = self
            .auth(self.http.get(format!("{}/consumers", self.base)))
            .send()
            .await?;
        Self::answer(r).await
    }

    /// Follows `/ws` and prints events until the connection ends; as a
    /// consumer, acknowledges each event once it is printed.
    pub async fn tail(
        &self,
        patterns: &[String],
        opts: &TailOptions,
        out: &mut impl Write,
    ) -> Result<()> {
        let (after, as_json) = (opts.after, opts.json);
        let ws_base = self.base.replacen("http", "ws", 1);
        let mut url =
            reqwest::Url::parse(&format!("{ws_base}/ws")).context("invalid --server URL")?;
        {
            let mut q = url.query_pairs_mut();
            for p in if patterns.is_empty() {
                vec![">".to_owned()]
            } else {
                patterns.to_vec()
            } {
                q.append_pair("pattern", &p);
            }
            if let Some(a) = after {
                q.append_pair("after", &a.to_string());
            }
            if let Some(f) = &opts.filter {
                q.append_pair("filter", f);
            }
            if let Some(c) = &opts.consumer {
                q.append_pair("consumer", c);
            }
            if let Some(t) = &self.token {
                q.append_pair("token", t);
            }
        }
        let request = url.as_str().into_client_request()?;
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        while let Some(msg) = socket.next().await {
            let text = match msg? {
                Message::Text(t) => t,
                Message::Close(frame) => {
                    if let Some(f) = frame {
                        eprintln!("closed: {}", f.reason);
                    }
                    break;
                }
                _ => continue,
            };
            let v: Value = serde_json::from_str(text.as_str())?;
            match v.get("type").and_then(Value::as_str) {
                Some("connection") => continue,
                Some("lagged") => eprintln!(
                    "lagged: missed {} events, resuming at {}",
                    v["missed"], v["resume_from"]
                ),
                Some(_) => eprintln!("{v}"),
                None if as_json => writeln!(out, "{text}")?,
                None => writeln!(
                    out,
                    "#{} {} {}",
                    v["seq"],
                    v["name"].as_str().unwrap_or(""),
                    v["data"]
                )?,
            }
            out.flush()?;
            if let (Some(_), Some(seq)) = (&opts.consumer, v.get("seq").and_then(Value::as_u64)) {
                if v.get("type").is_none() {
                    // Printed and flushed: done with it.
                    socket
                        .send(Message::Text(
                            json!({"op": "ack", "seq": seq}).to_string().into(),
                        ))
                        .await?;
                }
            }
        }
        Ok(())
    }
}
