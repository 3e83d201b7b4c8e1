use super::*;
use crate::Format;
use sluice_ingest::line_protocol::{ParseOptions, Precision, parse};
use sluice_storage::{FreezeRule, WriteBuffer, WriteBufferConfig, WriteOptions};

struct Fixture {
    _dir: tempfile::TempDir,
    exec: QueryExecutor,
    buffer: Arc<WriteBuffer>,
}

async fn fixture(config: QueryConfig) -> Fixture {
    fixture_at(config, sluice_storage::Clock::system()).await
}

/// A fixture whose storage reads the time from `clock`.
async fn fixture_at(config: QueryConfig, clock: sluice_storage::Clock) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut wb_config = WriteBufferConfig::new(dir.path().join("wal"));
    wb_config.clock = clock;
    let (buffer, _) = WriteBuffer::open(wb_config, sluice_storage::ObjectStorage::memory())
        .await
        .unwrap();
    let buffer = Arc::new(buffer);
    let exec = QueryExecutor::new(buffer.read_view(), config).unwrap();
    Fixture {
        _dir: dir,
        exec,
        buffer,
    }
}

impl Fixture {
    /// `sql` in `db` as a stream of batches.
    async fn stream(&self, sql: &str) -> SendableRecordBatchStream {
        let (_, s) = self
            .exec
            .query_stream("db", sql, HashMap::new(), None)
            .await
            .unwrap();
        s
    }

    async fn write(&self, db: &str, lp: &str) {
        let out = parse(
            lp.as_bytes(),
            &ParseOptions {
                precision: Precision::Second,
                default_time: 0,
                max_line_bytes: 1 << 20,
            },
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let w = self
            .buffer
            .write(db, out.batch, WriteOptions::default())
            .await
            .unwrap();
        assert!(w.rejected.is_empty(), "{:?}", w.rejected);
    }

    async fn sql(&self, db: &str, sql: &str) -> Result<String, QueryError> {
        self.sql_params(db, sql, HashMap::new()).await
    }

    async fn sql_params(
        &self,
        db: &str,
        sql: &str,
        params: HashMap<String, ScalarValue>,
    ) -> Result<String, QueryError> {
        let out = self.exec.query(db, sql, params).await?;
        let bytes = Format::Pretty.encode(&out.schema, &out.batches).unwrap();
        Ok(String::from_utf8(bytes).unwrap())
    }
}

const CPU: &str = "cpu,host=a,region=eu usage=10,n=1i 100\n\
                   cpu,host=b,region=us usage=20,n=2i 100\n\
                   cpu,host=a,region=eu usage=30,n=3i 200\n\
                   mem,host=a free=5i 100";

#[tokio::test]
async fn select_filters_and_aggregates() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    let out = f
        .sql(
            "db",
            "SELECT host, sum(usage) AS total FROM cpu WHERE region = 'eu' GROUP BY host",
        )
        .await
        .unwrap();
    assert_eq!(
        out.trim(),
        "+------+-------+\n| host | total |\n+------+-------+\n| a    | 40.0  |\n+------+-------+"
    );
    let out = f
        .sql(
            "db",
            "SELECT * FROM cpu WHERE time > '1970-01-01T00:02:00Z' ORDER BY host",
        )
        .await
        .unwrap();
    assert!(
        out.contains("| a    | 3 | eu     | 1970-01-01T00:03:20 | 30.0  |"),
        "{out}"
    );
    assert_eq!(out.matches("\n|").count(), 2, "{out}");
}

#[tokio::test]
async fn information_schema_and_show() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.write("other", "disk used=1i 1").await;
    let tables = f.sql("db", "SHOW TABLES").await.unwrap();
    assert!(
        tables.contains("| public        | db                 | cpu"),
        "{tables}"
    );
    assert!(tables.contains("| mem "), "{tables}");
    let cols = f.sql("db", "SHOW COLUMNS FROM cpu").await.unwrap();
    for c in ["host", "region", "usage", "n", "time"] {
        assert!(cols.contains(&format!("| {c} ")), "{c} missing from {cols}");
    }
    assert!(cols.contains("Dictionary(Int32, Utf8)"), "{cols}");
    let out = f
        .sql(
            "db",
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'db' ORDER BY 1",
        )
        .await
        .unwrap();
    assert!(out.contains("| cpu ") && out.contains("| mem "), "{out}");
    assert!(!out.contains("disk"), "{out}");
}

