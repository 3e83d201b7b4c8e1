//! Helpers the storage crate's tests share.

use sluice_ingest::line_protocol::{ParseOptions, Precision, parse};
use sluice_model::WriteBatch;

/// `lp` (nanosecond timestamps, every line valid) as a write batch.
pub(crate) fn batch(lp: &str) -> WriteBatch {
    let out = parse(
        lp.as_bytes(),
        &ParseOptions {
            precision: Precision::Nanosecond,
            default_time: 0,
            max_line_bytes: 1 << 20,
        },
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.batch
}
