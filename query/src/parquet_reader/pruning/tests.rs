use std::sync::Arc;

use datafusion::logical_expr::Expr;
use sluice_storage::FreezeRule;

use crate::QueryConfig;
use crate::testing::{TestStorage, answer};

/// 20 hosts, one point a second each for 1,000 s (several pages a column), with a float
/// field that is missing from some rows, an integer, a string and a boolean field.
fn points(start_s: i64) -> String {
    let mut lp = String::new();
    for i in 0..1000 {
        for h in 0..20 {
            let t = start_s + i;
            let usage = if (i + h) % 17 == 0 {
                String::new()
            } else {
                format!("usage={},", (i * 7 + h * 13) % 100)
            };
            let s = ["x", "y", "z"][((i + h) % 3) as usize];
            let b = (i + h) % 2 == 0;
            lp.push_str(&format!(
                "cpu,host=h{h},rack=r{} {usage}n={}i,s=\"{s}\",b={b} {t}\n",
                h % 4,
                i + h
            ));
        }
    }
    lp
}

/// Queries whose filters prune row groups and pages, and others they cannot use.
const QUERIES: &[&str] = &[
    "SELECT count(*) AS c, sum(n) AS s FROM cpu WHERE host = 'h3'",
    "SELECT count(*) AS c FROM cpu WHERE host IN ('h1', 'h17')",
    "SELECT count(*) AS c FROM cpu WHERE host <> 'h2' AND rack = 'r1'",
    "SELECT count(*) AS c FROM cpu WHERE host LIKE 'h1%'",
    "SELECT count(*) AS c FROM cpu WHERE host = 'nobody'",
    "SELECT count(*) AS c FROM cpu WHERE host > 'h18'",
    "SELECT count(*) AS c, min(usage) AS lo FROM cpu WHERE usage > 90.5",
    "SELECT host, count(*) AS c FROM cpu WHERE n >= 500 AND n < 510 GROUP BY host ORDER BY host",
    "SELECT count(*) AS c FROM cpu WHERE n > 1010.5",
    "SELECT count(*) AS c FROM cpu WHERE usage IS NULL",
    "SELECT count(*) AS c FROM cpu WHERE NOT (host = 'h1') OR usage < 5",
    "SELECT count(*) AS c FROM cpu WHERE s = 'y' AND b = true",
    "SELECT count(*) AS c FROM cpu WHERE b",
    "SELECT count(*) AS c FROM cpu WHERE time >= '1970-01-02T04:00:00Z' AND time < '1970-01-02T04:05:00Z' AND host = 'h5'",
    "SELECT count(*) AS c FROM cpu WHERE cpu.host = 'h9' AND cpu.usage < 50",
    // one host's rows in time order, and two hosts' (not in time order)
    "SELECT date_bin(INTERVAL '1 minute', time) AS m, max(n) AS top, count(usage) AS c FROM cpu WHERE host = 'h7' AND time >= '1970-01-02T03:50:00Z' AND time < '1970-01-02T04:10:00Z' GROUP BY m ORDER BY m",
    "SELECT date_bin(INTERVAL '1 minute', time) AS m, max(n) AS top FROM cpu WHERE host IN ('h2', 'h11') AND time >= '1970-01-02T03:50:00Z' AND time < '1970-01-02T04:10:00Z' GROUP BY m ORDER BY m",
    "SELECT time, n FROM cpu WHERE host = 'h7' AND time < '1970-01-02T03:50:00Z' ORDER BY time DESC LIMIT 3",
    "SELECT date_bin(INTERVAL '1 minute', time) AS m, max(n) AS top FROM cpu WHERE host IN ('h2', 'h11') AND time >= '1970-01-02T03:50:00Z' AND time < '1970-01-02T03:55:00Z' GROUP BY m ORDER BY m",
    // one row each
    "SELECT host, n, usage FROM cpu WHERE host = 'h3' AND time = '1970-01-02T03:50:00Z'",
    "SELECT host, time FROM cpu WHERE n = 1018",
];

