//! Compaction: the small files of a day are merged into few large ones, so that a query over
//! a long range reads a file per day, not one per persist.
//!
//! A round picks, per table and UTC day, the files worth merging: all of the day's files
//! except a leading run (by order) of files already at least half the target size. With at
//! least two such files it merges them, one time range at a time: the day is cut into as
//! many ranges as the target size asks for, and as the memory bound asks for (the rows of a
//! range, decoded, at most `compaction_memory`; judged from the files' rows, sizes and time
//! spans), and each range reads the files that reach into it a batch at a time, keeps their
//! rows of the range, merges rows per primary key (newer files win, as in queries) and
//! becomes one file. Memory holds one range's rows (about once, see
//! [`super::deduplicate::merge_by_primary_key`]), not the day's, and the new files do not
//! overlap in time. The new files take the largest order of the files they replace (see
//! [`ParquetFile::order`]).
//!
//! The heavy work runs without the lake lock, so persistence goes on meanwhile; the lock is
//! taken to swap the files in the catalog, atomically: one catalog write removes the inputs
//! and adds the outputs. The replaced files are deleted from the object store only after
//! `replaced_file_grace` (longer than a query may run), and the catalog records them until
//! then, so that a crash never leaks them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use object_store::path::Path;

use super::background::run_in_background;
use super::files::{ParquetFile, TableKey};
use super::live::{FileWriteError, Lake};
use super::parquet::parquet_batches;
use super::retention::{self, RetentionSummary};
use super::store;
use crate::buffer::Buffer;
use crate::catalog::{Catalog, ColumnKind, TIME_COLUMN, TableSchema};
use crate::metrics::StorageMetrics;
use crate::time::{Clock, date};

/// Why a compaction did not complete. Nothing changed: the old files are still listed.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot compact {table} {day}: {message}")]
    Data {
        table: String,
        day: String,
        message: String,
    },
}

/// What one compaction round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionSummary {
    /// Day partitions rewritten.
    pub days: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Replaced, expired or deleted files whose grace period ended and that were deleted.
    pub files_deleted: usize,
    /// What retention dropped first.
    pub retention: RetentionSummary,
}

/// One day of one table to compact.
struct Candidate {
    table: TableKey,
    day: i64,
    files: Vec<ParquetFile>,
}

/// The files of `day_files` (one table, one day) to merge: all but a leading run, by order, of
/// full files; `None` if that leaves fewer than two. A file is full when it is at least half
/// of `target_bytes`; so is a file that one compaction wrote with others (they share its
/// order) when together they hold at least half of `memory` bytes of decoded rows at
/// `row_bytes` a row: compaction cut them apart to keep its memory bounded, and merging them
/// again would cut them again, in every round.
fn pick(
    mut day_files: Vec<ParquetFile>,
    target_bytes: u64,
    memory: u64,
    row_bytes: u64,
) -> Option<Vec<ParquetFile>> {
    day_files.sort_by_key(|f| (f.order, f.id));
    let mut rows_of_order: HashMap<u64, u64> = HashMap::new();
    for f in &day_files {
        *rows_of_order.entry(f.order).or_default() += f.rows;
    }
    let compacted = |f: &ParquetFile| f.order != f.id;
    let skip = day_files
        .iter()
        .take_while(|f| {
            f.size_bytes >= target_bytes / 2
                || (compacted(f) && rows_of_order[&f.order].saturating_mul(row_bytes) >= memory / 2)
        })
        .count();
    let rest = day_files.split_off(skip);
    (rest.len() >= 2).then_some(rest)
}

/// Merges small files, and runs retention and delayed deletes on the same schedule.
pub struct Compactor {
    catalog: Arc<Catalog>,
    buffer: Arc<Buffer>,
    lake: Arc<Lake>,
    metrics: Arc<StorageMetrics>,
    clock: Clock,
    /// Most bytes of decoded rows one range merges.
    memory: u64,
}

impl Compactor {
    /// A compactor over these parts, merging at most `memory` bytes of decoded rows at a time.
    pub fn new(
        catalog: Arc<Catalog>,
        buffer: Arc<Buffer>,
        lake: Arc<Lake>,
        metrics: Arc<StorageMetrics>,
        clock: Clock,
        memory: u64,
    ) -> Self {
        Compactor {
            catalog,
            buffer,
            lake,
            metrics,
            clock,
            memory,
        }
    }

