use std::time::Duration;

use super::*;
use crate::lake::store::{ObjectStorage, ObjectStoreConfig};
use crate::test_util::{HOUR, table_rows, write};
use crate::{FreezeRule, WriteBuffer, WriteBufferConfig};

async fn open_with_grace(dir: &std::path::Path, grace: Duration) -> WriteBuffer {
    let storage = ObjectStorage::from_config(&ObjectStoreConfig::file(dir.join("lake"))).unwrap();
    let mut config = WriteBufferConfig::new(dir.join("wal"));
    config.replaced_file_grace = grace;
    WriteBuffer::open(config, storage).await.unwrap().0
}

/// The bytes of the files of `db.cpu`.
fn day_bytes(wb: &WriteBuffer) -> u64 {
    bytes_in_of(&wb.lake().table_files("db", "cpu"))
}

/// The files of `db.cpu` cover times that do not overlap.
fn assert_files_do_not_overlap(wb: &WriteBuffer) {
    let mut files = wb.lake().table_files("db", "cpu").to_vec();
    files.sort_by_key(|f| f.min_time);
    for pair in files.windows(2) {
        assert!(pair[0].max_time < pair[1].min_time, "{files:?}");
    }
}

/// Ten persists of one day: new rows and overwrites of earlier ones, hour by hour.
async fn many_small_files(wb: &WriteBuffer) {
    for round in 0..10i64 {
        let mut lp = String::new();
        for host in 0..3 {
            // a new row in hour `round`, and an overwrite of a row of hour 0
            lp.push_str(&format!(
                "cpu,host=h{host} v={round},r={round}i {}\n",
                round * HOUR + host
            ));
            lp.push_str(&format!("cpu,host=h{host} v={} {}\n", 100 + round, host));
        }
        write(wb, &lp).await;
        wb.persist(FreezeRule::All).await.unwrap();
    }
}

#[tokio::test]
async fn compaction_merges_a_days_files_and_keeps_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let wb = open_with_grace(dir.path(), Duration::from_secs(3600)).await;
    many_small_files(&wb).await;
    let before = table_rows(&wb).await;
    let files_before = wb.lake().table_files("db", "cpu");
    assert!(files_before.len() >= 10, "{}", files_before.len());
    let s = wb.compact(100 << 20).await.unwrap();
    assert_eq!(s.days, 1);
    assert_eq!(s.files_in, files_before.len());
    assert_eq!(s.files_out, 1);
    let files = wb.lake().table_files("db", "cpu");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 30);
    assert_eq!(
        files[0].order,
        files_before.iter().map(|f| f.order).max().unwrap()
    );
    assert_eq!(table_rows(&wb).await, before);
    // the replaced files stay until their grace period ends, recorded in the catalog
    assert!(dir.path().join("lake").join(&files_before[0].path).exists());
    assert_eq!(wb.lake().pending_deletes.len(), files_before.len());
    // nothing more to do
    assert_eq!(wb.compact(100 << 20).await.unwrap().days, 0);
    // and after a restart the compacted file is what is listed
    drop(wb);
    let wb = open_with_grace(dir.path(), Duration::from_secs(3600)).await;
    assert_eq!(wb.lake().table_files("db", "cpu").len(), 1);
    assert_eq!(table_rows(&wb).await, before);
}

#[tokio::test]
async fn replaced_files_are_deleted_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let wb = open_with_grace(dir.path(), Duration::ZERO).await;
    many_small_files(&wb).await;
    let old = wb.lake().table_files("db", "cpu");
    wb.compact(100 << 20).await.unwrap();
    let s = wb.compact(100 << 20).await.unwrap();
    assert_eq!(s.files_deleted, old.len());
    for f in old.iter() {
        assert!(
            !dir.path().join("lake").join(&f.path).exists(),
            "{}",
            f.path
        );
    }
    assert!(wb.lake().pending_deletes.is_empty());
}

#[tokio::test]
async fn a_day_too_big_for_one_file_is_split_by_time_without_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let wb = open_with_grace(dir.path(), Duration::from_secs(3600)).await;
    many_small_files(&wb).await;
    let before = table_rows(&wb).await;
    let total = day_bytes(&wb);
    // a target a third of the day's size: three files
    let s = wb.compact(total / 3 + 1).await.unwrap();
    assert_eq!(s.files_out, 3, "{s:?}");
    assert_files_do_not_overlap(&wb);
    assert_eq!(table_rows(&wb).await, before);
}