/// Queries of a column that only later files have.
const LOAD_QUERIES: &[&str] = &[
    "SELECT count(*) AS c FROM cpu WHERE load > 0.5",
    "SELECT count(*) AS c FROM cpu WHERE load IS NULL AND host = 'h4'",
];

/// Each of `queries`' answers over `batches` (line protocol, each persisted before the next is
/// written, the last one too): as they are buffered; persisted, on a cold executor whose
/// scans leave pruning to DataFusion's opener; and once the files' footers are at hand,
/// pruned as the scans are planned, and by copies of that plan. Returns the storage.
async fn answers_agree(batches: &[String], queries: &[&str]) -> TestStorage {
    let storage = TestStorage::new().await;
    let (last, earlier) = batches.split_last().unwrap();
    for lp in earlier {
        storage.write(lp).await;
        storage.buffer.persist(FreezeRule::All).await.unwrap();
    }
    storage.write(last).await;
    let buffered = storage.executor(QueryConfig::default());
    let mut expected = Vec::new();
    for q in queries {
        expected.push(answer(&buffered, q).await);
    }
    storage.buffer.persist(FreezeRule::All).await.unwrap();
    let storage = storage.restart().await;
    for (q, want) in queries.iter().zip(&expected) {
        // a new executor has read no footer: its first run leaves pruning to the opener
        let exec = storage.executor(QueryConfig::default());
        for run in 0..3 {
            assert_eq!(&answer(&exec, q).await, want, "run {run} of {q}");
        }
    }
    storage
}

#[tokio::test]
async fn files_pruned_when_planned_give_the_answers_of_the_buffer_and_of_the_opener() {
    // 1970-01-02T03:46:40Z on: two hours, two files
    let storage = answers_agree(&[points(100_000)], QUERIES).await;
    // the tag filter leaves both files' row groups; a host that is not there leaves none
    for (q, read) in [
        (
            "SELECT count(*) AS c FROM cpu WHERE host = 'h3'",
            "row_groups=2/2",
        ),
        (
            "SELECT count(*) AS c FROM cpu WHERE host = 'nobody'",
            "row_groups=0/2",
        ),
    ] {
        let exec = storage.executor(QueryConfig::default());
        let plan = answer(&exec, &format!("EXPLAIN {q}")).await;
        assert!(
            !plan.contains("row_groups="),
            "footers not read yet: {plan}"
        );
        answer(&exec, q).await;
        let plan = answer(&exec, &format!("EXPLAIN {q}")).await;
        assert!(plan.contains(read), "{q}: {plan}");
        // narrowed to exactly the rows the filter keeps: the Parquet scan has no predicate
        // to prepare and evaluate, and there is no filter left to apply above it
        assert!(plan.contains("narrowed=exact"), "{q}: {plan}");
        assert!(plan.contains("NarrowedParquetExec"), "{q}: {plan}");
        assert!(!plan.contains("FilterExec"), "{q}: {plan}");
        assert!(!plan.contains("predicate="), "{q}: {plan}");
    }
}

#[tokio::test]
async fn filters_stay_above_narrowed_files_for_what_else_is_scanned_and_what_they_did_not_apply() {
    let storage = TestStorage::new().await;
    storage.write(&points(100_000)).await;
    storage.buffer.persist(FreezeRule::All).await.unwrap();
    let exec = storage.executor(QueryConfig::default());
    let q = "SELECT count(*) AS c FROM cpu WHERE host = 'h3' AND n < 600";
    answer(&exec, q).await;
    assert_eq!(answer(&exec, q).await, answer_of(597));
    // a filter the scan is not given (volatile) stays, and keeps nothing here
    let never = "SELECT count(*) AS c FROM cpu WHERE host = 'h3' AND random() < 0";
    assert_eq!(answer(&exec, never).await, answer_of(0));
    let plan = answer(&exec, &format!("EXPLAIN {never}")).await;
    assert!(plan.contains("narrowed=exact"), "{plan}");
    assert!(plan.contains("FilterExec: random()"), "{plan}");
    // rows in the buffer beside the narrowed files: the filters apply to them above the scan
    storage
        .write("cpu,host=h3 n=1i 101000\ncpu,host=h3 n=700i 101001\ncpu,host=h4 n=1i 101002\n")
        .await;
    assert_eq!(answer(&exec, q).await, answer_of(598));
    let plan = answer(&exec, &format!("EXPLAIN {q}")).await;
    assert!(plan.contains("narrowed=files"), "{plan}");
    assert!(plan.contains("FilterExec"), "{plan}");
}

