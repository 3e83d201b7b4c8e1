//! The write path: validate against the catalog, log to the WAL, apply to the table buffers.
//!
//! Order is the invariant everything here protects. Catalog changes and the hand-off to the
//! WAL thread happen under one lock, and a write is handed off only if the catalog is still
//! the one it was validated against (most writes are validated and encoded before taking the
//! lock, and checked again under it only when the catalog moved), so the catalog changes, the
//! WAL records and the buffer appends all happen in the same order; replaying the WAL after a
//! crash therefore rebuilds the same catalog and the same merged rows that were visible
//! before it.
//!
//! One thread owns the WAL (group commit): it takes every write queued since its last fsync,
//! appends them with one `write`, hands them to the apply thread in that order, fsyncs once,
//! and then tells the apply thread they are durable. The apply thread appends each write to
//! the table buffers while the WAL thread waits for the disk, so the two overlap, and answers
//! each writer once its write is both applied (queryable) and durable; a `no_sync` write once
//! it is appended and applied, before the fsync. One answer per write, from one thread: each
//! wake-up of a waiting request costs a context switch.
//!
//! Freezing partitions for the persister (`persister.rs`) takes both threads: the WAL thread
//! closes the current WAL segment between two groups, and the apply thread, having applied
//! every write logged before that, takes the chosen partitions out of the live buffer before
//! it applies any write logged after. So a frozen partition holds exactly the rows of its hour
//! logged in that segment or earlier ones, and no later row. That is what lets the catalog
//! record "partition P is persisted through segment S" and replay skip exactly those rows.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use sluice_model::{MetricMetadata, Sym, WriteBatch};
use tokio::sync::oneshot;

use crate::catalog::{Catalog, CatalogSnapshot, DatabaseSchema, Retention, validate_database_name};
use crate::catalog_file;
use crate::metrics::StorageMetrics;
use crate::persisted_files::{DBS_PREFIX, LakeState};
use crate::store::{self, ObjectStorage};
use crate::table_buffer::{FrozenPartition, PARTITION_NANOS, TableBuffer};
use crate::validator::{Limits, Rejection, validate};
use crate::wal::{self, WalWriter, decode_record, encode_record};
use object_store::path::Path;

/// How the write buffer is set up.
#[derive(Debug, Clone)]
pub struct WriteBufferConfig {
    /// Folder of the write-ahead log.
    pub wal_dir: PathBuf,
    /// Schema limits applied to writes.
    pub limits: Limits,
    /// Create a database on its first write (else writes to unknown databases fail).
    pub auto_create_databases: bool,
    /// Writes are refused (retry later) while the buffer holds more than this many bytes.
    pub buffer_memory_limit: usize,
    /// A WAL segment is closed and a new one started past this size.
    pub wal_segment_bytes: u64,
    /// A buffer partition is persisted once its hour ended this long ago.
    pub persist_after: Duration,
    /// How long a file replaced by compaction stays in the object store: longer than any
    /// query may run, so that no query reading it loses it.
    pub replaced_file_grace: Duration,
    /// The retention period of databases created by a write.
    pub default_retention: Option<Retention>,
    /// What time it is, for retention and delayed deletes.
    pub clock: Clock,
}

/// The time now, in Unix nanoseconds: the system clock, or one a test sets.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Clock(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64)
        }))
    }

    /// A clock that shows what `now` holds (tests move it by hand).
    pub fn manual(now: Arc<std::sync::atomic::AtomicI64>) -> Self {
        Clock(Arc::new(move || now.load(Ordering::SeqCst)))
    }

    /// Unix nanoseconds.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

impl WriteBufferConfig {
    /// Defaults with the WAL in `wal_dir`.
    pub fn new(wal_dir: impl Into<PathBuf>) -> Self {
        WriteBufferConfig {
            wal_dir: wal_dir.into(),
            limits: Limits::default(),
            auto_create_databases: true,
            buffer_memory_limit: 4 << 30,
            wal_segment_bytes: 64 << 20,
            persist_after: Duration::from_secs(15 * 60),
            replaced_file_grace: Duration::from_secs(10 * 60),
            default_retention: None,
            clock: Clock::system(),
        }
    }
}

/// Per-write choices of the client.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Keep the valid points when some are rejected (else write nothing).
    pub accept_partial: bool,
    /// Acknowledge before the WAL fsync.
    pub no_sync: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            accept_partial: true,
            no_sync: false,
        }
    }
}

/// What became of a write.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    /// Points stored.
    pub accepted_points: usize,
    /// Field values stored.
    pub accepted_values: usize,
    /// Points rejected by the schema rules.
    pub rejected: Vec<Rejection>,
    /// True when points were rejected and, because partial writes were refused, nothing was
    /// stored.
    pub all_refused: bool,
}

