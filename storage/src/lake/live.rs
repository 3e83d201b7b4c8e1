//! The lake as this process holds it: the object store, the file list queries see, the lock
//! that whoever changes the files holds, and the ids new files get.
//!
//! Changing the files follows one order, whoever does it (persister, compactor, retention,
//! admin): hold [`Lake::lock`]; write the new files, durably; write the catalog document
//! listing them ([`Lake::write_catalog`]), durably; only then let queries see the new list
//! ([`Lake::publish`]). A query never sees a file that a crash could still take out of the
//! catalog, and a crash never leaves the catalog listing a file that does not exist.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use object_store::path::Path;
use parking_lot::RwLock;

use super::background::run_in_background;
use super::catalog_file::{self, CatalogFileError};
use super::files::{DBS_PREFIX, LakeState, ParquetFile, file_path};
use super::parquet::{EncodeOptions, encode_parquet, time_range};
use super::store::{self, ObjectStorage};
use crate::catalog::{CatalogSnapshot, TableSchema};

/// Why a Parquet file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FileWriteError {
    #[error("{0}")]
    Encode(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Why the lake could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the catalog from the object store: {0}")]
    Store(#[from] store::Error),
    #[error(transparent)]
    CatalogFile(#[from] CatalogFileError),
}

/// The live files of every table on the object store.
pub struct Lake {
    storage: ObjectStorage,
    /// Live files and WAL bookkeeping, as last written to the catalog on the object store.
    state: RwLock<Arc<LakeState>>,
    /// Held by whoever changes the files, one at a time.
    lock: tokio::sync::Mutex<()>,
    /// The id the next Parquet file gets (persist and compaction both take from it).
    next_file_id: AtomicU64,
    /// How long a file no longer listed stays in the object store: longer than any query may
    /// run, so that no query reading it loses it.
    replaced_file_grace: Duration,
    /// How files are encoded.
    encode: EncodeOptions,
}

impl Lake {
    /// Reads the catalog document from `storage`: the catalog it records and the lake over
    /// its files (an empty one on a store without a catalog), writing files with `encode`.
    pub async fn load(
        storage: ObjectStorage,
        replaced_file_grace: Duration,
        encode: EncodeOptions,
    ) -> Result<(Lake, CatalogSnapshot), LoadError> {
        let (catalog, state) = match storage.get(&catalog_file::catalog_path()).await? {
            Some(bytes) => catalog_file::decode(&bytes)?,
            None => (CatalogSnapshot::default(), LakeState::default()),
        };
        let lake = Lake {
            storage,
            next_file_id: AtomicU64::new(state.next_file_id),
            state: RwLock::new(Arc::new(state)),
            lock: tokio::sync::Mutex::new(()),
            replaced_file_grace,
            encode,
        };
        Ok((lake, catalog))
    }

    /// The live Parquet files and WAL bookkeeping. Read it after scanning the buffer: the
    /// persister adds a file before it drops the frozen rows the file holds, so that order
    /// never misses a row (at worst it sees one twice, which deduplication merges).
    pub fn state(&self) -> Arc<LakeState> {
        self.state.read().clone()
    }

    /// Waits for the right to change the files; see the module documentation.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// The object store holding the files.
    pub fn storage(&self) -> &ObjectStorage {
        &self.storage
    }

    /// Writes the catalog document recording `catalog` and `lake` (with the file id counter
    /// as it is now) to the object store, durably. The caller holds the lock, and publishes
    /// `lake` with [`Lake::publish`] only after this returned.
    pub async fn write_catalog(
        &self,
        catalog: &CatalogSnapshot,
        lake: &mut LakeState,
    ) -> Result<(), store::Error> {
        lake.next_file_id = self.next_file_id.load(Ordering::SeqCst);
        let doc = catalog_file::encode(catalog, lake);
        self.storage
            .put(&catalog_file::catalog_path(), bytes::Bytes::from(doc))
            .await
    }

    /// Makes `lake` (written by [`Lake::write_catalog`]) what queries see.
    pub fn publish(&self, lake: LakeState) {
        *self.state.write() = Arc::new(lake);
    }

    /// [`Lake::write_catalog`], then [`Lake::publish`].
    pub async fn record(
        &self,
        catalog: &CatalogSnapshot,
        mut lake: LakeState,
    ) -> Result<(), store::Error> {
        self.write_catalog(catalog, &mut lake).await?;
        self.publish(lake);
        Ok(())
    }

    /// When a file no longer listed from `now` on may be deleted from the object store.
    pub fn delete_after(&self, now: i64) -> i64 {
        now.saturating_add(i64::try_from(self.replaced_file_grace.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Encodes `batch` (rows of `db`.`schema`, not empty) as a Parquet file (on a background
    /// thread: it is CPU work that must not slow writes), writes it durably under a new id
    /// and describes it. `order` is its precedence among the table's files; `None` gives it
    /// its own id, which is right for rows just persisted (newer than every file before
    /// them). The file is not listed anywhere yet.
    pub async fn write_file(
        &self,
        db: &Arc<str>,
        schema: &Arc<TableSchema>,
        batches: Vec<RecordBatch>,
        order: Option<u64>,
    ) -> Result<ParquetFile, FileWriteError> {
        let (min_time, max_time) = batches
            .iter()
            .filter_map(time_range)
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
            .ok_or_else(|| FileWriteError::Encode("no rows with a time to write".into()))?;
        let (db2, schema2, encode) = (db.clone(), schema.clone(), self.encode);
        let (bytes, rows, sort_key) = run_in_background("encoder", move || {
            encode_parquet(&db2, &schema2, batches, encode)
        })
        .await
        .and_then(|r| r)
        .map_err(FileWriteError::Encode)?;
        let id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
        let path = file_path(db, &schema.name, min_time, id);
        let size_bytes = bytes.len() as u64;
        self.storage.put(&Path::from(path.as_str()), bytes).await?;
        Ok(ParquetFile {
            id,
            order: order.unwrap_or(id),
            path,
            min_time,
            max_time,
            rows,
            size_bytes,
            sort_key,
        })
    }

    /// Deletes the Parquet files under `dbs/` that the catalog neither lists nor holds for a
    /// delayed delete: a persist or compaction that died after writing them and before the
    /// catalog change that would have listed them leaves them behind. Only for start-up,
    /// before anything of this process can write a file, so that every file it does not know
    /// is such a leftover.
    pub async fn delete_orphan_files(&self) -> Result<usize, store::Error> {
        let lake = self.state();
        // compared as the store names them: a catalog written before table names became
        // path segments holds raw names, which `Path` escapes when it reads or writes them
        let known: HashSet<Path> = lake
            .all_files()
            .map(|(_, f)| f.path.as_str())
            .chain(lake.pending_deletes.iter().map(|p| p.path.as_str()))
            .map(Path::from)
            .collect();
        let mut deleted = 0;
        for path in self.storage.list(&Path::from(DBS_PREFIX)).await? {
            if path.extension() != Some("parquet") || known.contains(&path) {
                continue;
            }
            tracing::info!(path = %path, "deleting a Parquet file the catalog does not list");
            self.storage.delete(&path).await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("store", &self.storage.description())
            .field("files", &self.state().all_files().count())
            .finish()
    }
}
