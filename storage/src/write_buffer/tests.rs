use super::*;
use crate::TimeRange;
use crate::lake::store::ObjectStorage;
use crate::test_util::batch;
use crate::wal::WalError;
use crate::wal::{self, WalWriter};
use arrow::util::pretty::pretty_format_batches;
use object_store::path::Path;
use std::io::Write as _;

async fn open(dir: &std::path::Path) -> (WriteBuffer, ReplaySummary) {
    let storage = ObjectStorage::from_config(&crate::lake::store::ObjectStoreConfig::file(
        dir.join("lake"),
    ))
    .unwrap();
    WriteBuffer::open(WriteBufferConfig::new(dir.join("wal")), storage)
        .await
        .unwrap()
}

fn show(wb: &WriteBuffer, db: &str, table: &str) -> String {
    let catalog = wb.catalog();
    let schema = catalog.table(db, table).expect("table exists");
    let scan = wb
        .table_buffer(db, table)
        .expect("buffer exists")
        .scan(schema, TimeRange::ALL);
    pretty_format_batches(&scan.batches()).unwrap().to_string()
}

fn rows(wb: &WriteBuffer, db: &str, table: &str) -> usize {
    let catalog = wb.catalog();
    let schema = catalog.table(db, table).expect("table exists");
    wb.table_buffer(db, table)
        .unwrap()
        .scan(schema, TimeRange::ALL)
        .chunks
        .iter()
        .map(|c| &c.batch)
        .map(|b| b.num_rows())
        .sum()
}

#[tokio::test]
async fn acknowledged_write_is_queryable_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (wb, _) = open(dir.path()).await;
        let out = wb
            .write(
                "db",
                batch("cpu,host=a v=1 10\ncpu,host=b v=2 10\nmem free=3i 10"),
                WriteOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(out.accepted_points, 3);
        assert_eq!(out.accepted_values, 3);
        wb.write("db", batch("cpu,host=a w=5 10"), WriteOptions::default())
            .await
            .unwrap();
        let shown = show(&wb, "db", "cpu");
        assert!(
            shown.contains("| a    | 1970-01-01T00:00:00.000000010 | 1.0 | 5.0 |"),
            "{shown}"
        );
        assert!(wb.metrics().wal_fsync.count() >= 2);
        shown
        // dropped here without an orderly shutdown of anything but the WAL thread
    };
    let (wb, summary) = open(dir.path()).await;
    assert_eq!(summary.records, 2);
    assert_eq!(summary.points, 4);
    assert!(summary.cut_tails.is_empty());
    assert_eq!(show(&wb, "db", "cpu"), before);
    assert_eq!(rows(&wb, "db", "mem"), 1);
}

#[tokio::test]
async fn torn_tail_is_cut_at_start_up_and_the_rest_replays() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wb, _) = open(dir.path()).await;
        for i in 0..5 {
            wb.write(
                "db",
                batch(&format!("m v={i} {i}")),
                WriteOptions::default(),
            )
            .await
            .unwrap();
        }
    }
    // a crash in the middle of appending the sixth record
    let segments = wal::list_segments(&dir.path().join("wal")).unwrap();
    let (_, last) = segments.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]).unwrap();
    drop(f);
    let (wb, summary) = open(dir.path()).await;
    assert_eq!(summary.cut_tails.len(), 1);
    assert_eq!(summary.points, 5);
    assert_eq!(rows(&wb, "db", "m"), 5);
    // and the server goes on writing after it
    wb.write("db", batch("m v=9 9"), WriteOptions::default())
        .await
        .unwrap();
    drop(wb);
    let (wb, summary) = open(dir.path()).await;
    assert!(summary.cut_tails.is_empty());
    assert_eq!(rows(&wb, "db", "m"), 6);
}

#[tokio::test]
async fn refused_partial_write_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path()).await;
    wb.write("db", batch("m v=1 1"), WriteOptions::default())
        .await
        .unwrap();
    let opts = WriteOptions {
        accept_partial: false,
        no_sync: false,
    };
    let out = wb
        .write("db", batch("m v=2 2\nm v=3i 3\nnew_table x=1 1"), opts)
        .await
        .unwrap();
    assert!(out.all_refused);
    assert_eq!(out.accepted_points, 0);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].line, 2);
    assert_eq!(rows(&wb, "db", "m"), 1);
    assert!(wb.catalog().table("db", "new_table").is_none());

    // with partial writes accepted, the good lines are stored
    let out = wb
        .write("db", batch("m v=2 2\nm v=3i 3"), WriteOptions::default())
        .await
        .unwrap();
    assert!(!out.all_refused);
    assert_eq!(out.accepted_points, 1);
    assert_eq!(rows(&wb, "db", "m"), 2);
}

