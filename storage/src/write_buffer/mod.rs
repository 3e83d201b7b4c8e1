//! The write buffer: every part of storage, opened and wired together.
//!
//! [`WriteBuffer`] holds the parts, each owning its state, and connects them; it adds no
//! behaviour of its own:
//!
//! - the [`Catalog`] (what exists), changed by the [`writer`] and by [`Admin`];
//! - the [`Wal`], whose apply thread appends each logged write to the [`Buffer`];
//! - the [`Lake`] (Parquet files on the object store), which the [`Persister`] fills from
//!   the buffer and the [`Compactor`] merges and expires;
//! - a [`ReadView`] of catalog, buffer and lake for queries.
//!
//! Opening is the one place the order of start-up is spelled out: read the catalog from the
//! object store, delete files a crash left unlisted, replay the WAL (`replay.rs`), then start
//! the WAL on a new segment.

mod config;
mod replay;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use sluice_model::{MetricMetadata, WriteBatch};

use crate::admin::{Admin, AdminError};
use crate::buffer::{Buffer, FreezeRule, Frozen, TableBuffer};
use crate::catalog::{Catalog, CatalogSnapshot, Retention, TokenRecord, TokenSpec, Tokens};
use crate::lake::compactor::{CompactionError, CompactionSummary, Compactor};
use crate::lake::files::LakeState;
use crate::lake::live::Lake;
use crate::lake::parquet::EncodeOptions;
use crate::lake::persister::{PersistError, PersistPolicy, PersistSummary, Persister};
use crate::lake::retention::{self, RetentionSummary};
use crate::lake::store::{self, ObjectStorage};
use crate::metrics::StorageMetrics;
use crate::read_view::ReadView;
use crate::wal::{Apply, Wal, WalError};

pub use config::{
    OpenError, ReplaySummary, WriteBufferConfig, WriteError, WriteOptions, WriteOutcome,
};

/// Catalog, WAL, buffered rows and persisted files of every database.
pub struct WriteBuffer {
    config: WriteBufferConfig,
    catalog: Arc<Catalog>,
    buffer: Arc<Buffer>,
    lake: Arc<Lake>,
    wal: Arc<Wal>,
    metrics: Arc<StorageMetrics>,
    writer: writer::Writer,
    persister: Persister,
    compactor: Compactor,
    admin: Admin,
}

/// What the apply thread does with a logged write: append it to the buffer, under the
/// catalog as it is (every table and column the write needs is in it already).
struct ApplyToBuffer {
    catalog: Arc<Catalog>,
    buffer: Arc<Buffer>,
}

impl Apply for ApplyToBuffer {
    fn apply(&mut self, db: &str, batch: &WriteBatch, segment: u64) {
        self.buffer
            .apply(&self.catalog.snapshot(), db, batch, segment);
    }
}

