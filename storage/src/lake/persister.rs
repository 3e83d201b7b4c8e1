//! Persistence: frozen buffer partitions become Parquet files on the object store, the catalog
//! that lists them is written, and only then do the buffer and the WAL let go of the rows.
//!
//! The order is the invariant: (1) freeze (close a WAL segment, take partitions out of the live
//! buffer; they stay queryable); (2) write every file, durably; (3) write the catalog listing
//! them and recording which WAL segments they cover, durably; (4) publish the new file list to
//! queries; (5) drop the frozen rows; (6) delete WAL segments nothing in memory needs. A crash
//! before (3) leaves the old catalog (the new files are unlisted orphans and the WAL still
//! holds their rows); a crash after (3) leaves the new catalog, and replay skips the rows it
//! covers. Either way every acknowledged row is there exactly once.
//!
//! A cycle that fails (the object store is down) changes nothing durable: the frozen partitions
//! stay frozen and queryable, and the next cycle persists them along with whatever it freezes.

use std::sync::Arc;
use std::time::Duration;

use super::live::{FileWriteError, Lake};
use crate::buffer::{Buffer, FreezeRule, Frozen};
use crate::catalog::Catalog;
use crate::columns::align_to_schema;
use crate::metrics::StorageMetrics;
use crate::time::Clock;
use crate::wal::{self, Wal, WalError};