#[tokio::test]
async fn other_databases_are_reachable_as_db_dot_table() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.write("other", "disk,host=a used=7i 100").await;
    let out = f
        .sql(
            "db",
            "SELECT c.host, d.used FROM cpu c JOIN other.disk d ON c.host = d.host AND c.time = d.time",
        )
        .await
        .unwrap();
    assert!(out.contains("| a    | 7    |"), "{out}");
    let err = f.sql("db", "SELECT * FROM disk").await.unwrap_err();
    assert!(matches!(err, QueryError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("disk"), "{err}");
}

/// SQL written for InfluxDB 3 names its tables `iox.<table>` (Grafana's examples do): `iox`
/// is the query's own database, unless a database of that name exists.
#[tokio::test]
async fn iox_names_the_query_database() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.write("other", "cpu,host=z usage=9 1").await;
    let out = f
        .sql("db", "SELECT count(*) AS n FROM iox.cpu")
        .await
        .unwrap();
    let plain = f.sql("db", "SELECT count(*) AS n FROM cpu").await.unwrap();
    assert_eq!(out, plain);
    let out = f.sql("other", "SELECT host FROM iox.cpu").await.unwrap();
    assert!(out.contains("| z    |"), "{out}");
    // not listed: every table would show twice
    let schemas = f
        .sql(
            "db",
            "SELECT DISTINCT table_schema FROM information_schema.tables",
        )
        .await
        .unwrap();
    assert!(!schemas.contains("iox"), "{schemas}");
    // no database may be called `iox`: it would change what `iox.cpu` means for every reader
    let out = parse(
        b"cpu,host=i usage=1 1",
        &ParseOptions {
            precision: Precision::Second,
            default_time: 0,
            max_line_bytes: 1 << 20,
        },
    );
    let refused = f
        .buffer
        .write("iox", out.batch, WriteOptions::default())
        .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn only_reading_statements_run() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    for sql in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/sluice-copy-test.csv'",
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE cpu",
        "INSERT INTO cpu (host, usage, time) VALUES ('x', 1.0, now())",
        "DELETE FROM cpu",
        "SET datafusion.execution.batch_size = 1",
    ] {
        match f.sql("db", sql).await {
            Err(QueryError::NotAllowed(m)) => assert!(!m.is_empty()),
            Err(e) => panic!("{sql}: unexpected error kind {e:?}"),
            Ok(out) => panic!("{sql} ran: {out}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/sluice-copy-test.csv").exists());
    // the table is still there
    assert!(
        f.sql("db", "SELECT count(*) FROM cpu")
            .await
            .unwrap()
            .contains("| 3 ")
    );
}

#[tokio::test]
async fn named_parameters() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    let params = HashMap::from([
        ("host".to_string(), ScalarValue::from("a")),
        ("min".to_string(), ScalarValue::Float64(Some(15.0))),
    ]);
    let out = f
        .sql_params(
            "db",
            "SELECT usage FROM cpu WHERE host = $host AND usage > $min",
            params,
        )
        .await
        .unwrap();
    assert!(out.contains("| 30.0  |"), "{out}");
    assert!(!out.contains("10.0"), "{out}");
}

