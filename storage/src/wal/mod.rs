//! The write-ahead log: every acknowledged write, durable before it is acknowledged, until
//! the Parquet files holding its rows are in the catalog.
//!
//! Three layers, each knowing less than the one above it:
//!
//! - [`record`]: what a logged write looks like as bytes (header, format versions, Snappy,
//!   the batch's varint encoding). Knows writes, not files.
//! - [`segment`]: files of checksummed records, appended, synced, rotated, cut back after a
//!   crash and deleted once persisted. Knows bytes and files, not what they mean.

pub mod record;
pub mod segment;

pub use record::{RecordError, decode_record, encode_record};
pub use segment::{CutTail, Error, WalWriter, delete_before, list_segments, replay};