/// The CSV answer of `SELECT count(*) AS c` that counted `n`.
fn answer_of(n: usize) -> String {
    format!("c\n{n}\n")
}

#[tokio::test]
async fn files_without_a_column_added_since_are_pruned_by_the_opener() {
    let mut later = points(110_000);
    later.push_str("cpu,host=h4 load=0.75 110000\ncpu,host=h0 load=0.25 110001\n");
    let queries = [QUERIES, LOAD_QUERIES].concat();
    let storage = answers_agree(&[points(100_000), later], &queries).await;
    let exec = storage.executor(QueryConfig::default());
    let q = "SELECT count(*) AS c FROM cpu WHERE host = 'h3'";
    answer(&exec, q).await;
    let plan = answer(&exec, &format!("EXPLAIN {q}")).await;
    assert!(!plan.contains("row_groups="), "{plan}");
}

#[test]
fn a_filter_above_a_narrowed_scan_goes_only_if_the_scan_applied_all_of_it() {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::execution::context::SessionContext;
    use datafusion::logical_expr::{col, lit};

    use super::FilePruning;

    let schema = Arc::new(Schema::new(vec![
        Field::new("host", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]));
    let state = SessionContext::new().state();
    let pruning = FilePruning::new(
        &state,
        &schema,
        &[col("host").eq(lit("h3")), col("n").lt(lit(600i64))],
    )
    .unwrap();
    let exact = pruning.exact();
    // the filters over the scan's output, whose columns may be in another order
    let output = DFSchema::try_from(Schema::new(vec![
        Field::new("n", DataType::Int64, true),
        Field::new("host", DataType::Utf8, true),
    ]))
    .unwrap();
    let covered = |e: Expr| exact.cover(&state.create_physical_expr(e, &output).unwrap());
    assert!(covered(col("host").eq(lit("h3"))));
    assert!(covered(
        col("n").lt(lit(600i64)).and(col("host").eq(lit("h3")))
    ));
    assert!(!covered(col("host").eq(lit("h4"))));
    assert!(!covered(col("n").lt(lit(500i64))));
    assert!(!covered(
        col("host").eq(lit("h3")).and(col("n").gt(lit(0i64)))
    ));
    assert!(!covered(
        col("host").eq(lit("h3")).or(col("n").lt(lit(600i64)))
    ));
}

#[tokio::test]
async fn a_narrowed_scan_of_one_series_per_file_declares_its_time_order() {
    let storage = answers_agree(&[points(100_000)], QUERIES).await;
    let exec = storage.executor(QueryConfig::default());
    let by_minute = |hosts: &str| {
        format!(
            "SELECT date_bin(INTERVAL '1 minute', time) AS m, max(n) AS top FROM cpu \
             WHERE host IN ({hosts}) AND time >= '1970-01-02T03:50:00Z' \
             AND time < '1970-01-02T03:55:00Z' GROUP BY m ORDER BY m"
        )
    };
    // one host, one file: its rows come in time order, so the minutes need no sort
    let one = by_minute("'h7'");
    answer(&exec, &one).await;
    let plan = answer(&exec, &format!("EXPLAIN {one}")).await;
    assert!(plan.contains("NarrowedParquetExec"), "{plan}");
    assert!(!plan.contains("SortExec"), "{plan}");
    // two hosts: their rows alternate in time, not in order, so the sort stays
    let two = by_minute("'h2', 'h11'");
    answer(&exec, &two).await;
    let plan = answer(&exec, &format!("EXPLAIN {two}")).await;
    assert!(plan.contains("NarrowedParquetExec"), "{plan}");
    assert!(plan.contains("SortExec"), "{plan}");
}