#[tokio::test]
async fn unknown_database_and_bad_sql() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    assert!(matches!(
        f.sql("nope", "SELECT 1").await,
        Err(QueryError::DatabaseNotFound(_))
    ));
    let err = f.sql("db", "SELEC 1").await.unwrap_err();
    assert!(matches!(err, QueryError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn time_predicates_prune_buffer_partitions() {
    let f = fixture(QueryConfig::default()).await;
    // three hours of data, one point per hour
    f.write("db", "m v=1 0\nm v=2 3600\nm v=3 7200").await;
    let plan = f
        .sql(
            "db",
            "EXPLAIN SELECT v FROM m WHERE time >= '1970-01-01T01:00:00Z' AND time < '1970-01-01T02:00:00Z'",
        )
        .await
        .unwrap();
    assert!(plan.contains("buffer_partitions=1/3"), "{plan}");
    let plan = f.sql("db", "EXPLAIN SELECT v FROM m").await.unwrap();
    assert!(plan.contains("buffer_partitions=3/3"), "{plan}");
    let out = f
        .sql(
            "db",
            "SELECT v FROM m WHERE time >= '1970-01-01T01:00:00Z' AND time < '1970-01-01T02:00:00Z'",
        )
        .await
        .unwrap();
    assert!(
        out.contains("| 2.0 |") && !out.contains("1.0") && !out.contains("3.0"),
        "{out}"
    );
}

#[tokio::test]
async fn memory_limit_and_timeout() {
    let f = fixture(QueryConfig {
        memory_limit: 1024,
        timeout: Duration::from_secs(60),
        ..QueryConfig::default()
    })
    .await;
    f.write("db", CPU).await;
    let err = f
        .sql(
            "db",
            "SELECT v, count(*) FROM (SELECT value % 100000 AS v FROM generate_series(1, 1000000)) GROUP BY v",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::MemoryLimit { .. }), "{err:?}");
    assert!(err.to_string().contains("--query-memory-limit"));

    let f = fixture(QueryConfig {
        memory_limit: 1 << 30,
        timeout: Duration::from_millis(50),
        ..QueryConfig::default()
    })
    .await;
    f.write("db", CPU).await;
    let err = f
        .sql(
            "db",
            "SELECT count(*) FROM generate_series(1, 100000000000)",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Timeout(_)), "{err:?}");
}

const HOUR: i64 = 3600;

/// Rows of `sql` with the persisted files and the buffer as they are, and again with
/// everything persisted: the two must be equal.
#[tokio::test]
async fn files_and_buffer_answer_like_the_buffer_alone() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.write(
        "db",
        &format!("cpu,host=a,region=eu usage=40,n=4i {}", 2 * HOUR + 1),
    )
    .await;
    let q = "SELECT host, region, usage, n, time FROM cpu ORDER BY time, host";
    let before = f.sql("db", q).await.unwrap();
    let s = f.buffer.persist(FreezeRule::All).await.unwrap();
    assert_eq!(s.files, 3, "cpu in two hours, mem in one");
    assert_eq!(f.buffer.buffer_rows(), 0);
    assert_eq!(f.sql("db", q).await.unwrap(), before);
    let plan = f.sql("db", &format!("EXPLAIN {q}")).await.unwrap();
    assert!(
        plan.contains("files=2/2, buffer_partitions=0/0, deduplicated_groups=0"),
        "{plan}"
    );
}

#[tokio::test]
async fn a_write_after_persist_overwrites_the_persisted_row() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    // same key as a persisted row: usage overwritten, n kept from the file
    f.write("db", "cpu,host=a,region=eu usage=99 100").await;
    let q = "SELECT host, usage, n FROM cpu WHERE time = '1970-01-01T00:01:40' ORDER BY host";
    let out = f.sql("db", q).await.unwrap();
    assert_eq!(
        out,
        "+------+-------+---+\n\
         | host | usage | n |\n\
         +------+-------+---+\n\
         | a    | 99.0  | 1 |\n\
         | b    | 20.0  | 2 |\n\
         +------+-------+---+\n"
    );
    // a filter on a field sees only the merged value
    let out = f
        .sql("db", "SELECT count(*) AS n FROM cpu WHERE usage = 10")
        .await
        .unwrap();
    assert!(out.contains("| 0 |"), "{out}");
    let plan = f.sql("db", &format!("EXPLAIN {q}")).await.unwrap();
    assert!(plan.contains("deduplicated_groups=1"), "{plan}");
    // persisted again, the two files overlap and are still merged
    f.buffer.persist(FreezeRule::All).await.unwrap();
    assert_eq!(f.sql("db", q).await.unwrap(), out_expected_after());
}

fn out_expected_after() -> String {
    "+------+-------+---+\n\
     | host | usage | n |\n\
     +------+-------+---+\n\
     | a    | 99.0  | 1 |\n\
     | b    | 20.0  | 2 |\n\
     +------+-------+---+\n"
        .to_string()
}