/// Why a persist did not complete. Nothing was lost: the rows are still in the buffer and the
/// WAL, and the next persist tries again.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot freeze the buffer: {0}")]
    Freeze(#[from] WalError),
    #[error("cannot encode Parquet for {table}: {message}")]
    Encode { table: String, message: String },
    #[error(transparent)]
    Store(#[from] super::store::Error),
    #[error("cannot cut the WAL: {0}")]
    Wal(#[from] wal::segment::Error),
}

/// What one persist did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PersistSummary {
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    pub wal_segments_deleted: usize,
    /// Partitions that could not be written, left frozen for the next persist.
    pub failed_partitions: usize,
    /// Rounds it took (see [`Persister::persist`]).
    pub rounds: usize,
}

/// When the background persister persists.
#[derive(Debug, Clone, Copy)]
pub struct PersistPolicy {
    /// A buffer partition is persisted once its hour ended this long ago.
    pub persist_after: Duration,
    /// Everything is persisted while the buffer holds more than this.
    pub persist_all_bytes: usize,
    /// Everything is persisted while the WAL on disk holds more than this.
    pub wal_persist_bytes: u64,
    /// Buffer bytes one persist round freezes (at least one partition, whatever its size).
    pub round_bytes: usize,
}

/// Moves buffered rows into Parquet files, and lets the WAL go of them.
pub struct Persister {
    catalog: Arc<Catalog>,
    buffer: Arc<Buffer>,
    lake: Arc<Lake>,
    wal: Arc<Wal>,
    metrics: Arc<StorageMetrics>,
    clock: Clock,
    policy: PersistPolicy,
}

impl Persister {
    /// A persister over these parts.
    pub fn new(
        catalog: Arc<Catalog>,
        buffer: Arc<Buffer>,
        lake: Arc<Lake>,
        wal: Arc<Wal>,
        metrics: Arc<StorageMetrics>,
        clock: Clock,
        policy: PersistPolicy,
    ) -> Self {
        Persister {
            catalog,
            buffer,
            lake,
            wal,
            metrics,
            clock,
            policy,
        }
    }

    /// Closes the current WAL segment and freezes the live partitions `rule` picks, up to
    /// `budget` bytes of them (see [`Buffer::freeze`]), between two group commits. Returns
    /// every frozen partition not yet persisted.
    pub async fn freeze(&self, rule: FreezeRule, budget: usize) -> Result<Frozen, WalError> {
        let (catalog, buffer) = (self.catalog.clone(), self.buffer.clone());
        let frozen = self.wal.lock().barrier(move |barrier| {
            buffer.freeze(&catalog.snapshot(), rule, barrier.through_segment, budget)
        })?;
        frozen.await.map_err(|_| WalError::ShuttingDown)?
    }

    /// Persists the live partitions `rule` picks, and any partition frozen by an earlier
    /// persist that failed. Returns once the files and the catalog are durable.
    ///
    /// It goes in rounds of about [`PersistPolicy::round_bytes`] of buffered rows: a frozen
    /// partition is held twice while it is written (its rows as Arrow arrays, tags written
    /// out, and the sorted copy the file is encoded from), so freezing everything at once
    /// would hold the whole buffer two or three times over. The rounds stop once as many
    /// bytes as the buffer held at the start went, so that rows written meanwhile do not keep
    /// it going.
    pub async fn persist(&self, rule: FreezeRule) -> Result<PersistSummary, PersistError> {
        let _lake_guard = self.lake.lock().await;
        let mut left = self.buffer.bytes();
        let mut summary = PersistSummary::default();
        loop {
            let round = self.persist_round(rule).await;
            // writers waiting for room go on (or, if it failed, give up waiting)
            self.buffer.persisted_a_round();
            let (round, taken) = round?;
            summary.files += round.files;
            summary.rows += round.rows;
            summary.bytes += round.bytes;
            summary.wal_segments_deleted += round.wal_segments_deleted;
            summary.failed_partitions = round.failed_partitions;
            summary.rounds += 1;
            left = left.saturating_sub(taken);
            if taken == 0 || left == 0 || !self.buffer.has_due(rule) {
                break;
            }
        }
        if summary.files > 0 {
            super::background::return_free_memory();
            tracing::info!(
                files = summary.files,
                failed_partitions = summary.failed_partitions,
                rows = summary.rows,
                bytes = summary.bytes,
                wal_segments_deleted = summary.wal_segments_deleted,
                "persisted buffered partitions"
            );
        }
        Ok(summary)
    }

    /// One round of [`Persister::persist`], under the lake lock: freezes up to
    /// [`PersistPolicy::round_bytes`], writes the files and the catalog, lets the buffer and the WAL
    /// go of the rows. Returns what it did and the buffer bytes it froze.
    async fn persist_round(
        &self,
        rule: FreezeRule,
    ) -> Result<(PersistSummary, usize), PersistError> {
        let frozen = self.freeze(rule, self.policy.round_bytes).await?;
        let catalog = self.catalog.snapshot();
        let mut lake = (*self.lake.state()).clone();
        let mut summary = PersistSummary::default();
        let mut done: Vec<(Arc<str>, Arc<str>, Vec<u64>)> = Vec::new();
        let mut first_error = None;
        for t in &frozen.tables {
            let Some(schema) = catalog.table(&t.db, &t.table) else {
                continue;
            };
            let mut files = lake.table_files(&t.db, &t.table).to_vec();
            let mut seqs = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let batch = align_to_schema(&p.batch, schema.arrow_schema());
                let file = match self.lake.write_file(&t.db, schema, vec![batch], None).await {
                    Ok(file) => file,
                    // one partition that cannot be written does not hold up the others: it
                    // stays frozen (queryable, in the WAL) and the next persist retries it
                    Err(e) => {
                        let e = match e {
                            FileWriteError::Encode(message) => PersistError::Encode {
                                table: format!("{}.{}", t.db, t.table),
                                message,
                            },
                            FileWriteError::Store(e) => PersistError::Store(e),
                        };
                        tracing::error!(
                            db = %t.db,
                            table = %t.table,
                            partition = p.partition,
                            "cannot persist a buffer partition; its rows stay buffered and the \
                             next persist retries: {e}"
                        );
                        self.metrics.persist_partition_errors.add(1);
                        summary.failed_partitions += 1;
                        first_error.get_or_insert(e);
                        continue;
                    }
                };
                let (rows, size) = (file.rows, file.size_bytes);
                files.push(file);
                seqs.push(p.seq);
                let marker = lake
                    .persisted_through
                    .entry((t.db.clone(), t.table.clone(), p.partition))
                    .or_insert(0);
                *marker = (*marker).max(frozen.through_segment);
                summary.files += 1;
                summary.rows += rows;
                summary.bytes += size;
            }
            if seqs.is_empty() {
                continue;
            }
            lake.files
                .insert((t.db.clone(), t.table.clone()), files.into());
            done.push((t.db.clone(), t.table.clone(), seqs));
        }
        // nothing could be written: the store is down, not one partition
        if let Some(e) = first_error
            && summary.files == 0
        {
            return Err(e);
        }
        crash_point("persist-after-files");
        // Markers for segments that are gone can never match a replayed record.
        let oldest_on_disk = wal::list_segments(self.wal.dir())?
            .first()
            .map_or(0, |(seq, _)| *seq);
        lake.persisted_through.retain(|_, s| *s >= oldest_on_disk);
        lake.dropped.retain(|d| d.through_segment >= oldest_on_disk);
        self.lake.write_catalog(&catalog, &mut lake).await?;
        crash_point("persist-after-catalog");
        self.lake.publish(lake);
        for (db, table, seqs) in done {
            self.buffer.remove_frozen(&db, &table, &seqs);
        }
        // the oldest segment holding rows only in the buffer, or the current one if none:
        // every older segment may go
        let current = self.wal.current_segment();
        let keep_from = self
            .buffer
            .min_segment()
            .map_or(current, |s| s.min(current));
        summary.wal_segments_deleted = wal::delete_before(self.wal.dir(), keep_from)?;
        self.metrics.persisted_files.add(summary.files as u64);
        self.metrics.persisted_rows.add(summary.rows);
        Ok((summary, frozen.taken_bytes))
    }

    /// What the background persister should persist at `now_nanos`, if anything: partitions
    /// whose hour ended `persist_after` ago, or everything while the buffer is over half its
    /// memory limit (so that writes are not refused while persistence can keep up) or the
    /// WAL over its bound (so that replay stays bounded, whatever times the rows have).
    pub fn due(&self, now_nanos: i64) -> Option<FreezeRule> {
        if self.buffer.bytes() >= self.policy.persist_all_bytes {
            return Some(FreezeRule::All);
        }
        match wal::bytes_on_disk(self.wal.dir()) {
            Ok(bytes) if bytes > self.policy.wal_persist_bytes && self.buffer.rows() > 0 => {
                return Some(FreezeRule::All);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot measure the WAL: {e}"),
        }
        let cutoff = now_nanos.saturating_sub(
            i64::try_from(self.policy.persist_after.as_nanos()).unwrap_or(i64::MAX),
        );
        let rule = FreezeRule::EndedBy(cutoff);
        self.buffer.has_due(rule).then_some(rule)
    }

    /// Runs persistence in the background until `stop` resolves: every `interval`, and at
    /// once when a writer waits for room in the buffer, persists what [`Persister::due`]
    /// says; after a persist that wrote something, looks again without waiting, so that a
    /// load of rows already due (a backfill) is persisted as fast as it can be. Failures are
    /// logged and retried next round.
    pub async fn run(&self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut again = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = std::future::ready(()), if again => {}
                _ = ticker.tick() => {}
                _ = self.buffer.room_wanted() => {}
            }
            again = false;
            let Some(rule) = self.due(self.clock.now()) else {
                continue;
            };
            match self.persist(rule).await {
                Ok(summary) => again = summary.files > 0,
                Err(e) => {
                    self.metrics.persist_errors.add(1);
                    tracing::error!(
                        "persisting failed; the rows stay in the buffer and the WAL and the \
                         next round retries: {e}"
                    );
                }
            }
        }
    }
}

/// Kills the process on the spot (no unwinding, no flushing: as `kill -9` would) when the
/// environment variable `SLUICE_CRASH_POINT` names `point`. Crash-recovery tests use it to stop
/// the server at an exact step of a persist, which no signal sent from outside can hit
/// reliably.
pub fn crash_point(point: &str) {
    static CHOSEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var("SLUICE_CRASH_POINT").ok());
    if chosen.as_deref() == Some(point) {
        eprintln!("SLUICE_CRASH_POINT={point}: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests;
