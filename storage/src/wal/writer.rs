//! The WAL thread and the apply thread: group commit, then the writes applied in log order.
//!
//! One thread owns the WAL segment (group commit): it takes every write queued since its last
//! fsync, appends them with one `write`, hands them to the apply thread in that order, fsyncs
//! once, and then tells the apply thread they are durable. The apply thread applies each write
//! (to the buffer: see [`Apply`]) while the WAL thread waits for the disk, so the two overlap,
//! and answers each writer once its write is both applied (queryable) and durable; a
//! `no_sync` write once it is appended and applied, before the fsync. One answer per write,
//! from one thread: each wake-up of a waiting request costs a context switch.
//!
//! Order is the invariant. Writers hand writes over while holding [`Wal::lock`] (and change
//! the catalog under the same lock), so the WAL holds writes in the order their catalog
//! changes happened, and the apply thread applies them in that order. A barrier
//! ([`WalLock::barrier`]) closes the current segment between two groups and runs a task on
//! the apply thread after every write logged before it and before any logged after: a freeze
//! takes exactly the rows logged through the closed segment, and a delete drops exactly the
//! writes logged before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use sluice_model::WriteBatch;
use tokio::sync::oneshot;

use super::segment::{self, WalWriter};
use crate::metrics::StorageMetrics;

/// Most writes taken into one group commit.
const MAX_GROUP: usize = 4096;

/// How often the WAL thread tries to open a new segment while it cannot append.
pub const RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Why the WAL did not take or finish a write or a barrier.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// An append or fsync failed, or no new segment can be opened since one did: writes are
    /// refused until one can (the WAL thread tries every [`RECOVERY_INTERVAL`]).
    #[error("the write-ahead log cannot append now ({0}); retry later")]
    Unavailable(String),
    #[error("the server is shutting down; retry against the restarted server")]
    ShuttingDown,
}

/// What the apply thread does with each logged write, in log order.
pub trait Apply: Send + 'static {
    /// Applies `batch`, a write to `db` logged in WAL segment `segment`.
    fn apply(&mut self, db: &str, batch: &WriteBatch, segment: u64);
}

/// Where a barrier fell in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The segment the barrier closed, through which every write before it is logged.
    pub through_segment: u64,
    /// The segment writes after it are logged in.
    pub next_segment: u64,
}

/// A write to log: its record's payload, and the write itself for the apply thread.
pub struct LoggedWrite {
    pub payload: Vec<u8>,
    pub db: Arc<str>,
    pub batch: WriteBatch,
    /// Answer once applied, before the fsync.
    pub no_sync: bool,
}

type Reply = oneshot::Sender<Result<(), WalError>>;
type Task = Box<dyn FnOnce(Result<Barrier, WalError>) + Send>;

// A write is moved through each channel once, by value: boxing it to shrink the messages
// would add an allocation per write for nothing.
#[allow(clippy::large_enum_variant)]
enum WalMsg {
    Write(LoggedWrite, Reply),
    Barrier(Task),
}

/// What the WAL thread hands the apply thread, in log order.
#[allow(clippy::large_enum_variant)]
enum ApplyMsg {
    Apply {
        write: LoggedWrite,
        /// The WAL segment the write is logged in.
        segment: u64,
        /// For the writer; `durable` says when (already for `no_sync`).
        reply: Reply,
        durable: bool,
    },
    /// The fsync after every write handed over so far finished (or failed).
    Synced(Result<(), WalError>),
    Barrier(Task, Barrier),
}

/// State both threads and the writers share.
struct Shared {
    /// Why the WAL stopped taking writes, once it did.
    failed: Mutex<Option<String>>,
    /// The WAL segment of the last write applied: writes logged but not yet applied are in
    /// this segment or later ones.
    current_segment: AtomicU64,
    metrics: Arc<StorageMetrics>,
}

impl Shared {
    fn failure(&self) -> Option<WalError> {
        self.failed.lock().clone().map(WalError::Unavailable)
    }
}

