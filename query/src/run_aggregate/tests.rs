//! Aggregates by runs answer what DataFusion's aggregates answer: each query runs with
//! Sluice's rewrites and without, over files (sorted, so runs form) and over files and
//! buffer together.

use std::fmt::Write;

use sluice_storage::FreezeRule;

use crate::QueryConfig;
use crate::testing::{TestStorage, answer};

const QUERIES: &[&str] = &[
    "SELECT host, date_bin(INTERVAL '1 hour', time) AS h, avg(usage) AS a, count(usage) AS c, \
     count(*) AS n, max(n) AS hi, min(n) AS lo, sum(usage) AS s \
     FROM cpu GROUP BY host, h ORDER BY host, h",
    "SELECT date_bin(INTERVAL '10 minutes', time) AS m, max(n) AS hi FROM cpu \
     WHERE host = 'h3' AND time >= '1970-01-01T01:00:00Z' GROUP BY m ORDER BY m",
    "SELECT host, avg(usage) AS a FROM cpu WHERE usage > 3 GROUP BY host ORDER BY host",
    "SELECT host, region, count(n) AS c FROM cpu GROUP BY host, region ORDER BY host, region",
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
    // rows of the same groups in the buffer: merged with the files' by the final aggregate
    storage
        .write("cpu,host=h1,region=us usage=100.5,n=99i 3601\ncpu,host=h4,region=eu n=1i 7200")
        .await;
    check("files and buffer").await;
}