/// Why a write was not carried out at all.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "database '{0}' does not exist and the server runs with --no-auto-create-databases; \
         create it first"
    )]
    DatabaseNotFound(String),
    #[error("{0}")]
    InvalidDatabaseName(String),
    #[error(
        "the write buffer is full ({used} bytes held, limit {limit}, --buffer-memory-limit); \
         retry later"
    )]
    BufferFull { used: usize, limit: usize },
    #[error("the write-ahead log failed and writes are disabled until restart: {0}")]
    WalFailed(String),
    #[error("the server is shutting down; retry against the restarted server")]
    ShuttingDown,
}

/// Errors opening the write buffer.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Wal(#[from] wal::Error),
    #[error("could not start the WAL thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot read the catalog from the object store: {0}")]
    Store(#[from] store::Error),
    #[error("{0}")]
    Catalog(String),
}

/// What replay found, for the start-up log.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub records: usize,
    pub points: usize,
    /// Points skipped because the files listed in the catalog hold them already.
    pub points_persisted: usize,
    /// Files the catalog lists.
    pub files: usize,
    /// Records that passed their checksum but could not be decoded (skipped).
    pub undecodable: usize,
    /// Parquet files on the object store that the catalog does not list (written by a persist
    /// or compaction that died before its catalog change), deleted.
    pub orphan_files_deleted: usize,
    pub cut_tails: Vec<wal::CutTail>,
}

pub(crate) struct WalOp {
    payload: Vec<u8>,
    db: Arc<str>,
    batch: WriteBatch,
    no_sync: bool,
    /// Answered once the write is applied and durable (for `no_sync`, applied), or failed.
    reply: oneshot::Sender<Result<(), String>>,
}

