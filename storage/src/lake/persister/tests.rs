use std::sync::Arc;

use arrow::util::pretty::pretty_format_batches;
use object_store::memory::InMemory;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use object_store::path::Path;

use crate::lake::parquet::SCHEMA_METADATA_KEY;
use crate::lake::store::{ObjectStorage, RetryPolicy};
use crate::test_util::{
    FaultInjectingStore, HOUR, faulty, file_storage, open, read_file, table_rows, write,
};

#[tokio::test]
async fn persisted_rows_leave_buffer_and_wal_and_come_back_from_files_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, files) = {
        let (wb, _) = open(dir.path(), file_storage(dir.path())).await;
        write(&wb, "cpu,host=b v=1 10\ncpu,host=a v=2 20").await;
        write(&wb, &format!("cpu,host=a v=3,w=1i {}", HOUR + 5)).await;
        let expected = table_rows(&wb).await;
        let bytes_before = wb.buffer_bytes();
        let summary = wb.persist(FreezeRule::All).await.unwrap();
        assert_eq!(summary.files, 2, "one file per hour partition");
        assert_eq!(summary.rows, 3);
        assert!(summary.wal_segments_deleted >= 1, "{summary:?}");
        assert_eq!(wb.buffer_rows(), 0);
        // what stays is the series dictionary (tags once per series), not rows
        assert!(wb.buffer_bytes() < bytes_before, "{}", wb.buffer_bytes());
        assert_eq!(table_rows(&wb).await, expected);
        let files = wb.lake().table_files("db", "cpu");
        assert_eq!(
            files[0].path,
            "dbs/db/cpu/1970-01-01/00000000000000000000.parquet"
        );
        assert!(dir.path().join("lake").join(&files[0].path).exists());
        assert!(dir.path().join("lake/catalog.json").exists());
        (expected, files)
    };
    let (wb, summary) = open(dir.path(), file_storage(dir.path())).await;
    assert_eq!(summary.points, 0, "nothing to replay: {summary:?}");
    assert_eq!(summary.files, 2);
    assert_eq!(wb.lake().table_files("db", "cpu"), files);
    assert_eq!(table_rows(&wb).await, expected);
    // and it goes on: new writes, new files with new ids
    write(&wb, "cpu,host=a v=9 20").await;
    wb.persist(FreezeRule::All).await.unwrap();
    let ids: Vec<u64> = wb
        .lake()
        .table_files("db", "cpu")
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, vec![0, 1, 2]);
    let rows = table_rows(&wb).await;
    assert!(
        rows.contains("| a    | 1970-01-01T00:00:00.000000020 | 9.0 |"),
        "{rows}"
    );
}

/// The bytes of the file at `path` in `wb`'s object store.
async fn file_bytes(wb: &crate::write_buffer::WriteBuffer, path: &str) -> bytes::Bytes {
    wb.storage()
        .get(&Path::from(path))
        .await
        .unwrap()
        .expect("listed file exists")
}

/// A reader of a file's bytes with its page index.
fn with_page_index(bytes: bytes::Bytes) -> ParquetRecordBatchReaderBuilder<bytes::Bytes> {
    ParquetRecordBatchReaderBuilder::try_new_with_options(
        bytes,
        parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
    )
    .unwrap()
}

/// The `sluice.schema` metadata entry of a file.
fn sluice_schema(meta: &parquet::file::metadata::ParquetMetaData) -> String {
    meta.file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .find(|k| k.key == SCHEMA_METADATA_KEY)
        .and_then(|k| k.value.clone())
        .unwrap()
}

