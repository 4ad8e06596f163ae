//! The archive through the server: `GET /events` answers 410 below the
//! retained range, `GET /export` streams archive then log as one gap-free
//! range (filtered by pattern and by the caller's scope), and the `tidings`
//! binary's `export` and `import` move a log into another server, once.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};
use tidings_server::config::TokenConfig;

/// A SQLite server keeping 5 events, archiving the rest.
async fn archiving_server(tweak: impl FnOnce(&mut tidings_server::config::Config)) -> TestServer {
    sqlite_server(|c| {
        c.retention_max_count = Some(5);
        c.archive_dir = Some(c.data_dir.join("archive"));
        tweak(c);
    })
    .await
}

/// Publishes `n` events alternating `orders.placed` / `users.joined`;
/// returns the committed envelopes.
async fn publish(s: &TestServer, n: u64, token: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = if i % 2 == 0 {
            "orders.placed"
        } else {
            "users.joined"
        };
        let mut r = s
            .http
            .post(s.url("/events"))
            .json(&json!({"name": name, "data": {"i": i}, "source": "test"}));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200);
        out.push(r.json().await.unwrap());
    }
    out
}

async fn prune(s: &TestServer) -> u64 {
    s.server
        .as_ref()
        .unwrap()
        .service
        .bus()
        .log()
        .prune()
        .await
        .unwrap()
}

