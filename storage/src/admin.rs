//! Database administration: creating databases, changing their retention, deleting databases
//! and tables, and enforcing retention.
//!
//! Every change is recorded in the catalog on the object store before it is acknowledged.
//! A delete also closes the WAL segment (between two group commits, as a freeze does) and
//! records the database or table as dropped through that segment, so that replaying the
//! WAL after a crash does not bring back the writes before the delete. The deleted files are
//! removed from the object store after the grace period replaced files get, so that a query
//! that started before the delete can finish; until then the catalog lists them as pending
//! deletes.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::catalog::{CatalogSnapshot, DatabaseSchema, Retention, validate_database_name};
use crate::persisted_files::{Dropped, LakeState, ParquetFile, PendingDelete};
use crate::store;
use crate::write_buffer::{DropTarget, WalMsg, WriteBuffer};

/// Why an administrative change was not made.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    InvalidName(String),
    #[error("database '{0}' does not exist")]
    DatabaseNotFound(String),
    #[error("table '{table}' does not exist in database '{db}'")]
    TableNotFound { db: String, table: String },
    #[error("database '{0}' already exists")]
    DatabaseExists(String),
    #[error("the server is shutting down; retry against the restarted server")]
    ShuttingDown,
    #[error("the write-ahead log failed: {0}")]
    WalFailed(String),
    #[error(
        "the change could not be recorded in the catalog on the object store: {0}; it holds \
         until restart, retry to make it durable"
    )]
    Store(#[from] store::Error),
    #[error("{0}")]
    InvalidToken(String),
    #[error("no token has id {0}")]
    TokenNotFound(u64),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Internal(String),
}

/// What a retention round removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionSummary {
    /// Files whose rows had all expired, dropped from the catalog (deleted after the grace).
    pub files_expired: usize,
    /// Buffer partitions (table hours) whose rows had all expired.
    pub partitions_expired: usize,
}

impl WriteBuffer {
    /// The time now, by the buffer's clock (Unix nanoseconds).
    pub fn now(&self) -> i64 {
        self.config.clock.now()
    }

    /// The earliest time (Unix nanoseconds) database `db` keeps rows of now, if it has a
    /// retention period: queries hide older rows.
    pub fn retention_cutoff(&self, db: &str) -> Option<i64> {
        self.catalog().retention_cutoff(db, self.now())
    }

    /// Creates the empty database `name` keeping rows for `retention` (`None`: forever).
    pub async fn create_database(
        &self,
        name: &str,
        retention: Option<Retention>,
    ) -> Result<(), AdminError> {
        validate_database_name(name).map_err(AdminError::InvalidName)?;
        let _lake_guard = self.lake_lock.lock().await;
        self.change_catalog(|current| {
            if current.database(name).is_some() {
                return Err(AdminError::DatabaseExists(name.into()));
            }
            let mut next = current.clone();
            next.databases.insert(
                name.into(),
                Arc::new(DatabaseSchema {
                    name: name.into(),
                    retention,
                    ..DatabaseSchema::default()
                }),
            );
            Ok((next, ()))
        })
        .await
    }

    /// Changes how long database `name` keeps rows. Rows older than the new period disappear
    /// from queries at once; their files go at the next retention round.
    pub async fn set_retention(
        &self,
        name: &str,
        retention: Option<Retention>,
    ) -> Result<(), AdminError> {
        let _lake_guard = self.lake_lock.lock().await;
        self.change_catalog(|current| {
            let Some(db) = current.database(name) else {
                return Err(AdminError::DatabaseNotFound(name.into()));
            };
            let mut changed = (**db).clone();
            changed.retention = retention;
            let mut next = current.clone();
            next.databases.insert(name.into(), Arc::new(changed));
            Ok((next, ()))
        })
        .await
    }

    /// Deletes database `name`: its rows disappear at once, its files after the grace period.
    pub async fn delete_database(&self, name: &str) -> Result<(), AdminError> {
        let _lake_guard = self.lake_lock.lock().await;
        let through = {
            let current = self.shared.catalog.snapshot();
            if current.database(name).is_none() {
                return Err(AdminError::DatabaseNotFound(name.into()));
            }
            let mut next = (*current).clone();
            next.databases.remove(name);
            self.drop_in_wal(next, DropTarget::Database(name.into()))?
        };
        let through_segment = through.await?;
        let delete_after = self.grace_end();
        self.record_catalog(|lake| {
            let gone: Vec<_> = lake
                .files
                .keys()
                .filter(|(d, _)| &**d == name)
                .cloned()
                .collect();
            for key in gone {
                if let Some(files) = lake.files.remove(&key) {
                    pending(lake, &files, delete_after);
                }
            }
            lake.persisted_through.retain(|(d, _, _), _| &**d != name);
            lake.dropped.push(Dropped {
                db: name.into(),
                table: None,
                through_segment,
            });
        })
        .await
    }