/// Ranges the rows do not fill make no file: every persist here holds rows at the first and
/// the last hour only (a file each), so a day cut four ways has ranges with nothing in them.
#[tokio::test]
async fn ranges_without_rows_make_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let wb = open_with_grace(dir.path(), Duration::from_secs(3600)).await;
    for round in 0..10i64 {
        write(
            &wb,
            &format!(
                "cpu,host=h{round} v=1 0\ncpu,host=h{round} v=2 {}\n",
                9 * HOUR
            ),
        )
        .await;
        wb.persist(FreezeRule::All).await.unwrap();
    }
    let before = table_rows(&wb).await;
    let total = day_bytes(&wb);
    let s = wb.compact(total / 4 + 1).await.unwrap();
    assert_eq!((s.days, s.files_in, s.files_out), (1, 20, 2), "{s:?}");
    let files = wb.lake().table_files("db", "cpu");
    assert_eq!(files.iter().map(|f| f.rows).collect::<Vec<_>>(), [10, 10]);
    assert_eq!(table_rows(&wb).await, before);
}

#[tokio::test]
async fn large_files_at_the_start_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let wb = open_with_grace(dir.path(), Duration::from_secs(3600)).await;
    many_small_files(&wb).await;
    wb.compact(100 << 20).await.unwrap();
    let big = wb.lake().table_files("db", "cpu")[0].clone();
    // a late overwrite of a compacted row: with the compacted file counted as full, one small
    // file is left, and one file is nothing to merge
    write(&wb, "cpu,host=h0 v=1 0").await;
    wb.persist(FreezeRule::All).await.unwrap();
    let s = wb.compact(big.size_bytes).await.unwrap();
    assert_eq!(s.days, 0, "{s:?}");
    // with a target that makes it small, both merge, and the late write wins
    let s = wb.compact(100 << 20).await.unwrap();
    assert_eq!((s.days, s.files_in, s.files_out), (1, 2, 1));
    let rows = table_rows(&wb).await;
    assert!(
        rows.contains("| h0   | 0 | 1970-01-01T00:00:00           | 1.0   |"),
        "{rows}"
    );
    assert_eq!(wb.lake().table_files("db", "cpu")[0].rows, 30);
}

/// A day cut for compaction falls between files that follow one another, so that each time
/// range reads only its own files.
#[test]
fn a_day_is_cut_between_the_files_of_its_hours() {
    let hourly: Vec<ParquetFile> = (0..6i64)
        .map(|h| ParquetFile {
            id: h as u64,
            path: format!("{h}.parquet"),
            size_bytes: 1000,
            rows: 10,
            min_time: h * HOUR,
            max_time: (h + 1) * HOUR - 1,
            order: h as u64,
            sort_key: Vec::new(),
        })
        .collect();
    assert_eq!(cut_times(&hourly, 3), [2 * HOUR, 4 * HOUR]);
    assert_eq!(cut_times(&hourly, 1), Vec::<i64>::new());
    // a file twice as big counts twice
    let mut skewed = hourly.clone();
    skewed[0].size_bytes = 5000;
    assert_eq!(cut_times(&skewed, 2), [HOUR]);
    // one file alone: cuts within its span
    let cuts = cut_times(&hourly[..1], 4);
    assert_eq!(cuts.len(), 3);
    assert!(cuts.iter().all(|&c| c > 0 && c < HOUR), "{cuts:?}");
}

#[tokio::test]
async fn a_day_bigger_than_the_compaction_memory_is_merged_a_range_at_a_time() {
    // the day's files, as many_small_files writes them, count 57 rows (rows overwritten in
    // later persists included); a cpu row here is host (a tag), v, r and time: 5 + 3 x 9 = 32
    // bytes decoded
    let decoded = 57 * 32;
    let dir = tempfile::tempdir().unwrap();
    let storage =
        ObjectStorage::from_config(&ObjectStoreConfig::file(dir.path().join("lake"))).unwrap();
    let mut config = WriteBufferConfig::new(dir.path().join("wal"));
    config.compaction_memory = decoded / 3 + 1;
    let wb = WriteBuffer::open(config, storage).await.unwrap().0;
    many_small_files(&wb).await;
    let rows: u64 = wb
        .lake()
        .table_files("db", "cpu")
        .iter()
        .map(|f| f.rows)
        .sum();
    assert_eq!(rows * 32, decoded);
    let before = table_rows(&wb).await;
    // a file size target far above the day's: only the memory bound splits it, in three
    let s = wb.compact(100 << 20).await.unwrap();
    assert_eq!(s.files_out, 3, "{s:?}");
    assert_files_do_not_overlap(&wb);
    assert_eq!(table_rows(&wb).await, before);
    // the three are full by the memory bound: the next round leaves them alone
    let files = wb.lake().table_files("db", "cpu");
    let again = wb.compact(100 << 20).await.unwrap();
    assert_eq!(again.days, 0, "{again:?}");
    assert_eq!(wb.lake().table_files("db", "cpu"), files);
}