/// `GET /export?QUERY` as (status, lines).
async fn export(s: &TestServer, query: &str, token: Option<&str>) -> (u16, Vec<Value>) {
    let mut r = s.http.get(s.url(&format!("/export?{query}")));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    if status != 200 {
        return (status, vec![serde_json::from_str(&text).unwrap()]);
    }
    (
        status,
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

fn seqs(lines: &[Value]) -> Vec<u64> {
    lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn history_below_the_retained_range_is_410_and_export_is_seamless() {
    let s = archiving_server(|_| {}).await;
    let published = publish(&s, 20, None).await;
    assert_eq!(prune(&s).await, 15);

    let (st, body) = s.get("/events?after=3").await;
    assert_eq!(st, 410, "{body}");
    assert_eq!(body["code"], "gone");
    assert_eq!(body["first_retained_seq"], 16);
    assert!(
        body["error"].as_str().unwrap().contains("tidings export"),
        "{body}"
    );
    // From just before the retained range, or from the beginning: fine.
    let (st, body) = s.get("/events?after=15").await;
    assert_eq!((st, body["events"][0]["seq"].as_u64()), (200, Some(16)));
    let (st, body) = s.get("/events").await;
    assert_eq!((st, body["events"][0]["seq"].as_u64()), (200, Some(16)));

    // The whole range: archive then log, each event as published.
    let (st, lines) = export(&s, "", None).await;
    assert_eq!(st, 200);
    assert_eq!(lines, published);
    let (_, lines) = export(&s, "after=10&until=17", None).await;
    assert_eq!(seqs(&lines), (11..=17).collect::<Vec<_>>());
    let (_, lines) = export(&s, "pattern=orders.%3E", None).await;
    assert_eq!(seqs(&lines), (1..=20).step_by(2).collect::<Vec<_>>());
    let (_, lines) = export(&s, "after=20", None).await;
    assert!(lines.is_empty());

    // More retention while the archive grows: still one seamless range.
    publish(&s, 10, None).await;
    assert_eq!(prune(&s).await, 10);
    let (_, lines) = export(&s, "", None).await;
    assert_eq!(seqs(&lines), (1..=30).collect::<Vec<_>>());
    assert_eq!(lines[..20], published[..]);

    // The archive files are plain zstd JSON lines.
    let dir = s
        .server
        .as_ref()
        .unwrap()
        .service
        .config
        .archive_dir
        .clone()
        .unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let raw = std::fs::read(dir.join(files[0]["file"].as_str().unwrap())).unwrap();
    let text = String::from_utf8(zstd_decode(&raw)).unwrap();
    assert_eq!(text.lines().count(), 15);
}

fn zstd_decode(raw: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-dc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the zstd command (the archive is read with zstdcat)");
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[tokio::test]
async fn bad_export_requests_are_400_and_unarchived_gaps_are_410() {
    let s = archiving_server(|_| {}).await;
    publish(&s, 3, None).await;
    for (q, code) in [
        ("after=5&until=2", "invalid_range"),
        ("pattern=a..b", "invalid_pattern"),
        ("after=x", "invalid_parameter"),
        ("until=-1", "invalid_parameter"),
    ] {
        let (st, body) = export(&s, q, None).await;
        assert_eq!(st, 400, "{q}: {body:?}");
        let got = body[0]["code"].as_str().unwrap().to_owned();
        if code != "invalid_parameter" {
            assert_eq!(got, code, "{q}");
        }
    }

    // Retention without an archive: what was pruned is gone for good.
    let s = sqlite_server(|c| c.retention_max_count = Some(5)).await;
    publish(&s, 12, None).await;
    assert_eq!(prune(&s).await, 7);
    let (st, body) = export(&s, "after=2", None).await;
    assert_eq!(st, 410);
    assert_eq!(body[0]["first_available_seq"], 8);
    let (st, lines) = export(&s, "", None).await;
    assert_eq!((st, seqs(&lines)), (200, (8..=12).collect::<Vec<_>>()));
    // From the start up to a pruned seq: nothing asked for is held.
    let (st, body) = export(&s, "until=3", None).await;
    assert_eq!(st, 410, "{body:?}");
    assert_eq!(body[0]["first_available_seq"], 8);
    // After the last seq there is nothing to export (and no overflow).
    let (st, lines) = export(&s, "after=18446744073709551615", None).await;
    assert_eq!((st, lines.len()), (200, 0));
}

#[tokio::test]
async fn export_is_held_to_the_callers_scope() {
    let s = archiving_server(|c| {
        c.auth.tokens = vec![
            TokenConfig {
                token: "admin".into(),
                name: None,
                publish: vec![">".into()],
                subscribe: vec![">".into()],
            },
            TokenConfig {
                token: "orders".into(),
                name: None,
                publish: vec![],
                subscribe: vec!["orders.>".into()],
            },
        ];
    })
    .await;
    publish(&s, 12, Some("admin")).await;
    assert_eq!(prune(&s).await, 7);
    let (st, lines) = export(&s, "", Some("orders")).await;
    assert_eq!(st, 200);
    assert_eq!(seqs(&lines), (1..=12).step_by(2).collect::<Vec<_>>());
    assert!(lines.iter().all(|l| l["name"] == "orders.placed"));
    assert_eq!(export(&s, "pattern=users.%3E", Some("orders")).await.0, 403);
    assert_eq!(export(&s, "", None).await.0, 401);
    let (_, lines) = export(&s, "", Some("admin")).await;
    assert_eq!(seqs(&lines), (1..=12).collect::<Vec<_>>());
}

fn tidings(base: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
    c.env("TIDINGS_SERVER", base).env("TIDINGS_LOG", "warn");
    c
}

/// `tidings export --output FILE` against `base`, which must succeed.
async fn export_to(base: &str, file: &std::path::Path) -> std::process::Output {
    let (base, file) = (base.to_owned(), file.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        tidings(&base)
            .args(["export", "--output"])
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `tidings export` from an archiving server, `tidings import` twice into
/// another: the second server holds every event once, in order, with the
/// original names, data, sources and times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exports_and_imports_once() {
    let a = archiving_server(|_| {}).await;
    let published = publish(&a, 25, None).await;
    assert_eq!(prune(&a).await, 20);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    let out = export_to(&a.base, &file).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 25 events"));
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, published);

    // A bad range is refused with the server's message, and a non-zero exit.
    let base_a = a.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        tidings(&base_a)
            .args(["export", "--after", "9", "--until", "3"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("greater than until"));

    let b = sqlite_server(|_| {}).await;
    for (round, expect) in [
        (1, "imported 25 events (0 already there)"),
        (2, "imported 0 events (25 already there)"),
    ] {
        let (base_b, f) = (b.base.clone(), file.clone());
        let out = tokio::task::spawn_blocking(move || {
            tidings(&base_b).arg("import").arg(&f).output().unwrap()
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.contains(expect),
            "round {round}: {err}"
        );
    }
    // Also from stdin.
    let base_b = b.base.clone();
    let text = std::fs::read(&file).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = tidings(&base_b)
            .args(["import", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&text).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 0 events (25 already there)"));

    let got = all_events(&b.http, &b.base).await;
    assert_eq!(got.len(), 25);
    for (g, p) in got.iter().zip(&published) {
        for field in ["seq", "name", "data", "source", "time"] {
            assert_eq!(g[field], p[field], "{field}");
        }
        assert_eq!(g["key"], format!("import:{}", p["id"].as_str().unwrap()));
    }

    // A line that is not an event: a clear error naming the line.
    std::fs::write(&file, "{\"name\":\"a\",\"id\":\"x\"}\nnot json\n").unwrap();
    let (base_b, f) = (b.base.clone(), file.clone());
    let out = tokio::task::spawn_blocking(move || {
        tidings(&base_b).arg("import").arg(&f).output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second import by another token (another idempotency-key namespace, so
/// the server's key window cannot catch it) still imports nothing: import
/// skips the ids the server already holds, whenever they were imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_import_under_another_key_namespace_imports_nothing() {
    let a = sqlite_server(|_| {}).await;
    publish(&a, 6, None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    export_to(&a.base, &file).await;

    let token = |t: &str| TokenConfig {
        token: t.into(),
        name: None,
        publish: vec![">".into()],
        subscribe: vec![">".into()],
    };
    let b = sqlite_server(|c| c.auth.tokens = vec![token("first"), token("second")]).await;
    for (t, expect) in [
        ("first", "imported 6 events (0 already there)"),
        ("second", "imported 0 events (6 already there)"),
    ] {
        let (base_b, f, t) = (b.base.clone(), file.clone(), t.to_owned());
        let out = tokio::task::spawn_blocking(move || {
            tidings(&base_b)
                .env("TIDINGS_TOKEN", t)
                .arg("import")
                .arg(&f)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.contains(expect),
            "{expect}: {err}"
        );
    }
}

/// The real `tidings` server, killed with SIGKILL after its background
/// prune made the archive durable and before it deleted the rows
/// (`TIDINGS_FAULT=archive_after_write`), then restarted: the export is
/// still every event exactly once, gap-free, as published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_between_archive_and_delete_loses_and_doubles_nothing() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let start = |fault: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
        c.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("TIDINGS_RETENTION_MAX_COUNT", "5")
            .env("TIDINGS_ARCHIVE_DIR", dir.path().join("archive"))
            .env("TIDINGS_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if fault {
            c.env("TIDINGS_FAULT", "archive_after_write");
        }
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "banner {line:?}");
        (child, base)
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let http = reqwest::Client::new();
    // A full chunk (10,000) due, so the background prune archives at once.
    let (child, base) = start(true);
    let mut server = Kill(child);
    let mut published: Vec<Value> = Vec::new();
    for b in 0..21 {
        let batch: Vec<Value> = (0..500)
            .map(|i| json!({"name": "bulk.e", "data": {"b": b, "i": i}}))
            .collect();
        let r = http
            .post(format!("{base}/events"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        published.extend(r.json::<Vec<Value>>().await.unwrap());
    }
    let stderr = server.0.stderr.take().unwrap();
    let fault = tokio::task::spawn_blocking(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.starts_with("FAULT") {
                return line;
            }
        }
        panic!("the server ended without reaching the fault point");
    });
    let fault = tokio::time::timeout(std::time::Duration::from_secs(60), fault)
        .await
        .expect("the fault point within 60 s")
        .unwrap();
    assert_eq!(fault, "FAULT archive_after_write 1 10000");
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    drop(server);

    let (child, base) = start(false);
    let _server = Kill(child);
    // The restarted server deletes what the archive holds, writing nothing again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = http
            .get(format!("{base}/events?after=9000"))
            .send()
            .await
            .unwrap();
        if r.status() == 410 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["first_retained_seq"], 10001);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rows were never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let text = common::get_text(&http, &format!("{base}/export")).await;
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10_500);
    assert_eq!(lines, published, "every event once, in order, as published");
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("archive/manifest.json")).unwrap())
            .unwrap();
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{m}");
    assert_eq!(
        (
            files[0]["first_seq"].as_u64(),
            files[0]["last_seq"].as_u64()
        ),
        (Some(1), Some(10000))
    );
    let names = std::fs::read_dir(dir.path().join("archive"))
        .unwrap()
        .count();
    assert_eq!(names, 2, "one file and the manifest, no leftover");
}

/// Retention moves events into the archive while an export is being
/// read: the export goes on from the archive, still every seq once. (Read
/// from the service's own channel: over a socket, the kernel's buffers
/// would let the export finish before the prune.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_survives_retention_running_under_it() {
    use tidings_server::auth::Principal;
    use tidings_server::service::ExportRequest;
    let s = archiving_server(|_| {}).await;
    for b in 0..6 {
        let batch: Vec<Value> = (0..500)
            .map(|i| json!({"name": "big.e", "data": {"b": b, "i": i, "pad": "x".repeat(500)}}))
            .collect();
        let r = s
            .http
            .post(s.url("/events"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let svc = s.server.as_ref().unwrap().service.clone();
    let mut export = svc
        .export(&Principal::anonymous(), ExportRequest::default())
        .await
        .unwrap();
    let mut text = Vec::new();
    text.extend_from_slice(&export.chunks.recv().await.unwrap().unwrap());
    // The exporter is at most a few chunks ahead; archive all but 5 now.
    assert_eq!(prune(&s).await, 2995);
    while let Some(chunk) = export.chunks.recv().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(text).unwrap();
    let got: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(got, (1..=3000).collect::<Vec<_>>());
}
