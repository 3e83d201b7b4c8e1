//! Parquet files as the lake writes them: rows merged per primary key and sorted by tags
//! then time, tags dictionary-encoded, the sort order and Sluice's schema in the metadata;
//! and read back into a table's current schema.

use arrow::array::{RecordBatch, TimestampNanosecondArray};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sluice_model::FieldType;

use super::deduplicate::{KEY_ORDER, Merged};
use crate::catalog::{ColumnKind, TIME_COLUMN, TableSchema};
use crate::columns::align_to_schema;

/// Rows [`encode_parquet`] sorts and hands the Parquet writer at a time: half a row group.
const ENCODE_SLICE_ROWS: usize = 64 * 1024;

/// Key of the Parquet key-value metadata entry holding the table's columns and roles.
pub const SCHEMA_METADATA_KEY: &str = "sluice.schema";

/// Earliest and latest `time` of `batch`; `None` if it has no rows.
pub fn time_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let time = batch
        .column_by_name(TIME_COLUMN)?
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()?;
    let min = *time.values().iter().min()?;
    let max = *time.values().iter().max()?;
    Some((min, max))
}

/// Encodes `batches` (rows of `schema`'s table, oldest first) as one Parquet file: rows merged
/// per primary key and sorted by tags then time (see `deduplicate.rs` for the tag order), tags
/// dictionary-encoded and not compressed, time and fields ZSTD, page-level statistics (so the page index is written), the sort order and Sluice's schema in the file
/// metadata. Returns the bytes, the row count and the sort key (column names).
pub fn encode_parquet(
    db: &str,
    schema: &TableSchema,
    batches: Vec<RecordBatch>,
) -> Result<(Bytes, u64, Vec<String>), String> {
    let arrow_schema = schema.arrow_schema();
    let merged = Merged::new(arrow_schema, batches).map_err(|e| e.to_string())?;
    let key_names: Vec<String> = merged
        .key()
        .iter()
        .map(|&i| arrow_schema.field(i).name().clone())
        .collect();
    let sorting = merged
        .key()
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
            | ColumnKind::Field(FieldType::Integer)
            | ColumnKind::Field(FieldType::UInteger) => {
                // Sorted by series then time, timestamps and counters change by small steps:
                // delta encoding stores the steps, and ZSTD squeezes them further.
                props = props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            ColumnKind::Field(FieldType::Float) => {
                props = props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
            }
            ColumnKind::Field(_) => {}
        }
    }
    let mut out = Vec::with_capacity(merged.input_bytes() / 16);
    let mut writer = ArrowWriter::try_new(&mut out, arrow_schema.clone(), Some(props.build()))
        .map_err(|e| e.to_string())?;
    // the sorted rows are built a slice at a time as the writer takes them: a sorted copy of
    // them all would hold the rows twice
    for slice in merged.slices(ENCODE_SLICE_ROWS) {
        writer
            .write(&slice.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    writer.close().map_err(|e| e.to_string())?;
    Ok((Bytes::from(out), merged.num_rows() as u64, key_names))
}

/// Reads a Parquet file of the table into batches in the table's current schema.
pub fn read_parquet(bytes: Bytes, schema: &TableSchema) -> Result<Vec<RecordBatch>, String> {
    parquet_batches(bytes, schema)?.collect()
}

/// The rows of a Parquet file, decoded a batch (64 Ki rows) at a time as they are read, in
/// `schema`'s layout.
pub fn parquet_batches(
    bytes: Bytes,
    schema: &TableSchema,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| e.to_string())?;
    let arrow_schema = schema.arrow_schema().clone();
    Ok(reader.map(move |b| {
        b.map(|b| align_to_schema(&b, &arrow_schema))
            .map_err(|e| e.to_string())
    }))
}