#[tokio::test]
async fn no_sync_write_is_queryable_when_acknowledged_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wb, _) = open(dir.path()).await;
        let opts = WriteOptions {
            accept_partial: true,
            no_sync: true,
        };
        wb.write("db", batch("m v=1 1"), opts).await.unwrap();
        assert_eq!(rows(&wb, "db", "m"), 1);
        wb.shutdown();
        assert!(matches!(
            wb.write("db", batch("m v=2 2"), opts).await,
            Err(WriteError::Wal(WalError::ShuttingDown))
        ));
    }
    let (wb, _) = open(dir.path()).await;
    assert_eq!(rows(&wb, "db", "m"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path()).await;
    let wb = Arc::new(wb);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let wb = wb.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                wb.write(
                    "db",
                    batch(&format!("m,writer={t} v={i} {i}")),
                    WriteOptions::default(),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(rows(&wb, "db", "m"), 200);
    assert_eq!(wb.metrics().wal_grouped_writes.get(), 200);
    assert!(wb.metrics().wal_fsync.count() <= 200);
    drop(wb);
    let (wb, summary) = open(dir.path()).await;
    assert_eq!(summary.points, 200);
    assert_eq!(rows(&wb, "db", "m"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_that_disagree_on_a_columns_type_store_only_one_type() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path()).await;
    let wb = Arc::new(wb);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let wb = wb.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0;
            for i in 0..25 {
                // half the writers say v is an integer, half a float; each also adds a column
                // of its own, so the catalog keeps changing under the others
                let v = if t % 2 == 0 {
                    format!("{i}i")
                } else {
                    format!("{i}.5")
                };
                let out = wb
                    .write(
                        "db",
                        batch(&format!("m,writer={t} v={v},f{t}_{i}=1 {i}")),
                        WriteOptions::default(),
                    )
                    .await
                    .unwrap();
                accepted += out.accepted_points;
                assert_eq!(out.accepted_points + out.rejected.len(), 1);
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 100, "the writers of the type that came first");
    assert_eq!(rows(&wb, "db", "m"), accepted);
    let shown = show(&wb, "db", "m");
    drop(wb);
    let (wb, summary) = open(dir.path()).await;
    assert_eq!(summary.points, accepted);
    assert_eq!(show(&wb, "db", "m"), shown);
}

#[tokio::test]
async fn full_buffer_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = WriteBufferConfig::new(dir.path().join("wal"));
    config.buffer_memory_limit = 1;
    config.buffer_wait = Duration::ZERO;
    let (wb, _) = WriteBuffer::open(config, ObjectStorage::memory())
        .await
        .unwrap();
    wb.write("db", batch("m v=1 1"), WriteOptions::default())
        .await
        .unwrap();
    let err = wb
        .write("db", batch("m v=2 2"), WriteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::BufferFull { .. }), "{err}");
    assert!(err.to_string().contains("--buffer-memory-limit"));
}

/// Past half the limit a write waits for a persist round instead of adding to the buffer
/// (or, at the limit, being refused): it goes ahead once the round ended.
#[tokio::test]
async fn a_write_past_half_the_limit_waits_for_a_persist() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = WriteBufferConfig::new(dir.path().join("wal"));
    config.buffer_memory_limit = 4000;
    config.buffer_wait = Duration::from_secs(3600);
    let (wb, _) = WriteBuffer::open(config, ObjectStorage::memory())
        .await
        .unwrap();
    let wb = Arc::new(wb);
    let lines: Vec<String> = (0..500).map(|t| format!("m v={t} {t}")).collect();
    wb.write("db", batch(&lines.join("\n")), WriteOptions::default())
        .await
        .unwrap();
    assert!(wb.buffer_bytes() >= 2000, "over half the limit");
    let waiting = tokio::spawn({
        let wb = wb.clone();
        async move {
            wb.write("db", batch("m v=1 1000"), WriteOptions::default())
                .await
        }
    });
    // the writer asks for room, and waits: no round ended
    tokio::time::timeout(Duration::from_secs(60), wb.buffer.room_wanted())
        .await
        .expect("the writer waits for room");
    assert!(!waiting.is_finished());
    assert_eq!(wb.metrics().write_waits.get(), 0);
    let persisted = wb.persist(FreezeRule::All).await.unwrap();
    assert_eq!(persisted.rows, 500);
    let out = waiting.await.unwrap().expect("accepted once a round ended");
    assert_eq!(out.accepted_points, 1);
    assert_eq!(wb.metrics().write_waits.get(), 1);
    assert_eq!(rows(&wb, "db", "m"), 1, "the second write is buffered");
}

