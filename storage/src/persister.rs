//! Persistence: frozen buffer partitions become Parquet files on the object store, the catalog
//! that lists them is written, and only then do the buffer and the WAL let go of the rows.
//!
//! The order is the invariant: (1) freeze (close a WAL segment, take partitions out of the live
//! buffer; they stay queryable); (2) write every file, durably; (3) write the catalog listing
//! them and recording which WAL segments they cover, durably; (4) publish the new file list to
//! queries; (5) drop the frozen rows; (6) delete WAL segments nothing in memory needs. A crash
//! before (3) leaves the old catalog (the new files are unlisted orphans and the WAL still
//! holds their rows); a crash after (3) leaves the new catalog, and replay skips the rows it
//! covers. Either way every acknowledged row is there exactly once.
//!
//! A cycle that fails (the object store is down) changes nothing durable: the frozen partitions
//! stay frozen and queryable, and the next cycle persists them along with whatever it freezes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::background::run_in_background;
use crate::catalog::{ColumnKind, TableSchema};
use crate::deduplicate::{KEY_ORDER, merge_by_primary_key};
use crate::persisted_files::{ParquetFile, file_path};
use crate::store;
use crate::table_buffer::align_to_schema;
use crate::wal;
use crate::write_buffer::{FreezeRule, WriteBuffer, WriteError};

/// Key of the Parquet key-value metadata entry holding the table's columns and roles.
pub const SCHEMA_METADATA_KEY: &str = "sluice.schema";

/// Why a persist did not complete. Nothing was lost: the rows are still in the buffer and the
/// WAL, and the next persist tries again.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot freeze the buffer: {0}")]
    Freeze(#[from] WriteError),
    #[error("cannot encode Parquet for {table}: {message}")]
    Encode { table: String, message: String },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot cut the WAL: {0}")]
    Wal(#[from] wal::Error),
}

/// What one persist did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PersistSummary {
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    pub wal_segments_deleted: usize,
}

impl WriteBuffer {
    /// Persists the live partitions `rule` picks, and any partition frozen by an earlier
    /// persist that failed. Returns once the files and the catalog are durable.
    pub async fn persist(&self, rule: FreezeRule) -> Result<PersistSummary, PersistError> {
        let _lake_guard = self.lake_lock.lock().await;
        let frozen = self.freeze(rule).await?;
        let catalog = self.catalog();
        let mut lake = (*self.lake()).clone();
        let mut summary = PersistSummary::default();
        let mut done: Vec<(Arc<str>, Arc<str>, Vec<u64>)> = Vec::new();
        for t in &frozen.tables {
            let Some(schema) = catalog.table(&t.db, &t.table) else {
                continue;
            };
            let mut files: Vec<ParquetFile> = lake.table_files(&t.db, &t.table).to_vec();
            for p in &t.partitions {
                let batch = align_to_schema(&p.batch, schema.arrow_schema());
                let file = self
                    .write_parquet_file(&t.db, schema, batch, None)
                    .await
                    .map_err(|e| match e {
                        FileWriteError::Encode(message) => PersistError::Encode {
                            table: format!("{}.{}", t.db, t.table),
                            message,
                        },
                        FileWriteError::Store(e) => PersistError::Store(e),
                    })?;
                let (rows, size) = (file.rows, file.size_bytes);
                files.push(file);
                let marker = lake
                    .persisted_through
                    .entry((t.db.clone(), t.table.clone(), p.partition))
                    .or_insert(0);
                *marker = (*marker).max(frozen.through_segment);
                summary.files += 1;
                summary.rows += rows;
                summary.bytes += size;
            }
            lake.files
                .insert((t.db.clone(), t.table.clone()), files.into());
            done.push((
                t.db.clone(),
                t.table.clone(),
                t.partitions.iter().map(|p| p.seq).collect(),
            ));
        }
        crash_point("persist-after-files");
        // Markers for segments that are gone can never match a replayed record.
        let oldest_on_disk = wal::list_segments(&self.config.wal_dir)?
            .first()
            .map_or(0, |(seq, _)| *seq);
        lake.persisted_through.retain(|_, s| *s >= oldest_on_disk);
        lake.dropped.retain(|d| d.through_segment >= oldest_on_disk);
        self.write_catalog(&catalog, &mut lake).await?;
        crash_point("persist-after-catalog");
        self.publish_lake(lake);
        for (db, table, seqs) in done {
            if let Some(buffer) = self.table_buffer(&db, &table) {
                let (rows, bytes) = buffer.remove_frozen(&seqs);
                self.shared.release(rows, bytes);
            }
        }
        let keep_from = self.shared.oldest_needed_segment();
        summary.wal_segments_deleted = wal::delete_before(&self.config.wal_dir, keep_from)?;
        self.shared
            .metrics
            .persisted_files
            .add(summary.files as u64);
        self.shared.metrics.persisted_rows.add(summary.rows);
        if summary.files > 0 {
            tracing::info!(
                files = summary.files,
                rows = summary.rows,
                bytes = summary.bytes,
                wal_segments_deleted = summary.wal_segments_deleted,
                "persisted buffered partitions"
            );
        }
        Ok(summary)
    }

