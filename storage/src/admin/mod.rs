//! Database administration: creating databases, changing their retention, deleting databases
//! and tables, and enforcing retention.
//!
//! Every change is recorded in the catalog on the object store before it is acknowledged,
//! and is all or nothing. A delete also closes the WAL segment (between two group commits,
//! as a freeze does) and records the database or table as dropped through that segment, so
//! that replaying the WAL after a crash does not bring back the writes before the delete;
//! writes to what is being deleted are refused until it is recorded (see `Admin::delete`).
//! The deleted files are removed from the object store after the grace period replaced files
//! get, so that a query that started before the delete can finish; until then the catalog
//! lists them as pending deletes.

mod tokens;

use std::sync::Arc;

use crate::buffer::{Buffer, DropTarget};
use crate::catalog::{
    Catalog, CatalogSnapshot, DatabaseSchema, Deleting, NameError, Retention, TokenError,
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
        if self.catalog.snapshot().database(name).is_none() {
            return Err(AdminError::DatabaseNotFound(name.into()));
        }
        let target = Deleting {
            db: name.into(),
            table: None,
        };
        self.delete(
            target,
            |catalog| {
                catalog.databases.remove(name);
            },
            |lake, delete_after| {
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
            },
        )
        .await
    }

    /// Deletes table `table` of database `db`: its rows disappear at once, its files after
    /// the grace period. A later write may create it again, with a new schema.
    pub async fn delete_table(&self, db: &str, table: &str) -> Result<(), AdminError> {
        let _lake_guard = self.lake.lock().await;
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
        let target = Deleting {
            db: db.into(),
            table: Some(table.into()),
        };
        self.delete(
            target,
            |catalog| {
                if let Some(d) = catalog.databases.get_mut(db) {
                    Arc::make_mut(d).tables.remove(table);
                }
            },
            |lake, delete_after| {
                if let Some(files) = lake.files.remove(&(db.into(), table.into())) {
                    lake.delete_later(&files, delete_after);
                }
                lake.persisted_through
                    .retain(|(d, t, _), _| !(&**d == db && &**t == table));
            },
        )
        .await
    }

    /// Deletes `target`, all or nothing. The caller holds the lake lock.
    ///
    /// 1. Under the write lock, writes to the target start being refused (503, retry) and
    ///    the WAL closes its segment: every write to the target is logged through it.
    /// 2. The catalog without the target (`remove`), its files listed for deletion
    ///    (`forget_files`) and the target recorded as dropped through that segment (replay
    ///    skips those writes) is written to the object store.
    /// 3. Only then, under the write lock, the live catalog and the buffer let go of it and
    ///    writes to its name are taken again (they create it anew).
    ///
    /// If 2 fails, nothing changed: the rows are still there, and a retry starts afresh. A
    /// crash after 2 leaves the target deleted, and a crash before it leaves it whole.
    async fn delete(
        &self,
        target: Deleting,
        remove: impl Fn(&mut CatalogSnapshot),
        forget_files: impl FnOnce(&mut LakeState, i64),
    ) -> Result<(), AdminError> {
        let through = {
            let lock = self.wal.lock();
            let through = lock.barrier(|barrier| barrier.through_segment)?;
            self.catalog.set_deleting(Some(target.clone()));
            through
        };
        // whatever happens from here, writes to the target are taken again at the end
        let _refusing = RefusingWrites(&self.catalog);
        let through_segment = match through.await {
            Ok(Ok(segment)) => segment,
            Ok(Err(e)) => return Err(AdminError::Wal(e)),
            Err(_) => return Err(AdminError::Wal(WalError::ShuttingDown)),
        };
        let mut next = (*self.catalog.snapshot()).clone();
        remove(&mut next);
        let mut lake = (*self.lake.state()).clone();
        forget_files(&mut lake, self.lake.delete_after(self.clock.now()));
        lake.dropped.push(Dropped {
            db: target.db.to_string(),
            table: target.table.as_deref().map(str::to_string),
            through_segment,
        });
        self.lake.write_catalog(&next, &mut lake).await?;
        {
            let _write = self.wal.lock();
            // writes to other tables may have changed the catalog since `next` was taken
            let mut current = (*self.catalog.snapshot()).clone();
            remove(&mut current);
            self.catalog.replace(current);
            self.buffer.drop_target(&match &target.table {
                None => DropTarget::Database(target.db.clone()),
                Some(t) => DropTarget::Table(target.db.clone(), t.clone()),
            });
            self.catalog.set_deleting(None);
        }
        self.lake.publish(lake);
        Ok(())
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

/// Takes writes to a deleted target again when dropped (on every way out of a delete).
struct RefusingWrites<'a>(&'a Catalog);

impl Drop for RefusingWrites<'_> {
    fn drop(&mut self) {
        self.0.set_deleting(None);
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