    /// Runs one compaction round: deletes replaced files whose grace period ended, drops
    /// what the databases' retention periods no longer keep, then merges the small files of
    /// every day that has at least two.
    pub async fn compact(&self, target_bytes: u64) -> Result<CompactionSummary, CompactionError> {
        let now = self.clock.now();
        let mut summary = CompactionSummary {
            files_deleted: retention::delete_due_files(&self.catalog, &self.lake, now).await?,
            retention: retention::enforce(&self.catalog, &self.buffer, &self.lake, now).await?,
            ..CompactionSummary::default()
        };
        let candidates: Vec<Candidate> = {
            let lake = self.lake.state();
            let catalog = self.catalog.snapshot();
            let mut days: BTreeMap<(TableKey, i64), Vec<ParquetFile>> = BTreeMap::new();
            for (table, f) in lake.all_files() {
                days.entry((table.clone(), f.day()))
                    .or_default()
                    .push(f.clone());
            }
            days.into_iter()
                .filter_map(|((table, day), files)| {
                    let row_bytes = catalog
                        .table(&table.0, &table.1)
                        .map_or(u64::MAX, |schema| row_bytes(schema));
                    pick(files, target_bytes, self.memory, row_bytes).map(|files| Candidate {
                        table,
                        day,
                        files,
                    })
                })
                .collect()
        };
        for c in candidates {
            let (bytes_in, files_in) = (
                c.files.iter().map(|f| f.size_bytes).sum::<u64>(),
                c.files.len(),
            );
            let outputs = self.compact_day(&c, target_bytes).await?;
            super::background::return_free_memory();
            if let Some(outputs) = outputs {
                summary.days += 1;
                summary.files_in += files_in;
                summary.bytes_in += bytes_in;
                summary.files_out += outputs.len();
                summary.bytes_out += outputs.iter().map(|f| f.size_bytes).sum::<u64>();
            }
        }
        if summary.days > 0 {
            tracing::info!(
                days = summary.days,
                files_in = summary.files_in,
                files_out = summary.files_out,
                bytes_in = summary.bytes_in,
                bytes_out = summary.bytes_out,
                "compacted"
            );
        }
        Ok(summary)
    }

    /// Merges one day's files and swaps the result in. Returns the new files, or `None` if
    /// the inputs changed meanwhile (the outputs are then deleted, nothing else changes).
    async fn compact_day(
        &self,
        c: &Candidate,
        target_bytes: u64,
    ) -> Result<Option<Vec<ParquetFile>>, CompactionError> {
        let (db, table) = &c.table;
        let Some(schema) = self.catalog.snapshot().table(db, table).cloned() else {
            return Ok(None);
        };
        let data_err = |message: String| CompactionError::Data {
            table: format!("{db}.{table}"),
            day: date(c.day),
            message,
        };
        // The day is merged a time range at a time, each range one output file, so that
        // memory holds one range's rows, not the day's: a range reads only the files whose
        // times reach into it, and keeps only its own rows of them. Rows of one primary key
        // share their time, so no key spans two ranges.
        let order = c.files.iter().map(|f| f.order).max().unwrap_or(0);
        let by_size = bytes_in_of(&c.files).div_ceil(target_bytes.max(1));
        let decoded = c.files.iter().map(|f| f.rows).sum::<u64>() * row_bytes(&schema);
        let by_memory = decoded.div_ceil(self.memory.max(1));
        let n = by_size.max(by_memory).max(1) as usize;
        let cuts = cut_times(&c.files, n);
        let bounds: Vec<(i64, i64)> = std::iter::once(i64::MIN)
            .chain(cuts.iter().copied())
            .zip(cuts.iter().copied().chain(std::iter::once(i64::MAX)))
            .collect();
        let mut outputs = Vec::with_capacity(bounds.len());
        for (lower, upper) in bounds {
            // oldest first, as the merge wants them (`pick` sorted them)
            let mut inputs = Vec::new();
            for f in c
                .files
                .iter()
                .filter(|f| f.max_time >= lower && f.min_time < upper)
            {
                let bytes = self
                    .lake
                    .storage()
                    .get(&Path::from(f.path.as_str()))
                    .await?
                    .ok_or_else(|| data_err(format!("listed file {} is missing", f.path)))?;
                inputs.push(bytes);
            }
            let schema_for_read = schema.clone();
            let rows = run_in_background("compactor", move || {
                // a batch at a time: only the range's rows of a file are held
                let mut batches = Vec::new();
                for bytes in inputs {
                    for batch in parquet_batches(bytes, &schema_for_read)? {
                        let batch = within(&batch?, lower, upper)?;
                        if batch.num_rows() > 0 {
                            batches.push(batch);
                        }
                    }
                }
                Ok::<_, String>(batches)
            })
            .await
            .and_then(|r| r)
            .map_err(data_err)?;
            if rows.is_empty() {
                continue;
            }
            // the merge per primary key happens as the file is encoded
            let file = self
                .lake
                .write_file(db, &schema, rows, Some(order))
                .await
                .map_err(|e| match e {
                    FileWriteError::Encode(message) => data_err(message),
                    FileWriteError::Store(e) => CompactionError::Store(e),
                })?;
            outputs.push(file);
        }
        // Swap, under the lake lock, against the catalog as it is now.
        let _lake_guard = self.lake.lock().await;
        let mut lake = (*self.lake.state()).clone();
        let current = lake.table_files(db, table);
        let inputs_live = c.files.iter().all(|f| current.iter().any(|g| g.id == f.id));
        if !inputs_live {
            drop(_lake_guard);
            for f in &outputs {
                self.lake
                    .storage()
                    .delete(&Path::from(f.path.as_str()))
                    .await?;
            }
            return Ok(None);
        }
        let mut files: Vec<ParquetFile> = current
            .iter()
            .filter(|g| !c.files.iter().any(|f| f.id == g.id))
            .cloned()
            .chain(outputs.iter().cloned())
            .collect();
        files.sort_by_key(|f| f.id);
        lake.files.insert(c.table.clone(), files.into());
        lake.delete_later(&c.files, self.lake.delete_after(self.clock.now()));
        self.lake.record(&self.catalog.snapshot(), lake).await?;
        self.metrics.compacted_files.add(c.files.len() as u64);
        Ok(Some(outputs))
    }

