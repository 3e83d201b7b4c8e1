//! Sluice's data model and everything durable: the catalog, schema rules, the write-ahead
//! log and the in-memory Arrow write buffer.
//!
//! The entry point is [`WriteBuffer`]: it takes protocol-neutral
//! [`WriteBatch`](sluice_model::WriteBatch)es, validates them against the [`catalog`], makes
//! them durable in the [`wal`] and appends them to per-table [`TableBuffer`]s that the query
//! crate scans.

pub mod admin;
mod background;
pub mod catalog;
pub mod catalog_file;
pub mod compactor;
pub mod deduplicate;
mod last_rows;
pub mod metrics;
pub mod persisted_files;
pub mod persister;
pub mod store;
pub mod table_buffer;
#[cfg(test)]
mod test_util;
pub mod tokens;
pub mod validator;
pub mod wal;
pub mod write_buffer;

pub use admin::{AdminError, RetentionSummary};
pub use catalog::{Catalog, CatalogSnapshot, ColumnKind, DatabaseSchema, Retention, TableSchema};
pub use compactor::{CompactionError, CompactionSummary};
pub use persisted_files::{LakeState, ParquetFile};
pub use persister::{PersistError, PersistSummary};
pub use store::{ObjectStorage, ObjectStoreConfig, ObjectStoreKind};
pub use table_buffer::{BufferChunk, BufferScan, TableBuffer, TimeRange};
pub use tokens::{TokenRecord, TokenSpec};
pub use validator::{Limits, Rejection};
pub use write_buffer::{
    Clock, FreezeRule, OpenError, ReplaySummary, WriteBuffer, WriteBufferConfig, WriteError,
    WriteOptions, WriteOutcome,
};
