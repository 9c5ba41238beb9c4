//! The append-only on-disk journal: where records go when the queue is full or the database is
//! unreachable, until they are committed.
//!
//! Layout: `<data_dir>/journal/<seq:020>.jsonl` segments. Each line is
//! `<first 16 hex of sha256(json)>\t<json>\n`; a line whose checksum does not match (a torn tail
//! after a crash, or corruption) is skipped with a warning and counted.
//!
//! Concurrency: one dedicated OS thread owns the files and is fed by an unbounded std mpsc, so
//! the request path never waits on disk or on fsync (the trade-off: while the disk is slower than
//! the overflow rate, memory grows; this only happens when the queue is already full). The thread
//! group-commits: it writes everything it can take without blocking, then `fdatasync`s once, then
//! acknowledges. Segments are sealed (closed) on request; the writer replays sealed segments in
//! order and deletes each only after all its records are committed (replay is idempotent on
//! `record_id`, so a crash between commit and delete merely replays duplicates that are ignored).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::{LedgerRecord, Shared};

/// A segment is sealed once it grows past this, bounding what replay reads into memory at once.
const MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// At most this many commands are written before an fsync (bounds ack latency under load).
const MAX_GROUP: usize = 16_384;
/// Retry period for a failing disk.
const RETRY_EVERY: Duration = Duration::from_secs(1);
const SEGMENT_EXT: &str = "jsonl";
const CHECKSUM_HEX: usize = 16;

pub(crate) enum Command {
    /// From the request path (queue full or closed); no acknowledgement.
    Append(Box<LedgerRecord>),
    /// From the writer; acknowledged after fsync with `true`, or `false` if the disk is failing
    /// (the records are then kept in memory and retried).
    AppendBatch(Vec<LedgerRecord>, oneshot::Sender<bool>),
    /// Make everything durable, close the active segment and list all sealed segments in order.
    Seal(oneshot::Sender<io::Result<Vec<PathBuf>>>),
    /// Make everything durable; `true` when nothing is left pending.
    Sync(oneshot::Sender<bool>),
}

/// Cloneable sender side; the thread exits (after a final fsync) when every clone is dropped.
#[derive(Clone)]
pub(crate) struct Journal {
    tx: mpsc::Sender<Command>,
}

impl Journal {
    /// Creates the directory and starts the journal thread.
    pub(crate) fn open(dir: &Path, shared: Arc<Shared>) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let next_seq = list_segments(dir)?.iter().filter_map(|p| segment_seq(p)).max().map_or(1, |s| s + 1);
        let (tx, rx) = mpsc::channel();
        let state = Thread {
            dir: dir.to_owned(),
            next_seq,
            active: None,
            pending: Vec::new(),
            pending_records: 0,
            acks: Vec::new(),
            shared,
        };
        std::thread::Builder::new().name("ledger-journal".to_owned()).spawn(move || state.run(rx))?;
        Ok(Self { tx })
    }

    /// Non-blocking append from the request path.
    pub(crate) fn append(&self, record: LedgerRecord) {
        if let Err(mpsc::SendError(Command::Append(record))) = self.tx.send(Command::Append(Box::new(record))) {
            // Only possible if the journal thread panicked: the last resort is the log.
            tracing::error!(
                record_id = %record.record_id,
                record = %serde_json::to_string(&record).unwrap_or_default(),
                "Ledger journal thread is gone; record logged instead"
            );
        }
    }

    /// Appends a batch and waits until it is durable (`true`) or parked in memory (`false`).
    pub(crate) async fn append_batch(&self, records: Vec<LedgerRecord>) -> bool {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::AppendBatch(records, ack)).is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }

    /// Seals the active segment; returns every sealed segment, oldest first.
    pub(crate) async fn seal(&self) -> io::Result<Vec<PathBuf>> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Command::Seal(ack)).map_err(|_| io::Error::other("journal thread is gone"))?;
        done.await.map_err(|_| io::Error::other("journal thread is gone"))?
    }

    /// Waits until everything appended so far is durable.
    pub(crate) async fn sync(&self) -> bool {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Sync(ack)).is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }
}