#[tokio::test]
async fn files_are_sorted_by_tags_then_time_with_sluice_schema_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path(), file_storage(dir.path())).await;
    write(
        &wb,
        "cpu,host=b,dc=x v=1 30\ncpu,host=a,dc=x v=2 20\ncpu,host=a v=3 10\ncpu,host=a,dc=x v=4 5",
    )
    .await;
    // a repeated key within the partition: merged, newest field wins
    write(&wb, "cpu,host=a,dc=x v=5 20").await;
    wb.persist(FreezeRule::All).await.unwrap();
    let files = wb.lake().table_files("db", "cpu");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 4);
    let bytes = file_bytes(&wb, &files[0].path).await;
    let builder = with_page_index(bytes);
    let meta = builder.metadata().clone();
    let schema_json = sluice_schema(&meta);
    assert!(
        schema_json.contains(r#"{"name":"host","role":"tag"}"#),
        "{schema_json}"
    );
    let rg = meta.row_group(0);
    assert!(rg.sorting_columns().is_some());
    for c in rg.columns() {
        let name = c.column_path().string();
        let tag = name == "host" || name == "dc";
        assert_eq!(
            matches!(c.compression(), parquet::basic::Compression::ZSTD(_)),
            !tag,
            "{name}: {:?}",
            c.compression()
        );
    }
    assert!(
        meta.column_index().is_some() && meta.offset_index().is_some(),
        "page index"
    );
    let batches: Vec<_> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(
        pretty_format_batches(&batches).unwrap().to_string(),
        "+----+------+-------------------------------+---+\n\
         | dc | host | time                          | v |\n\
         +----+------+-------------------------------+---+\n\
         | x  | a    | 1970-01-01T00:00:00.000000005 | 4 |\n\
         | x  | a    | 1970-01-01T00:00:00.000000020 | 5 |\n\
         | x  | b    | 1970-01-01T00:00:00.000000030 | 1 |\n\
         |    | a    | 1970-01-01T00:00:00.000000010 | 3 |\n\
         +----+------+-------------------------------+---+"
    );
    assert!(matches!(
        batches[0]
            .schema()
            .field_with_name("host")
            .unwrap()
            .data_type(),
        arrow::datatypes::DataType::Dictionary(_, _)
    ));
}

#[tokio::test]
async fn only_ended_hours_are_persisted_and_replay_skips_exactly_what_files_hold() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let (wb, _) = open(dir.path(), file_storage(dir.path())).await;
        write(
            &wb,
            &format!("cpu,host=a v=1 {}\ncpu,host=a v=2 {}", 10, HOUR + 10),
        )
        .await;
        let s = wb.persist(FreezeRule::EndedBy(HOUR)).await.unwrap();
        assert_eq!((s.files, s.rows), (1, 1));
        // the hot hour keeps the segment that also holds the persisted row
        assert_eq!(s.wal_segments_deleted, 0);
        // a later write to the persisted hour: a newer value for the persisted key
        write(&wb, "cpu,host=a v=7 10").await;
        let expected = table_rows(&wb).await;
        assert!(
            expected.contains("| a    | 1970-01-01T00:00:00.000000010 | 7.0 |"),
            "{expected}"
        );
        expected
        // dropped without persisting again: a crash, as far as the files know
    };
    let (wb, summary) = open(dir.path(), file_storage(dir.path())).await;
    assert_eq!(summary.points_persisted, 1, "{summary:?}");
    assert_eq!(summary.points, 2, "{summary:?}");
    assert_eq!(table_rows(&wb).await, expected);
}

#[tokio::test]
async fn transient_store_faults_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (store, storage) = faulty(dir.path());
    let (wb, _) = open(dir.path(), storage).await;
    write(&wb, "cpu,host=a v=1 10").await;
    store.fail_next(2, "");
    let s = wb.persist(FreezeRule::All).await.unwrap();
    assert_eq!(s.files, 1);
    assert_eq!(store.failed_calls(), 2);
    assert_eq!(wb.buffer_rows(), 0);
    assert!(
        table_rows(&wb)
            .await
            .contains("| a    | 1970-01-01T00:00:00.000000010 | 1.0 |")
    );
}