#[tokio::test]
async fn an_hour_filter_reads_only_that_hours_file() {
    let f = fixture(QueryConfig::default()).await;
    for h in 0..6 {
        f.write("db", &format!("m,host=a v={h} {}", h * HOUR + 10))
            .await;
    }
    f.buffer.persist(FreezeRule::All).await.unwrap();
    let q =
        "SELECT v FROM m WHERE time >= '1970-01-01T03:00:00Z' AND time < '1970-01-01T04:00:00Z'";
    let plan = f.sql("db", &format!("EXPLAIN {q}")).await.unwrap();
    assert!(plan.contains("files=1/6"), "{plan}");
    assert!(f.sql("db", q).await.unwrap().contains("| 3.0 |"));
}

#[tokio::test]
async fn columns_added_after_a_file_read_as_null_from_it() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", "m,host=a v=1 10").await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    f.write(
        "db",
        &format!("m,host=b,zone=z v=2,extra=true {}", 2 * HOUR),
    )
    .await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    let out = f
        .sql("db", "SELECT host, zone, v, extra FROM m ORDER BY host")
        .await
        .unwrap();
    assert_eq!(
        out,
        "+------+------+-----+-------+\n\
         | host | zone | v   | extra |\n\
         +------+------+-----+-------+\n\
         | a    |      | 1.0 |       |\n\
         | b    | z    | 2.0 | true  |\n\
         +------+------+-----+-------+\n"
    );
}

#[tokio::test]
async fn system_parquet_files_lists_the_databases_files() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.write("other", "x v=1 1").await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    let out = f
        .sql(
            "db",
            "SELECT table_name, row_count, min_time, max_time FROM system.parquet_files ORDER BY table_name",
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        "+------------+-----------+---------------------+---------------------+\n\
         | table_name | row_count | min_time            | max_time            |\n\
         +------------+-----------+---------------------+---------------------+\n\
         | cpu        | 3         | 1970-01-01T00:01:40 | 1970-01-01T00:03:20 |\n\
         | mem        | 1         | 1970-01-01T00:01:40 | 1970-01-01T00:01:40 |\n\
         +------------+-----------+---------------------+---------------------+\n"
    );
}

#[tokio::test]
async fn small_scans_are_planned_in_one_partition_and_large_ones_in_several() {
    const Q: &str = "EXPLAIN SELECT host, max(v) FROM m GROUP BY host";
    let lp: String = (0..100)
        .map(|i| format!("m,host=h{} v={i} {}\n", i % 7, 1_000 + i))
        .collect();
    let small = fixture(QueryConfig::default()).await;
    small.write("db", &lp).await;
    let plan = small.sql("db", Q).await.unwrap();
    assert!(!plan.contains("RepartitionExec"), "{plan}");
    assert_eq!(
        small
            .sql("db", "SELECT count(*) AS n FROM m")
            .await
            .unwrap(),
        "+-----+\n| n   |\n+-----+\n| 100 |\n+-----+\n"
    );

    // the same 100 rows are "large" under a threshold of 99
    let large = fixture(QueryConfig {
        single_partition_rows: 99,
        ..QueryConfig::default()
    })
    .await;
    large.write("db", &lp).await;
    let plan = large.sql("db", Q).await.unwrap();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        assert!(plan.contains("RepartitionExec"), "{plan}");
    }
}

#[tokio::test]
async fn buffered_rows_outside_a_querys_time_range_do_not_make_it_large() {
    // 100 rows in each of two hours, under a threshold of 150 rows
    let lp: String = (0..200)
        .map(|i| {
            let hour = (i / 100) * 5;
            format!("m,host=h{} v={i} {}\n", i % 7, hour * HOUR + 1_000 + i)
        })
        .collect();
    let f = fixture(QueryConfig {
        single_partition_rows: 150,
        ..QueryConfig::default()
    })
    .await;
    f.write("db", &lp).await;
    let one_hour = "SELECT host, max(v) FROM m WHERE time < '1970-01-01T01:00:00Z' GROUP BY host";
    let plan = f.sql("db", &format!("EXPLAIN {one_hour}")).await.unwrap();
    assert!(!plan.contains("RepartitionExec"), "{plan}");
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        let plan = f
            .sql("db", "EXPLAIN SELECT host, max(v) FROM m GROUP BY host")
            .await
            .unwrap();
        assert!(plan.contains("RepartitionExec"), "{plan}");
    }
    assert_eq!(
        f.sql(
            "db",
            "SELECT count(*) AS n, max(v) AS v FROM m WHERE time < '1970-01-01T01:00:00Z'"
        )
        .await
        .unwrap(),
        "+-----+------+\n| n   | v    |\n+-----+------+\n| 100 | 99.0 |\n+-----+------+\n"
    );
}

