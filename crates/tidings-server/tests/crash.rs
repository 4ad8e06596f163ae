//! kill -9 of the real server process under concurrent HTTP publishes:
//! after a restart every acknowledged event is there at its seq, and the
//! log is gap-free. Each round proves it for the events acknowledged in
//! that round (every publisher must have had some), and a publisher that
//! fails before the kill fails the test instead of stopping quietly.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
        // Set just before the kill: a publisher's failure before it is a
        // bug, after it the expected end.
        let killed = Arc::new(AtomicBool::new(false));
        let publishers: Vec<_> = (0..4)
            .map(|p| {
                let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
                let killed = killed.clone();
                tokio::spawn(async move {
                    let mut acks = 0usize;
                    for i in 0.. {
                        let body = if i % 5 == 0 {
                            json!([{"name": "crash.batch", "data": [round, p, i]}, {"name": "crash.batch", "data": [round, p, i]}])
                        } else {
                            json!({"name": "crash.one", "data": [round, p, i]})
                        };
                        let sent = http.post(format!("{base}/events")).json(&body).send().await;
                        let answer = match sent {
                            Ok(r) => {
                                let status = r.status();
                                match r.json::<Value>().await {
                                    Ok(v) => Ok((status, v)),
                                    Err(e) => Err(e.to_string()),
                                }
                            }
                            Err(e) => Err(e.to_string()),
                        };
                        let (status, v) = match answer {
                            Ok(a) => a,
                            Err(_) if killed.load(Ordering::SeqCst) => return acks,
                            Err(e) => panic!("round {round}: publisher {p} failed before the kill: {e}"),
                        };
                        assert!(status.is_success(), "round {round}: publisher {p} refused: {status} {v}");
                        let list = if v.is_array() { v.as_array().unwrap().clone() } else { vec![v] };
                        let mut a = acked.lock().unwrap();
                        for e in list {
                            a.insert(e["seq"].as_u64().unwrap(), e["id"].as_str().unwrap().to_owned());
                            acks += 1;
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(150 + rng % 400)).await;
        killed.store(true, Ordering::SeqCst);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let mut round_acks = 0;
        for (i, p) in publishers.into_iter().enumerate() {
            let n = p.await.unwrap();
            assert!(
                n > 0,
                "round {round}: publisher {i} got no acknowledgement before the kill"
            );
            round_acks += n;
        }

        let (mut child, base) = spawn(dir.path());
        let events = all_events(&http, &base).await;
        let acked = acked.lock().unwrap().clone();
        assert!(round_acks > 0, "round {round}: nothing was acknowledged");
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