#[tokio::test]
async fn a_store_that_stays_down_loses_nothing_and_the_next_persist_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (store, storage) = faulty(dir.path());
    let (wb, _) = open(dir.path(), storage).await;
    write(&wb, "cpu,host=a v=1 10").await;
    let before = table_rows(&wb).await;
    // the catalog cannot be written: the file is, but nothing may depend on it
    store.fail_next(u64::MAX, "catalog.json");
    let err = wb.persist(FreezeRule::All).await.unwrap_err();
    assert!(err.to_string().contains("catalog.json"), "{err}");
    assert!(wb.lake().table_files("db", "cpu").is_empty());
    assert_eq!(wb.buffer_rows(), 1, "frozen rows stay in the buffer");
    assert_eq!(table_rows(&wb).await, before, "and stay queryable");
    // writes go on meanwhile
    write(&wb, "cpu,host=b v=2 10").await;
    store.fail_next(0, "");
    let s = wb.persist(FreezeRule::All).await.unwrap();
    assert_eq!(
        (s.files, s.rows),
        (2, 2),
        "the earlier frozen partition goes too"
    );
    assert_eq!(wb.buffer_rows(), 0);
    let after = table_rows(&wb).await;
    assert!(
        after.contains("| a    |") && after.contains("| b    |"),
        "{after}"
    );
}

#[tokio::test]
async fn a_crash_before_the_catalog_is_written_replays_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(InMemory::new());
    let expected = {
        let store = Arc::new(FaultInjectingStore::new(lake.clone()));
        let storage = ObjectStorage::from_store(store.clone(), "faulty").with_retry(RetryPolicy {
            attempts: 1,
            first_backoff: std::time::Duration::from_millis(1),
            max_backoff: std::time::Duration::from_millis(1),
        });
        let (wb, _) = open(dir.path(), storage).await;
        write(&wb, "cpu,host=a v=1 10\ncpu,host=b v=2 10").await;
        store.fail_next(u64::MAX, "catalog.json");
        assert!(wb.persist(FreezeRule::All).await.is_err());
        table_rows(&wb).await
    };
    let (wb, summary) = open(dir.path(), ObjectStorage::from_store(lake, "memory")).await;
    assert_eq!(summary.files, 0);
    assert_eq!(summary.points, 2);
    assert_eq!(table_rows(&wb).await, expected);
}

#[tokio::test]
async fn the_tag_with_most_values_leads_the_sort_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path(), file_storage(dir.path())).await;
    write(
        &wb,
        "cpu,az=b,host=h1 v=1 1\ncpu,az=a,host=h2 v=2 1\ncpu,az=a,host=h3 v=3 1\ncpu,az=b,host=h0 v=4 1",
    )
    .await;
    wb.persist(FreezeRule::All).await.unwrap();
    let files = wb.lake().table_files("db", "cpu");
    let bytes = file_bytes(&wb, &files[0].path).await;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let sorting = builder
        .metadata()
        .row_group(0)
        .sorting_columns()
        .unwrap()
        .clone();
    let host = builder.schema().index_of("host").unwrap() as i32;
    assert_eq!(sorting[0].column_idx, host, "{sorting:?}");
    let batches: Vec<_> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    let shown = pretty_format_batches(&batches).unwrap().to_string();
    let hosts: Vec<&str> = shown
        .lines()
        .filter_map(|l| l.split('|').nth(2).map(str::trim))
        .filter(|h| h.starts_with('h') && *h != "host")
        .collect();
    assert_eq!(hosts, vec!["h0", "h1", "h2", "h3"], "{shown}");
}

