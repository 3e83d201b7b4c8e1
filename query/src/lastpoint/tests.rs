//! The newest rows answer exactly what the scan answers: every query here runs on an
//! executor with [`NewestRowsRule`] and on one without, over the same storage, as the rows
//! move through the buffer, files, a restart, deletes and retention.

use std::sync::atomic::Ordering;

use sluice_storage::{FreezeRule, Retention};

use crate::testing::{S, TestStorage, answer};
use crate::{QueryConfig, QueryExecutor};

/// Queries the newest rows answer.
const ANSWERED: &[&str] = &[
    "SELECT DISTINCT ON (host) * FROM cpu ORDER BY host, time DESC",
    "SELECT DISTINCT ON (host, region) host, region, usage, time FROM cpu \
     ORDER BY host, region, time DESC",
    "SELECT DISTINCT ON (region) * FROM cpu WHERE host <> 'c' ORDER BY region, time DESC",
    "SELECT * FROM cpu WHERE host = 'a' ORDER BY time DESC LIMIT 1",
    "SELECT usage, time FROM cpu WHERE region = 'eu' ORDER BY time DESC LIMIT 1",
    "SELECT * FROM cpu ORDER BY time DESC LIMIT 1",
    "SELECT host, max(time) AS t, last_value(usage ORDER BY time) AS u, \
     last_value(n ORDER BY time) AS n FROM cpu GROUP BY host ORDER BY host",
    "SELECT region, first_value(n ORDER BY time DESC) AS n, max(time) AS t FROM cpu \
     GROUP BY region ORDER BY region",
    "SELECT max(time) AS t FROM cpu",
    "SELECT max(time) AS t FROM cpu WHERE upper(host) IN ('A', 'B')",
    "SELECT h, t FROM (SELECT host AS h, max(time) AS t FROM cpu GROUP BY host) ORDER BY h",
];

/// Queries whose answer needs older rows: they scan.
const SCANNED: &[&str] = &[
    "SELECT DISTINCT ON (host) * FROM cpu WHERE time < '1970-01-01T00:10:00Z' \
     ORDER BY host, time DESC",
    "SELECT DISTINCT ON (host) * FROM cpu WHERE usage > 15 ORDER BY host, time DESC",
    "SELECT * FROM cpu ORDER BY time DESC LIMIT 2",
    "SELECT host, last_value(usage ORDER BY time) IGNORE NULLS AS u FROM cpu \
     GROUP BY host ORDER BY host",
    "SELECT host, min(time) AS t FROM cpu GROUP BY host ORDER BY host",
    "SELECT n, max(time) AS t FROM cpu GROUP BY n ORDER BY n",
    "SELECT DISTINCT ON (host) * FROM cpu ORDER BY host, time ASC",
    "SELECT host, first_value(usage ORDER BY region, time DESC) AS u FROM cpu \
     GROUP BY host ORDER BY host",
];

struct Fixture {
    storage: TestStorage,
    newest: QueryExecutor,
    scan: QueryExecutor,
}

impl Fixture {
    fn over(storage: TestStorage) -> Self {
        let without_newest_rows = QueryConfig {
            rewrites: false,
            ..QueryConfig::default()
        };
        Fixture {
            newest: storage.executor(QueryConfig::default()),
            scan: storage.executor(without_newest_rows),
            storage,
        }
    }

    async fn restart(self) -> Self {
        Self::over(self.storage.restart().await)
    }

    /// Every query answers the same both ways; the [`ANSWERED`] ones read the newest rows.
    async fn check(&self, when: &str) {
        for sql in ANSWERED.iter().chain(SCANNED) {
            let newest = answer(&self.newest, sql).await;
            let scan = answer(&self.scan, sql).await;
            assert_eq!(newest, scan, "{when}: {sql}");
            let plan = answer(&self.newest, &format!("EXPLAIN {sql}")).await;
            let reads_newest = plan.contains("newest_rows_of_series");
            assert_eq!(
                reads_newest,
                ANSWERED.contains(sql),
                "{when}: {sql}\n{plan}"
            );
        }
    }
}

/// Three series of `cpu`: fields that come and go, and a point that overwrites some
/// fields of a row at its time. Times differ between series, so that no query here has
/// ties to break.
const FIRST: &str = "cpu,host=a,region=eu usage=10,n=1i 100\n\
                     cpu,host=b,region=us usage=20,n=2i 101\n\
                     cpu,host=c,region=eu usage=30 102\n\
                     cpu,host=a,region=eu usage=11 200\n\
                     cpu,host=b,region=us n=3i 201\n\
                     cpu,host=a,region=eu n=4i 200";

#[tokio::test]
async fn lastpoint_queries_answer_from_the_newest_rows_what_the_scan_answers() {
    let f = Fixture::over(TestStorage::new().await);
    f.storage.write(FIRST).await;
    f.check("buffer").await;
    f.storage.buffer.persist(FreezeRule::All).await.unwrap();
    f.check("files").await;
    // older points than the newest (they change nothing), a newer one, and one at a
    // persisted row's time that overwrites one of its fields
    f.storage
        .write(
            "cpu,host=a,region=eu usage=9 150\n\
         cpu,host=c,region=eu usage=31,n=7i 302\n\
         cpu,host=b,region=us usage=25 201",
        )
        .await;
    f.check("files and buffer").await;
    let f = f.restart().await;
    f.check("after a restart").await;
    f.storage.write("cpu,host=d,region=ap usage=40 3700").await;
    f.check("a new series in a new hour").await;
    f.storage.buffer.persist(FreezeRule::All).await.unwrap();
    let f = f.restart().await;
    f.check("everything persisted, after a restart").await;

    // retention: the cutoff falls after a, b and c's newest rows, before d's
    f.storage.now.store(3600 * S + 3000 * S, Ordering::SeqCst);
    f.storage
        .buffer
        .set_retention("db", Retention::parse("1h").unwrap())
        .await
        .unwrap();
    f.check("retention").await;
    let kept = answer(&f.newest, ANSWERED[0]).await;
    assert_eq!(kept.lines().count(), 2, "only host d is kept: {kept}");

    // a deleted table, written again: only its new rows
    f.storage
        .buffer
        .set_retention("db", Retention::parse("none").unwrap())
        .await
        .unwrap();
    f.storage.buffer.delete_table("db", "cpu").await.unwrap();
    f.storage
        .write("cpu,host=e,region=us usage=50,n=5i 5000")
        .await;
    f.check("after the table was deleted").await;
    let rows = answer(&f.newest, ANSWERED[0]).await;
    assert_eq!(rows.lines().count(), 2, "{rows}");
}