#[tokio::test]
async fn files_declare_their_order_only_to_queries_that_order_or_group_by_its_first_column() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    let files = f.buffer.lake().table_files("db", "cpu");
    let first = files[0].sort_key[0].clone();
    let declared = |plan: &str| plan.contains("output_ordering=");
    for q in [
        format!("SELECT * FROM cpu ORDER BY {first}, time"),
        format!("SELECT {first}, max(usage) FROM cpu GROUP BY {first}"),
        // (a filter on time, or it would read the newest rows kept per series, not the files)
        format!(
            "SELECT DISTINCT ON ({first}) * FROM cpu WHERE time > '1970-01-01T00:00:00Z' \
             ORDER BY {first}, time DESC"
        ),
    ] {
        let plan = f.sql("db", &format!("EXPLAIN {q}")).await.unwrap();
        assert!(declared(&plan), "{q}: {plan}");
    }
    for q in [
        "SELECT * FROM cpu WHERE usage > 15 ORDER BY time",
        "SELECT * FROM cpu",
    ] {
        let plan = f.sql("db", &format!("EXPLAIN {q}")).await.unwrap();
        assert!(!declared(&plan), "{q}: {plan}");
    }
    // either way the answer is the same
    assert_eq!(
        f.sql("db", "SELECT host, usage FROM cpu ORDER BY time, host")
            .await
            .unwrap(),
        "+------+-------+\n\
         | host | usage |\n\
         +------+-------+\n\
         | a    | 10.0  |\n\
         | b    | 20.0  |\n\
         | a    | 30.0  |\n\
         +------+-------+\n"
    );
}

#[tokio::test]
async fn a_small_grouped_query_reads_its_files_side_by_side_in_their_order() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.write(
        "db",
        &format!("cpu,host=b,region=us usage=5,n=9i {}", 2 * HOUR),
    )
    .await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    let files = f.buffer.lake().table_files("db", "cpu");
    assert_eq!(files.len(), 2);
    let first = files[0].sort_key[0].clone();
    let q = format!("SELECT {first}, max(usage) AS m FROM cpu GROUP BY {first} ORDER BY {first}");
    let plan = f.sql("db", &format!("EXPLAIN {q}")).await.unwrap();
    // one partition would do for its few rows; each file is read in its own, in order
    assert!(plan.contains("file_groups={2 groups"), "{plan}");
    assert!(plan.contains("output_ordering="), "{plan}");
    assert!(plan.contains("ordering_mode=Sorted"), "{plan}");
    let out = f.sql("db", &q).await.unwrap();
    assert!(
        out.contains("| a    | 30.0 |") && out.contains("| b    | 20.0 |"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_in_different_databases_at_once_each_see_their_own_system_tables() {
    let f = Arc::new(fixture(QueryConfig::default()).await);
    f.write("one", "a v=1 1").await;
    f.write("two", "b v=1 1\nc v=1 1").await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    let q = "SELECT count(*) AS n FROM system.parquet_files";
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move {
                let (db, n) = if i % 2 == 0 { ("one", 1) } else { ("two", 2) };
                (f.sql(db, q).await.unwrap(), n)
            })
        })
        .collect();
    for t in tasks {
        let (out, n) = t.await.unwrap();
        assert!(out.contains(&format!("| {n} |")), "{out}");
    }
}