    /// Runs compaction every `interval` until `stop` resolves. Failures are logged and the
    /// next round tries again.
    pub async fn run(
        &self,
        interval: Duration,
        target_bytes: u64,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.compact(target_bytes).await {
                self.metrics.compaction_errors.add(1);
                tracing::error!("compaction failed; the files stay as they were: {e}");
            }
        }
    }
}

fn bytes_in_of(files: &[ParquetFile]) -> u64 {
    files.iter().map(|f| f.size_bytes).sum()
}

/// About the bytes a row of `schema` takes decoded: 8 a value (time and fields; strings
/// counted so too), 4 a tag (a dictionary key), and a byte of validity per column.
fn row_bytes(schema: &TableSchema) -> u64 {
    schema
        .columns()
        .iter()
        .map(|c| match c.kind {
            ColumnKind::Tag => 5,
            _ => 9,
        })
        .sum()
}

/// Where to cut a day of `files` into `n` time ranges of about the same bytes: each file's
/// bytes are taken as spread evenly over its times, from its first to its last. The ranges
/// are `[cut k-1, cut k)`, the first from the start of time and the last to its end; a cut
/// falls just after a time, so files that follow one another (a persist's hour, then the
/// next) are cut between them. Fewer than `n - 1` cuts where the files are too few to tell
/// apart.
fn cut_times(files: &[ParquetFile], n: usize) -> Vec<i64> {
    const POINTS_PER_FILE: i64 = 16;
    if n <= 1 {
        return Vec::new();
    }
    // each point weighs its file's bytes (a point is a share of 1 / POINTS_PER_FILE)
    let mut points: Vec<(i64, u128)> = Vec::new();
    for f in files {
        let span = f.max_time.saturating_sub(f.min_time);
        for k in 0..POINTS_PER_FILE {
            let offset = (span as i128 * k as i128 / (POINTS_PER_FILE - 1) as i128) as i64;
            points.push((f.min_time.saturating_add(offset), u128::from(f.size_bytes)));
        }
    }
    points.sort_by_key(|p| p.0);
    let total: u128 = points.iter().map(|p| p.1).sum();
    let n128 = n as u128;
    let mut cuts = Vec::with_capacity(n - 1);
    let (mut seen, mut next) = (0u128, 1u128);
    for (t, w) in points {
        seen += w;
        while next < n128 && seen * n128 >= total * next {
            cuts.push(t.saturating_add(1));
            next += 1;
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.retain(|&c| c < i64::MAX);
    cuts
}

/// The rows of `batch` with times in `[lower, upper)`.
fn within(batch: &RecordBatch, lower: i64, upper: i64) -> Result<RecordBatch, String> {
    let time = time_column(batch)?;
    // the last range ends with time itself
    let inside = |t: i64| t >= lower && (t < upper || upper == i64::MAX);
    if time.values().iter().all(|&t| inside(t)) {
        return Ok(batch.clone());
    }
    let mask: arrow::array::BooleanArray = time.values().iter().map(|&t| Some(inside(t))).collect();
    filter_record_batch(batch, &mask).map_err(|e| e.to_string())
}

fn time_column(batch: &RecordBatch) -> Result<&TimestampNanosecondArray, String> {
    batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| "no nanosecond time column".to_string())
}

#[cfg(test)]
mod tests;
