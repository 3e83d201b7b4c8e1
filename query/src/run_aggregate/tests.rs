//! Aggregates by runs answer what DataFusion's aggregates answer: each query runs with
//! Sluice's rewrites and without, over files (sorted, so runs form) and over files and
//! buffer together.

use std::fmt::Write;

use sluice_storage::FreezeRule;

use crate::QueryConfig;
use crate::testing::{TestStorage, answer};

const QUERIES: &[&str] = &[
    "SELECT host, date_bin(INTERVAL '1 hour', time) AS h, avg(usage) AS a, count(usage) AS c, \
     count(*) AS n, max(n) AS hi, min(n) AS lo, sum(usage) AS s, avg(n) AS an \
     FROM cpu GROUP BY host, h ORDER BY host, h",
    "SELECT date_bin(INTERVAL '10 minutes', time) AS m, max(n) AS hi FROM cpu \
     WHERE host = 'h3' AND time >= '1970-01-01T01:00:00Z' GROUP BY m ORDER BY m",
    "SELECT host, avg(usage) AS a FROM cpu WHERE usage > 3 GROUP BY host ORDER BY host",
    "SELECT host, region, count(n) AS c FROM cpu GROUP BY host, region ORDER BY host, region",
    "SELECT host, date_bin(INTERVAL '7 minutes', time, TIMESTAMP '1970-01-01T00:03:00.001') AS b, \
     avg(usage) AS a, count(n) AS c FROM cpu GROUP BY host, b ORDER BY host, b",
];

/// Rows of 6 hosts every 5 minutes over 3 hours; `usage` missing from every seventh row.
fn data() -> String {
    let mut lp = String::new();
    for step in 0..36 {
        for h in 0..6 {
            let t = step * 300 + h;
            let region = if h % 2 == 0 { "eu" } else { "us" };
            let n = (step * 7 + h * 3) % 23;
            let usage = if (step + h) % 7 == 0 {
                String::new()
            } else {
                format!("usage={}.5,", (step + h) % 9)
            };
            let _ = writeln!(lp, "cpu,host=h{h},region={region} {usage}n={n}i {t}");
        }
    }
    lp
}

#[tokio::test]
async fn aggregates_by_runs_answer_what_the_hash_aggregate_answers() {
    let storage = TestStorage::new().await;
    storage.write(&data()).await;
    storage.buffer.persist(FreezeRule::All).await.unwrap();
    let runs = storage.executor(QueryConfig::default());
    let hash = storage.executor(QueryConfig {
        rewrites: false,
        ..QueryConfig::default()
    });
    let check = |when: &'static str| {
        let (runs, hash) = (&runs, &hash);
        async move {
            for q in QUERIES {
                assert_eq!(answer(runs, q).await, answer(hash, q).await, "{when}: {q}");
            }
        }
    };
    check("files").await;
    // grouped by the files' first sort column: partial aggregates over sorted files
    let plan = answer(&runs, &format!("EXPLAIN {}", QUERIES[0])).await;
    assert!(plan.contains("RunAggregateExec"), "{plan}");
    // and the bins of times are found without binning every row
    for q in [QUERIES[0], QUERIES[4]] {
        let plan = answer(&runs, &format!("EXPLAIN {q}")).await;
        assert!(plan.contains("as bins"), "{plan}");
    }
    // rows of the same groups in the buffer: merged with the files' by the final aggregate
    storage
        .write("cpu,host=h1,region=us usage=100.5,n=99i 3601\ncpu,host=h4,region=eu n=1i 7200")
        .await;
    check("files and buffer").await;
}

#[test]
fn runs_end_where_any_key_changes_nulls_included() {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, DictionaryArray, Int64Array, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::Int32Type;
    use datafusion::physical_expr::expressions::Column;

    use super::{DateBin, Key, runs};

    let host: DictionaryArray<Int32Type> = [Some("a"), Some("a"), None, None, Some("b"), Some("b")]
        .into_iter()
        .collect();
    let n = Int64Array::from(vec![1, 1, 1, 1, 1, 2]);
    let keys = [Key::Values(Arc::new(host)), Key::Values(Arc::new(n))];
    assert_eq!(runs(&keys, 6).unwrap(), vec![0..2, 2..4, 4..5, 5..6]);
    assert!(runs(&keys[..1], 0).unwrap().is_empty());

    // bins of 10 from 3: [3, 13) holds 3, 5, 12; [13, 23) 13 and 14; 2 is in [-7, 3)
    let bin = DateBin {
        stride: 10,
        origin: 3,
        time: Arc::new(Column::new("time", 0)),
    };
    let time: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
        Some(3),
        Some(5),
        Some(12),
        Some(13),
        None,
        None,
        Some(14),
        Some(2),
    ]));
    assert_eq!(
        runs(&[Key::Bins(time, &bin)], 8).unwrap(),
        vec![0..3, 3..4, 4..6, 6..7, 7..8]
    );
    assert_eq!(bin.of_time(2), -7);
    assert_eq!(bin.of_time(23), 23);
}
