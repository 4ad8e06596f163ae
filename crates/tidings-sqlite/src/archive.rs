//! The archive: where retention puts events before it deletes them, when
//! [`SqliteOptions::archive_dir`](crate::SqliteOptions::archive_dir) is set.
//!
//! # Contract
//!
//! * **Files.** Events go to zstd-compressed JSON-lines files,
//!   `events-<first:020>-<last:020>.jsonl.zst`, one event per line in
//!   seq order, each line the stored [`Event`] as JSON (`seq`, `id`,
//!   `name`, `source`, `time`, `data`, and `key`/`priority` when set; the
//!   key as stored, with its namespace). A file holds a dense range of
//!   seqs. `zstdcat DIR/events-*.jsonl.zst | jq` reads them.
//! * **The manifest** (`manifest.json`) is the truth: a file counts only
//!   once it is listed there, with its range, count, size and SHA-256.
//!   Entries are in seq order and never overlap.
//! * **Atomic and durable.** A file is written to a temporary name,
//!   fsynced, renamed, and the directory fsynced; then the manifest the
//!   same way. Only after that ([`ArchiveWriter::write`] returned) may the
//!   caller delete the events from the log. A crash at any point leaves
//!   either the old manifest (and the events still in the log: they are
//!   written again, to the same name) or the new one (and the events both
//!   archived and in the log: the next prune deletes them without writing
//!   them again, since everything up to [`ArchiveWriter::archived_upto`]
//!   is archived). Nothing is lost and nothing is listed twice.
//! * Opening a writer removes temporary files and files a crash left
//!   unlisted beyond the manifest's end (their events are still in the
//!   log); any other unlisted file (all of them, if there is no manifest)
//!   is left alone and never read; a file of the same range written
//!   again replaces it.
//! * [`ArchiveReader`] reads only listed files, lazily, one line at a time.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidings_core::Event;

/// The manifest's file name inside the archive directory.
pub const MANIFEST: &str = "manifest.json";

/// Most events one archive file (and one background prune step) holds.
pub const CHUNK_EVENTS: u64 = 10_000;

/// About the most bytes of JSON one archive file (and one background
/// prune step) holds; a file always holds at least one event.
pub const CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// zstd level of the files (zstd's default).
const LEVEL: i32 = 3;

/// The environment variable of the test-only fault point.
#[doc(hidden)]
pub const FAULT_ENV: &str = "TIDINGS_FAULT";

/// One archive file as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveFile {
    /// The file's name inside the archive directory.
    pub file: String,
    /// Its first seq.
    pub first_seq: u64,
    /// Its last seq.
    pub last_seq: u64,
    /// Events in it (`last_seq - first_seq + 1`).
    pub count: u64,
    /// Its size on disk, compressed.
    pub bytes: u64,
    /// SHA-256 of the file as written, hex.
    pub sha256: String,
}

/// `manifest.json`: every archive file, in seq order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// The files, in seq order, not overlapping.
    pub files: Vec<ArchiveFile>,
}

/// Why the archive could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArchiveError {
    /// A file operation failed.
    #[error("archive: {op} {path} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// `manifest.json` is not a valid manifest.
    #[error("archive manifest {path} is invalid: {detail}")]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A line of an archive file is not an event, or out of place.
    #[error("archive file {path}, line {line}: {detail}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// Events handed to the writer are not a dense range after the archive.
    #[error("archive: {0}")]
    NotDense(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ArchiveError + 'a {
    move |e| ArchiveError::Io {
        op,
        path: path.to_owned(),
        source: Arc::new(e),
    }
}

/// The name of the file holding `first..=last`.
pub fn file_name(first: u64, last: u64) -> String {
    format!("events-{first:020}-{last:020}.jsonl.zst")
}