#[tokio::test]
async fn database_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = WriteBufferConfig::new(dir.path().join("wal"));
    config.auto_create_databases = false;
    let (wb, _) = WriteBuffer::open(config, ObjectStorage::memory())
        .await
        .unwrap();
    let err = wb
        .write("nope", batch("m v=1 1"), WriteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::DatabaseNotFound(_)), "{err}");
    let err = wb
        .write("bad.name", batch("m v=1 1"), WriteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::InvalidDatabaseName(_)), "{err}");
}

#[tokio::test]
async fn start_up_deletes_parquet_files_the_catalog_does_not_list_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path()).await;
    wb.write("db", batch("m v=1 1"), WriteOptions::default())
        .await
        .unwrap();
    wb.persist(FreezeRule::All).await.unwrap();
    let listed: Vec<String> = wb.lake().all_files().map(|(_, f)| f.path.clone()).collect();
    assert_eq!(listed.len(), 1);
    // what a persist that died before its catalog change leaves, and an unrelated object
    let orphan = Path::from("dbs/db/m/1970-01-01/00000000000000000099.parquet");
    let other = Path::from("dbs/db/m/notes.txt");
    for p in [&orphan, &other] {
        wb.storage()
            .put(p, bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    wb.shutdown();
    drop(wb);

    let (wb, summary) = open(dir.path()).await;
    assert_eq!(summary.orphan_files_deleted, 1);
    let left = wb.storage().list(&Path::from("dbs")).await.unwrap();
    let left: Vec<&str> = left.iter().map(|p| p.as_ref()).collect();
    assert!(!left.contains(&orphan.as_ref()), "{left:?}");
    assert!(left.contains(&other.as_ref()), "{left:?}");
    assert!(left.contains(&listed[0].as_str()), "{left:?}");
    assert!(
        wb.table_buffer("db", "m").is_none(),
        "the row is in the file, not replayed"
    );
}

#[tokio::test]
async fn wal_records_of_the_first_fixed_width_format_replay() {
    let dir = tempfile::tempdir().unwrap();
    // "m v=1.5 5" in database "db", as record format 1 wrote it
    let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut record = vec![1, 2, 0];
    record.extend_from_slice(b"db");
    record.extend(u32s(&[2, 1, 2, 2])); // symbols: ends [1, 2], 2 bytes of data
    record.extend_from_slice(b"mv");
    record.extend(u32s(&[0, 1, 1])); // no tags; one field: key "v"
    record.push(0);
    record.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
    record.extend(u32s(&[1, 0])); // one point: table "m"
    record.extend_from_slice(&5i64.to_le_bytes());
    record.extend(u32s(&[1, 0, 0, 0, 1])); // line 1, tags 0..0, fields 0..1
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    let mut wal = WalWriter::create(&dir.path().join("wal"), 1 << 20).unwrap();
    wal.append([record.as_slice()]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wb, summary) = open(dir.path()).await;
    assert_eq!(
        (summary.records, summary.points, summary.undecodable),
        (1, 1, 0)
    );
    let shown = show(&wb, "db", "m");
    assert!(
        shown.contains("| 1970-01-01T00:00:00.000000005 | 1.5 |"),
        "{shown}"
    );
}

async fn open_with(
    dir: &std::path::Path,
    change: impl FnOnce(&mut WriteBufferConfig),
) -> WriteBuffer {
    let storage = ObjectStorage::from_config(&crate::lake::store::ObjectStoreConfig::file(
        dir.join("lake"),
    ))
    .unwrap();
    let mut config = WriteBufferConfig::new(dir.join("wal"));
    change(&mut config);
    WriteBuffer::open(config, storage).await.unwrap().0
}

#[tokio::test]
async fn points_too_far_ahead_of_the_clock_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_767_225_600_000_000_000i64; // 2026-01-01
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(now));
    let wb = open_with(dir.path(), |c| {
        c.clock = crate::time::Clock::manual(clock.clone());
        c.max_future = Some(std::time::Duration::from_secs(2 * 86_400));
    })
    .await;
    let day = 86_400_000_000_000i64;
    let lp = format!(
        "m v=1 {}\nm v=2 {}\nm v=3 {}\nm v=4 9000000000000000000",
        now + day,
        now + 2 * day,
        now + 2 * day + 1
    );
    let out = wb
        .write("db", batch(&lp), WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(out.accepted_points, 2);
    let lines: Vec<u32> = out.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![3, 4]);
    let m = &out.rejected[1].message;
    assert!(
        m.contains("2255-") && m.contains("more than 2d ahead"),
        "{m}"
    );
    assert!(
        m.contains("--max-future") && m.contains("2026-01-01T00:00:00Z"),
        "{m}"
    );
    // refusing partial writes, nothing is written
    let out = wb
        .write(
            "db",
            batch(&format!("m v=5 {now}\nm v=6 {}", now + 3 * day)),
            WriteOptions {
                accept_partial: false,
                no_sync: false,
            },
        )
        .await
        .unwrap();
    assert!(out.all_refused);
    assert_eq!(rows(&wb, "db", "m"), 2);
}

