//! Test helper for the archive crash test (`tests/archive.rs`): opens the
//! log at `<path>` with an archive in `<archive_dir>` and a retention of
//! `<keep>` events (no background pruning), appends `<count>` events if
//! the log is empty, then prunes once and prints `pruned <n>` (and how
//! long the prune took, to stderr).
//!
//! With `TIDINGS_FAULT=archive_after_write` the prune stops for good right
//! after the archive is durable and before the rows are deleted (it prints
//! `FAULT archive_after_write <first> <last>` to stderr), so the test can
//! kill -9 it there.
//!
//! Usage: `tidings-sqlite-archivetest <path> <archive_dir> <keep> <count>`

use std::process::ExitCode;

use serde_json::json;
use tidings_core::{EventLog, LogOptions, NewEvent, Retention};
use tidings_sqlite::{SqliteLog, SqliteOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, dir, keep, count] = args.as_slice() else {
        eprintln!("usage: tidings-sqlite-archivetest <path> <archive_dir> <keep> <count>");
        return ExitCode::from(2);
    };
    let (Ok(keep), Ok(count)) = (keep.parse::<u64>(), count.parse::<u64>()) else {
        eprintln!("archivetest: <keep> and <count> are numbers");
        return ExitCode::from(2);
    };
    let options = SqliteOptions::default()
        .log(
            LogOptions::retention(Retention {
                max_count: Some(keep),
                max_age: None,
            })
            .with_prune_interval(None),
        )
        .archive_dir(Some(dir.into()));
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("archivetest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        let log = SqliteLog::open(path, options).map_err(|e| e.to_string())?;
        if log.last_seq() == 0 {
            for chunk in (1..=count).collect::<Vec<_>>().chunks(100) {
                let batch = chunk
                    .iter()
                    .map(|i| NewEvent::new("archive.test", json!({ "i": i })))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                log.append(batch, None).await.map_err(|e| e.to_string())?;
            }
        }
        let started = std::time::Instant::now();
        let n = log.prune().await.map_err(|e| e.to_string())?;
        println!("pruned {n}");
        eprintln!(
            "the prune took {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        log.close_blocking().map_err(|e| e.to_string())
    };
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archivetest: {e}");
            ExitCode::FAILURE
        }
    }
}