/// The range a file name stands for, if it is an archive file's name.
fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let core = name.strip_prefix("events-")?.strip_suffix(".jsonl.zst")?;
    let (a, b) = core.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Manifest {
    /// Reads `dir/manifest.json`; an absent manifest is an empty archive.
    pub fn load(dir: &Path) -> Result<Manifest, ArchiveError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest {
                    version: 1,
                    files: Vec::new(),
                })
            }
            Err(e) => return Err(io("reading", &path)(e)),
        };
        let bad = |detail: String| ArchiveError::BadManifest {
            path: path.clone(),
            detail,
        };
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if m.version != 1 {
            return Err(bad(format!("unknown version {}", m.version)));
        }
        let mut prev = 0u64;
        for f in &m.files {
            if parse_file_name(&f.file) != Some((f.first_seq, f.last_seq)) {
                return Err(bad(format!(
                    "{:?} is not the archive file name of seqs {}..={}",
                    f.file, f.first_seq, f.last_seq
                )));
            }
            if f.first_seq == 0
                || f.first_seq > f.last_seq
                || f.first_seq <= prev
                || f.count != f.last_seq - f.first_seq + 1
            {
                return Err(bad(format!(
                    "entry {:?} is out of order, overlaps or miscounts",
                    f.file
                )));
            }
            prev = f.last_seq;
        }
        Ok(m)
    }

    /// The last archived seq (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.files.last().map_or(0, |f| f.last_seq)
    }

    /// The first archived seq, if any.
    pub fn first_seq(&self) -> Option<u64> {
        self.files.first().map(|f| f.first_seq)
    }
}

/// Fsyncs a directory, so a rename in it is durable.
fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsyncing directory", dir))
}

/// Writes `bytes` to `dir/name` atomically and durably (temporary file,
/// fsync, rename, directory fsync).
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("fsyncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
    sync_dir(dir)
}

/// Appends events to the archive. Owned by the log's writer thread.
#[derive(Debug)]
pub struct ArchiveWriter {
    dir: PathBuf,
    manifest: Manifest,
    /// When the last file was written (or the writer opened).
    last_write: Instant,
    /// The last prune step left due events unarchived (a bounded step).
    pub(crate) pending: bool,
}

impl ArchiveWriter {
    /// Opens (creating it if needed) the archive in `dir`, and removes what
    /// a crash left behind: temporary files, and unlisted files beyond the
    /// manifest's end.
    pub fn open(dir: &Path) -> Result<ArchiveWriter, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
        let listed = dir.join(MANIFEST).exists();
        let manifest = Manifest::load(dir)?;
        let end = manifest.last_seq();
        let entries = std::fs::read_dir(dir).map_err(io("listing", dir))?;
        for entry in entries {
            let entry = entry.map_err(io("listing", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Without a manifest nothing says where the archive ends (a
            // lost manifest must not cost the files): unlisted files stay.
            let leftover = name.ends_with(".tmp")
                || (listed && parse_file_name(&name).is_some_and(|(first, _)| first > end));
            if leftover {
                tracing::warn!(file = %name, "removing an archive file a crash left unlisted");
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io("removing", &path))?;
            }
        }
        Ok(ArchiveWriter {
            dir: dir.to_owned(),
            manifest,
            last_write: Instant::now(),
            pending: false,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything up to this seq is archived (0: nothing).
    pub fn archived_upto(&self) -> u64 {
        self.manifest.last_seq()
    }

    /// Whether `delay` passed since the last file was written.
    pub(crate) fn waited(&self, delay: Duration) -> bool {
        self.last_write.elapsed() >= delay
    }

    /// Writes `events` (a dense range of seqs after
    /// [`ArchiveWriter::archived_upto`]) as one file and lists it in the
    /// manifest; both are durable when this returns.
    pub fn write(&mut self, events: &[Event]) -> Result<(), ArchiveError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let (first, last) = (first.seq, last.seq);
        if first <= self.archived_upto()
            || last - first + 1 != events.len() as u64
            || events.windows(2).any(|w| w[1].seq != w[0].seq + 1)
        {
            return Err(ArchiveError::NotDense(format!(
                "events {first}..={last} ({} of them) are not a dense range after {}",
                events.len(),
                self.archived_upto()
            )));
        }
        let name = file_name(first, last);
        let path = self.dir.join(&name);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), LEVEL)
            .map_err(io("compressing", &path))?;
        for e in events {
            serde_json::to_writer(&mut enc, e)
                .map_err(|err| io("encoding", &path)(std::io::Error::other(err)))?;
            enc.write_all(b"\n").map_err(io("compressing", &path))?;
        }
        let bytes = enc.finish().map_err(io("compressing", &path))?;
        write_atomic(&self.dir, &name, &bytes)?;
        let mut next = self.manifest.clone();
        next.version = 1;
        next.files.push(ArchiveFile {
            file: name,
            first_seq: first,
            last_seq: last,
            count: events.len() as u64,
            bytes: bytes.len() as u64,
            sha256: hex(&Sha256::digest(&bytes)),
        });
        let json = serde_json::to_vec_pretty(&next)
            .map_err(|err| io("encoding", &self.dir)(std::io::Error::other(err)))?;
        write_atomic(&self.dir, MANIFEST, &json)?;
        self.manifest = next;
        self.last_write = Instant::now();
        fault_point("archive_after_write", first, last);
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Test-only fault point, inert unless the environment variable
/// `TIDINGS_FAULT` names it: then the process prints
/// `FAULT <name> <first> <last>` to stderr and parks this thread forever,
/// so a test can kill -9 the process at exactly this point (for
/// `archive_after_write`: the archive is durable, the rows not yet
/// deleted).
#[doc(hidden)]
pub fn fault_point(name: &str, first: u64, last: u64) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == name) {
        eprintln!("FAULT {name} {first} {last}");
        let _ = std::io::stderr().flush();
        loop {
            std::thread::park();
        }
    }
}

/// Reads the archive in a directory: the files its manifest lists.
#[derive(Debug, Clone)]
pub struct ArchiveReader {
    dir: PathBuf,
    manifest: Manifest,
}

impl ArchiveReader {
    /// Reads the manifest of `dir` (an absent one is an empty archive).
    pub fn open(dir: &Path) -> Result<ArchiveReader, ArchiveError> {
        Ok(ArchiveReader {
            dir: dir.to_owned(),
            manifest: Manifest::load(dir)?,
        })
    }

