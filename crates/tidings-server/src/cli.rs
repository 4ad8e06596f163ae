//! The client subcommands of the `tidings` binary: `publish`, `tail`,
//! `history`, `channels`, `consumers`, `export`, `import`. They reach a server by
//! `--server URL` or `TIDINGS_SERVER` (default `http://127.0.0.1:7700`).
//!
//! `import` publishes an export's lines in file order, in batches, each
//! event with the key `import:<original id>`. It first reads the target
//! server's own export (archive and log) for events already imported (their
//! key is `import:<id>`) and skips those, so importing a file twice imports
//! it once however far apart the runs are; the key also covers two imports
//! running at once, within the server's idempotency window.

use std::io::{BufRead, Write};

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

/// Most events one import batch holds.
pub const IMPORT_BATCH: usize = 500;

/// About the most bytes of JSON one import batch holds (under the
/// server's default `max_payload` of 1 MiB).
pub const IMPORT_BATCH_BYTES: usize = 512 * 1024;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Events appended.
    pub new: u64,
    /// Events the server already had (their key was seen).
    pub duplicates: u64,
}

/// The publish body of one exported line: name, data, source, time and
/// priority kept; the original id as the idempotency key.
pub fn import_event(line: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(line).context("not JSON")?;
    let name = v["name"].as_str().context("no \"name\"")?;
    let id = v["id"].as_str().context("no \"id\"")?;
    let mut e = json!({"name": name, "data": v["data"], "key": format!("import:{id}")});
    for field in ["source", "time", "priority"] {
        if let Some(x) = v.get(field).filter(|x| !x.is_null()) {
            e[field] = x.clone();
        }
    }
    Ok(e)
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

    /// `GET /export`: writes the JSON lines to `out` as they arrive;
    /// returns how many lines. A body cut short is an error.
    pub async fn export(
        &self,
        after: Option<u64>,
        until: Option<u64>,
        pattern: Option<&str>,
        out: &mut impl Write,
    ) -> Result<u64> {
        let mut q = Vec::new();
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        if let Some(u) = until {
            q.push(("until", u.to_string()));
        }
        if let Some(p) = pattern {
            q.push(("pattern", p.to_owned()));
        }
        let r = self
            .auth(self.http.get(format!("{}/export", self.base)).query(&q))
            .send()
            .await?;
        if !r.status().is_success() {
            Self::answer(r).await?;
            bail!("the server refused the export");
        }
        let mut body = r.bytes_stream();
        let mut lines = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the export was cut short (see the server's log)")?;
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(lines)
    }

    /// Publishes every line of `input` (an export) in order, in batches;
    /// see the module docs.
    pub async fn import(&self, input: impl BufRead) -> Result<Imported> {
        let already = self
            .imported_ids()
            .await
            .context("reading what the server already imported")?;
        let mut done = Imported::default();
        let mut batch: Vec<Value> = Vec::new();
        let mut bytes = 0usize;
        for (i, line) in input.lines().enumerate() {
            let line = line.context("reading the input")?;
            if line.trim().is_empty() {
                continue;
            }
            let e = import_event(&line)
                .with_context(|| format!("line {}: not an exported event", i + 1))?;
            let key = e["key"].as_str().unwrap_or_default();
            if already.contains(key) {
                done.duplicates += 1;
                continue;
            }
            let size = e.to_string().len();
            if !batch.is_empty()
                && (batch.len() >= IMPORT_BATCH || bytes + size > IMPORT_BATCH_BYTES)
            {
                self.import_batch(std::mem::take(&mut batch), &mut done)
                    .await?;
                bytes = 0;
            }
            bytes += size;
            batch.push(e);
        }
        if !batch.is_empty() {
            self.import_batch(batch, &mut done).await?;
        }
        Ok(done)
    }

    /// The keys `import:<id>` of every event this server holds (archive and
    /// log, as far as the token may read), from `GET /export`.
    async fn imported_ids(&self) -> Result<std::collections::HashSet<String>> {
        let mut export = Vec::new();
        self.export(None, None, None, &mut export).await?;
        let mut keys = std::collections::HashSet::new();
        for line in export.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value =
                serde_json::from_slice(line).context("the server's export is not JSON lines")?;
            if let Some(k) = v["key"].as_str().filter(|k| k.starts_with("import:")) {
                keys.insert(k.to_owned());
            }
        }
        Ok(keys)
    }

    async fn import_batch(&self, batch: Vec<Value>, done: &mut Imported) -> Result<()> {
        let r = self
            .auth(
                self.http
                    .post(format!("{}/events", self.base))
                    .json(&Value::Array(batch)),
            )
            .send()
            .await?;
        let answer = Self::answer(r)
            .await
            .with_context(|| format!("after {} events imported", done.new + done.duplicates))?;
        for c in answer.as_array().into_iter().flatten() {
            if c["duplicate"] == true {
                done.duplicates += 1;
            } else {
                done.new += 1;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exported_line_becomes_a_publish_keyed_by_its_id() {
        let line = r#"{"seq":7,"id":"0190a0b0-0000-7000-8000-000000000001","name":"a.b","source":"s","time":"2026-01-01T00:00:00Z","data":{"x":1},"key":"k","priority":"high"}"#;
        let e = import_event(line).unwrap();
        assert_eq!(
            e,
            json!({"name":"a.b","data":{"x":1},"source":"s","time":"2026-01-01T00:00:00Z",
                   "priority":"high","key":"import:0190a0b0-0000-7000-8000-000000000001"})
        );
        assert!(import_event("not json").is_err());
        assert!(import_event(r#"{"id":"x"}"#).is_err());
        assert!(import_event(r#"{"name":"a"}"#).is_err());
    }
}
