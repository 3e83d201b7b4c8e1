//! How the write buffer is set up, what a client chooses per write, and what comes back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{CatalogSnapshot, Limits, NameError, Rejection, Retention};
use crate::lake::live::LoadError;
use crate::time::Clock;
use crate::wal::{self, StartError, WalError};

/// How the write buffer is set up.
#[derive(Debug, Clone)]
pub struct WriteBufferConfig {
    /// Folder of the write-ahead log.
    pub wal_dir: PathBuf,
    /// Schema limits applied to writes.
    pub limits: Limits,
    /// Create a database on its first write (else writes to unknown databases fail).
    pub auto_create_databases: bool,
    /// Writes are refused (retry later) while the buffer holds more than this many bytes;
    /// past half of it, everything is persisted and writes wait for that (`buffer_wait`).
    pub buffer_memory_limit: usize,
    /// How long a write that finds the buffer over half its limit waits for persistence to
    /// bring it under, before it goes ahead (and is refused if the buffer is full).
    pub buffer_wait: Duration,
    /// A WAL segment is closed and a new one started past this size.
    pub wal_segment_bytes: u64,
    /// A buffer partition is persisted once its hour ended this long ago.
    pub persist_after: Duration,
    /// How long a file replaced by compaction stays in the object store: longer than any
    /// query may run, so that no query reading it loses it.
    pub replaced_file_grace: Duration,
    /// The retention period of databases created by a write.
    pub default_retention: Option<Retention>,
    /// Points more than this far ahead of the clock are refused: a buffered hour that never
    /// ends would keep its WAL segments forever. `None` takes any time.
    pub max_future: Option<Duration>,
    /// Everything is persisted once the WAL on disk holds more than this many bytes,
    /// whatever the buffered hours' ages, so that replay after a crash stays bounded.
    pub wal_persist_bytes: u64,
    /// Buffer bytes one persist round freezes: a persist of more goes in rounds, so that
    /// the rows held twice while a file is encoded are one round's, not the buffer's.
    pub persist_round_bytes: usize,
    /// Most bytes of rows (as decoded in memory) one compaction step merges: a day of more
    /// is merged as several time ranges, each its own file.
    pub compaction_memory: u64,
    /// Float fields whose values in a file are all whole numbers are stored in it as
    /// integers (see `lake::parquet::encode_parquet`).
    pub whole_floats_as_integers: bool,
    /// Rows a Parquet data page holds.
    pub parquet_page_rows: usize,
    /// What time it is, for retention and delayed deletes.
    pub clock: Clock,
}

impl WriteBufferConfig {
    /// Defaults with the WAL in `wal_dir`.
    pub fn new(wal_dir: impl Into<PathBuf>) -> Self {
        WriteBufferConfig {
            wal_dir: wal_dir.into(),
            limits: Limits::default(),
            auto_create_databases: true,
            buffer_memory_limit: 256 << 20,
            buffer_wait: Duration::from_secs(3),
            wal_segment_bytes: 64 << 20,
            persist_after: Duration::from_secs(15 * 60),
            replaced_file_grace: Duration::from_secs(10 * 60),
            default_retention: None,
            max_future: None,
            wal_persist_bytes: 1 << 30,
            compaction_memory: 32 << 20,
            persist_round_bytes: 32 << 20,
            whole_floats_as_integers: true,
            parquet_page_rows: crate::lake::parquet::DEFAULT_PAGE_ROWS,
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
    #[error(transparent)]
    InvalidDatabaseName(#[from] NameError),
    #[error(
        "the write buffer is full ({used} bytes held, limit {limit}, --buffer-memory-limit); \
         retry later"
    )]
    BufferFull { used: usize, limit: usize },
    #[error("{0} is being deleted; retry, and the write creates it anew")]
    BeingDeleted(crate::catalog::Deleting),
    #[error(transparent)]
    Wal(#[from] WalError),
}

/// Errors opening the write buffer.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Lake(#[from] LoadError),
    #[error(transparent)]
    Wal(#[from] wal::segment::Error),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("WAL replay panicked: {0}")]
    Replay(String),
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

impl WriteBufferConfig {
    /// Buffer bytes past which everything is persisted and writes wait for persist rounds:
    /// half the memory limit.
    pub fn persist_all_bytes(&self) -> usize {
        self.buffer_memory_limit / 2
    }

    /// `next` (the catalog a write to `db` made from `before`) with the default retention
    /// period on `db` if the write created it.
    pub(crate) fn with_default_retention(
        &self,
        mut next: CatalogSnapshot,
        before: &CatalogSnapshot,
        db: &str,
    ) -> CatalogSnapshot {
        if let Some(retention) = &self.default_retention
            && before.database(db).is_none()
            && let Some(created) = next.databases.get_mut(db)
        {
            Arc::make_mut(created).retention = Some(retention.clone());
        }
        next
    }
}
