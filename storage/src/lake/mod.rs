//! The lake: Parquet files on the object store, the catalog document that lists them, and
//! what moves rows into them and keeps them tidy.
//!
//! - [`store`]: the object store, with retries and durable puts.
//! - [`files`]: the live files of each table and the WAL bookkeeping, as the catalog records
//!   them; [`catalog_file`]: that record's JSON form.
//! - [`live`]: the [`Lake`](live::Lake) this process holds: the file list queries see and
//!   the lock and order every change of it follows.
//! - [`parquet`]: how a file is encoded and read; [`deduplicate`]: the primary-key merge and
//!   sort order files and queries share.
//! - [`persister`], [`compactor`], [`retention`]: buffered rows into files; small files into
//!   large ones; expired files out.
//! - [`background`]: the low-priority threads their CPU work runs on.

pub mod background;
pub mod catalog_file;
pub mod compactor;
pub mod deduplicate;
pub mod files;
pub mod live;
pub mod parquet;
pub mod persister;
pub mod retention;
pub mod store;