    /// What the background persister should persist now, if anything: partitions whose hour
    /// ended `persist_after` ago, or everything while the buffer is over half its memory limit
    /// (so that writes are not refused while persistence can keep up).
    pub fn persist_due(&self, now_nanos: i64) -> Option<FreezeRule> {
        let limit = self.config.buffer_memory_limit;
        if self.buffer_bytes() >= limit / 2 {
            return Some(FreezeRule::All);
        }
        let cutoff = now_nanos.saturating_sub(
            i64::try_from(self.config.persist_after.as_nanos()).unwrap_or(i64::MAX),
        );
        let rule = FreezeRule::EndedBy(cutoff);
        let tables = self.shared.tables.read();
        let any = tables
            .values()
            .flat_map(|t| t.values())
            .any(|b| b.live_partitions().iter().any(|&(key, _)| rule.takes(key)));
        any.then_some(rule)
    }

    /// Runs persistence in the background until `stop` resolves: every `interval`, persists
    /// what [`WriteBuffer::persist_due`] says. Failures are logged and retried next round.
    pub async fn run_persister(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticker.tick() => {}
            }
            let Some(rule) = self.persist_due(self.now()) else {
                continue;
            };
            if let Err(e) = self.persist(rule).await {
                self.shared.metrics.persist_errors.add(1);
                tracing::error!(
                    "persisting failed; the rows stay in the buffer and the WAL and the next \
                     round retries: {e}"
                );
            }
        }
    }
}

/// Why a Parquet file could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileWriteError {
    #[error("{0}")]
    Encode(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl WriteBuffer {
    /// Encodes `batch` (rows of `db`.`schema`, not empty) as a Parquet file (on a background
    /// thread: it is CPU work that must not slow writes), writes it durably under a new id and describes it. `order` is
    /// its precedence among the table's files; `None` gives it its own id, which is right for
    /// rows just persisted (newer than every file before them).
    pub(crate) async fn write_parquet_file(
        &self,
        db: &Arc<str>,
        schema: &Arc<TableSchema>,
        batch: RecordBatch,
        order: Option<u64>,
    ) -> Result<ParquetFile, FileWriteError> {
        let (min_time, max_time) = time_range(&batch)
            .ok_or_else(|| FileWriteError::Encode("no rows with a time to write".into()))?;
        let (db2, schema2) = (db.clone(), schema.clone());
        let (bytes, rows, sort_key) =
            run_in_background("encoder", move || encode_parquet(&db2, &schema2, &[batch]))
                .await
                .and_then(|r| r)
                .map_err(FileWriteError::Encode)?;
        let id = self.shared.next_file_id.fetch_add(1, Ordering::SeqCst);
        let path = file_path(db, &schema.name, min_time, id);
        let size_bytes = bytes.len() as u64;
        self.storage.put(&Path::from(path.as_str()), bytes).await?;
        Ok(ParquetFile {
            id,
            order: order.unwrap_or(id),
            path,
            min_time,
            max_time,
            rows,
            size_bytes,
            sort_key,
        })
    }
}

/// Earliest and latest `time` of `batch`; `None` if it has no rows.
pub(crate) fn time_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let time = batch
        .column_by_name(crate::catalog::TIME_COLUMN)?
        .as_any()
        .downcast_ref::<arrow::array::TimestampNanosecondArray>()?;
    let min = *time.values().iter().min()?;
    let max = *time.values().iter().max()?;
    Some((min, max))
}