impl WriteBuffer {
    /// Loads the catalog from `storage`, replays the WAL in `config.wal_dir` (the rows that
    /// the catalog's files do not already hold) into an empty buffer, then starts the WAL
    /// thread on a new segment.
    pub async fn open(
        config: WriteBufferConfig,
        storage: ObjectStorage,
    ) -> Result<(Self, ReplaySummary), OpenError> {
        let encode = EncodeOptions {
            whole_floats_as_integers: config.whole_floats_as_integers,
            page_rows: config.parquet_page_rows,
        };
        let (lake, snapshot) = Lake::load(storage, config.replaced_file_grace, encode).await?;
        let lake = Arc::new(lake);
        let catalog = Arc::new(Catalog::new());
        catalog.replace(snapshot);
        let buffer = Arc::new(Buffer::new());
        let metrics = Arc::new(StorageMetrics::default());
        let orphan_files_deleted = match lake.delete_orphan_files().await {
            Ok(n) => n,
            Err(e) => {
                // harmless to keep: nothing reads a file the catalog does not list
                tracing::warn!(error = %e, "could not look for Parquet files the catalog does not list");
                0
            }
        };
        let mut summary = ReplaySummary {
            files: lake.state().all_files().count(),
            orphan_files_deleted,
            ..ReplaySummary::default()
        };
        let (replay_catalog, replay_buffer, replay_lake, replay_config) = (
            catalog.clone(),
            buffer.clone(),
            lake.state(),
            config.clone(),
        );
        let mut summary = tokio::task::spawn_blocking(move || {
            replay::replay(
                &replay_catalog,
                &replay_buffer,
                &replay_lake,
                &replay_config,
                &mut summary,
            )
            .map(|()| summary)
        })
        .await
        .map_err(|e| OpenError::Replay(e.to_string()))??;
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
        let applier = ApplyToBuffer {
            catalog: catalog.clone(),
            buffer: buffer.clone(),
        };
        let wal = Arc::new(Wal::start(
            &config.wal_dir,
            config.wal_segment_bytes,
            applier,
            metrics.clone(),
        )?);
        let clock = config.clock.clone();
        let write_buffer = WriteBuffer {
            writer: writer::Writer::new(
                catalog.clone(),
                buffer.clone(),
                wal.clone(),
                metrics.clone(),
                config.clone(),
            ),
            persister: Persister::new(
                catalog.clone(),
                buffer.clone(),
                lake.clone(),
                wal.clone(),
                metrics.clone(),
                clock.clone(),
                PersistPolicy {
                    persist_after: config.persist_after,
                    wal_persist_bytes: config.wal_persist_bytes,
                    persist_all_bytes: config.persist_all_bytes(),
                    round_bytes: config.persist_round_bytes,
                },
            ),
            compactor: Compactor::new(
                catalog.clone(),
                buffer.clone(),
                lake.clone(),
                metrics.clone(),
                clock.clone(),
                config.compaction_memory,
            ),
            admin: Admin::new(
                catalog.clone(),
                buffer.clone(),
                lake.clone(),
                wal.clone(),
                clock,
            ),
            config,
            catalog,
            buffer,
            lake,
            wal,
            metrics,
        };
        Ok((write_buffer, summary))
    }