    /// The manifest as read.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Archived events with `seq > after`, in seq order, read lazily.
    pub fn events_after(&self, after: u64) -> ArchiveEvents {
        let files = self
            .manifest
            .files
            .iter()
            .filter(|f| f.last_seq > after)
            .map(|f| (self.dir.join(&f.file), f.first_seq, f.last_seq))
            .collect::<Vec<_>>()
            .into_iter();
        ArchiveEvents {
            files,
            current: None,
            after,
        }
    }
}

/// The iterator of [`ArchiveReader::events_after`]. After an error it ends.
pub struct ArchiveEvents {
    files: std::vec::IntoIter<(PathBuf, u64, u64)>,
    current: Option<OpenFile>,
    after: u64,
}

struct OpenFile {
    path: PathBuf,
    lines: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
    line: u64,
    next_seq: u64,
    last_seq: u64,
}

impl ArchiveEvents {
    fn next_event(&mut self) -> Result<Option<Event>, ArchiveError> {
        loop {
            let Some(f) = &mut self.current else {
                let Some((path, first, last)) = self.files.next() else {
                    return Ok(None);
                };
                let file = File::open(&path).map_err(io("opening", &path))?;
                let dec =
                    zstd::stream::read::Decoder::new(file).map_err(io("decompressing", &path))?;
                self.current = Some(OpenFile {
                    path,
                    lines: BufReader::new(dec),
                    line: 0,
                    next_seq: first,
                    last_seq: last,
                });
                continue;
            };
            let mut buf = String::new();
            let n = f
                .lines
                .read_line(&mut buf)
                .map_err(io("decompressing", &f.path))?;
            let bad = |f: &OpenFile, detail: String| ArchiveError::BadLine {
                path: f.path.clone(),
                line: f.line + 1,
                detail,
            };
            if n == 0 {
                if f.next_seq != f.last_seq + 1 {
                    return Err(bad(f, format!("the file ends before seq {}", f.last_seq)));
                }
                self.current = None;
                continue;
            }
            let event: Event = serde_json::from_str(&buf).map_err(|e| bad(f, e.to_string()))?;
            if event.seq != f.next_seq {
                return Err(bad(
                    f,
                    format!("seq {} where {} belongs", event.seq, f.next_seq),
                ));
            }
            f.line += 1;
            f.next_seq += 1;
            if event.seq > self.after {
                return Ok(Some(event));
            }
        }
    }
}

impl Iterator for ArchiveEvents {
    type Item = Result<Event, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_event() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.files = Vec::new().into_iter();
                self.current = None;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: u64) -> Event {
        let n = tidings_core::NewEvent::new("a.b", json!({"n": seq})).unwrap();
        Event {
            seq,
            id: n.id,
            name: n.name,
            source: n.source,
            time: n.time,
            data: n.data,
            key: seq.is_multiple_of(2).then(|| format!("ns\u{1f}k{seq}")),
            priority: None,
        }
    }

