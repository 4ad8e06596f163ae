//! A real full disk under the server: SQLite on a 4 MiB tmpfs that a
//! ballast file fills. Publishes answer 507 with `Retry-After` and a
//! message naming the cause (never 500), `/healthz` answers 503
//! `degraded` with the reason, and once the ballast is deleted the server
//! recovers by itself: publishes succeed, health is `ok`, and every
//! acknowledged event is there, gap-free.
//!
//! Needs root (to mount the tmpfs); prints "skipped" and passes otherwise.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.0.path()).status();
        if !ok.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }
}

fn mount_tmpfs(size: &str) -> Option<Tmpfs> {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(Tmpfs(dir))
}

#[tokio::test]
async fn a_full_disk_answers_507_degrades_health_and_recovers() {
    let Some(fs) = mount_tmpfs("4m") else {
        eprintln!("skipped: needs root to mount tmpfs");
        return;
    };
    let data = fs.0.path().join("data");
    let s = {
        let data = data.clone();
        sqlite_server(move |c| c.data_dir = data).await
    };
    assert_eq!(s.post(json!({"name": "a.b"})).await.0, 200);
    // Ballast: all but a little of the disk.
    let ballast = fs.0.path().join("ballast");
    {
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut acked = vec![1u64];
    let payload = "z".repeat(8 * 1024);
    let mut refused = None;
    for _ in 0..2000 {
        let r = s
            .http
            .post(s.url("/events"))
            .json(&json!({"name": "a.b", "data": payload}))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: serde_json::Value = r.json().await.unwrap();
            acked.push(v["seq"].as_u64().unwrap());
            continue;
        }
        refused = Some(r);
        break;
    }
    let r = refused.expect("the disk never filled");
    assert_eq!(r.status(), 507, "a full disk is 507, never 500");
    let retry = r.headers().get("retry-after").expect("Retry-After").clone();
    assert!(retry.to_str().unwrap().parse::<u64>().unwrap() > 0);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "no_space");
    assert!(body["error"].as_str().unwrap().contains("full"), "{body}");

    let (st, health) = s.get("/healthz").await;
    assert_eq!(st, 503);
    assert_eq!(health["status"], "degraded");
    assert!(
        health["reason"].as_str().unwrap().contains("full"),
        "{health}"
    );

    // Space returns: no restart, the write path recovers by itself.
    std::fs::remove_file(&ballast).unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        let (st, v) = s.post(json!({"name": "a.b", "data": "after"})).await;
        if st == 200 {
            acked.push(v["seq"].as_u64().unwrap());
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "publishes did not recover once space returned");
    let mut healthy = false;
    for _ in 0..50 {
        if s.get("/healthz").await.0 == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "health did not recover");
    let events = all_events(&s.http, &s.base).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    for a in &acked {
        assert!(seqs.contains(a), "acknowledged seq {a} lost");
    }
    let mut s = s;
    s.shutdown().await;
    drop(fs);
}