#[tokio::test]
async fn retention_hides_the_old_rows_of_files_and_buffer_chunks_that_straddle_its_cutoff() {
    use std::sync::atomic::AtomicI64;
    let s = 1_000_000_000;
    // the cutoff, 2,200 s after the epoch, falls inside the file and inside a buffer hour
    let now = Arc::new(AtomicI64::new((3600 + 2200) * s));
    let f = fixture_at(QueryConfig::default(), sluice_storage::Clock::manual(now)).await;
    f.write(
        "db",
        "cpu,host=a usage=1 1000\ncpu,host=a usage=3 3000\ncpu,host=b usage=4 4000",
    )
    .await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    f.write("db", "cpu,host=b usage=1.5 1500\ncpu,host=b usage=2.5 2500")
        .await;
    let all = "SELECT usage FROM cpu ORDER BY usage";
    assert!(f.sql("db", all).await.unwrap().contains("| 1.0   |"));
    f.buffer
        .set_retention("db", sluice_storage::Retention::parse("1h").unwrap())
        .await
        .unwrap();
    let usage = |out: String| -> Vec<String> {
        out.lines()
            .skip(3)
            .filter(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                cells.join(" | ")
            })
            .collect()
    };
    // without `time` in the query, with it, counted, and by the newest row of each series
    assert_eq!(
        usage(f.sql("db", all).await.unwrap()),
        ["2.5", "3.0", "4.0"]
    );
    let with_time = "SELECT usage FROM cpu WHERE time > '1970-01-01T00:00:00Z' ORDER BY time";
    assert_eq!(
        usage(f.sql("db", with_time).await.unwrap()),
        ["2.5", "3.0", "4.0"]
    );
    let n = f.sql("db", "SELECT count(*) AS n FROM cpu").await.unwrap();
    assert!(n.contains("| 3 |"), "{n}");
    let per_host = "SELECT host, count(usage) AS n FROM cpu GROUP BY host ORDER BY host";
    assert_eq!(
        usage(f.sql("db", per_host).await.unwrap()),
        ["a | 1", "b | 2"]
    );
}

#[tokio::test]
async fn a_streamed_query_ends_with_the_timeout_error_once_its_time_is_up() {
    use futures::StreamExt;
    let f = fixture(QueryConfig::default()).await;
    f.write("db", "cpu v=1 1").await;
    let sql = "SELECT value FROM generate_series(1, 100000)";
    let hour = std::time::Duration::from_secs(3600);
    // time left: every row comes through
    let s = until(
        f.stream(sql).await,
        tokio::time::Instant::now() + hour,
        hour,
    );
    let rows: usize = s
        .map(|b| b.unwrap().num_rows())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(rows, 100_000);
    // time up: the error, then the end
    let mut s = until(f.stream(sql).await, tokio::time::Instant::now(), hour);
    let e = s.next().await.unwrap().unwrap_err();
    assert!(e.to_string().contains("--query-timeout"), "{e}");
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn queries_past_the_concurrency_limit_wait_then_are_refused() {
    let f = fixture(QueryConfig {
        max_concurrent: 1,
        queue_timeout: std::time::Duration::from_millis(50),
        ..QueryConfig::default()
    })
    .await;
    f.write("db", CPU).await;
    // a streamed answer counts as running until it is read or dropped
    let (_, held) = f
        .exec
        .query_stream("db", "SELECT * FROM cpu", HashMap::new(), None)
        .await
        .unwrap();
    let err = f.sql("db", "SELECT count(*) FROM cpu").await.unwrap_err();
    assert!(matches!(err, QueryError::Busy(1)), "{err:?}");
    assert!(
        err.to_string().contains("--max-concurrent-queries"),
        "{err}"
    );
    drop(held);
    assert!(f.sql("db", "SELECT count(*) FROM cpu").await.is_ok());
}

#[tokio::test]
async fn the_profile_counts_each_phase_and_the_parquet_scans_parts() {
    let f = fixture(QueryConfig::default()).await;
    f.write("db", CPU).await;
    f.buffer.persist(FreezeRule::All).await.unwrap();
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    };
    let mut before = String::new();
    f.exec.profile().render(&mut before);
    assert_eq!(value(&before, "sluice_queries_total"), 0.0);
    f.sql("db", "SELECT host, max(usage) FROM cpu GROUP BY host")
        .await
        .unwrap();
    let mut after = String::new();
    f.exec.profile().render(&mut after);
    assert_eq!(value(&after, "sluice_queries_total"), 1.0);
    for phase in ["plan", "optimize", "physical_plan", "execute"] {
        let series = format!("sluice_query_phase_seconds_total{{phase=\"{phase}\"}}");
        assert!(value(&after, &series) > 0.0, "{series}\n{after}");
    }
    for part in ["open", "metadata", "decode"] {
        let series = format!("sluice_query_scan_seconds_total{{part=\"{part}\"}}");
        assert!(value(&after, &series) > 0.0, "{series}\n{after}");
    }
    let series = "sluice_query_operator_seconds_total{operator=\"AggregateExec\"}";
    assert!(value(&after, series) > 0.0, "{after}");
}