    /// Validates and stores `batch` in database `db`. Returns once the accepted points are
    /// durable (or, with `no_sync`, applied) and queryable.
    pub async fn write(
        &self,
        db: &str,
        batch: WriteBatch,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, WriteError> {
        self.writer.write(db, batch, opts).await
    }

    /// Records Prometheus metric metadata, (metric family, metadata) pairs, for database
    /// `db` (creating it, as a write would, when the server creates databases on first
    /// write). Metadata is kept in the catalog and written to the object store with it at
    /// the next persist; it is not in the WAL, so a crash before then forgets changes to it,
    /// which senders repeat (Prometheus every minute).
    pub fn set_metric_metadata(
        &self,
        db: &str,
        metadata: &[(String, MetricMetadata)],
    ) -> Result<(), WriteError> {
        self.writer.set_metric_metadata(db, metadata)
    }

    /// A view of catalog, buffer and files for queries, which may outlive this borrow.
    pub fn read_view(&self) -> ReadView {
        ReadView::new(
            self.catalog.clone(),
            self.buffer.clone(),
            self.lake.clone(),
            self.config.clock.clone(),
        )
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<CatalogSnapshot> {
        self.catalog.snapshot()
    }

    /// The live Parquet files and WAL bookkeeping (see [`Lake::state`]).
    pub fn lake(&self) -> Arc<LakeState> {
        self.lake.state()
    }

    /// The object store holding the files.
    pub fn storage(&self) -> &ObjectStorage {
        self.lake.storage()
    }

    /// The configuration the buffer was opened with.
    pub fn config(&self) -> &WriteBufferConfig {
        &self.config
    }

    /// The buffered rows of `db`.`table`, if any were written since start-up.
    pub fn table_buffer(&self, db: &str, table: &str) -> Option<Arc<TableBuffer>> {
        self.buffer.table_buffer(db, table)
    }

    /// Rows appended to the buffer (before merging duplicates).
    pub fn buffer_rows(&self) -> usize {
        self.buffer.rows()
    }

    /// Approximate bytes held by the buffer.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer.bytes()
    }

    /// Storage's own metrics.
    pub fn metrics(&self) -> &StorageMetrics {
        &self.metrics
    }

    /// The time now, by the buffer's clock (Unix nanoseconds).
    pub fn now(&self) -> i64 {
        self.config.clock.now()
    }

    /// Closes the current WAL segment and freezes the live partitions `rule` picks, between
    /// two group commits. Returns every frozen partition not yet persisted.
    pub async fn freeze(&self, rule: FreezeRule) -> Result<Frozen, WalError> {
        self.persister.freeze(rule, usize::MAX).await
    }

    /// Persists the live partitions `rule` picks (see [`Persister::persist`]).
    pub async fn persist(&self, rule: FreezeRule) -> Result<PersistSummary, PersistError> {
        self.persister.persist(rule).await
    }

    /// What the background persister would persist at `now_nanos`, if anything.
    pub fn persist_due(&self, now_nanos: i64) -> Option<FreezeRule> {
        self.persister.due(now_nanos)
    }

    /// Runs persistence every `interval` until `stop` resolves.
    pub async fn run_persister(
        &self,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        self.persister.run(interval, stop).await
    }

    /// Runs one compaction round (see [`Compactor::compact`]).
    pub async fn compact(&self, target_bytes: u64) -> Result<CompactionSummary, CompactionError> {
        self.compactor.compact(target_bytes).await
    }

    /// Runs compaction every `interval` until `stop` resolves.
    pub async fn run_compactor(
        &self,
        interval: Duration,
        target_bytes: u64,
        stop: impl std::future::Future<Output = ()>,
    ) {
        self.compactor.run(interval, target_bytes, stop).await
    }

    /// Applies every database's retention period now (see [`retention::enforce`]).
    pub async fn enforce_retention(&self) -> Result<RetentionSummary, store::Error> {
        retention::enforce(&self.catalog, &self.buffer, &self.lake, self.now()).await
    }

    /// Creates the empty database `name` keeping rows for `retention` (`None`: forever).
    pub async fn create_database(
        &self,
        name: &str,
        retention: Option<Retention>,
    ) -> Result<(), AdminError> {
        self.admin.create_database(name, retention).await
    }

    /// Changes how long database `name` keeps rows.
    pub async fn set_retention(
        &self,
        name: &str,
        retention: Option<Retention>,
    ) -> Result<(), AdminError> {
        self.admin.set_retention(name, retention).await
    }

    /// Deletes database `name`: its rows disappear at once, its files after the grace period.
    pub async fn delete_database(&self, name: &str) -> Result<(), AdminError> {
        self.admin.delete_database(name).await
    }

    /// Deletes table `table` of database `db`.
    pub async fn delete_table(&self, db: &str, table: &str) -> Result<(), AdminError> {
        self.admin.delete_table(db, table).await
    }

    /// Whether any token exists: then every request but liveness and metrics needs one.
    pub fn has_tokens(&self) -> bool {
        !self.catalog.snapshot().tokens.is_empty()
    }

    /// The token `token` is, if the catalog knows it.
    pub fn authenticate(&self, token: &str) -> Option<TokenRecord> {
        crate::catalog::tokens::find(&self.catalog.snapshot().tokens, token)
    }

    /// The tokens the catalog holds (their hashes, and what each may do).
    pub fn tokens(&self) -> Tokens {
        self.catalog.snapshot().tokens.clone()
    }

    /// Creates a token (see [`Admin::create_token`]).
    pub async fn create_token(
        &self,
        spec: TokenSpec,
        by_admin: bool,
    ) -> Result<(String, TokenRecord), AdminError> {
        self.admin.create_token(spec, by_admin).await
    }

    /// Revokes the token numbered `id`.
    pub async fn delete_token(&self, id: u64, keep_one: bool) -> Result<TokenRecord, AdminError> {
        self.admin.delete_token(id, keep_one).await
    }

    /// Stops taking writes, lets the WAL make every queued write durable and applied, and
    /// waits for it. Writes after this fail with [`WalError::ShuttingDown`].
    pub fn shutdown(&self) {
        self.wal.shutdown();
    }
}

impl std::fmt::Debug for WriteBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBuffer")
            .field("wal", &self.wal)
            .field("databases", &self.catalog().databases.len())
            .field("buffer", &self.buffer)
            .field("lake", &self.lake)
            .finish()
    }
}

impl Drop for WriteBuffer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
