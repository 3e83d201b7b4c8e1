//! Compaction: the small files of a day are merged into few large ones, so that a query over
//! a long range reads a file per day, not one per persist.
//!
//! A round picks, per table and UTC day, the files worth merging: all of the day's files
//! except a leading run (by order) of files already at least half the target size. With at
//! least two such files it reads them, merges rows per primary key (newer files win, as in
//! queries), and writes the result as files of at most about the target size, split by time so
//! that they do not overlap each other. The new files take the largest order of the files they
//! replace (see [`ParquetFile::order`]).
//!
//! The heavy work runs without the lake lock, so persistence goes on meanwhile; the lock is
//! taken to swap the files in the catalog, atomically: one catalog write removes the inputs
//! and adds the outputs. The replaced files are deleted from the object store only after
//! `replaced_file_grace` (longer than a query may run), and the catalog records them until
//! then, so that a crash never leaks them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::admin::RetentionSummary;
use crate::background::run_in_background;
use crate::catalog::{TIME_COLUMN, TableSchema};
use crate::deduplicate::merge_by_primary_key;
use crate::persisted_files::{ParquetFile, PendingDelete, TableKey};
use crate::persister::FileWriteError;
use crate::store;
use crate::table_buffer::align_to_schema;
use crate::write_buffer::WriteBuffer;

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
/// files at least half of `target_bytes`; `None` if that leaves fewer than two.
fn pick(mut day_files: Vec<ParquetFile>, target_bytes: u64) -> Option<Vec<ParquetFile>> {
    day_files.sort_by_key(|f| (f.order, f.id));
    let skip = day_files
        .iter()
        .take_while(|f| f.size_bytes >= target_bytes / 2)
        .count();
    let rest = day_files.split_off(skip);
    (rest.len() >= 2).then_some(rest)
}

