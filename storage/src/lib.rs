//! Everything durable in Sluice: the catalog, the write-ahead log, the in-memory Arrow write
//! buffer, and the Parquet lake on object storage.
//!
//! The entry point is [`WriteBuffer`], which opens the parts and wires them together: it
//! takes protocol-neutral [`WriteBatch`](sluice_model::WriteBatch)es, validates them against
//! the [`catalog`], makes them durable in the [`wal`], appends them to the [`buffer`] that
//! queries scan, and persists and compacts them in the [`lake`]. Queries read through a
//! [`ReadView`]. The folders, from the bottom up:
//!
//! - [`time`], [`columns`], [`metrics`]: leaves every part uses.
//! - [`catalog`]: what exists and the rules for changing it. No I/O.
//! - [`buffer`]: the rows in memory.
//! - [`wal`]: the log, its records and its threads.
//! - [`lake`]: files on the object store; persistence, compaction, retention.
//! - [`admin`]: databases, tables and tokens, changed durably.
//! - [`write_buffer`], [`read_view`]: the parts wired together, for writes and for reads.

pub mod admin;
pub mod buffer;
pub mod catalog;
pub mod columns;
pub mod lake;
pub mod metrics;
pub mod read_view;
#[cfg(test)]
mod test_util;
pub mod time;
pub mod wal;
pub mod write_buffer;

pub use admin::AdminError;
pub use buffer::{BufferChunk, BufferScan, FreezeRule, TableBuffer};
pub use catalog::{
    Catalog, CatalogSnapshot, ColumnKind, DatabaseSchema, Limits, Rejection, Retention,
    TableSchema, TokenError, TokenRecord, TokenSpec,
};
pub use lake::compactor::{CompactionError, CompactionSummary};
pub use lake::files::{LakeState, ParquetFile};
pub use lake::persister::{PersistError, PersistSummary};
pub use lake::retention::RetentionSummary;
pub use lake::store::{ObjectStorage, ObjectStoreConfig, ObjectStoreKind};
pub use read_view::ReadView;
pub use time::{Clock, TimeRange};
pub use wal::WalError;
pub use write_buffer::{
    OpenError, ReplaySummary, WriteBuffer, WriteBufferConfig, WriteError, WriteOptions,
    WriteOutcome,
};
