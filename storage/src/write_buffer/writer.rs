//! The write path: validate against the catalog, log to the WAL, apply to the buffer.
//!
//! Order is the invariant everything here protects. Catalog changes and the hand-off to the
//! WAL happen under the write lock ([`Wal::lock`]), and a write is handed off only if the
//! catalog is still the one it was validated against (most writes are validated and encoded
//! before taking the lock, and checked again under it only when the catalog moved), so the
//! catalog changes, the WAL records and the buffer appends all happen in the same order;
//! replaying the WAL after a crash therefore rebuilds the same catalog and the same merged
//! rows that were visible before it.

use std::sync::Arc;

use sluice_model::{MetricMetadata, WriteBatch};

use super::config::{WriteBufferConfig, WriteError, WriteOptions, WriteOutcome};
use crate::buffer::Buffer;
use crate::catalog::{
    Catalog, CatalogSnapshot, DatabaseSchema, Rejection, validate, validate_database_name,
};
use crate::metrics::StorageMetrics;
use crate::time::rfc3339;
use crate::wal::{LoggedWrite, Wal, WalError, encode_record};

/// Takes writes: validates them, changes the catalog, and hands them to the WAL.
pub(crate) struct Writer {
    catalog: Arc<Catalog>,
    buffer: Arc<Buffer>,
    wal: Arc<Wal>,
    metrics: Arc<StorageMetrics>,
    config: WriteBufferConfig,
}

impl Writer {
    /// A writer over these parts, with `config`'s limits and defaults.
    pub(crate) fn new(
        catalog: Arc<Catalog>,
        buffer: Arc<Buffer>,
        wal: Arc<Wal>,
        metrics: Arc<StorageMetrics>,
        config: WriteBufferConfig,
    ) -> Self {
        Writer {
            catalog,
            buffer,
            wal,
            metrics,
            config,
        }
    }

    /// Validates and stores `batch` in database `db`. Returns once the accepted points are
    /// durable (or, with `no_sync`, applied) and queryable.
    pub async fn write(
        &self,
        db: &str,
        mut batch: WriteBatch,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, WriteError> {
        validate_database_name(db)?;
        if let Some(e) = self.wal.failure() {
            return Err(WriteError::Wal(e));
        }
        // Past half its limit the buffer is being persisted whole: a write waits for a round
        // of that rather than adding to it, so that a load faster than persistence (a
        // backfill of rows already due) is slowed to its pace instead of growing the buffer
        // to the limit.
        let persist_all = self.config.persist_all_bytes();
        if self.buffer.bytes() >= persist_all && !self.config.buffer_wait.is_zero() {
            let started = std::time::Instant::now();
            self.buffer
                .wait_for_room(persist_all, self.config.buffer_wait)
                .await;
            self.metrics.write_waits.add(1);
            self.metrics
                .write_wait_micros
                .add(started.elapsed().as_micros() as u64);
        }
        let used = self.buffer.bytes();
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
        let checked_against = self.catalog.snapshot();
        let mut outcome = WriteOutcome::default();
        if !self.drop_out_of_range(&checked_against, db, &mut batch, opts, &mut outcome) {
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
            let lock = self.wal.lock();
            let current = self.catalog.snapshot();
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
                    let next = self.config.with_default_retention(next, &current, db);
                    self.catalog.replace(next);
                }
                if !keep_accepted(&mut batch, v.keep, v.rejected, &mut outcome, opts) {
                    return Ok(outcome);
                }
                payload = Some(encode_record(db, &batch));
            }
            if let Some(target) = self.catalog.deleting()
                && *target.db == *db
                && target
                    .table
                    .as_deref()
                    .is_none_or(|t| batch.points().iter().any(|p| batch.str(p.table) == t))
            {
                return Err(WriteError::BeingDeleted(target));
            }
            lock.log(LoggedWrite {
                payload: payload.expect("encoded above"),
                db: db.into(),
                batch,
                no_sync: opts.no_sync,
            })?
        };
        match reply.await {
            Ok(Ok(())) => Ok(outcome),
            Ok(Err(e)) => Err(WriteError::Wal(e)),
            Err(_) => Err(WriteError::Wal(WalError::ShuttingDown)),
        }
    }

    /// Rejects the points of `batch` older than the retention period of `db` (or, for a
    /// database the write creates, `--default-retention`): they would never be queried, and
    /// a sender should hear so rather than see its write vanish. Rejects those more than
    /// `max_future` ahead of the clock too. False when nothing is left to write (or, refusing
    /// partial writes, something was rejected).
    fn drop_out_of_range(
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
        let max_future = self.config.max_future;
        if retention.is_none() && max_future.is_none() {
            return true;
        }
        let now = self.config.clock.now();
        let cutoff = retention.map_or(i64::MIN, |r| r.cutoff(now));
        let latest = max_future.map_or(i64::MAX, |d| {
            now.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        });
        let in_range = |t: i64| (cutoff..=latest).contains(&t);
        if batch.points().iter().all(|p| in_range(p.time)) {
            return true;
        }
        let keep: Vec<bool> = batch.points().iter().map(|p| in_range(p.time)).collect();
        for (p, _) in batch.points().iter().zip(&keep).filter(|(_, k)| !**k) {
            let message = if p.time < cutoff {
                let retention = retention.expect("a cutoff comes from a retention period");
                format!(
                    "time {} is older than the retention period of database '{db}' \
                     ({retention}, so before {}): it would never be queried",
                    rfc3339(p.time),
                    rfc3339(cutoff)
                )
            } else {
                format!(
                    "time {} is more than {} ahead of the server's clock ({}; \
                     --max-future): check the timestamp's precision and the sender's clock",
                    rfc3339(p.time),
                    crate::time::describe_duration(max_future.expect("a limit ahead")),
                    rfc3339(now)
                )
            };
            outcome.rejected.push(Rejection {
                line: p.line,
                message,
            });
        }
        if !opts.accept_partial {
            outcome.all_refused = true;
            return false;
        }
        batch.retain_points(|i| keep[i]);
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
        validate_database_name(db)?;
        let _serialized = self.wal.lock();
        let snapshot = self.catalog.snapshot();
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
        self.catalog.replace(next);
        Ok(())
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
