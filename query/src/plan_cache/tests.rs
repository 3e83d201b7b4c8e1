use sluice_storage::FreezeRule;

use crate::QueryConfig;
use crate::testing::{TestStorage, answer};

/// The value of `series` in the executor's profile (`/metrics`).
fn metric(exec: &crate::QueryExecutor, series: &str) -> f64 {
    let mut text = String::new();
    exec.profile().render(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

/// Seconds the optimizer has run.
fn optimize_seconds(exec: &crate::QueryExecutor) -> f64 {
    metric(exec, "sluice_query_phase_seconds_total{phase=\"optimize\"}")
}

/// Queries that ran a copy of a kept physical plan.
fn physical_reused(exec: &crate::QueryExecutor) -> f64 {
    metric(exec, "sluice_query_plans_reused_total{plan=\"physical\"}")
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

#[tokio::test]
async fn a_repeated_text_over_files_only_runs_copies_of_its_physical_plan_until_they_change() {
    let storage = TestStorage::new().await;
    storage
        .write("cpu,host=a usage=1 100\ncpu,host=b usage=2 200\ncpu,host=a usage=5 300")
        .await;
    storage.buffer.persist(FreezeRule::All).await.unwrap();
    let storage = storage.restart().await;
    // in several partitions too: repartitioning and merging keep state while they run
    for single_partition_rows in [usize::MAX, 0] {
        let exec = storage.executor(QueryConfig {
            single_partition_rows,
            ..QueryConfig::default()
        });
        let q = "SELECT host, max(usage) AS top, count(*) AS n FROM cpu \
                 WHERE time >= '1970-01-01T00:01:00Z' GROUP BY host ORDER BY host";
        let first = answer(&exec, q).await;
        assert_eq!(first, "host,top,n\na,5.0,2\nb,2.0,1\n");
        // planned before the file was first opened, the plan left pruning it to the
        // opener: it was not kept, and is planned again now that its footer is at hand
        assert_eq!(answer(&exec, q).await, first);
        assert_eq!(physical_reused(&exec), 0.0);
        for run in 1..=3 {
            assert_eq!(answer(&exec, q).await, first);
            assert_eq!(physical_reused(&exec), f64::from(run));
        }
    }

    // copies run again and again, and each has Parquet sources of its own: what their runs
    // count (a few kilobytes of metrics per file opened) does not pile up in one set that
    // the kept plan and all its copies share
    let exec = storage.executor(QueryConfig::default());
    let q = "SELECT usage FROM cpu WHERE host = 'b'";
    for _ in 0..20 {
        assert_eq!(answer(&exec, q).await, "usage\n2.0\n");
    }
    assert_eq!(physical_reused(&exec), 18.0);
    let counted = {
        let entries = exec.plans.entries.lock();
        let kept = entries.values().find_map(|e| e.physical.as_ref()).unwrap();
        let mut stack = vec![&kept.plan];
        let mut counted = 0;
        while let Some(node) = stack.pop() {
            counted += node.metrics().map_or(0, |m| m.iter().count());
            stack.extend(node.children());
        }
        counted
    };
    assert_eq!(counted, 0, "metrics in the kept plan");

    let exec = storage.executor(QueryConfig::default());
    let q = "SELECT host, sum(usage) AS s FROM cpu GROUP BY host ORDER BY host";
    assert_eq!(answer(&exec, q).await, "host,s\na,6.0\nb,2.0\n");
    // a buffered row in the scan's range: planned anew, and it counts
    storage.write("cpu,host=b usage=10 400").await;
    assert_eq!(answer(&exec, q).await, "host,s\na,6.0\nb,12.0\n");
    assert_eq!(answer(&exec, q).await, "host,s\na,6.0\nb,12.0\n");
    assert_eq!(physical_reused(&exec), 0.0);
    // persisted, it is in a file the kept plan does not read: planned anew once more
    storage.buffer.persist(FreezeRule::All).await.unwrap();
    assert_eq!(answer(&exec, q).await, "host,s\na,6.0\nb,12.0\n");
    assert_eq!(physical_reused(&exec), 0.0);
    assert_eq!(answer(&exec, q).await, "host,s\na,6.0\nb,12.0\n");
    assert_eq!(physical_reused(&exec), 1.0);
    // a buffered row outside the scan's time range does not stop the reuse
    let early = "SELECT host, usage FROM cpu WHERE time < '1970-01-01T00:04:00Z' ORDER BY host";
    assert_eq!(answer(&exec, early).await, "host,usage\na,1.0\nb,2.0\n");
    storage.write("cpu,host=c usage=7 500").await;
    assert_eq!(answer(&exec, early).await, "host,usage\na,1.0\nb,2.0\n");
    assert_eq!(physical_reused(&exec), 2.0);
}

#[tokio::test]
async fn plans_with_dynamic_filters_are_planned_physically_each_time() {
    let storage = TestStorage::new().await;
    storage
        .write("cpu,host=a usage=1 100\ncpu,host=b usage=2 200\ncpu,host=c usage=3 300")
        .await;
    storage.buffer.persist(FreezeRule::All).await.unwrap();
    let storage = storage.restart().await;
    // in several partitions, so that min/max without groups are partial aggregates
    let exec = storage.executor(QueryConfig {
        single_partition_rows: 0,
        ..QueryConfig::default()
    });
    // TopK fills a filter the scan reads; partial min/max without groups too
    for (q, want) in [
        (
            "SELECT host FROM cpu ORDER BY usage DESC LIMIT 2",
            "host\nc\nb\n",
        ),
        ("SELECT max(usage) AS m FROM cpu", "m\n3.0\n"),
    ] {
        for _ in 0..3 {
            assert_eq!(answer(&exec, q).await, want, "{q}");
        }
        assert_eq!(physical_reused(&exec), 0.0, "{q}");
    }
}