    /// Deletes table `table` of database `db`: its rows disappear at once, its files after
    /// the grace period. A later write may create it again, with a new schema.
    pub async fn delete_table(&self, db: &str, table: &str) -> Result<(), AdminError> {
        let _lake_guard = self.lake_lock.lock().await;
        let through = {
            let current = self.shared.catalog.snapshot();
            let Some(db_schema) = current.database(db) else {
                return Err(AdminError::DatabaseNotFound(db.into()));
            };
            if !db_schema.tables.contains_key(table) {
                return Err(AdminError::TableNotFound {
                    db: db.into(),
                    table: table.into(),
                });
            }
            let mut changed = (**db_schema).clone();
            changed.tables.remove(table);
            let mut next = (*current).clone();
            next.databases.insert(db.into(), Arc::new(changed));
            self.drop_in_wal(next, DropTarget::Table(db.into(), table.into()))?
        };
        let through_segment = through.await?;
        let delete_after = self.grace_end();
        self.record_catalog(|lake| {
            if let Some(files) = lake.files.remove(&(db.into(), table.into())) {
                pending(lake, &files, delete_after);
            }
            lake.persisted_through
                .retain(|(d, t, _), _| !(&**d == db && &**t == table));
            lake.dropped.push(Dropped {
                db: db.into(),
                table: Some(table.into()),
                through_segment,
            });
        })
        .await
    }

    /// Applies every database's retention period at the clock's time: drops the files whose
    /// rows all expired from the catalog (their deletion follows after the grace period) and
    /// the expired hours from the buffer. Rows of files and hours that only partly expired
    /// stay stored but are not queried.
    pub async fn enforce_retention(&self) -> Result<RetentionSummary, store::Error> {
        let now = self.now();
        let catalog = self.catalog();
        let cutoffs: Vec<(Arc<str>, i64)> = catalog
            .databases
            .iter()
            .filter_map(|(name, db)| Some((name.clone(), db.retention.as_ref()?.cutoff(now))))
            .collect();
        let mut summary = RetentionSummary::default();
        if cutoffs.is_empty() {
            return Ok(summary);
        }
        for (db, cutoff) in &cutoffs {
            let buffers: Vec<_> = self
                .shared
                .tables
                .read()
                .get(db)
                .map(|t| t.values().cloned().collect())
                .unwrap_or_default();
            for buffer in buffers {
                let (partitions, rows, bytes) = buffer.drop_partitions_before(*cutoff);
                summary.partitions_expired += partitions;
                self.shared.release(rows, bytes);
            }
        }
        let expired = |lake: &LakeState| -> usize {
            lake.all_files()
                .filter(|((d, _), f)| {
                    cutoffs
                        .iter()
                        .any(|(db, cutoff)| d == db && f.max_time < *cutoff)
                })
                .count()
        };
        if expired(&self.lake()) == 0 {
            return Ok(summary);
        }
        let _lake_guard = self.lake_lock.lock().await;
        let mut lake = (*self.lake()).clone();
        summary.files_expired = expired(&lake);
        let delete_after = self.grace_end();
        let keys: Vec<_> = lake.files.keys().cloned().collect();
        for key in keys {
            let Some(&(_, cutoff)) = cutoffs.iter().find(|(db, _)| *db == key.0) else {
                continue;
            };
            let files = lake.files.remove(&key).unwrap_or_default();
            let (gone, kept): (Vec<ParquetFile>, Vec<ParquetFile>) =
                files.iter().cloned().partition(|f| f.max_time < cutoff);
            pending(&mut lake, &gone, delete_after);
            if !kept.is_empty() {
                lake.files.insert(key, kept.into());
            }
        }
        self.write_catalog(&self.catalog(), &mut lake).await?;
        self.publish_lake(lake);
        tracing::info!(
            files = summary.files_expired,
            partitions = summary.partitions_expired,
            "dropped data past its database's retention period"
        );
        Ok(summary)
    }

