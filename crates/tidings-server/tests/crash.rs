//! kill -9 of the real server process under concurrent HTTP publishes:
//! after a restart every acknowledged event is there at its seq, and the
//! log is gap-free.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{all_events, spawn_binary};
use serde_json::{json, Value};

fn spawn(dir: &std::path::Path) -> (std::process::Child, String) {
    spawn_binary(&["--data-dir".as_ref(), dir.as_os_str()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // seq -> id of every acknowledged event, across rounds.
    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let mut rng = 0x2545F4914F6CDD1Du64;
    for round in 0..6 {
        let (mut child, base) = spawn(dir.path());
        let publishers: Vec<_> = (0..4)
            .map(|p| {
                let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 0.. {
                        let body = if i % 5 == 0 {
                            json!([{"name": "crash.batch", "data": [round, p, i]}, {"name": "crash.batch", "data": [round, p, i]}])
                        } else {
                            json!({"name": "crash.one", "data": [round, p, i]})
                        };
                        let Ok(r) = http.post(format!("{base}/events")).json(&body).send().await else { return };
                        let Ok(v) = r.json::<Value>().await else { return };
                        let list = if v.is_array() { v.as_array().unwrap().clone() } else { vec![v] };
                        let mut a = acked.lock().unwrap();
                        for e in list {
                            a.insert(e["seq"].as_u64().unwrap(), e["id"].as_str().unwrap().to_owned());
                        }
                    }
                })
            })
            .collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(150 + rng % 400)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for p in publishers {
            p.await.unwrap();
        }

        let (mut child, base) = spawn(dir.path());
        let events = all_events(&http, &base).await;
        let acked = acked.lock().unwrap().clone();
        assert!(!acked.is_empty(), "round {round}: nothing was acknowledged");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e["seq"].as_u64().unwrap(),
                i as u64 + 1,
                "round {round}: gap or duplicate"
            );
        }
        for (seq, id) in &acked {
            let e = events
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} lost"));
            assert_eq!(
                e["id"].as_str().unwrap(),
                id,
                "round {round}: seq {seq} holds another event"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