impl WriteBuffer {
    /// Runs one compaction round: deletes replaced files whose grace period ended, drops
    /// what the databases' retention periods no longer keep, then merges the small files of
    /// every day that has at least two.
    pub async fn compact(&self, target_bytes: u64) -> Result<CompactionSummary, CompactionError> {
        let mut summary = CompactionSummary {
            files_deleted: self.delete_replaced_files().await?,
            retention: self.enforce_retention().await?,
            ..CompactionSummary::default()
        };
        let candidates: Vec<Candidate> = {
            let lake = self.lake();
            let mut days: BTreeMap<(TableKey, i64), Vec<ParquetFile>> = BTreeMap::new();
            for (table, f) in lake.all_files() {
                days.entry((table.clone(), f.day()))
                    .or_default()
                    .push(f.clone());
            }
            days.into_iter()
                .filter_map(|((table, day), files)| {
                    pick(files, target_bytes).map(|files| Candidate { table, day, files })
                })
                .collect()
        };
        for c in candidates {
            let (bytes_in, files_in) = (
                c.files.iter().map(|f| f.size_bytes).sum::<u64>(),
                c.files.len(),
            );
            let outputs = self.compact_day(&c, target_bytes).await?;
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
        let Some(schema) = self.catalog().table(db, table).cloned() else {
            return Ok(None);
        };
        let data_err = |message: String| CompactionError::Data {
            table: format!("{db}.{table}"),
            day: {
                let (y, m, d) = crate::persisted_files::civil_from_days(c.day);
                format!("{y:04}-{m:02}-{d:02}")
            },
            message,
        };
        let mut files = Vec::with_capacity(c.files.len());
        for f in &c.files {
            let bytes = self
                .storage
                .get(&Path::from(f.path.as_str()))
                .await?
                .ok_or_else(|| data_err(format!("listed file {} is missing", f.path)))?;
            files.push(bytes);
        }
        let schema_for_merge = schema.clone();
        let bytes_in = bytes_in_of(&c.files);
        let slices = run_in_background("compactor", move || {
            let mut batches = Vec::new();
            for bytes in files {
                batches.extend(read_parquet(bytes, &schema_for_merge)?);
            }
            let (merged, _) = merge_by_primary_key(schema_for_merge.arrow_schema(), &batches)
                .map_err(|e| e.to_string())?;
            drop(batches);
            split_by_time(&merged, slices_for(&merged, target_bytes, bytes_in))
        })
        .await
        .and_then(|r| r)
        .map_err(data_err)?;
        let order = c.files.iter().map(|f| f.order).max().unwrap_or(0);
        let mut outputs = Vec::with_capacity(slices.len());
        for slice in slices {
            let file = self
                .write_parquet_file(db, &schema, slice, Some(order))
                .await
                .map_err(|e| match e {
                    FileWriteError::Encode(message) => data_err(message),
                    FileWriteError::Store(e) => CompactionError::Store(e),
                })?;
            outputs.push(file);
        }
        // Swap, under the lake lock, against the catalog as it is now.
        let _lake_guard = self.lake_lock.lock().await;
        let mut lake = (*self.lake()).clone();
        let current = lake.table_files(db, table);
        let inputs_live = c.files.iter().all(|f| current.iter().any(|g| g.id == f.id));
        if !inputs_live {
            drop(_lake_guard);
            for f in &outputs {
                self.storage.delete(&Path::from(f.path.as_str())).await?;
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
        let delete_after = self.grace_end();
        lake.pending_deletes
            .extend(c.files.iter().map(|f| PendingDelete {
                path: f.path.clone(),
                delete_after,
            }));
        self.write_catalog(&self.catalog(), &mut lake).await?;
        self.publish_lake(lake);
        self.shared
            .metrics
            .compacted_files
            .add(c.files.len() as u64);
        Ok(Some(outputs))
    }

    /// Deletes the replaced files whose grace period is over and drops them from the catalog.
    async fn delete_replaced_files(&self) -> Result<usize, CompactionError> {
        let now = self.now();
        let due: Vec<PendingDelete> = self
            .lake()
            .pending_deletes
            .iter()
            .filter(|p| p.delete_after <= now)
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        for p in &due {
            self.storage.delete(&Path::from(p.path.as_str())).await?;
        }
        let _lake_guard = self.lake_lock.lock().await;
        let mut lake = (*self.lake()).clone();
        lake.pending_deletes.retain(|p| !due.contains(p));
        self.write_catalog(&self.catalog(), &mut lake).await?;
        self.publish_lake(lake);
        Ok(due.len())
    }

    /// Runs compaction every `interval` until `stop` resolves. Failures are logged and the
    /// next round tries again.
    pub async fn run_compactor(
        self: Arc<Self>,
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
                self.shared.metrics.compaction_errors.add(1);
                tracing::error!("compaction failed; the files stay as they were: {e}");
            }
        }
    }
}

fn bytes_in_of(files: &[ParquetFile]) -> u64 {
    files.iter().map(|f| f.size_bytes).sum()
}

/// How many files a merged day should become: its inputs' size over the target, at least one.
/// The inputs' size is a fair guess of the output's (the same rows, fewer duplicates).
fn slices_for(merged: &RecordBatch, target_bytes: u64, bytes_in: u64) -> usize {
    let by_size = bytes_in.div_ceil(target_bytes.max(1)) as usize;
    by_size.clamp(1, merged.num_rows().max(1))
}

/// Splits rows (sorted by tags then time) into `n` slices by time, each of about the same row
/// count, each still sorted, no two overlapping in time.
fn split_by_time(merged: &RecordBatch, n: usize) -> Result<Vec<RecordBatch>, String> {
    if n <= 1 || merged.num_rows() == 0 {
        return Ok(vec![merged.clone()]);
    }
    let time = time_column(merged)?;
    let mut times: Vec<i64> = time.values().to_vec();
    times.sort_unstable();
    // cut points: slice k holds times in [cuts[k-1], cuts[k])
    let mut cuts: Vec<i64> = (1..n).map(|k| times[k * times.len() / n]).collect();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut lower = i64::MIN;
    for upper in cuts.into_iter().chain(std::iter::once(i64::MAX)) {
        let mask: arrow::array::BooleanArray = time
            .values()
            .iter()
            .map(|&t| Some(t >= lower && (t < upper || upper == i64::MAX)))
            .collect();
        let slice = filter_record_batch(merged, &mask).map_err(|e| e.to_string())?;
        if slice.num_rows() > 0 {
            out.push(slice);
        }
        lower = upper;
    }
    Ok(out)
}

fn time_column(batch: &RecordBatch) -> Result<&TimestampNanosecondArray, String> {
    batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| "no nanosecond time column".to_string())
}

/// Reads a Parquet file of the table into batches in the table's current schema.
fn read_parquet(bytes: Bytes, schema: &TableSchema) -> Result<Vec<RecordBatch>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| e.to_string())?;
    reader
        .map(|b| {
            b.map(|b| align_to_schema(&b, schema.arrow_schema()))
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests;
