//! Parquet on the object store: persist, restart from the files, crash in the middle of a
//! persist, files other tools can read.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, python, python_json};

const START: i64 = 1_767_225_600_000_000_000;

/// Three hours of two hosts, every 10 minutes, plus a second table.
fn data() -> String {
    let mut lp = String::new();
    for i in 0..18i64 {
        for host in ["a", "b"] {
            lp.push_str(&format!(
                "cpu,host={host},dc=eu usage={}.5,n={i}i {}\n",
                i * 3,
                START + i * 600_000_000_000
            ));
        }
    }
    lp.push_str(&format!("mem,host=a free=1u {START}\n"));
    lp
}

const CHECK: &str = "SELECT host, count(*) AS n, sum(usage) AS s, max(n) AS m, min(time) AS first \
                     FROM cpu GROUP BY host ORDER BY host";

async fn persist(s: &Server) -> Value {
    let (status, body) = s.post("/api/v3/persist", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn parquet_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|e| e == "parquet") {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("dbs"), &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn persisted_data_answers_the_same_before_and_after_restart() {
    let s = Server::start();
    s.write_lp("p", &data()).await;
    let before = s.sql("p", CHECK).await;
    let summary = persist(&s).await;
    assert_eq!(
        summary["files"], 4,
        "cpu in three hours, mem in one: {summary}"
    );
    assert_eq!(summary["rows"], 37);
    let files = parquet_files(&s.data_dir());
    assert_eq!(files.len(), 4);
    let rel = files[0].strip_prefix(s.data_dir()).unwrap();
    assert!(rel.starts_with("dbs/p/cpu/2026-01-01"), "{rel:?}");
    assert!(s.data_dir().join("catalog.json").exists());
    assert_eq!(s.sql("p", CHECK).await, before);
    // the persisted files are listed, and an hour filter reads one of them
    let listed = s
        .sql(
            "p",
            "SELECT table_name, row_count FROM system.parquet_files ORDER BY path",
        )
        .await;
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0], json!({"table_name": "cpu", "row_count": 12}));
    let (_, plan) = s
        .query_raw(
            "p",
            "EXPLAIN SELECT count(*) FROM cpu WHERE time >= '2026-01-01T01:00:00Z' AND time < '2026-01-01T02:00:00Z'",
            "json",
        )
        .await;
    assert!(plan.contains("files=1/3"), "{plan}");

    let (status, dir) = s.terminate();
    assert!(status.success());
    let s = Server::start_in(dir, &[]);
    assert_eq!(s.sql("p", CHECK).await, before);
    assert!(s.log().contains("files=4"), "{}", s.log());
    // new writes after the restart land beside the files
    s.write_lp("p", &format!("cpu,host=a,dc=eu usage=1000 {START}"))
        .await;
    let rows = s
        .sql(
            "p",
            "SELECT usage, n FROM cpu WHERE host = 'a' AND time = '2026-01-01T00:00:00Z'",
        )
        .await;
    assert_eq!(rows, vec![json!({"usage": 1000.0, "n": 0})]);
}

/// One crash test per step of a persist at which the process can die; `orphans` is how many
/// files the crash leaves that the catalog does not list (the restart deletes them).
async fn crash_during_persist(point: &str, orphans: usize) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in_env(dir, &[], &[("SLUICE_CRASH_POINT", point)]);
    s.write_lp("c", &data()).await;
    let before = s.sql("c", CHECK).await;
    let sent = s.client.post(s.at("/api/v3/persist")).send().await;
    assert!(
        sent.is_err(),
        "the server should have died in the persist: {sent:?}"
    );
    let (status, dir) = s.wait_for_exit();
    assert!(!status.success());
    let on_disk = parquet_files(&dir.path().join("data")).len();
    let s = Server::start_in(dir, &[]);
    assert_eq!(s.sql("c", CHECK).await, before, "crash at {point}");
    assert!(
        s.log().contains(&format!("orphan_files_deleted={orphans}")),
        "{}",
        s.log()
    );
    // the crash came after the four files were written in either case
    assert_eq!(on_disk, 4);
    // and a persist now, then another restart: still exactly once
    persist(&s).await;
    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    assert_eq!(
        s.sql("c", CHECK).await,
        before,
        "crash at {point}, then persisted"
    );
    let n = s.sql("c", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(n, vec![json!({"n": 36})]);
}