enum Ack {
    Batch(oneshot::Sender<bool>),
    Sync(oneshot::Sender<bool>),
    Seal(oneshot::Sender<io::Result<Vec<PathBuf>>>),
}

struct Active {
    file: File,
    len: u64,
}

struct Thread {
    dir: PathBuf,
    next_seq: u64,
    active: Option<Active>,
    /// Encoded lines not yet durable (kept across failed commits).
    pending: Vec<u8>,
    pending_records: u64,
    acks: Vec<Ack>,
    shared: Arc<Shared>,
}

impl Thread {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            let first = if self.pending.is_empty() {
                match rx.recv() {
                    Ok(cmd) => Some(cmd),
                    Err(mpsc::RecvError) => break,
                }
            } else {
                match rx.recv_timeout(RETRY_EVERY) {
                    Ok(cmd) => Some(cmd),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            if let Some(cmd) = first {
                self.take(cmd);
                let mut n = 1;
                while n < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(cmd) => {
                            self.take(cmd);
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
            self.commit();
        }
        // All senders are gone: last chance to make the pending records durable.
        for _ in 0..3 {
            self.commit();
            if self.pending.is_empty() {
                return;
            }
            std::thread::sleep(RETRY_EVERY);
        }
        tracing::error!(
            records = self.pending_records,
            dir = %self.dir.display(),
            "Ledger journal could not write its last records; they are lost"
        );
    }

    fn take(&mut self, cmd: Command) {
        match cmd {
            Command::Append(record) => self.encode(&record),
            Command::AppendBatch(records, ack) => {
                for r in &records {
                    self.encode(r);
                }
                self.acks.push(Ack::Batch(ack));
            }
            Command::Seal(ack) => self.acks.push(Ack::Seal(ack)),
            Command::Sync(ack) => self.acks.push(Ack::Sync(ack)),
        }
    }

    fn encode(&mut self, record: &LedgerRecord) {
        match serde_json::to_vec(record) {
            Ok(json) => {
                let digest = Sha256::digest(&json);
                let hex = hex::encode(&digest[..CHECKSUM_HEX / 2]);
                self.pending.extend_from_slice(hex.as_bytes());
                self.pending.push(b'\t');
                self.pending.extend_from_slice(&json);
                self.pending.push(b'\n');
                self.pending_records += 1;
            }
            Err(error) => {
                // Not reachable for this type (no maps with non-string keys, no failing Serialize).
                tracing::error!(record_id = %record.record_id, %error, "Ledger record not serializable");
            }
        }
    }

    /// Writes and fsyncs the pending lines, then answers the acknowledgements.
    fn commit(&mut self) {
        let ok = self.pending.is_empty() || self.write_pending();
        let seal_requested = self.acks.iter().any(|a| matches!(a, Ack::Seal(_)));
        let too_big = self.active.as_ref().is_some_and(|a| a.len >= MAX_SEGMENT_BYTES);
        if ok && (seal_requested || too_big) {
            self.active = None;
        }
        let sealed = if seal_requested && ok { Some(list_segments(&self.dir)) } else { None };
        for ack in self.acks.drain(..) {
            match ack {
                Ack::Batch(tx) | Ack::Sync(tx) => {
                    let _ = tx.send(ok);
                }
                Ack::Seal(tx) => {
                    let answer = match &sealed {
                        Some(Ok(list)) => Ok(list.clone()),
                        Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
                        None => Err(io::Error::other("journal write failing")),
                    };
                    let _ = tx.send(answer);
                }
            }
        }
    }

    fn write_pending(&mut self) -> bool {
        match self.try_write() {
            Ok(()) => {
                self.shared.journaled.fetch_add(self.pending_records, Ordering::Relaxed);
                self.shared.journal_dirty.store(true, Ordering::Release);
                self.shared.journal_ok.store(true, Ordering::Release);
                self.pending.clear();
                self.pending_records = 0;
                true
            }
            Err(error) => {
                // A partial write may have left a torn line: never append after it, start a
                // fresh segment next time (the torn line is skipped at replay).
                self.active = None;
                let first_failure = self.shared.journal_ok.swap(false, Ordering::AcqRel);
                let msg = format!("ledger journal write failed: {error}");
                if first_failure {
                    tracing::error!(
                        dir = %self.dir.display(), %error, records = self.pending_records,
                        "Ledger journal write failed; records kept in memory and retried"
                    );
                }
                self.shared.set_error(msg);
                false
            }
        }
    }

    fn try_write(&mut self) -> io::Result<()> {
        if self.active.is_none() {
            let path = self.dir.join(format!("{:020}.{SEGMENT_EXT}", self.next_seq));
            self.next_seq += 1;
            let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
            sync_dir(&self.dir)?;
            self.active = Some(Active { file, len: 0 });
        }
        let Some(active) = self.active.as_mut() else {
            return Err(io::Error::other("no active journal segment"));
        };
        active.file.write_all(&self.pending)?;
        active.file.sync_data()?;
        active.len += self.pending.len() as u64;
        Ok(())
    }
}

/// Every segment file in `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).filter(|p| segment_seq(p).is_some()).collect();
    out.sort_by_key(|p| segment_seq(p));
    Ok(out)
}

fn segment_seq(path: &Path) -> Option<u64> {
    if path.extension()? != SEGMENT_EXT {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

/// fsync a directory so a created or removed file survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a segment holds.
pub(crate) struct Segment {
    pub records: Vec<LedgerRecord>,
    /// Lines skipped: bad checksum, bad JSON, or a torn (unterminated) last line.
    pub skipped: u64,
}

/// Reads a segment; blocking, call from `spawn_blocking`.
pub(crate) fn read_segment(path: &Path) -> io::Result<Segment> {
    let bytes = std::fs::read(path)?;
    Ok(parse_segment(&bytes, path))
}

pub(crate) fn parse_segment(bytes: &[u8], path: &Path) -> Segment {
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut rest = bytes;
    let mut line_no = 0u64;
    while !rest.is_empty() {
        line_no += 1;
        let (line, terminated) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &rest[..i];
                rest = &rest[i + 1..];
                (line, true)
            }
            None => {
                let line = rest;
                rest = &[];
                (line, false)
            }
        };
        if !terminated {
            skipped += 1;
            tracing::warn!(
                path = %path.display(), line = line_no, bytes = line.len(),
                "Ledger journal torn last line skipped"
            );
            break;
        }
        match decode_line(line) {
            Some(r) => records.push(r),
            None => {
                skipped += 1;
                tracing::warn!(
                    path = %path.display(), line = line_no,
                    "Ledger journal line with a bad checksum skipped"
                );
            }
        }
    }
    Segment { records, skipped }
}

fn decode_line(line: &[u8]) -> Option<LedgerRecord> {
    if line.len() <= CHECKSUM_HEX || line[CHECKSUM_HEX] != b'\t' {
        return None;
    }
    let (sum, json) = (&line[..CHECKSUM_HEX], &line[CHECKSUM_HEX + 1..]);
    let digest = Sha256::digest(json);
    if hex::encode(&digest[..CHECKSUM_HEX / 2]).as_bytes() != sum {
        return None;
    }
    let mut record: LedgerRecord = serde_json::from_slice(json).ok()?;
    record.fill_legacy_record_id();
    Some(record)
}

/// Encodes one record as a journal line (tests, tools).
#[cfg(test)]
pub(crate) fn encode_line(record: &LedgerRecord) -> Vec<u8> {
    let json = serde_json::to_vec(record).unwrap_or_default();
    let digest = Sha256::digest(&json);
    let mut out = hex::encode(&digest[..CHECKSUM_HEX / 2]).into_bytes();
    out.push(b'\t');
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}