/// The running WAL: where writes and barriers are handed over.
pub struct Wal {
    /// `None` once shutting down. Holding it is the write lock (see the module docs).
    sender: Mutex<Option<mpsc::Sender<WalMsg>>>,
    shared: Arc<Shared>,
    dir: PathBuf,
    /// The WAL thread, then the apply thread: joined in that order at shutdown.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The write lock: hands writes and barriers to the WAL thread in the order it is taken.
pub struct WalLock<'a>(MutexGuard<'a, Option<mpsc::Sender<WalMsg>>>);

impl Wal {
    /// Opens a new segment in `dir` (numbered after every existing one) and starts the WAL
    /// thread and the apply thread, which hands logged writes to `apply`.
    pub fn start(
        dir: &Path,
        segment_bytes: u64,
        apply: impl Apply,
        metrics: Arc<StorageMetrics>,
    ) -> Result<Wal, StartError> {
        let writer = WalWriter::create(dir, segment_bytes)?;
        let shared = Arc::new(Shared {
            failed: Mutex::new(None),
            current_segment: AtomicU64::new(writer.sequence()),
            metrics,
        });
        let (apply_tx, apply_rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let apply_thread = std::thread::Builder::new()
            .name("sluice-apply".into())
            .spawn(move || apply_loop(thread_shared, apply, apply_rx))
            .map_err(StartError::Thread)?;
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let wal_thread = std::thread::Builder::new()
            .name("sluice-wal".into())
            .spawn(move || wal_loop(thread_shared, writer, rx, apply_tx))
            .map_err(StartError::Thread)?;
        Ok(Wal {
            sender: Mutex::new(Some(tx)),
            shared,
            dir: dir.to_path_buf(),
            threads: Mutex::new(vec![wal_thread, apply_thread]),
        })
    }

    /// Takes the write lock.
    pub fn lock(&self) -> WalLock<'_> {
        WalLock(self.sender.lock())
    }

    /// Why the WAL stopped taking writes, if it did.
    pub fn failure(&self) -> Option<WalError> {
        self.shared.failure()
    }

    /// The segment of the last write applied: every older segment holds only writes that
    /// are applied.
    pub fn current_segment(&self) -> u64 {
        self.shared.current_segment.load(Ordering::Relaxed)
    }

    /// The WAL's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops taking writes, lets both threads make every queued write durable and applied,
    /// and waits for them. Writes after this fail with [`WalError::ShuttingDown`].
    pub fn shutdown(&self) {
        drop(self.sender.lock().take());
        let threads = std::mem::take(&mut *self.threads.lock());
        for handle in threads {
            let _ = handle.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("current_segment", &self.current_segment())
            .finish()
    }
}

impl WalLock<'_> {
    /// Hands `write` to the WAL thread. The receiver answers once the write is applied and
    /// durable (with `no_sync`, applied), or failed.
    pub fn log(
        &self,
        write: LoggedWrite,
    ) -> Result<oneshot::Receiver<Result<(), WalError>>, WalError> {
        let sender = self.0.as_ref().ok_or(WalError::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        sender
            .send(WalMsg::Write(write, reply))
            .map_err(|_| WalError::ShuttingDown)?;
        Ok(rx)
    }

    /// Closes the current segment after the writes handed over so far, and runs `task` on
    /// the apply thread once they are applied, before any write handed over later. The
    /// receiver answers with what `task` returned, or why the segment could not be closed.
    pub fn barrier<T: Send + 'static>(
        &self,
        task: impl FnOnce(Barrier) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T, WalError>>, WalError> {
        let sender = self.0.as_ref().ok_or(WalError::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        let task: Task = Box::new(move |barrier| {
            let _ = reply.send(barrier.map(task));
        });
        sender
            .send(WalMsg::Barrier(task))
            .map_err(|_| WalError::ShuttingDown)?;
        Ok(rx)
    }
}

/// Why the WAL could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Segment(#[from] segment::Error),
    #[error("could not start the WAL thread: {0}")]
    Thread(std::io::Error),
}

fn wal_loop(
    shared: Arc<Shared>,
    mut wal: WalWriter,
    rx: mpsc::Receiver<WalMsg>,
    apply: mpsc::Sender<ApplyMsg>,
) {
    let mut writes: Vec<(LoggedWrite, Reply)> = Vec::new();
    loop {
        // while the WAL cannot append, try to open a new segment now and then, so that
        // writes (refused meanwhile, see `Wal::failure`) are taken again once it can
        let first = if shared.failure().is_some() {
            match rx.recv_timeout(RECOVERY_INTERVAL) {
                Ok(msg) => msg,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    recover(&shared, &mut wal);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(msg) => msg,
                Err(_) => break,
            }
        };
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WalMsg::Write(write, reply) => writes.push((write, reply)),
                // A barrier goes exactly where it was queued: the writes handed over before
                // it end in the segment it closes, and those handed over after it (a write
                // validated after a delete) go to the next one, applied after its task.
                WalMsg::Barrier(task) => {
                    if !writes.is_empty() {
                        commit_group(&shared, &mut wal, &mut writes, &apply);
                    }
                    run_barrier(&mut wal, task, &apply);
                }
            }
            if writes.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            commit_group(&shared, &mut wal, &mut writes, &apply);
        }
    }
    if let Err(e) = wal.finish() {
        tracing::error!("final WAL fsync at shutdown failed: {e}");
    }
}