#[tokio::test]
async fn a_partition_that_cannot_be_written_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (store, storage) = faulty(dir.path());
    let (wb, _) = open(dir.path(), storage).await;
    write(&wb, "cpu,host=a v=1 10\nbad v=1 10").await;
    store.fail_next(u64::MAX, "dbs/db/bad/");
    let s = wb.persist(FreezeRule::All).await.unwrap();
    assert_eq!((s.files, s.rows, s.failed_partitions), (1, 1, 1), "{s:?}");
    assert_eq!(wb.lake().table_files("db", "cpu").len(), 1);
    assert!(wb.lake().table_files("db", "bad").is_empty());
    assert_eq!(wb.metrics().persist_partition_errors.get(), 1);
    assert_eq!(wb.buffer_rows(), 1, "the failed partition stays buffered");
    // the next persist, once the store takes it, catches up
    store.fail_next(0, "");
    let s = wb.persist(FreezeRule::All).await.unwrap();
    assert_eq!((s.files, s.failed_partitions), (1, 0), "{s:?}");
    assert_eq!(wb.buffer_rows(), 0);
    assert_eq!(wb.lake().table_files("db", "bad").len(), 1);
}

#[tokio::test]
async fn names_the_object_store_escapes_round_trip_through_persist_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["cpu%x", "disk#1", "a//b", "..", "a b", "é/ü"];
    let lp = |v: i64| -> String {
        names
            .iter()
            .map(|n| format!("{} v={v} {v}\n", n.replace(' ', "\\ ")))
            .collect()
    };
    {
        let (wb, _) = open(dir.path(), file_storage(dir.path())).await;
        write(&wb, &lp(1)).await;
        wb.persist(FreezeRule::All).await.unwrap();
        write(&wb, &lp(2)).await;
        wb.persist(FreezeRule::All).await.unwrap();
    }
    let (wb, summary) = open(dir.path(), file_storage(dir.path())).await;
    assert_eq!(summary.orphan_files_deleted, 0, "{summary:?}");
    for n in names {
        assert_eq!(wb.lake().table_files("db", n).len(), 2, "{n}");
    }
    let c = wb.compact(u64::MAX).await.unwrap();
    assert_eq!(c.files_in, 2 * names.len(), "{c:?}");
    for n in names {
        let files = wb.lake().table_files("db", n);
        assert_eq!(files.len(), 1, "{n}");
        let rows: usize = read_file(&wb, &files[0].path)
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 2, "{n}");
    }
}

#[tokio::test]
async fn a_catalog_that_lists_raw_names_keeps_its_files_at_start_up() {
    // before table names became path segments, the catalog listed `dbs/db/cpu%x/...` while
    // the store held `dbs/db/cpu%25x/...`: start-up took the file for an orphan
    let dir = tempfile::tempdir().unwrap();
    let storage = file_storage(dir.path());
    {
        let (wb, _) = open(dir.path(), storage.clone()).await;
        write(&wb, "cpu%x v=1 1").await;
        wb.persist(FreezeRule::All).await.unwrap();
        let new = wb.lake().table_files("db", "cpu%x")[0].path.clone();
        let old = new.replace("cpu=25x", "cpu%x");
        let bytes = storage
            .get(&Path::from(new.as_str()))
            .await
            .unwrap()
            .unwrap();
        storage.put(&Path::from(old.as_str()), bytes).await.unwrap();
        storage.delete(&Path::from(new.as_str())).await.unwrap();
        let catalog = storage
            .get(&Path::from("catalog.json"))
            .await
            .unwrap()
            .unwrap();
        let catalog = String::from_utf8(catalog.to_vec())
            .unwrap()
            .replace(&new, &old);
        storage
            .put(&Path::from("catalog.json"), catalog.into())
            .await
            .unwrap();
    }
    let (wb, summary) = open(dir.path(), storage).await;
    assert_eq!(summary.orphan_files_deleted, 0);
    let files = wb.lake().table_files("db", "cpu%x");
    assert_eq!(read_file(&wb, &files[0].path).await[0].num_rows(), 1);
}