    #[test]
    fn files_and_manifest_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(dir.path()).unwrap();
        let a: Vec<Event> = (1..=3).map(event).collect();
        let b: Vec<Event> = (4..=7).map(event).collect();
        w.write(&a).unwrap();
        w.write(&b).unwrap();
        assert_eq!(w.archived_upto(), 7);
        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[0].file, file_name(1, 3));
        assert_eq!((m.files[1].first_seq, m.files[1].last_seq), (4, 7));
        let raw = std::fs::read(dir.path().join(&m.files[1].file)).unwrap();
        assert_eq!(m.files[1].bytes, raw.len() as u64);
        assert_eq!(m.files[1].sha256, hex(&Sha256::digest(&raw)));
        // Plain zstd JSON lines, as `zstdcat | jq` reads them.
        let text = String::from_utf8(zstd::decode_all(&raw[..]).unwrap()).unwrap();
        let lines: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, b);
        let r = ArchiveReader::open(dir.path()).unwrap();
        let all: Vec<Event> = r.events_after(0).map(Result::unwrap).collect();
        assert_eq!(all, [a.clone(), b.clone()].concat());
        let tail: Vec<u64> = r.events_after(2).map(|e| e.unwrap().seq).collect();
        assert_eq!(tail, vec![3, 4, 5, 6, 7]);
        assert_eq!(r.events_after(7).count(), 0);
    }

    #[test]
    fn the_writer_refuses_what_is_not_dense_after_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(dir.path()).unwrap();
        w.write(&[event(1), event(2)]).unwrap();
        assert!(w.write(&[event(2), event(3)]).is_err());
        assert!(w.write(&[event(3), event(5)]).is_err());
        assert_eq!(Manifest::load(dir.path()).unwrap().files.len(), 1);
    }

    #[test]
    fn opening_removes_what_a_crash_left_unlisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(dir.path()).unwrap();
        w.write(&[event(1), event(2)]).unwrap();
        // A file renamed but never listed, a temporary file, and an
        // unlisted file inside the listed range (left alone).
        std::fs::write(dir.path().join(file_name(3, 9)), b"x").unwrap();
        std::fs::write(dir.path().join("manifest.json.tmp"), b"x").unwrap();
        std::fs::write(dir.path().join(file_name(1, 1)), b"x").unwrap();
        let w = ArchiveWriter::open(dir.path()).unwrap();
        assert_eq!(w.archived_upto(), 2);
        assert!(!dir.path().join(file_name(3, 9)).exists());
        assert!(!dir.path().join("manifest.json.tmp").exists());
        assert!(dir.path().join(file_name(1, 1)).exists());
        // No manifest: nothing says the files are leftovers; they stay.
        std::fs::remove_file(dir.path().join(MANIFEST)).unwrap();
        let w = ArchiveWriter::open(dir.path()).unwrap();
        assert_eq!(w.archived_upto(), 0);
        assert!(dir.path().join(file_name(1, 2)).exists());
    }

    #[test]
    fn bad_manifests_and_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join(MANIFEST);
        for bad in [
            "not json",
            r#"{"version":2,"files":[]}"#,
            r#"{"version":1,"files":[{"file":"../x","first_seq":1,"last_seq":1,"count":1,"bytes":1,"sha256":""}]}"#,
            r#"{"version":1,"files":[{"file":"events-00000000000000000001-00000000000000000002.jsonl.zst","first_seq":1,"last_seq":2,"count":3,"bytes":1,"sha256":""}]}"#,
        ] {
            std::fs::write(&m, bad).unwrap();
            assert!(matches!(
                ArchiveReader::open(dir.path()),
                Err(ArchiveError::BadManifest { .. })
            ));
        }
        // A listed file that is not zstd, or ends early.
        std::fs::remove_file(&m).unwrap();
        let mut w = ArchiveWriter::open(dir.path()).unwrap();
        w.write(&[event(1), event(2)]).unwrap();
        let f = dir.path().join(file_name(1, 2));
        std::fs::write(&f, zstd::encode_all(&b"{}\n"[..], 3).unwrap()).unwrap();
        let r = ArchiveReader::open(dir.path()).unwrap();
        let got: Vec<_> = r.events_after(0).collect();
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Err(ArchiveError::BadLine { .. })));
        std::fs::write(&f, b"garbage").unwrap();
        assert!(r.events_after(0).next().unwrap().is_err());
    }
}
