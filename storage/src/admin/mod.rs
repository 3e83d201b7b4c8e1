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

mod tokens;

use std::future::Future;
use std::sync::Arc;

use crate::buffer::{Buffer, DropTarget};
use crate::catalog::{
    Catalog, CatalogSnapshot, DatabaseSchema, NameError, Retention, TokenError,
    validate_database_name,
};
use crate::lake::files::{Dropped, LakeState};
use crate::lake::live::Lake;
use crate::lake::store;
use crate::time::Clock;
use crate::wal::{Wal, WalError};

/// Why an administrative change was not made.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("database '{0}' does not exist")]
    DatabaseNotFound(String),
    #[error("table '{table}' does not exist in database '{db}'")]
    TableNotFound { db: String, table: String },
    #[error("database '{0}' already exists")]
    DatabaseExists(String),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(
        "the change could not be recorded in the catalog on the object store: {0}; nothing \
         changed, retry"
    )]
    Store(#[from] store::Error),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Makes administrative changes: databases, tables and tokens.
pub struct Admin {
    catalog: Arc<Catalog>,
    buffer: Arc<Buffer>,
    lake: Arc<Lake>,
    wal: Arc<Wal>,
    clock: Clock,
}

impl Admin {
    /// An administrator over these parts.
    pub fn new(
        catalog: Arc<Catalog>,
        buffer: Arc<Buffer>,
        lake: Arc<Lake>,
        wal: Arc<Wal>,
        clock: Clock,
    ) -> Self {
        Admin {
            catalog,
            buffer,
            lake,
            wal,
            clock,
        }
    }

    /// Creates the empty database `name` keeping rows for `retention` (`None`: forever).
    pub async fn create_database(
        &self,
        name: &str,
        retention: Option<Retention>,
    ) -> Result<(), AdminError> {
        validate_database_name(name)?;
        let _lake_guard = self.lake.lock().await;
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
        let _lake_guard = self.lake.lock().await;
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
        let _lake_guard = self.lake.lock().await;
        let through = {
            let current = self.catalog.snapshot();
            if current.database(name).is_none() {
                return Err(AdminError::DatabaseNotFound(name.into()));
            }
            let mut next = (*current).clone();
            next.databases.remove(name);
            self.drop_in_wal(next, DropTarget::Database(name.into()))?
        };
        let through_segment = through.await?;
        let delete_after = self.lake.delete_after(self.clock.now());
        self.record_catalog(|lake| {
            let gone: Vec<_> = lake
                .files
                .keys()
                .filter(|(d, _)| &**d == name)
                .cloned()
                .collect();
            for key in gone {
                if let Some(files) = lake.files.remove(&key) {
                    lake.delete_later(&files, delete_after);
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
        let _lake_guard = self.lake.lock().await;
        let through = {
            let current = self.catalog.snapshot();
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
        let delete_after = self.lake.delete_after(self.clock.now());
        self.record_catalog(|lake| {
            if let Some(files) = lake.files.remove(&(db.into(), table.into())) {
                lake.delete_later(&files, delete_after);
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

    /// Makes `next` (the catalog without what is deleted) current and has the WAL close the
    /// segment and the apply thread drop the buffered rows; the future answers with the
    /// segment closed, through which every write to what is deleted is logged. Under the
    /// write lock, so that no write slips between the two.
    fn drop_in_wal(
        &self,
        next: CatalogSnapshot,
        target: DropTarget,
    ) -> Result<impl Future<Output = Result<u64, AdminError>> + use<>, AdminError> {
        let lock = self.wal.lock();
        let buffer = self.buffer.clone();
        let through = lock.barrier(move |barrier| {
            buffer.drop_target(&target);
            barrier.through_segment
        })?;
        self.catalog.replace(next);
        Ok(async move {
            match through.await {
                Ok(Ok(segment)) => Ok(segment),
                Ok(Err(e)) => Err(AdminError::Wal(e)),
                Err(_) => Err(AdminError::Wal(WalError::ShuttingDown)),
            }
        })
    }

    /// Replaces the catalog with what `change` makes of the current one (nothing changes if
    /// it fails), under the write lock, so that no write's catalog change comes between;
    /// then records it on the object store. If that fails, the change is taken back (what
    /// writes added meanwhile stays), so the caller's error means it did not happen and a
    /// retry starts afresh. The caller holds the lake lock.
    async fn change_catalog<T>(
        &self,
        change: impl FnOnce(&CatalogSnapshot) -> Result<(CatalogSnapshot, T), AdminError>,
    ) -> Result<T, AdminError> {
        let (before, ours, out) = {
            let _write = self.wal.lock();
            let before = self.catalog.snapshot();
            let (next, out) = change(&before)?;
            self.catalog.replace(next);
            (before, self.catalog.snapshot(), out)
        };
        if let Err(e) = self.record_catalog(|_| {}).await {
            let _write = self.wal.lock();
            let current = self.catalog.snapshot();
            self.catalog.replace(take_back(&before, &ours, &current));
            return Err(e);
        }
        Ok(out)
    }

    /// Writes the current catalog, with the lake state `change` makes, to the object store
    /// and publishes that state. The caller holds the lake lock.
    async fn record_catalog(&self, change: impl FnOnce(&mut LakeState)) -> Result<(), AdminError> {
        let mut lake = (*self.lake.state()).clone();
        change(&mut lake);
        self.lake.record(&self.catalog.snapshot(), lake).await?;
        Ok(())
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

#[cfg(test)]
mod tests;