    /// Makes `next` (the catalog without what is deleted) current and asks the WAL thread to
    /// close the segment and drop the buffered rows; the receiver answers with the segment
    /// closed. Under the write lock, so that no write slips between the two.
    fn drop_in_wal(
        &self,
        next: CatalogSnapshot,
        target: DropTarget,
    ) -> Result<impl std::future::Future<Output = Result<u64, AdminError>>, AdminError> {
        let (tx, rx) = oneshot::channel();
        {
            let sender = self.write_lock.lock();
            let Some(sender) = sender.as_ref() else {
                return Err(AdminError::ShuttingDown);
            };
            self.shared.catalog.replace(next);
            sender
                .send(WalMsg::Drop { target, reply: tx })
                .map_err(|_| AdminError::ShuttingDown)?;
        }
        Ok(async move {
            match rx.await {
                Ok(Ok(segment)) => Ok(segment),
                Ok(Err(reason)) => Err(AdminError::WalFailed(reason)),
                Err(_) => Err(AdminError::ShuttingDown),
            }
        })
    }

    /// Replaces the catalog with what `change` makes of the current one (nothing changes if
    /// it fails), under the write lock, so that no write's catalog change comes between;
    /// then records it on the object store. If that fails, the change is taken back (what
    /// writes added meanwhile stays), so the caller's error means it did not happen and a
    /// retry starts afresh. The caller holds the lake lock.
    pub(crate) async fn change_catalog<T>(
        &self,
        change: impl FnOnce(&CatalogSnapshot) -> Result<(CatalogSnapshot, T), AdminError>,
    ) -> Result<T, AdminError> {
        let (before, ours, out) = {
            let _write = self.write_lock.lock();
            let before = self.shared.catalog.snapshot();
            let (next, out) = change(&before)?;
            self.shared.catalog.replace(next);
            (before, self.shared.catalog.snapshot(), out)
        };
        if let Err(e) = self.record_catalog(|_| {}).await {
            let _write = self.write_lock.lock();
            let current = self.shared.catalog.snapshot();
            self.shared
                .catalog
                .replace(take_back(&before, &ours, &current));
            return Err(e);
        }
        Ok(out)
    }

    /// Writes the current catalog, with the lake state `change` makes, to the object store
    /// and publishes that state. The caller holds the lake lock.
    async fn record_catalog(&self, change: impl FnOnce(&mut LakeState)) -> Result<(), AdminError> {
        let mut lake = (*self.lake()).clone();
        change(&mut lake);
        self.write_catalog(&self.catalog(), &mut lake).await?;
        self.publish_lake(lake);
        Ok(())
    }

    /// When files dropped now may be deleted from the object store.
    pub(crate) fn grace_end(&self) -> i64 {
        self.now().saturating_add(
            i64::try_from(self.config.replaced_file_grace.as_nanos()).unwrap_or(i64::MAX),
        )
    }
}

/// `current` without the administrative change that turned `before` into `ours`: the tokens
/// and each database's existence and retention as they were. Only administrative changes,
/// one at a time under the lake lock, touch those; writes meanwhile only add databases,
/// tables and columns, and those stay (a database created here stays too once a write has
/// put a table in it).
fn take_back(
    before: &CatalogSnapshot,
    ours: &CatalogSnapshot,
    current: &CatalogSnapshot,
) -> CatalogSnapshot {
    let mut out = current.clone();
    out.tokens = before.tokens.clone();
    for (name, db) in &ours.databases {
        let Some(now) = out.databases.get(name) else {
            continue;
        };
        match before.database(name) {
            None if now.tables.is_empty() => {
                out.databases.remove(name);
            }
            Some(was) if was.retention != db.retention => {
                let mut reverted = (**now).clone();
                reverted.retention = was.retention.clone();
                out.databases.insert(name.clone(), Arc::new(reverted));
            }
            _ => {}
        }
    }
    out
}

/// Lists `files` for deletion from the object store after `delete_after`.
fn pending(lake: &mut LakeState, files: &[ParquetFile], delete_after: i64) {
    lake.pending_deletes
        .extend(files.iter().map(|f| PendingDelete {
            path: f.path.clone(),
            delete_after,
        }));
}

#[cfg(test)]
mod tests;
