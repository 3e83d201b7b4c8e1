use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::super::{PageCache, PageIndexReader};

const ROWS: usize = 20_000;

/// A file as Sluice writes them: a tag uncompressed, time and a field ZSTD, small pages,
/// several row groups, the page index.
fn file() -> bytes::Bytes {
    let schema = Arc::new(Schema::new(vec![
        Field::new("host", DataType::Utf8, false),
        Field::new("time", DataType::Int64, false),
        Field::new("v", DataType::Float64, true),
    ]));
    let host: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..ROWS).map(|i| format!("host_{}", i / 1000)),
    ));
    let time: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (0..ROWS as i64).map(|i| (i % 1000) * 10_000_000_000),
    ));
    let v: ArrayRef = Arc::new(Float64Array::from_iter(
        (0..ROWS).map(|i| (i % 7 != 0).then(|| (i as f64 * 0.37).sin() * 100.0)),
    ));
    let batch = RecordBatch::try_new(schema.clone(), vec![host, time, v]).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_column_compression(ColumnPath::from("host"), Compression::UNCOMPRESSED)
        .set_column_dictionary_enabled(ColumnPath::from("time"), false)
        .set_column_encoding(ColumnPath::from("time"), Encoding::DELTA_BINARY_PACKED)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(1024)
        .set_write_batch_size(1024)
        .set_max_row_group_row_count(Some(8 * 1024))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes::Bytes::from(out)
}

fn reader(file: &bytes::Bytes, pages: &Arc<PageCache>) -> PageIndexReader {
    PageIndexReader {
        inner: Box::new(Cursor::new(file.to_vec())),
        path: "f.parquet".into(),
        unpacked_key: "f.parquet#unpacked".into(),
        size: file.len() as u64,
        pages: pages.clone(),
        layouts: pages.layouts.clone(),
        unpacked: None,
    }
}

fn selection() -> RowSelection {
    RowSelection::from(vec![
        RowSelector::skip(3000),
        RowSelector::select(500),
        RowSelector::skip(9000),
        RowSelector::select(1),
        RowSelector::skip(5000),
        RowSelector::select(2499),
    ])
}

#[tokio::test]
async fn an_unpacked_file_reads_as_the_written_one_with_no_compressed_column() {
    let file = file();
    let written = |selection: Option<RowSelection>| {
        let mut b = ParquetRecordBatchReaderBuilder::try_new_with_options(
            file.clone(),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
        )
        .unwrap();
        if let Some(s) = selection {
            b = b.with_row_selection(s);
        }
        b.build().unwrap().collect::<Result<Vec<_>, _>>().unwrap()
    };
    let pages = Arc::new(PageCache::new(64 << 20));
    for round in 0..2 {
        for selection in [None, Some(selection())] {
            let r = reader(&file, &pages);
            let mut b = ParquetRecordBatchStreamBuilder::new_with_options(
                r,
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
            )
            .await
            .unwrap();
            let md = b.metadata().clone();
            assert!(md.num_row_groups() > 1);
            for rg in md.row_groups() {
                for c in rg.columns() {
                    assert_eq!(c.compression(), Compression::UNCOMPRESSED, "round {round}");
                }
            }
            if let Some(s) = selection.clone() {
                b = b.with_row_selection(s);
            }
            let got: Vec<RecordBatch> = b.build().unwrap().try_collect().await.unwrap();
            let want = written(selection);
            let rows = |b: &[RecordBatch]| b.iter().map(|b| b.num_rows()).sum::<usize>();
            assert_eq!(rows(&got), rows(&want));
            assert_eq!(
                arrow::compute::concat_batches(&got[0].schema(), &got).unwrap(),
                arrow::compute::concat_batches(&want[0].schema(), &want).unwrap(),
            );
        }
    }
    // the layout was made once, and the pages are kept decompressed
    assert_eq!(pages.layouts.files.lock().0.len(), 1);
    assert!(pages.used() > file.len());
}

#[tokio::test]
async fn a_file_the_layout_does_not_understand_reads_as_written() {
    // snappy: not unpacked
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..5000)) as ArrayRef],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let file = bytes::Bytes::from(out);
    let pages = Arc::new(PageCache::new(64 << 20));
    let b = ParquetRecordBatchStreamBuilder::new_with_options(
        reader(&file, &pages),
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
    )
    .await
    .unwrap();
    assert_eq!(
        b.metadata().row_group(0).column(0).compression(),
        Compression::SNAPPY
    );
    let got: Vec<RecordBatch> = b.build().unwrap().try_collect().await.unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 5000);
    assert!(pages.layouts.files.lock().0["f.parquet"].is_none());
}
