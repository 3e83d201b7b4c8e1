//! Start-up: the writes the WAL holds that the lake's files do not, back into the buffer.
//!
//! Replay is the write path again without the checks a write already passed: each record is
//! validated against the catalog as it stands (with no limits), which rebuilds the tables and
//! columns the writes created in the order they were created, and is applied to the buffer.
//! What the catalog on the object store says is done is skipped: rows of a partition
//! persisted through a record's segment (`persisted_through`), and writes to a database or
//! table deleted after them (`dropped`).

use super::config::{ReplaySummary, WriteBufferConfig};
use crate::buffer::Buffer;
use crate::catalog::{Catalog, Limits, validate};
use crate::lake::files::LakeState;
use crate::time::PARTITION_NANOS;
use crate::wal::{self, decode_record};

/// Replays the WAL in `config.wal_dir` into `buffer`, adding what the writes created to
/// `catalog` and skipping the rows the files `lake` lists hold already, and the writes to
/// databases and tables deleted after them.
pub(crate) fn replay(
    catalog: &Catalog,
    buffer: &Buffer,
    lake: &LakeState,
    config: &WriteBufferConfig,
    summary: &mut ReplaySummary,
) -> Result<(), wal::segment::Error> {
    summary.cut_tails = wal::replay(&config.wal_dir, |segment, payload| {
        summary.records += 1;
        let (db, mut batch) = match decode_record(payload) {
            Ok(write) => write,
            Err(e) => {
                tracing::error!(segment, "WAL record skipped: {e}");
                summary.undecodable += 1;
                return;
            }
        };
        // writes to a database or table deleted after them
        if lake.is_dropped(&db, None, segment) {
            return;
        }
        if lake.dropped.iter().any(|d| d.table.is_some()) {
            let gone: Vec<bool> = batch
                .points()
                .iter()
                .map(|p| lake.is_dropped(&db, Some(batch.str(p.table)), segment))
                .collect();
            batch.retain_points(|i| !gone[i]);
        }
        if !lake.persisted_through.is_empty() {
            let covered: Vec<bool> = batch
                .points()
                .iter()
                .map(|p| {
                    lake.is_persisted(
                        &db,
                        batch.str(p.table),
                        p.time.div_euclid(PARTITION_NANOS),
                        segment,
                    )
                })
                .collect();
            let skipped = covered.iter().filter(|c| **c).count();
            if skipped > 0 {
                summary.points_persisted += skipped;
                batch.retain_points(|i| !covered[i]);
            }
        }
        if batch.is_empty() {
            return;
        }
        let snapshot = catalog.snapshot();
        if let Some(v) = validate(&snapshot, &db, &batch, &Limits::unlimited(), true) {
            if let Some(c) = v.catalog {
                catalog.replace(config.with_default_retention(c, &snapshot, &db));
            }
            for r in &v.rejected {
                tracing::warn!(db = %db, line = r.line, "WAL replay skipped a point: {}", r.message);
            }
            if !v.rejected.is_empty() {
                batch.retain_points(|i| v.keep[i]);
            }
        }
        summary.points += batch.len();
        buffer.apply(&catalog.snapshot(), &db, &batch, segment);
    })?;
    Ok(())
}