/// Opens a new segment after a failed append or sync, and takes writes again if it could.
fn recover(shared: &Shared, wal: &mut WalWriter) {
    match wal.open() {
        Ok(()) => {
            tracing::info!(
                segment = %wal.current_segment().display(),
                "the WAL appends again, to a new segment"
            );
            *shared.failed.lock() = None;
        }
        Err(e) => *shared.failed.lock() = Some(e.to_string()),
    }
}

/// Records that the WAL cannot append, for `Wal::failure` (writes are refused until a new
/// segment opens).
fn fail(shared: &Shared, what: &str, e: &segment::Error) -> WalError {
    let reason = e.to_string();
    if shared.failed.lock().replace(reason.clone()).is_none() {
        tracing::error!("WAL {what} failed; writes get 503 until a new segment opens: {reason}");
    }
    WalError::Unavailable(reason)
}

/// Closes the current segment and hands `task` to the apply thread, which runs it after
/// every write logged so far. It works while the WAL cannot append (the segment is closed as
/// it is), so that a freeze can persist the buffer and let WAL segments go, which may be
/// what frees the disk.
fn run_barrier(wal: &mut WalWriter, task: Task, apply: &mpsc::Sender<ApplyMsg>) {
    let through_segment = wal.rotate();
    let barrier = Barrier {
        through_segment,
        next_segment: wal.sequence(),
    };
    // a closed channel drops the task: its caller hears the server is shutting down
    let _ = apply.send(ApplyMsg::Barrier(task, barrier));
}

/// Appends one group of writes, hands them to the apply thread, fsyncs, then tells the
/// apply thread they are durable.
fn commit_group(
    shared: &Shared,
    wal: &mut WalWriter,
    writes: &mut Vec<(LoggedWrite, Reply)>,
    apply: &mpsc::Sender<ApplyMsg>,
) {
    if let Err(e) = wal.append(writes.iter().map(|(w, _)| w.payload.as_slice())) {
        let e = fail(shared, "append", &e);
        for (_, reply) in writes.drain(..) {
            let _ = reply.send(Err(e.clone()));
        }
        return;
    }
    *shared.failed.lock() = None;
    let segment = wal.sequence();
    let bytes: usize = writes.iter().map(|(w, _)| w.payload.len() + 8).sum();
    shared.metrics.wal_bytes.add(bytes as u64);
    shared.metrics.wal_records.add(writes.len() as u64);
    let mut waiting = 0;
    for (write, reply) in writes.drain(..) {
        waiting += usize::from(!write.no_sync);
        let durable = write.no_sync;
        // a closed channel (the apply thread is gone) drops the reply: the writer is told the
        // server is shutting down
        let _ = apply.send(ApplyMsg::Apply {
            write,
            segment,
            reply,
            durable,
        });
    }
    let started = Instant::now();
    let synced = wal.sync();
    shared.metrics.wal_fsync.observe(started.elapsed());
    let synced = match synced {
        Ok(()) => {
            shared.metrics.wal_grouped_writes.add(waiting as u64);
            Ok(())
        }
        Err(e) => Err(fail(shared, "fsync", &e)),
    };
    let _ = apply.send(ApplyMsg::Synced(synced));
}