/// What the WAL thread hands the apply thread, in log order.
enum ApplyMsg {
    Apply {
        db: Arc<str>,
        batch: WriteBatch,
        /// The WAL segment the write is logged in.
        segment: u64,
        /// For the writer; `durable` says when (already for `no_sync`).
        reply: oneshot::Sender<Result<(), String>>,
        durable: bool,
    },
    /// The fsync after every write handed over so far finished (or failed: the reason).
    Synced(Result<(), String>),
    Freeze {
        rule: FreezeRule,
        /// The segment just closed, through which every write applied so far is logged.
        through_segment: u64,
        /// The segment writes are logged in from now on.
        next_segment: u64,
        reply: oneshot::Sender<Result<Frozen, String>>,
    },
    Drop {
        target: DropTarget,
        through_segment: u64,
        next_segment: u64,
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// Database name -> table name -> that table's buffered rows.
type TableBuffers = HashMap<Arc<str>, HashMap<Arc<str>, Arc<TableBuffer>>>;

/// Which live partitions a freeze takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeRule {
    /// Every live partition.
    All,
    /// Partitions whose hour ends at or before this time (nanoseconds).
    EndedBy(i64),
}

impl FreezeRule {
    /// Whether the rule takes the partition with key `partition`.
    pub fn takes(self, partition: i64) -> bool {
        match self {
            FreezeRule::All => true,
            FreezeRule::EndedBy(t) => (partition + 1).saturating_mul(PARTITION_NANOS) <= t,
        }
    }
}

/// The frozen partitions of one table.
#[derive(Debug)]
pub struct FrozenTable {
    pub db: Arc<str>,
    pub table: Arc<str>,
    pub partitions: Vec<Arc<FrozenPartition>>,
}

/// What a freeze produced: every frozen partition not yet persisted (earlier ones included),
/// and the WAL segment that was closed, through which all their rows are logged.
#[derive(Debug)]
pub struct Frozen {
    pub through_segment: u64,
    pub tables: Vec<FrozenTable>,
}

pub(crate) enum WalMsg {
    Write(WalOp),
    Freeze {
        rule: FreezeRule,
        reply: oneshot::Sender<Result<Frozen, String>>,
    },
    /// Closes the segment and drops the buffered rows of a database or table; answers with
    /// the segment closed, through which every write to it is logged.
    Drop {
        target: DropTarget,
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// What a delete takes out of the buffer.
#[derive(Debug, Clone)]
pub(crate) enum DropTarget {
    Database(Arc<str>),
    Table(Arc<str>, Arc<str>),
}

/// State shared by the request path and the WAL thread.
pub(crate) struct Shared {
    pub(crate) catalog: Catalog,
    pub(crate) tables: RwLock<TableBuffers>,
    pub(crate) bytes: AtomicUsize,
    pub(crate) rows: AtomicUsize,
    failed: Mutex<Option<String>>,
    pub(crate) metrics: StorageMetrics,
    /// Live files and WAL bookkeeping, as last written to the catalog on the object store.
    pub(crate) lake: RwLock<Arc<LakeState>>,
    /// The WAL segment of the last write applied to the buffer: writes logged but not yet
    /// applied are in this segment or later ones.
    pub(crate) current_segment: AtomicU64,
    /// The id the next Parquet file gets (persist and compaction both take from it).
    pub(crate) next_file_id: AtomicU64,
}

/// Catalog, WAL, buffered rows and persisted files of every database.
pub struct WriteBuffer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: WriteBufferConfig,
    pub(crate) storage: ObjectStorage,
    /// Held by whoever changes the files (persist, compaction), one at a time.
    pub(crate) lake_lock: tokio::sync::Mutex<()>,
    /// Serialises validation and WAL hand-off; see the module documentation.
    pub(crate) write_lock: Mutex<Option<mpsc::Sender<WalMsg>>>,
    /// The WAL thread, then the apply thread: joined in that order at shutdown.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Most writes taken into one group commit.
const MAX_GROUP: usize = 4096;

impl WriteBuffer {
    /// Loads the catalog from `storage`, replays the WAL in `config.wal_dir` (the rows that
    /// the catalog's files do not already hold) into an empty buffer, then starts the WAL
    /// thread on a new segment.
    pub async fn open(
        config: WriteBufferConfig,
        storage: ObjectStorage,
    ) -> Result<(Self, ReplaySummary), OpenError> {
        let (catalog, lake) = match storage.get(&catalog_file::catalog_path()).await? {
            Some(bytes) => catalog_file::decode(&bytes).map_err(OpenError::Catalog)?,
            None => (CatalogSnapshot::default(), LakeState::default()),
        };
        let shared = Arc::new(Shared {
            catalog: Catalog::new(),
            tables: RwLock::new(HashMap::new()),
            bytes: AtomicUsize::new(0),
            rows: AtomicUsize::new(0),
            failed: Mutex::new(None),
            metrics: StorageMetrics::default(),
            next_file_id: AtomicU64::new(lake.next_file_id),
            lake: RwLock::new(Arc::new(lake)),
            current_segment: AtomicU64::new(0),
        });
        shared.catalog.replace(catalog);
        let lake_now = shared.lake.read().clone();
        let orphan_files_deleted = match delete_orphan_files(&storage, &lake_now).await {
            Ok(n) => n,
            Err(e) => {
                // harmless to keep: nothing reads a file the catalog does not list
                tracing::warn!(error = %e, "could not look for Parquet files the catalog does not list");
                0
            }
        };
        let mut summary = ReplaySummary {
            files: shared.lake.read().all_files().count(),
            orphan_files_deleted,
            ..ReplaySummary::default()
        };
        let replay_shared = shared.clone();
        let replay_config = config.clone();
        let mut summary = tokio::task::spawn_blocking(move || {
            replay(&replay_shared, &replay_config, &mut summary).map(|()| summary)
        })
        .await
        .map_err(|e| OpenError::Catalog(format!("WAL replay panicked: {e}")))??;
        for cut in &summary.cut_tails {
            tracing::warn!(
                segment = %cut.segment.display(),
                offset = cut.offset,
                bytes_cut = cut.bytes_cut,
                "cut off the damaged tail of a WAL segment: {}; every record before it was replayed",
                cut.reason
            );
        }
        summary.cut_tails.shrink_to_fit();
        let writer = WalWriter::create(&config.wal_dir, config.wal_segment_bytes)?;
        shared
            .current_segment
            .store(writer.sequence(), Ordering::Relaxed);
        let (apply_tx, apply_rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let apply_thread = std::thread::Builder::new()
            .name("sluice-apply".into())
            .spawn(move || apply_loop(thread_shared, apply_rx))
            .map_err(OpenError::Thread)?;
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let wal_thread = std::thread::Builder::new()
            .name("sluice-wal".into())
            .spawn(move || wal_loop(thread_shared, writer, rx, apply_tx))
            .map_err(OpenError::Thread)?;
        Ok((
            WriteBuffer {
                shared,
                config,
                storage,
                lake_lock: tokio::sync::Mutex::new(()),
                write_lock: Mutex::new(Some(tx)),
                threads: Mutex::new(vec![wal_thread, apply_thread]),
            },
            summary,
        ))
    }

    /// Validates and stores `batch` in database `db`. Returns once the accepted points are
    /// durable (or, with `no_sync`, applied) and queryable.
    pub async fn write(
        &self,
        db: &str,
        mut batch: WriteBatch,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, WriteError> {
        validate_database_name(db).map_err(WriteError::InvalidDatabaseName)?;
        if let Some(reason) = self.shared.failed.lock().clone() {
            return Err(WriteError::WalFailed(reason));
        }
        let used = self.shared.bytes.load(Ordering::Relaxed);
        if used >= self.config.buffer_memory_limit {
            return Err(WriteError::BufferFull {
                used,
                limit: self.config.buffer_memory_limit,
            });
        }
        // Validation and encoding happen outside the lock, so that concurrent writes do them in
        // parallel; under the lock a write is only handed to the WAL thread, provided the
        // catalog is still the one it was checked against. A write that changes the catalog,
        // or that another write's catalog change overtook, is checked again under the lock.
        let checked_against = self.shared.catalog.snapshot();
        let mut outcome = WriteOutcome::default();
        if !self.drop_expired(&checked_against, db, &mut batch, opts, &mut outcome) {
            return Ok(outcome);
        }
        let first = validate(
            &checked_against,
            db,
            &batch,
            &self.config.limits,
            self.config.auto_create_databases,
        )
        .ok_or_else(|| WriteError::DatabaseNotFound(db.to_string()))?;
        let mut first = Some(first);
        let mut payload = None;
        if first.as_ref().is_some_and(|v| v.catalog.is_none()) {
            let v = first.take().expect("checked");
            if !keep_accepted(&mut batch, v.keep, v.rejected, &mut outcome, opts) {
                return Ok(outcome);
            }
            payload = Some(encode_record(db, &batch));
        }
        let reply = {
            let sender = self.write_lock.lock();
            let Some(sender) = sender.as_ref() else {
                return Err(WriteError::ShuttingDown);
            };
            let current = self.shared.catalog.snapshot();
            let unchanged = Arc::ptr_eq(&current, &checked_against);
            if payload.is_none() || !unchanged {
                let v = match first.take() {
                    Some(v) if unchanged => v,
                    _ => validate(
                        &current,
                        db,
                        &batch,
                        &self.config.limits,
                        self.config.auto_create_databases,
                    )
                    .ok_or_else(|| WriteError::DatabaseNotFound(db.to_string()))?,
                };
                let refused = !opts.accept_partial && !v.rejected.is_empty();
                if !refused && let Some(next) = v.catalog {
                    let next = with_default_retention(next, &current, db, &self.config);
                    self.shared.catalog.replace(next);
                }
                if !keep_accepted(&mut batch, v.keep, v.rejected, &mut outcome, opts) {
                    return Ok(outcome);
                }
                payload = Some(encode_record(db, &batch));
            }
            let (reply, reply_rx) = oneshot::channel();
            sender
                .send(WalMsg::Write(WalOp {
                    payload: payload.expect("encoded above"),
                    db: db.into(),
                    batch,
                    no_sync: opts.no_sync,
                    reply,
                }))
                .map_err(|_| WriteError::ShuttingDown)?;
            (reply_rx, outcome)
        };
        let (reply_rx, outcome) = reply;
        match reply_rx.await {
            Ok(Ok(())) => Ok(outcome),
            Ok(Err(reason)) => Err(WriteError::WalFailed(reason)),
            Err(_) => Err(WriteError::ShuttingDown),
        }
    }

    /// Rejects the points of `batch` older than the retention period of `db` (or, for a
    /// database the write creates, `--default-retention`): they would never be queried, and
    /// a sender should hear so rather than see its write vanish. False when nothing is left
    /// to write (or, refusing partial writes, something was rejected).
    fn drop_expired(
        &self,
        catalog: &CatalogSnapshot,
        db: &str,
        batch: &mut WriteBatch,
        opts: WriteOptions,
        outcome: &mut WriteOutcome,
    ) -> bool {
        let retention = match catalog.database(db) {
            Some(d) => d.retention.as_ref(),
            None => self.config.default_retention.as_ref(),
        };
        let Some(retention) = retention else {
            return true;
        };
        let cutoff = retention.cutoff(self.config.clock.now());
        if batch.points().iter().all(|p| p.time >= cutoff) {
            return true;
        }
        let expired: Vec<bool> = batch.points().iter().map(|p| p.time < cutoff).collect();
        for (p, _) in batch.points().iter().zip(&expired).filter(|(_, e)| **e) {
            outcome.rejected.push(Rejection {
                line: p.line,
                message: format!(
                    "time {} is older than the retention period of database '{db}' ({retention}, \
                     so before {}): it would never be queried",
                    rfc3339(p.time),
                    rfc3339(cutoff)
                ),
            });
        }
        if !opts.accept_partial {
            outcome.all_refused = true;
            return false;
        }
        batch.retain_points(|i| !expired[i]);
        !batch.is_empty()
    }

    /// Records Prometheus metric metadata for database `db` (creating it, as a write would,
    /// when the server creates databases on first write). Metadata is kept in the catalog and
    /// written to the object store with it at the next persist; it is not in the WAL, so a
    /// crash before then forgets changes to it, which senders repeat (Prometheus every minute).
    pub fn set_metric_metadata(
        &self,
        db: &str,
        metadata: &[(String, MetricMetadata)],
    ) -> Result<(), WriteError> {
        validate_database_name(db).map_err(WriteError::InvalidDatabaseName)?;
        let _serialized = self.write_lock.lock();
        let snapshot = self.shared.catalog.snapshot();
        let existing = snapshot.database(db);
        if existing.is_none() && !self.config.auto_create_databases {
            return Err(WriteError::DatabaseNotFound(db.to_string()));
        }
        let changed = metadata.iter().any(|(family, m)| {
            existing
                .and_then(|d| d.metric_metadata.get(family.as_str()))
                .is_none_or(|old| old != m)
        });
        if !changed {
            return Ok(());
        }
        let mut next = (*snapshot).clone();
        let entry = next.databases.entry(db.into()).or_insert_with(|| {
            Arc::new(DatabaseSchema {
                name: db.into(),
                ..Default::default()
            })
        });
        let db_schema = Arc::make_mut(entry);
        for (family, m) in metadata {
            db_schema
                .metric_metadata
                .insert(family.as_str().into(), m.clone());
        }
        self.shared.catalog.replace(next);
        Ok(())
    }

    /// Closes the current WAL segment and freezes the live partitions `rule` picks, between
    /// two group commits. Returns every frozen partition not yet persisted.
    pub async fn freeze(&self, rule: FreezeRule) -> Result<Frozen, WriteError> {
        let (tx, rx) = oneshot::channel();
        {
            let sender = self.write_lock.lock();
            let Some(sender) = sender.as_ref() else {
                return Err(WriteError::ShuttingDown);
            };
            sender
                .send(WalMsg::Freeze { rule, reply: tx })
                .map_err(|_| WriteError::ShuttingDown)?;
        }
        match rx.await {
            Ok(Ok(frozen)) => Ok(frozen),
            Ok(Err(reason)) => Err(WriteError::WalFailed(reason)),
            Err(_) => Err(WriteError::ShuttingDown),
        }
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<CatalogSnapshot> {
        self.shared.catalog.snapshot()
    }

    /// The live Parquet files and WAL bookkeeping. Read it after scanning the buffer: the
    /// persister adds a file before it drops the frozen rows the file holds, so that order
    /// never misses a row (at worst it sees one twice, which deduplication merges).
    pub fn lake(&self) -> Arc<LakeState> {
        self.shared.lake.read().clone()
    }

    /// Writes the catalog document recording `catalog` and `lake` (with the file id counter
    /// as it is now) to the object store, durably. The caller holds the lake lock, and
    /// publishes `lake` with [`WriteBuffer::publish_lake`] only after this returned: queries
    /// must never see a file that a crash could still take out of the catalog.
    pub(crate) async fn write_catalog(
        &self,
        catalog: &CatalogSnapshot,
        lake: &mut LakeState,
    ) -> Result<(), store::Error> {
        lake.next_file_id = self.shared.next_file_id.load(Ordering::SeqCst);
        let doc = catalog_file::encode(catalog, lake);
        self.storage
            .put(&catalog_file::catalog_path(), bytes::Bytes::from(doc))
            .await
    }

    /// Makes `lake` (written by [`WriteBuffer::write_catalog`]) what queries see.
    pub(crate) fn publish_lake(&self, lake: LakeState) {
        *self.shared.lake.write() = Arc::new(lake);
    }

    /// The object store holding the files.
    pub fn storage(&self) -> &ObjectStorage {
        &self.storage
    }

    /// The configuration the buffer was opened with.
    pub fn config(&self) -> &WriteBufferConfig {
        &self.config
    }

    /// The buffered rows of `db`.`table`, if any were written.
    pub fn table_buffer(&self, db: &str, table: &str) -> Option<Arc<TableBuffer>> {
        self.shared.tables.read().get(db)?.get(table).cloned()
    }

    /// The buffer of `db`.`table`, created empty if nothing was written to it since
    /// start-up (it then holds the table's newest rows only, see
    /// [`TableBuffer::last_rows`]).
    pub fn table_buffer_or_create(&self, db: &str, table: &str) -> Arc<TableBuffer> {
        self.shared.table_buffer_or_create(db, table)
    }

    /// Rows appended to the buffer (before merging duplicates).
    pub fn buffer_rows(&self) -> usize {
        self.shared.rows.load(Ordering::Relaxed)
    }

    /// Approximate bytes held by the buffer.
    pub fn buffer_bytes(&self) -> usize {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Storage's own metrics.
    pub fn metrics(&self) -> &StorageMetrics {
        &self.shared.metrics
    }

    /// Stops taking writes, lets the WAL and apply threads make every queued write durable and
    /// applied, and waits for them. Writes after this fail with [`WriteError::ShuttingDown`].
    pub fn shutdown(&self) {
        drop(self.write_lock.lock().take());
        let threads = std::mem::take(&mut *self.threads.lock());
        for handle in threads {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for WriteBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBuffer")
            .field("wal_dir", &self.config.wal_dir)
            .field("databases", &self.catalog().databases.len())
            .field("buffer_rows", &self.buffer_rows())
            .field("buffer_bytes", &self.buffer_bytes())
            .finish()
    }
}

impl Drop for WriteBuffer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    /// Appends the points of `batch`, logged in WAL segment `segment`, to their tables'
    /// buffers. Every table and column they use is in the catalog already.
    fn apply(&self, db: &str, batch: &WriteBatch, segment: u64) {
        let catalog = self.catalog.snapshot();
        let Some(db_schema) = catalog.database(db) else {
            tracing::error!(db, "write applied to a database missing from the catalog");
            return;
        };
        // group point positions by table, keeping their order
        let mut by_table: Vec<(Sym, Vec<u32>)> = Vec::new();
        let mut slot_of_sym = vec![u32::MAX; batch.symbols.len()];
        for (i, p) in batch.points().iter().enumerate() {
            let slot = &mut slot_of_sym[p.table.index()];
            if *slot == u32::MAX {
                *slot = by_table.len() as u32;
                by_table.push((p.table, Vec::new()));
            }
            by_table[*slot as usize].1.push(i as u32);
        }
        let points = batch.points();
        for (table, idx) in by_table {
            let name = batch.str(table);
            let Some(schema) = db_schema.tables.get(name) else {
                tracing::error!(
                    db,
                    table = name,
                    "write applied to a table missing from the catalog"
                );
                continue;
            };
            let buffer = self.table_buffer_or_create(db, name);
            let bytes = buffer.apply(
                schema,
                batch,
                idx.iter().map(|&i| &points[i as usize]),
                segment,
            );
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.rows.fetch_add(idx.len(), Ordering::Relaxed);
        }
    }

    /// Freezes the partitions `rule` picks in every table; see [`WriteBuffer::freeze`].
    fn freeze(&self, rule: FreezeRule, through_segment: u64, next_seq: &mut u64) -> Frozen {
        let catalog = self.catalog.snapshot();
        let tables: Vec<(Arc<str>, Arc<str>, Arc<TableBuffer>)> = self
            .tables
            .read()
            .iter()
            .flat_map(|(db, t)| {
                t.iter()
                    .map(move |(name, b)| (db.clone(), name.clone(), b.clone()))
            })
            .collect();
        let mut out = Frozen {
            through_segment,
            tables: Vec::new(),
        };
        for (db, table, buffer) in tables {
            let Some(schema) = catalog.table(&db, &table) else {
                continue;
            };
            let partitions = buffer.freeze(schema, |p| rule.takes(p), next_seq);
            if !partitions.is_empty() {
                out.tables.push(FrozenTable {
                    db,
                    table,
                    partitions,
                });
            }
        }
        out
    }

    /// The oldest WAL segment holding rows that are only in the buffer (live or frozen), or
    /// the current segment if there are none: every older segment may be deleted.
    pub(crate) fn oldest_needed_segment(&self) -> u64 {
        let current = self.current_segment.load(Ordering::Relaxed);
        self.tables
            .read()
            .values()
            .flat_map(|t| t.values())
            .filter_map(|b| b.min_segment())
            .fold(current, u64::min)
    }

    /// Forgets the buffered rows (live and frozen) of a deleted database or table.
    fn drop_buffers(&self, target: &DropTarget) {
        let removed: Vec<Arc<TableBuffer>> = {
            let mut tables = self.tables.write();
            match target {
                DropTarget::Database(db) => tables
                    .remove(db)
                    .map(|t| t.into_values().collect())
                    .unwrap_or_default(),
                DropTarget::Table(db, table) => tables
                    .get_mut(db)
                    .and_then(|t| t.remove(table))
                    .into_iter()
                    .collect(),
            }
        };
        for buffer in removed {
            self.release(buffer.rows(), buffer.bytes());
        }
    }

    /// Takes `rows` and `bytes` that left the buffer (persisted, expired or deleted) off its
    /// totals.
    pub(crate) fn release(&self, rows: usize, bytes: usize) {
        self.rows.fetch_sub(rows, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn table_buffer_or_create(&self, db: &str, table: &str) -> Arc<TableBuffer> {
        if let Some(b) = self.tables.read().get(db).and_then(|t| t.get(table)) {
            return b.clone();
        }
        self.tables
            .write()
            .entry(db.into())
            .or_default()
            .entry(table.into())
            .or_insert_with(|| Arc::new(TableBuffer::new()))
            .clone()
    }
}

/// Drops the points validation rejected from `batch`, adding the rejections to `outcome`
/// and counting what is left. False when nothing is left to log: the batch was empty, or
/// partial writes are refused and some point was rejected (then `outcome.all_refused`).
fn keep_accepted(
    batch: &mut WriteBatch,
    keep: Vec<bool>,
    rejected: Vec<Rejection>,
    outcome: &mut WriteOutcome,
    opts: WriteOptions,
) -> bool {
    if !rejected.is_empty() {
        outcome.rejected.extend(rejected);
        if !opts.accept_partial {
            outcome.all_refused = true;
            (outcome.accepted_points, outcome.accepted_values) = (0, 0);
            return false;
        }
        batch.retain_points(|i| keep[i]);
    }
    outcome.accepted_points = batch.len();
    outcome.accepted_values = batch.field_value_count();
    !batch.is_empty()
}

/// Deletes the Parquet files under `dbs/` that `lake` neither lists nor holds for a delayed
/// delete: a persist or compaction that died after writing them and before the catalog
/// change that would have listed them leaves them behind. Runs at start-up, before anything
/// else of this server can write a file, so every file it does not know is such a leftover.
async fn delete_orphan_files(
    storage: &ObjectStorage,
    lake: &LakeState,
) -> Result<usize, store::Error> {
    let known: HashSet<&str> = lake
        .all_files()
        .map(|(_, f)| f.path.as_str())
        .chain(lake.pending_deletes.iter().map(|p| p.path.as_str()))
        .collect();
    let mut deleted = 0;
    for path in storage.list(&Path::from(DBS_PREFIX)).await? {
        if path.extension() != Some("parquet") || known.contains(path.as_ref()) {
            continue;
        }
        tracing::info!(path = %path, "deleting a Parquet file the catalog does not list");
        storage.delete(&path).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// `nanos` since the Unix epoch as `2026-01-01T00:00:00Z` (to the second), for messages.
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let (y, mo, d) = crate::persisted_files::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `next` (the catalog a write made) with the server's default retention period on the
/// database `db` if the write created it.
fn with_default_retention(
    mut next: CatalogSnapshot,
    before: &CatalogSnapshot,
    db: &str,
    config: &WriteBufferConfig,
) -> CatalogSnapshot {
    if let Some(retention) = &config.default_retention
        && before.database(db).is_none()
        && let Some(created) = next.databases.get_mut(db)
    {
        Arc::make_mut(created).retention = Some(retention.clone());
    }
    next
}

/// Replays the WAL into `shared`, skipping the rows the catalog's files already hold.
fn replay(
    shared: &Shared,
    config: &WriteBufferConfig,
    summary: &mut ReplaySummary,
) -> Result<(), OpenError> {
    let lake = shared.lake.read().clone();
    summary.cut_tails = wal::replay(&config.wal_dir, |segment, payload| {
        summary.records += 1;
        let (db, mut batch) = match decode_record(payload) {
            Ok(write) => write,
            Err(e) => {
                tracing::error!(segment, "WAL record skipped: {e}");
                summary.undecodable += 1;
                return;
            }
        };
        // writes to a database or table deleted after them
        if lake.is_dropped(&db, None, segment) {
            return;
        }
        if lake.dropped.iter().any(|d| d.table.is_some()) {
            let gone: Vec<bool> = batch
                .points()
                .iter()
                .map(|p| lake.is_dropped(&db, Some(batch.str(p.table)), segment))
                .collect();
            batch.retain_points(|i| !gone[i]);
        }
        if !lake.persisted_through.is_empty() {
            let covered: Vec<bool> = batch
                .points()
                .iter()
                .map(|p| {
                    lake.is_persisted(
                        &db,
                        batch.str(p.table),
                        p.time.div_euclid(PARTITION_NANOS),
                        segment,
                    )
                })
                .collect();
            let skipped = covered.iter().filter(|c| **c).count();
            if skipped > 0 {
                summary.points_persisted += skipped;
                batch.retain_points(|i| !covered[i]);
            }
        }
        if batch.is_empty() {
            return;
        }
        let snapshot = shared.catalog.snapshot();
        if let Some(v) = validate(&snapshot, &db, &batch, &Limits::unlimited(), true) {
            if let Some(c) = v.catalog {
                shared
                    .catalog
                    .replace(with_default_retention(c, &snapshot, &db, config));
            }
            for r in &v.rejected {
                tracing::warn!(db = %db, line = r.line, "WAL replay skipped a point: {}", r.message);
            }
            if !v.rejected.is_empty() {
                batch.retain_points(|i| v.keep[i]);
            }
        }
        summary.points += batch.len();
        shared.apply(&db, &batch, segment);
    })?;
    Ok(())
}

fn wal_loop(
    shared: Arc<Shared>,
    mut wal: WalWriter,
    rx: mpsc::Receiver<WalMsg>,
    apply: mpsc::Sender<ApplyMsg>,
) {
    let mut ops: Vec<WalOp> = Vec::new();
    let mut controls = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WalMsg::Write(op) => ops.push(op),
                control => controls.push(control),
            }
            if ops.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !ops.is_empty() {
            commit_group(&shared, &mut wal, &mut ops, &apply);
        }
        // Freezes and drops go after the writes queued with them: those were
        // acknowledged-to-be, so a freeze asked for after a write was acknowledged always
        // includes it. Both close the segment, so that the writes before them end in it.
        for control in controls.drain(..) {
            let failed = shared.failed.lock().clone();
            let rotated = match failed {
                Some(reason) => Err(reason),
                None => wal.rotate().map_err(|e| e.to_string()),
            };
            let next_segment = wal.sequence();
            // a closed channel drops the reply: the caller is told the server is shutting down
            match (control, rotated) {
                (WalMsg::Freeze { rule, reply }, Ok(through_segment)) => {
                    let _ = apply.send(ApplyMsg::Freeze {
                        rule,
                        through_segment,
                        next_segment,
                        reply,
                    });
                }
                (WalMsg::Drop { target, reply }, Ok(through_segment)) => {
                    let _ = apply.send(ApplyMsg::Drop {
                        target,
                        through_segment,
                        next_segment,
                        reply,
                    });
                }
                (WalMsg::Freeze { reply, .. }, Err(e)) => {
                    let _ = reply.send(Err(e));
                }
                (WalMsg::Drop { reply, .. }, Err(e)) => {
                    let _ = reply.send(Err(e));
                }
                (WalMsg::Write(_), _) => unreachable!("writes are not controls"),
            }
        }
    }
    if let Err(e) = wal.finish() {
        tracing::error!("final WAL fsync at shutdown failed: {e}");
    }
}

/// Appends one group of writes, hands them to the apply thread, fsyncs, then tells their
/// writers they are durable.
fn commit_group(
    shared: &Shared,
    wal: &mut WalWriter,
    ops: &mut Vec<WalOp>,
    apply: &mpsc::Sender<ApplyMsg>,
) {
    if let Some(reason) = shared.failed.lock().clone() {
        for op in ops.drain(..) {
            let _ = op.reply.send(Err(reason.clone()));
        }
        return;
    }
    let appended = wal.append(ops.iter().map(|op| op.payload.as_slice()));
    if let Err(e) = appended {
        fail(shared, ops, e.to_string());
        return;
    }
    let segment = wal.sequence();
    let bytes: usize = ops.iter().map(|op| op.payload.len() + 8).sum();
    shared.metrics.wal_bytes.add(bytes as u64);
    shared.metrics.wal_records.add(ops.len() as u64);
    let mut waiting = 0;
    for op in ops.drain(..) {
        waiting += usize::from(!op.no_sync);
        // a closed channel (the apply thread is gone) drops the reply: the writer is told the
        // server is shutting down
        let _ = apply.send(ApplyMsg::Apply {
            db: op.db,
            batch: op.batch,
            segment,
            reply: op.reply,
            durable: op.no_sync,
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
        Err(e) => {
            let reason = e.to_string();
            tracing::error!("WAL fsync failed, refusing further writes: {reason}");
            *shared.failed.lock() = Some(reason.clone());
            Err(reason)
        }
    };
    let _ = apply.send(ApplyMsg::Synced(synced));
}

/// Applies logged writes to the table buffers, and freezes partitions, in log order.
fn apply_loop(shared: Arc<Shared>, rx: mpsc::Receiver<ApplyMsg>) {
    let mut next_freeze_seq = 0u64;
    // applied writes waiting for the fsync that covers them
    let mut waiting: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            ApplyMsg::Apply {
                db,
                batch,
                segment,
                reply,
                durable,
            } => {
                shared.apply(&db, &batch, segment);
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
            ApplyMsg::Freeze {
                rule,
                through_segment,
                next_segment,
                reply,
            } => {
                let frozen = shared.freeze(rule, through_segment, &mut next_freeze_seq);
                shared
                    .current_segment
                    .store(next_segment, Ordering::Relaxed);
                let _ = reply.send(Ok(frozen));
            }
            ApplyMsg::Drop {
                target,
                through_segment,
                next_segment,
                reply,
            } => {
                shared.drop_buffers(&target);
                shared
                    .current_segment
                    .store(next_segment, Ordering::Relaxed);
                let _ = reply.send(Ok(through_segment));
            }
        }
    }
}

fn fail(shared: &Shared, ops: &mut Vec<WalOp>, reason: String) {
    tracing::error!("WAL append failed, refusing further writes: {reason}");
    *shared.failed.lock() = Some(reason.clone());
    for op in ops.drain(..) {
        let _ = op.reply.send(Err(reason.clone()));
    }
}

#[cfg(test)]
mod tests;
