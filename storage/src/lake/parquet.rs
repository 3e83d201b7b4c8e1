//! Parquet files as the lake writes them: rows merged per primary key and sorted by tags
//! then time, tags dictionary-encoded, the sort order and Sluice's schema in the metadata;
//! and read back into a table's current schema.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
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

/// Rows a data page holds unless configured otherwise. Pages of 32 Ki rows took 14% fewer
/// bytes than pages of 8 Ki for Prometheus data (a table per metric: most of a narrow
/// table's bytes besides its values are per page) and answered the TSBS queries, SQL and
/// PromQL, as fast (`benches/README.md`).
pub const DEFAULT_PAGE_ROWS: usize = 32 * 1024;

/// How [`encode_parquet`] writes a file.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// A float field whose values in the file are all whole numbers ([`is_whole`]) is
    /// stored as INT64 (`--parquet-whole-floats-as-integers`).
    pub whole_floats_as_integers: bool,
    /// Rows a data page holds, in every column (`--parquet-page-rows`): what a scan reading
    /// a few rows decodes, and what each page's header and page-index entry are spread over.
    pub page_rows: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            whole_floats_as_integers: true,
            page_rows: DEFAULT_PAGE_ROWS,
        }
    }
}

/// Largest magnitude of a float field's values a file stores as integers: every integer up to
/// it is a float64 exactly, and the float64 of each is the integer.
const WHOLE_MAX: f64 = (1u64 << 53) as f64;

/// Whether `v` is kept exactly by a file that stores its field as INT64: a whole number of at
/// most [`WHOLE_MAX`] that is not -0 (which an integer would make 0).
fn is_whole(v: f64) -> bool {
    v.trunc() == v && v.abs() <= WHOLE_MAX && !(v == 0.0 && v.is_sign_negative())
}

/// Whether every value `column` holds (nulls aside) [`is_whole`].
fn all_whole(column: &ArrayRef) -> bool {
    let Some(floats) = column.as_primitive_opt::<Float64Type>() else {
        return false;
    };
    match floats.nulls().filter(|n| n.null_count() > 0) {
        None => floats.values().iter().all(|&v| is_whole(v)),
        Some(nulls) => nulls.valid_indices().all(|i| is_whole(floats.values()[i])),
    }
}

/// Encodes `batches` (rows of `schema`'s table, oldest first) as one Parquet file: rows merged
/// per primary key and sorted by tags then time (see `deduplicate.rs` for the tag order), tags
/// dictionary-encoded and not compressed, time and fields ZSTD, page-level statistics (so the
/// page index is written), the sort order and Sluice's schema in the file metadata. Unless
/// `options` say not to, a float field whose values are all whole numbers ([`is_whole`]:
/// counters, byte and item counts, percentages in whole points) is stored as INT64 and
/// delta-encoded, as integer fields are: about half the bytes of its floats' encoding;
/// [`parquet_batches`] (by `align_to_schema`) and the query's scans read it back as floats. Returns the bytes, the
/// row count and the sort key (column names).
pub fn encode_parquet(
    db: &str,
    schema: &TableSchema,
    batches: Vec<RecordBatch>,
    options: EncodeOptions,
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
    // float fields stored as integers in this file: those whose every input value is whole
    // (the merged rows are some of the inputs)
    let whole: Vec<bool> = arrow_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            options.whole_floats_as_integers
                && matches!(
                    schema.column(f.name()).map(|c| c.kind),
                    Some(ColumnKind::Field(FieldType::Float))
                )
                && all_whole(merged.input(i))
        })
        .collect();
    let file_schema: SchemaRef = if whole.contains(&true) {
        let fields: Vec<Field> = arrow_schema
            .fields()
            .iter()
            .zip(&whole)
            .map(|(f, &whole)| match whole {
                true => f.as_ref().clone().with_data_type(DataType::Int64),
                false => f.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new_with_metadata(
            fields,
            arrow_schema.metadata().clone(),
        ))
    } else {
        arrow_schema.clone()
    };
    let columns: Vec<serde_json::Value> = arrow_schema
        .fields()
        .iter()
        .zip(&whole)
        .map(|(f, &whole)| {
            let kind = schema.column(f.name()).map(|c| c.kind);
            let role = match kind {
                Some(ColumnKind::Tag) => "tag",
                Some(ColumnKind::Time) => "time",
                _ => "field",
            };
            match whole {
                // a reader of the file learns the table's type of the column here
                true => serde_json::json!({ "name": f.name(), "role": role, "type": "float" }),
                false => serde_json::json!({ "name": f.name(), "role": role }),
            }
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
        .set_data_page_row_count_limit(options.page_rows.max(1))
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
        let stored_whole = arrow_schema.index_of(&c.name).is_ok_and(|i| whole[i]);
        match c.kind {
            ColumnKind::Tag => {
                // Sorted first, a tag's dictionary indices are long runs that RLE already
                // stores in a few bytes: ZSTD makes them larger, and every column chunk it
                // compresses costs a reader a decompression context (tens of microseconds)
                // per query.
                props = props.set_column_compression(path, Compression::UNCOMPRESSED);
            }
            ColumnKind::Field(FieldType::Float) if !stored_whole => {
                props = props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
            }
            ColumnKind::Time
            | ColumnKind::Field(FieldType::Integer)
            | ColumnKind::Field(FieldType::UInteger)
            | ColumnKind::Field(FieldType::Float) => {
                // Sorted by series then time, timestamps and counters change by small steps:
                // delta encoding stores the steps, and ZSTD squeezes them further.
                props = props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            ColumnKind::Field(_) => {}
        }
    }
    let mut out = Vec::with_capacity(merged.input_bytes() / 16);
    let mut writer = ArrowWriter::try_new(&mut out, file_schema.clone(), Some(props.build()))
        .map_err(|e| e.to_string())?;
    // the sorted rows are built a slice at a time as the writer takes them: a sorted copy of
    // them all would hold the rows twice
    for slice in merged.slices(ENCODE_SLICE_ROWS) {
        let slice = slice.map_err(|e| e.to_string())?;
        writer
            .write(&align_to_schema(&slice, &file_schema))
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