/// Applies logged writes, and runs barrier tasks, in log order.
fn apply_loop(shared: Arc<Shared>, mut apply: impl Apply, rx: mpsc::Receiver<ApplyMsg>) {
    // applied writes waiting for the fsync that covers them
    let mut waiting: Vec<Reply> = Vec::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            ApplyMsg::Apply {
                write,
                segment,
                reply,
                durable,
            } => {
                apply.apply(&write.db, &write.batch, segment);
                shared.current_segment.store(segment, Ordering::Relaxed);
                if durable {
                    let _ = reply.send(Ok(()));
                } else {
                    waiting.push(reply);
                }
            }
            ApplyMsg::Synced(result) => {
                for reply in waiting.drain(..) {
                    let _ = reply.send(result.clone());
                }
            }
            ApplyMsg::Barrier(task, barrier) => {
                // every write applied so far is in a closed segment now (stored before the
                // task answers, so its caller never sees the closed segment as current)
                shared
                    .current_segment
                    .store(barrier.next_segment, Ordering::Relaxed);
                task(Ok(barrier));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each applied write's database and segment, and barrier tasks as `"|"`.
    #[derive(Clone, Default)]
    struct Record(Arc<Mutex<Vec<(String, u64)>>>);

    impl Apply for Record {
        fn apply(&mut self, db: &str, _: &WriteBatch, segment: u64) {
            self.0.lock().push((db.to_string(), segment));
        }
    }

    fn write(db: &str) -> LoggedWrite {
        LoggedWrite {
            payload: vec![0; 16],
            db: db.into(),
            batch: WriteBatch::new(),
            no_sync: false,
        }
    }

    #[tokio::test]
    async fn a_write_handed_over_after_a_barrier_is_logged_and_applied_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let record = Record::default();
        let wal = Wal::start(dir.path(), 64 << 20, record.clone(), Default::default()).unwrap();
        for round in 0..20 {
            let (before, barrier, after) = {
                let lock = wal.lock();
                // enough writes that the WAL thread is busy with them while the barrier and
                // the write after it queue up together
                let before: Vec<_> = (0..200)
                    .map(|_| lock.log(write("before")).unwrap())
                    .collect();
                let log = record.clone();
                let barrier = lock
                    .barrier(move |b| {
                        log.0.lock().push(("|".into(), b.through_segment));
                        b
                    })
                    .unwrap();
                (before, barrier, lock.log(write("after")).unwrap())
            };
            for rx in before {
                rx.await.unwrap().unwrap();
            }
            let barrier = barrier.await.unwrap().unwrap();
            after.await.unwrap().unwrap();
            let applied = std::mem::take(&mut *record.0.lock());
            let order: Vec<&str> = applied.iter().map(|(db, _)| db.as_str()).collect();
            assert_eq!(order[200..], ["|", "after"], "round {round}");
            for (db, segment) in &applied {
                match db.as_str() {
                    "before" => assert!(*segment <= barrier.through_segment),
                    "after" => assert_eq!(*segment, barrier.next_segment, "round {round}"),
                    _ => {}
                }
            }
        }
    }
}
