use sluice_storage::FreezeRule;

use crate::QueryConfig;
use crate::testing::{TestStorage, answer};

/// Seconds the optimizer has run, from the executor's profile.
fn optimize_seconds(exec: &crate::QueryExecutor) -> f64 {
    let mut text = String::new();
    exec.profile().render(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("sluice_query_phase_seconds_total{phase=\"optimize\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_repeated_text_is_planned_once_and_still_sees_new_rows_and_columns() {
    let storage = TestStorage::new().await;
    storage
        .write("cpu,host=a usage=1 100\ncpu,host=b usage=2 200")
        .await;
    storage.buffer.persist(FreezeRule::All).await.unwrap();
    // after a restart the table has files and no buffer yet
    let storage = storage.restart().await;
    let exec = storage.executor(QueryConfig::default());
    let q = "SELECT * FROM cpu ORDER BY time";
    assert_eq!(
        answer(&exec, q).await,
        "host,time,usage\na,1970-01-01T00:01:40,1.0\nb,1970-01-01T00:03:20,2.0\n"
    );
    assert_eq!(exec.plans.len(), 1);
    let optimized = optimize_seconds(&exec);

    // a row written since: the kept plan reads the buffer that now exists
    storage.write("cpu,host=c usage=3 300").await;
    let out = answer(&exec, q).await;
    assert!(out.ends_with("c,1970-01-01T00:05:00,3.0\n"), "{out}");
    assert_eq!(optimize_seconds(&exec), optimized, "planned again");

    // a new column changes the catalog: the text is planned anew and `*` includes it
    storage.write("cpu,host=d usage=4,load=0.5 400").await;
    let out = answer(&exec, q).await;
    assert!(out.starts_with("host,load,time,usage\n"), "{out}");
    assert!(out.ends_with("d,0.5,1970-01-01T00:06:40,4.0\n"), "{out}");
    assert!(optimize_seconds(&exec) > optimized);
    assert_eq!(exec.plans.len(), 1);
}

#[tokio::test]
async fn plans_that_can_mean_something_else_next_time_are_not_kept() {
    let storage = TestStorage::new().await;
    storage.write("cpu,host=a usage=1 100").await;
    let exec = storage.executor(QueryConfig::default());
    for q in [
        "SELECT count(*) AS n FROM cpu WHERE time < now()",
        "SELECT usage + random() AS r FROM cpu",
        "SELECT * FROM system.parquet_files",
        "SELECT table_name FROM information_schema.tables",
        "EXPLAIN SELECT * FROM cpu",
        "SELECT 1",
    ] {
        answer(&exec, q).await;
        assert_eq!(exec.plans.len(), 0, "{q}");
    }
    let none = storage.executor(QueryConfig {
        plan_cache_entries: 0,
        ..QueryConfig::default()
    });
    answer(&none, "SELECT * FROM cpu").await;
    assert_eq!(none.plans.len(), 0);
}