#[tokio::test]
async fn a_persist_bigger_than_a_round_goes_in_rounds_and_persists_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::WriteBufferConfig::new(dir.path().join("wal"));
    // every partition is a round of its own
    config.persist_round_bytes = 1;
    let wb = crate::WriteBuffer::open(config, file_storage(dir.path()))
        .await
        .unwrap()
        .0;
    write(
        &wb,
        &format!(
            "cpu,host=a v=1 1\ncpu,host=a v=2 {HOUR}\nmem,host=a v=3 {}",
            2 * HOUR
        ),
    )
    .await;
    let expected = table_rows(&wb).await;
    let summary = wb.persist(FreezeRule::All).await.unwrap();
    assert_eq!(
        (summary.rounds, summary.files, summary.rows),
        (3, 3, 3),
        "{summary:?}"
    );
    assert_eq!(wb.buffer_rows(), 0);
    assert_eq!(table_rows(&wb).await, expected);
}

#[tokio::test]
async fn float_fields_of_whole_numbers_are_stored_as_integers_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path(), file_storage(dir.path())).await;
    // w: whole numbers and a row without it; e: +-2^53; f: a fraction; z: -0 (an integer
    // would make it 0); big: 2^53 + 2 (whole, but not every integer that far is a float)
    write(
        &wb,
        "cpu,host=a w=1,e=9007199254740992,f=1,z=1,big=1 10\n\
         cpu,host=a w=-7,e=-9007199254740992,f=0.5,z=-0,big=9007199254740994 20\n\
         cpu,host=b f=2,e=0,z=3,big=4 30",
    )
    .await;
    let before = table_rows(&wb).await;
    wb.persist(FreezeRule::All).await.unwrap();
    assert_eq!(table_rows(&wb).await, before);
    let files = wb.lake().table_files("db", "cpu");
    assert_eq!(files.len(), 1);
    let bytes = file_bytes(&wb, &files[0].path).await;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
    let stored: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        stored,
        [
            "big:Float64",
            "e:Int64",
            "f:Float64",
            "host:Dictionary(Int32, Utf8)",
            "time:Timestamp(ns)",
            "w:Int64",
            "z:Float64"
        ]
    );
    let schema_json = sluice_schema(builder.metadata());
    assert!(
        schema_json.contains(r#"{"name":"w","role":"field","type":"float"}"#)
            && schema_json.contains(r#"{"name":"f","role":"field"}"#),
        "{schema_json}"
    );
    // read back in the table's schema: floats again, nulls where they were, -0 still -0
    let catalog = wb.catalog();
    let schema = catalog.table("db", "cpu").unwrap();
    let batches = crate::lake::parquet::read_parquet(bytes, schema).unwrap();
    assert_eq!(batches[0].schema(), *schema.arrow_schema());
    let z = batches[0]
        .column_by_name("z")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap();
    assert!(z.values().iter().any(|v| *v == 0.0 && v.is_sign_negative()));
    assert_eq!(
        pretty_format_batches(&batches).unwrap().to_string(),
        before,
        "one file, already merged: the rows as the buffer had them"
    );
}

#[tokio::test]
async fn pages_hold_the_configured_rows() {
    // 40,000 rows of one series: two pages at the default 32 Ki rows, five at 8 Ki
    let lp: String = (0..40_000)
        .map(|i: i64| format!("cpu,host=a v={i} {}\n", i * 1_000_000))
        .collect();
    for (page_rows, pages) in [(None, 2), (Some(8 * 1024), 5)] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::write_buffer::WriteBufferConfig::new(dir.path().join("wal"));
        if let Some(rows) = page_rows {
            config.parquet_page_rows = rows;
        }
        let (wb, _) = crate::write_buffer::WriteBuffer::open(config, file_storage(dir.path()))
            .await
            .unwrap();
        write(&wb, &lp).await;
        wb.persist(FreezeRule::All).await.unwrap();
        let files = wb.lake().table_files("db", "cpu");
        let bytes = file_bytes(&wb, &files[0].path).await;
        let builder = with_page_index(bytes);
        let offsets = builder.metadata().offset_index().unwrap();
        for column in &offsets[0] {
            assert_eq!(column.page_locations().len(), pages, "{page_rows:?}");
        }
    }
}
