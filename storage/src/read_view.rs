//! What queries read: the catalog, the buffered rows and the live files, and the clock that
//! says which rows a retention period still keeps. Not the write path, not administration.
//!
//! Cheap to clone (a few `Arc`s), so each query, table provider and cache holds its own. A
//! query should read the buffer before the lake: the persister lists a file before it drops
//! the frozen rows the file holds, so that order never misses a row (at worst it sees one
//! twice, which deduplication merges).

use std::sync::Arc;

use crate::buffer::{Buffer, TableBuffer};
use crate::catalog::{Catalog, CatalogSnapshot};
use crate::lake::files::LakeState;
use crate::lake::live::Lake;
use crate::lake::store::ObjectStorage;
use crate::time::Clock;

/// A read-only view of storage for queries.
#[derive(Clone)]
pub struct ReadView {
    catalog: Arc<Catalog>,
    buffer: Arc<Buffer>,
    lake: Arc<Lake>,
    clock: Clock,
}

impl ReadView {
    /// A view of these parts.
    pub fn new(catalog: Arc<Catalog>, buffer: Arc<Buffer>, lake: Arc<Lake>, clock: Clock) -> Self {
        ReadView {
            catalog,
            buffer,
            lake,
            clock,
        }
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<CatalogSnapshot> {
        self.catalog.snapshot()
    }

    /// The live Parquet files (read after the buffer; see the module documentation).
    pub fn lake(&self) -> Arc<LakeState> {
        self.lake.state()
    }

    /// The object store holding the files.
    pub fn storage(&self) -> &ObjectStorage {
        self.lake.storage()
    }

    /// The buffered rows of `db`.`table`, if any were written since start-up.
    pub fn table_buffer(&self, db: &str, table: &str) -> Option<Arc<TableBuffer>> {
        self.buffer.table_buffer(db, table)
    }

    /// The buffer of `db`.`table`, created empty if nothing was written to it since
    /// start-up: the newest-rows cache lives there (see [`TableBuffer::last_rows`]).
    pub fn table_buffer_or_create(&self, db: &str, table: &str) -> Arc<TableBuffer> {
        self.buffer.table_buffer_or_create(db, table)
    }

    /// The time now, by storage's clock (Unix nanoseconds).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The earliest time (Unix nanoseconds) database `db` keeps rows of now, if it has a
    /// retention period: queries hide older rows.
    pub fn retention_cutoff(&self, db: &str) -> Option<i64> {
        self.catalog.snapshot().retention_cutoff(db, self.now())
    }
}

impl std::fmt::Debug for ReadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView")
            .field("buffer", &self.buffer)
            .field("lake", &self.lake)
            .finish()
    }
}