/// Kills the process on the spot (no unwinding, no flushing: as `kill -9` would) when the
/// environment variable `SLUICE_CRASH_POINT` names `point`. Crash-recovery tests use it to stop
/// the server at an exact step of a persist, which no signal sent from outside can hit
/// reliably.
pub fn crash_point(point: &str) {
    static CHOSEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var("SLUICE_CRASH_POINT").ok());
    if chosen.as_deref() == Some(point) {
        eprintln!("SLUICE_CRASH_POINT={point}: aborting");
        std::process::abort();
    }
}

/// Encodes `batches` (rows of `schema`'s table, oldest first) as one Parquet file: rows merged
/// per primary key and sorted by tags then time (see `deduplicate.rs` for the tag order), tags
/// dictionary-encoded and not compressed, time and fields ZSTD, page-level statistics (so the page index is written), the sort order and Sluice's schema in the file
/// metadata. Returns the bytes, the row count and the sort key (column names).
pub fn encode_parquet(
    db: &str,
    schema: &TableSchema,
    batches: &[RecordBatch],
) -> Result<(Bytes, u64, Vec<String>), String> {
    let arrow_schema = schema.arrow_schema();
    let (merged, key) = merge_by_primary_key(arrow_schema, batches).map_err(|e| e.to_string())?;
    let key_names: Vec<String> = key
        .iter()
        .map(|&i| arrow_schema.field(i).name().clone())
        .collect();
    let sorting = key
        .iter()
        .map(|&i| SortingColumn {
            column_idx: i as i32,
            descending: KEY_ORDER.descending,
            nulls_first: KEY_ORDER.nulls_first,
        })
        .collect();
    let columns: Vec<serde_json::Value> = arrow_schema
        .fields()
        .iter()
        .map(|f| {
            let kind = schema.column(f.name()).map(|c| c.kind);
            let role = match kind {
                Some(ColumnKind::Tag) => "tag",
                Some(ColumnKind::Time) => "time",
                _ => "field",
            };
            serde_json::json!({ "name": f.name(), "role": role })
        })
        .collect();
    let meta = serde_json::json!({
        "database": db,
        "table": schema.name.as_ref(),
        "columns": columns,
    });
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(|e| e.to_string())?,
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(8 * 1024)
        // Several row groups per large file: DataFusion scans row groups in parallel, and
        // their statistics let whole groups be skipped.
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_sorting_columns(Some(sorting))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_METADATA_KEY.to_string(),
            meta.to_string(),
        )]));
    for c in schema.columns() {
        let path = ColumnPath::from(c.name.as_ref());
        match c.kind {
            ColumnKind::Tag => {
                // Sorted first, a tag's dictionary indices are long runs that RLE already
                // stores in a few bytes: ZSTD makes them larger, and every column chunk it
                // compresses costs a reader a decompression context (tens of microseconds)
                // per query.
                props = props.set_column_compression(path, Compression::UNCOMPRESSED);
            }
            ColumnKind::Time
            | ColumnKind::Field(sluice_model::FieldType::Integer)
            | ColumnKind::Field(sluice_model::FieldType::UInteger) => {
                // Sorted by series then time, timestamps and counters change by small steps:
                // delta encoding stores the steps, and ZSTD squeezes them further.
                props = props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            ColumnKind::Field(sluice_model::FieldType::Float) => {
                props = props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
            }
            ColumnKind::Field(_) => {}
        }
    }
    let mut out = Vec::with_capacity(merged.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut out, arrow_schema.clone(), Some(props.build()))
        .map_err(|e| e.to_string())?;
    writer.write(&merged).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok((Bytes::from(out), merged.num_rows() as u64, key_names))
}

#[cfg(test)]
pub(crate) mod tests;