#[tokio::test]
async fn texts_that_differ_in_their_timestamps_share_a_template_and_answer_as_planned_alone() {
    async fn answer(exec: &QueryExecutor, q: String) -> String {
        let out = exec.query("db", &q, HashMap::new()).await.unwrap();
        String::from_utf8(Format::Csv.encode(&out.schema, &out.batches).unwrap()).unwrap()
    }
    let cached = fixture(QueryConfig::default()).await;
    let fresh = QueryExecutor::new(
        cached.buffer.read_view(),
        QueryConfig {
            plan_cache_entries: 0,
            ..QueryConfig::default()
        },
    )
    .unwrap();
    for h in 0..6 {
        for m in 0..6 {
            for host in ["a", "b"] {
                let v = h * 10 + m;
                let t = h * HOUR + m * 600 + 7;
                cached
                    .write("db", &format!("m,host={host} v={v},w={m}i {t}"))
                    .await;
            }
        }
        if h == 3 {
            cached.buffer.persist(FreezeRule::All).await.unwrap();
        }
    }
    let shape = |from: &str, to: &str| {
        format!(
            "SELECT date_bin(INTERVAL '10 minutes', time) AS t, max(v) AS top, count(*) AS n \
             FROM m WHERE host = 'a' AND time >= '{from}' AND time < '{to}' GROUP BY t ORDER BY t"
        )
    };
    let windows = [
        ("1970-01-01T00:00:00Z", "1970-01-01T01:00:00Z"),
        ("1970-01-01T00:30:00Z", "1970-01-01T02:30:00Z"),
        ("1970-01-01T02:50:00Z", "1970-01-01T04:10:00Z"),
        ("1970-01-01 04:00:00", "1970-01-01 06:00:00"),
        ("1970-01-01", "1970-01-02"),
        ("1970-01-01T05:00:00Z", "1970-01-01T03:00:00Z"),
    ];
    for (i, (from, to)) in windows.iter().enumerate() {
        let q = shape(from, to);
        let want = answer(&fresh, q.clone()).await;
        assert_eq!(answer(&cached.exec, q.clone()).await, want, "{q}");
        // the texts' plans, and one template for them all
        assert_eq!(cached.exec.plans.len(), i + 2, "{q}");
        assert_eq!(answer(&cached.exec, q.clone()).await, want, "again: {q}");
    }
    // the bound times reach the scan, which picks the files and chunks to read by them
    let q = shape("1970-01-01T01:00:00Z", "1970-01-01T02:00:00Z");
    answer(&cached.exec, q.clone()).await;
    let key = PlanKey::new("db", &q, None).unwrap();
    let catalog = cached.exec.storage.catalog();
    let plan = cached.exec.plans.get(&key, &catalog).unwrap();
    let shown = plan.display_indent().to_string();
    assert!(
        shown.contains("m.time >= TimestampNanosecond(3600000000000, None)")
            && shown.contains("partial_filters="),
        "{shown}"
    );
    // a timestamp-like string compared with a tag: planned as written
    cached
        .write("db", "m,host=1970-01-01T00:00:00Z v=1 9")
        .await;
    let q = "SELECT count(*) AS n FROM m WHERE host = '1970-01-01T00:00:00Z'";
    assert_eq!(answer(&cached.exec, q.into()).await, "n\n1\n");
    assert_eq!(answer(&fresh, q.into()).await, "n\n1\n");
}