#[tokio::test]
async fn a_wal_past_its_bound_gets_everything_persisted_whatever_the_hours() {
    // segments of 1 KiB are closed (and cut to their records) at once
    const BOUND: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let now = 1_767_225_600_000_000_000i64;
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(now));
    let wb = open_with(dir.path(), |c| {
        c.clock = crate::time::Clock::manual(clock.clone());
        c.wal_segment_bytes = 1024;
        c.wal_persist_bytes = BOUND;
    })
    .await;
    // a point ten years ahead: its hour does not end in any test's lifetime
    let lp: String = (0..2000)
        .map(|i| format!("m,k=v{i} v={i} {}\n", now + 3650 * 86_400_000_000_000))
        .collect();
    write_all(&wb, &lp).await;
    assert_eq!(wb.persist_due(now), None, "small WAL, hour not ended");
    for round in 0..60 {
        let lp: String = (0..2000)
            .map(|i| {
                format!(
                    "m,k=v{i} v={} {now}\n",
                    (i * 7919 + round * 104_729) as f64 / 3.0
                )
            })
            .collect();
        write_all(&wb, &lp).await;
    }
    let bytes = wal::bytes_on_disk(&dir.path().join("wal")).unwrap();
    assert!(bytes > BOUND, "{bytes}");
    let rule = wb.persist_due(now).expect("the WAL is over its bound");
    assert!(matches!(rule, FreezeRule::All), "{rule:?}");
    let s = wb.persist(rule).await.unwrap();
    assert_eq!(wb.buffer_rows(), 0, "{s:?}");
    assert!(wal::bytes_on_disk(&dir.path().join("wal")).unwrap() < BOUND);
    assert_eq!(wb.persist_due(now), None);
}

async fn write_all(wb: &WriteBuffer, lp: &str) {
    let out = wb
        .write("db", batch(lp), WriteOptions::default())
        .await
        .unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
}

#[tokio::test]
async fn writes_to_what_is_being_deleted_are_refused_until_the_delete_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path()).await;
    write_all(&wb, "cpu v=1 1\nmem v=1 1").await;
    wb.catalog.set_deleting(Some(crate::catalog::Deleting {
        db: "db".into(),
        table: Some("cpu".into()),
    }));
    let refused = wb
        .write("db", batch("mem v=2 2\ncpu v=2 2"), WriteOptions::default())
        .await;
    let Err(e @ WriteError::BeingDeleted(_)) = refused else {
        panic!("{refused:?}");
    };
    assert!(
        e.to_string()
            .contains("table 'cpu' of database 'db' is being deleted")
    );
    // other tables and databases are written meanwhile
    write_all(&wb, "mem v=3 3").await;
    wb.write("other", batch("cpu v=1 1"), WriteOptions::default())
        .await
        .unwrap();
    wb.catalog.set_deleting(None);
    write_all(&wb, "cpu v=4 4").await;
    assert_eq!(rows(&wb, "db", "cpu"), 2);
}
