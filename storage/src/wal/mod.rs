//! The write-ahead log: every acknowledged write, durable before it is acknowledged, until
//! the Parquet files holding its rows are in the catalog.
//!
//! Three layers, each knowing less than the one above it:
//!
//! - [`writer`]: the WAL thread (group commit: many writes, one fsync) and the apply thread
//!   (each logged write applied in log order), and barriers that close a segment between
//!   two groups for freezes and deletes. Knows order, not what applying means.
//! - [`record`]: what a logged write looks like as bytes (header, format versions, Snappy,
//!   the batch's varint encoding). Knows writes, not files.
//! - [`segment`]: files of checksummed records, appended, synced, rotated, cut back after a
//!   crash and deleted once persisted. Knows bytes and files, not what they mean.

pub mod record;
pub mod segment;
pub mod writer;

pub use record::{RecordError, decode_record, encode_record};
pub use segment::{CutTail, WalWriter, bytes_on_disk, delete_before, list_segments, replay};
pub use writer::{Apply, Barrier, LoggedWrite, StartError, Wal, WalError, WalLock};
