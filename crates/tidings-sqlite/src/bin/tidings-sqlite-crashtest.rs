//! Test helper for the crash test (`tests/crash.rs`): opens the log at the
//! given path in `Durability::Sync` and appends from several threads until
//! killed, printing `ack <seq> <id>` to stdout (flushed) for every event
//! whose append was acknowledged. Every fifth append is a batch of three.
//!
//! Usage: `tidings-sqlite-crashtest <path> [threads]`

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;
use tidings_core::{EventLog, NewEvent};
use tidings_sqlite::{Durability, SqliteLog, SqliteOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: tidings-sqlite-crashtest <path> [threads]");
        return ExitCode::from(2);
    };
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(4);
    let options = SqliteOptions::default().durability(Durability::Sync);
    let log = match SqliteLog::open(&path, options) {
        Ok(log) => Arc::new(log),
        Err(e) => {
            eprintln!("crashtest: cannot open {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (log, out) = (log.clone(), out.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|e| e.to_string())?;
                for i in 0u64.. {
                    let n = if i % 5 == 4 { 3 } else { 1 };
                    let batch: Vec<NewEvent> = (0..n)
                        .map(|k| NewEvent::new("crash.test", json!({"thread": t, "i": i, "k": k})))
                        .collect::<Result<_, _>>()
                        .map_err(|e| e.to_string())?;
                    let committed = rt
                        .block_on(log.append(batch, None))
                        .map_err(|e| e.to_string())?;
                    let mut line = String::new();
                    for c in &committed {
                        line.push_str(&format!("ack {} {}\n", c.event.seq, c.event.id));
                    }
                    let mut out = out.lock().map_err(|_| "stdout lock poisoned".to_owned())?;
                    out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("crashtest: {e}");
                return ExitCode::FAILURE;
            }
            Err(_) => return ExitCode::FAILURE,
        }
    }
    ExitCode::SUCCESS
}