#[tokio::test]
async fn sigkill_after_the_files_but_before_the_catalog_loses_and_doubles_nothing() {
    crash_during_persist("persist-after-files", 4).await;
}

#[tokio::test]
async fn sigkill_after_the_catalog_but_before_the_wal_is_cut_loses_and_doubles_nothing() {
    crash_during_persist("persist-after-catalog", 0).await;
}

#[tokio::test]
async fn background_persistence_writes_ended_hours() {
    let s = Server::start_with(&["--persist-after", "0s", "--persist-interval", "20ms"]);
    s.write_lp("bg", &data()).await;
    // hours of 2026-01-01 ended long ago: the persister takes them without being asked
    let mut files = Vec::new();
    for _ in 0..500 {
        files = parquet_files(&s.data_dir());
        if files.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(files.len(), 4, "{}", s.log());
    let n = s.sql("bg", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(n, vec![json!({"n": 36})]);
}

#[tokio::test]
async fn the_memory_store_works_for_a_session() {
    let s = Server::start_with(&["--object-store", "memory"]);
    s.write_lp("m", &data()).await;
    let before = s.sql("m", CHECK).await;
    assert_eq!(persist(&s).await["files"], 4);
    assert!(parquet_files(&s.data_dir()).is_empty(), "nothing on disk");
    assert_eq!(s.sql("m", CHECK).await, before);
}

/// The files as DuckDB sees them: row counts, and rows already in (tags, time) order. DuckDB
/// comes from the Python package that `.ci/run` installs; set `SLUICE_TEST_PYTHON` to a Python
/// that has it.
#[tokio::test]
async fn duckdb_reads_the_files_with_the_right_rows_in_sorted_order() {
    let Some(python) = python("duckdb_reads_the_files...", "the duckdb package") else {
        return;
    };
    let s = Server::start();
    s.write_lp("d", &data()).await;
    // a float field of whole numbers in one hour's file (stored as INT64), with a fraction
    // in the next one's (DOUBLE): read as the README says, with union_by_name
    s.write_lp(
        "d",
        &format!(
            "g,host=a v=2 {START}\ng,host=a v=0.5 {}\n",
            START + 3_600_000_000_000
        ),
    )
    .await;
    persist(&s).await;
    let script = r#"
import duckdb, glob, json, sys
root = sys.argv[1]
out = {}
for path in sorted(glob.glob(root + "/dbs/d/cpu/*/*.parquet")):
    rows = duckdb.sql(f"SELECT dc, host, time FROM read_parquet('{path}')").fetchall()
    out[path] = {"rows": len(rows), "sorted": rows == sorted(rows)}
total = duckdb.sql(f"SELECT count(*), sum(n) FROM read_parquet('{root}/dbs/d/cpu/*/*.parquet')").fetchall()[0]
g = duckdb.sql(f"SELECT sum(v) FROM read_parquet('{root}/dbs/d/g/*/*.parquet', union_by_name = true)").fetchall()[0][0]
print(json.dumps({"files": out, "count": total[0], "sum_n": total[1], "sum_g": g}))
"#;
    let v = python_json(&python, script, &[s.data_dir().as_os_str()]);
    assert_eq!(v["count"], 36);
    assert_eq!(v["sum_n"], 2 * (0..18).sum::<i64>());
    assert_eq!(v["sum_g"], 2.5);
    let files = v["files"].as_object().unwrap();
    assert_eq!(files.len(), 3);
    for (path, f) in files {
        assert_eq!(f["rows"], 12, "{path}");
        assert_eq!(f["sorted"], true, "{path}");
    }
}

#[tokio::test]
async fn compaction_leaves_fewer_files_and_the_same_answers() {
    let s = Server::start();
    // twelve persists of one day, each also overwriting a field of the first rows
    for round in 0..12i64 {
        let mut lp = String::new();
        for host in ["a", "b"] {
            lp.push_str(&format!(
                "cpu,host={host},dc=eu usage={round},n={round}i {}\n",
                START + round * 600_000_000_000
            ));
            lp.push_str(&format!(
                "cpu,host={host},dc=eu usage={} {START}\n",
                100 + round
            ));
        }
        s.write_lp("k", &lp).await;
        persist(&s).await;
    }
    let before = s.sql("k", CHECK).await;
    let files = "SELECT count(*) AS n FROM system.parquet_files WHERE table_name = 'cpu'";
    let n_before = s.sql("k", files).await[0]["n"].as_u64().unwrap();
    assert!(n_before >= 12, "{n_before}");
    let (status, body) = s.post("/api/v3/compact", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["files_out"], 1, "{summary}");
    assert_eq!(s.sql("k", files).await, vec![json!({"n": 1})]);
    assert_eq!(s.sql("k", CHECK).await, before);
    let first = s
        .sql(
            "k",
            "SELECT usage, n FROM cpu WHERE host = 'a' AND time = '2026-01-01T00:00:00Z'",
        )
        .await;
    assert_eq!(first, vec![json!({"usage": 111.0, "n": 0})]);
    // the compacted state is what a restart finds
    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    assert_eq!(s.sql("k", files).await, vec![json!({"n": 1})]);
    assert_eq!(s.sql("k", CHECK).await, before);

    // the file's sort order (tags by distinct values, then time) is declared: a query in that
    // order needs no sort, and its rows come back in it
    const ORDERED: &str = "SELECT host, dc, time, usage FROM cpu ORDER BY host, dc, time";
    let (status, plan) = s
        .query_raw("k", &format!("EXPLAIN {ORDERED}"), "json")
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert!(!plan.contains("SortExec:"), "{plan}");
    let rows = s.sql("k", ORDERED).await;
    assert_eq!(rows.len(), 24);
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["host"].to_string(), r["time"].to_string()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // another order still sorts
    let (_, plan) = s
        .query_raw("k", "EXPLAIN SELECT * FROM cpu ORDER BY time, host", "json")
        .await;
    assert!(plan.contains("SortExec:"), "{plan}");
}

#[tokio::test]
async fn last_cache_answers_the_newest_row_per_series_across_files_wal_and_new_writes() {
    const LAST: &str = "SELECT * FROM last_cache('cpu') ORDER BY host";
    // the filter on time makes it a scan (without one, the query reads the newest rows too)
    const SCAN: &str = "SELECT DISTINCT ON (host) * FROM cpu WHERE time >= '1970-01-01T00:00:00Z' \
                        ORDER BY host, time DESC";
    let s = Server::start();
    s.write_lp("p", &data()).await;
    assert_eq!(s.sql("p", LAST).await, s.sql("p", SCAN).await);
    persist(&s).await;
    // after the persist: a newer point of b and a new series c, in the WAL only
    let later = START + 18 * 600_000_000_000;
    s.write_lp(
        "p",
        &format!("cpu,host=b,dc=eu usage=7.5 {later}\ncpu,host=c,dc=us n=3i {START}"),
    )
    .await;
    let before = s.sql("p", SCAN).await;
    assert_eq!(before.len(), 3);
    assert_eq!(s.sql("p", LAST).await, before);

    // after kill -9 the rows of a are only in files, those of b and c in the WAL
    let s = Server::start_in(s.kill(), &[]);
    assert_eq!(s.sql("p", LAST).await, before);

    // a point at a series' newest time merges into it, an older one changes nothing, a
    // newer one replaces it
    let a_newest = START + 17 * 600_000_000_000;
    s.write_lp(
        "p",
        &format!(
            "cpu,host=a,dc=eu n=99i {a_newest}\ncpu,host=b,dc=eu usage=0 {START}\n\
             cpu,host=c,dc=us usage=1 {later}"
        ),
    )
    .await;
    let after = s.sql("p", LAST).await;
    assert_eq!(after, s.sql("p", SCAN).await);
    assert_eq!(after[0]["n"], 99);
    assert_eq!(after[0]["usage"], 51.5);
    assert_eq!(after[1]["usage"], 7.5);
    assert_eq!(
        after[2],
        json!({"dc": "us", "host": "c", "time": "2026-01-01T03:00:00", "usage": 1.0})
    );

    let (status, body) = s
        .query_raw("p", "SELECT * FROM last_cache('nope')", "json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("table 'nope' not found"), "{body}");
}

/// A local S3 endpoint (moto's server), killed on drop.
struct S3Endpoint {
    child: std::process::Child,
    url: String,
}

impl S3Endpoint {
    async fn start(python: &std::ffi::OsStr) -> S3Endpoint {
        // a free port: bind port 0, note it, let it go for moto to take
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto's S3 server");
        // owned by the endpoint from here on, so that a failure below still kills it
        let endpoint = S3Endpoint {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if client.get(&endpoint.url).send().await.is_ok() {
                return endpoint;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("moto's S3 server did not come up at {}", endpoint.url);
    }
}

impl Drop for S3Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_s3_bucket_holds_the_files_and_catalog_and_a_server_on_an_empty_folder_reads_them() {
    let Some(python) = python("an_s3_bucket_holds...", "the moto package") else {
        return;
    };
    let s3 = S3Endpoint::start(&python).await;
    let created = reqwest::Client::new()
        .put(format!("{}/lake", s3.url))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{created:?}");
    let args = [
        "--object-store",
        "s3",
        "--bucket",
        "lake",
        "--aws-endpoint",
        &s3.url,
        "--aws-allow-http",
        "--aws-access-key-id",
        "test",
        "--aws-secret-access-key",
        "test",
    ];
    let s = Server::start_with(&args);
    s.write_lp("p", &data()).await;
    let before = s.sql("p", CHECK).await;
    let summary = persist(&s).await;
    assert_eq!(summary["files"], 4, "{summary}");
    // the bucket holds the catalog and the files, the local folder none of them
    let listing = reqwest::get(format!("{}/lake?list-type=2", s3.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("<Key>catalog.json</Key>"), "{listing}");
    assert_eq!(listing.matches(".parquet</Key>").count(), 4, "{listing}");
    assert!(parquet_files(&s.data_dir()).is_empty());
    assert!(!s.data_dir().join("catalog.json").exists());
    drop(s.kill());

    // a server with nothing local (no WAL, no catalog) answers from the bucket alone
    let s = Server::start_with(&args);
    assert_eq!(s.sql("p", CHECK).await, before);
    let files = s
        .sql("p", "SELECT count(*) AS n FROM system.parquet_files")
        .await;
    assert_eq!(files, vec![json!({"n": 4})]);
}

/// Each column of the Parquet file at `path` with its physical type (`v:INT64`).
fn physical_types(path: &Path) -> Vec<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    schema
        .columns()
        .iter()
        .map(|c| format!("{}:{}", c.name(), c.physical_type()))
        .collect()
}

/// Asserts that `s` answers each of `queries` (database `p`) as `before` says.
async fn same_answers(s: &Server, queries: &[String], before: &[Vec<Value>], when: &str) {
    for (q, want) in queries.iter().zip(before) {
        assert_eq!(&s.sql("p", q).await, want, "{when}: {q}");
    }
}

/// Float fields whose values are whole numbers are stored as integers in the files (about
/// half the bytes) and read back as the floats they were: by SQL through every kind of scan
/// (a few rows narrowed by tag, a filter on the field itself, all rows), by PromQL, and
/// through a compaction with a file that has the field as floats.
#[tokio::test]
async fn whole_number_floats_are_stored_as_integers_and_read_back_as_floats() {
    let s = Server::start();
    // `v` whole (one row without it), `w` with fractions, `x` -0 and 2^53 + 2 (not kept
    // exactly by an integer file), `y` 2^53 (kept)
    let mut lp = String::new();
    for i in 0..6i64 {
        let t = START + i * 600_000_000_000;
        for host in ["a", "b"] {
            let v = match (host, i) {
                ("b", 3) => String::new(),
                _ => format!("v={},", i * 7 - 20),
            };
            lp.push_str(&format!("cpu,host={host} {v}w={i}.25,x=-0,y=-3 {t}\n"));
        }
    }
    lp.push_str(&format!(
        "cpu,host=c v=9007199254740992,x=9007199254740994,y=9007199254740992 {START}\n"
    ));
    s.write_lp("p", &lp).await;
    const HOUR0: &str = "time < '2026-01-01T01:00:00Z'";
    let queries = [
        format!("SELECT host, time, v, w, x, y FROM cpu WHERE {HOUR0} ORDER BY host, time"),
        "SELECT time, v FROM cpu WHERE host = 'a' AND time >= '2026-01-01T00:20:00Z' \
         AND time < '2026-01-01T01:00:00Z' ORDER BY time"
            .to_string(),
        format!(
            "SELECT host, count(*) AS n, sum(v) AS s FROM cpu WHERE v > -10 AND {HOUR0} \
             GROUP BY host ORDER BY host"
        ),
        format!(
            "SELECT arrow_typeof(v) AS t, sum(v) AS s, avg(v) AS a, min(v) AS lo, max(v) AS hi \
             FROM cpu WHERE {HOUR0} GROUP BY 1"
        ),
        "SELECT host, CAST(x AS VARCHAR) AS x, CAST(y AS VARCHAR) AS y FROM cpu \
         WHERE time = '2026-01-01T00:00:00Z' ORDER BY host"
            .to_string(),
    ];
    let promql =
        "/prometheus/p/api/v1/query_range?query=cpu_v&start=1767225600&end=1767228900&step=300";
    let mut before = Vec::new();
    for q in &queries {
        before.push(s.sql("p", q).await);
    }
    let (_, prom_before) = s.get(promql).await;
    assert!(
        prom_before.contains(r#""__name__":"cpu_v""#),
        "{prom_before}"
    );
    assert_eq!(before[3][0]["t"], "Float64", "{:?}", before[3]);
    assert_eq!(
        before[4][0],
        json!({"host": "a", "x": "-0.0", "y": "-3.0"}),
        "{:?}",
        before[4]
    );
    persist(&s).await;
    // the file keeps `v` and `y` as integers
    let files = parquet_files(&s.data_dir());
    assert_eq!(files.len(), 1);
    assert_eq!(
        physical_types(&files[0]),
        [
            "host:BYTE_ARRAY",
            "time:INT64",
            "v:INT64",
            "w:DOUBLE",
            "x:DOUBLE",
            "y:INT64"
        ]
    );
    same_answers(&s, &queries, &before, "persisted").await;
    // the one-host query reads the file's few rows through the narrowed scan, which casts
    let (_, plan) = s
        .query_raw("p", &format!("EXPLAIN {}", queries[1]), "json")
        .await;
    assert!(plan.contains("NarrowedParquetExec"), "{plan}");
    assert_eq!(s.get(promql).await.1, prom_before);
    // an hour later `v` has a fraction; compaction merges both hours' files into one
    s.write_lp(
        "p",
        &format!("cpu,host=a v=0.5 {}\n", START + 3_600_000_000_000),
    )
    .await;
    persist(&s).await;
    let (status, body) = s.post("/api/v3/compact", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // the replaced files stay on disk for a while: the catalog says which one is live
    let live = s.sql("p", "SELECT path FROM system.parquet_files").await;
    assert_eq!(live.len(), 1, "{live:?}");
    let path = s.data_dir().join(live[0]["path"].as_str().unwrap());
    assert!(physical_types(&path).contains(&"v:DOUBLE".to_string()));
    same_answers(&s, &queries, &before, "compacted").await;
    assert_eq!(s.get(promql).await.1, prom_before);
    assert_eq!(
        s.sql(
            "p",
            "SELECT v FROM cpu WHERE time >= '2026-01-01T01:00:00Z'"
        )
        .await,
        vec![json!({"v": 0.5})]
    );

    // with --parquet-whole-floats-as-integers false every float field stays DOUBLE
    let s = Server::start_with(&[
        "--parquet-whole-floats-as-integers",
        "false",
        "--parquet-page-rows",
        "1024",
    ]);
    s.write_lp("p", &lp).await;
    persist(&s).await;
    let files = parquet_files(&s.data_dir());
    assert_eq!(
        physical_types(&files[0]),
        [
            "host:BYTE_ARRAY",
            "time:INT64",
            "v:DOUBLE",
            "w:DOUBLE",
            "x:DOUBLE",
            "y:DOUBLE"
        ]
    );
    same_answers(&s, &queries, &before, "floats kept").await;
}
