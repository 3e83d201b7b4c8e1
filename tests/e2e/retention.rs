//! Databases and tables over `/api/v3/configure/*` and `sluice db|table`, and retention.
//!
//! The rows are dated days before the wall clock's now, and retention periods are whole days,
//! so that which rows a period keeps does not depend on when the test runs.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, sluice_bin};

const DAY: i64 = 86_400_000_000_000;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A `cpu` row for each of `days_ago`, as line protocol.
fn rows(days_ago: &[i64]) -> String {
    let now = now();
    days_ago
        .iter()
        .map(|d| format!("cpu,host=h{d} usage={d} {}\n", now - d * DAY))
        .collect()
}

/// The `host` values of `db.cpu`, sorted.
async fn hosts(s: &Server, db: &str) -> Vec<String> {
    s.sql(db, "SELECT host FROM cpu ORDER BY host")
        .await
        .iter()
        .map(|r| r["host"].as_str().unwrap().to_string())
        .collect()
}

async fn configure(
    s: &Server,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut r = s.client.request(method, s.at(path_and_query));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    (status, r.text().await.unwrap())
}

async fn databases(s: &Server) -> Vec<Value> {
    let (status, body) = s.get("/api/v3/configure/database?format=json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn databases_are_created_listed_changed_and_deleted() {
    use reqwest::Method;
    let s = Server::start();
    let db = "/api/v3/configure/database";
    let (st, body) = configure(
        &s,
        Method::POST,
        db,
        Some(json!({"db": "metrics", "retention_period": "30d"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = configure(&s, Method::POST, db, Some(json!({"db": "metrics"}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("already exists"), "{body}");
    let (st, body) = configure(&s, Method::POST, db, Some(json!({"db": "a.b"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("contains '.'"), "{body}");
    let (st, body) = configure(
        &s,
        Method::POST,
        db,
        Some(json!({"db": "x", "retention_period": "30 days"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("retention period"), "{body}");
    s.write_lp("other", "cpu,host=a usage=1 1").await;
    assert_eq!(
        databases(&s).await,
        vec![
            json!({"iox::database": "metrics", "retention_period": "30d"}),
            json!({"iox::database": "other", "retention_period": "none"}),
        ]
    );
    let (st, csv) = s.get("/api/v3/configure/database?format=csv").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        csv,
        "iox::database,retention_period\nmetrics,30d\nother,none\n"
    );

    let (st, body) = configure(
        &s,
        Method::PATCH,
        db,
        Some(json!({"db": "metrics", "retention_period": "1w"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _) = configure(
        &s,
        Method::PATCH,
        db,
        Some(json!({"db": "nope", "retention_period": "1w"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(databases(&s).await[0]["retention_period"], "1w");

    let (st, body) = configure(&s, Method::DELETE, &format!("{db}?db=other"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = configure(&s, Method::DELETE, &format!("{db}?db=other"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, _) = s.query_raw("other", "SELECT * FROM cpu", "json").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(databases(&s).await.len(), 1);

    // tables
    let t = now();
    s.write_lp(
        "metrics",
        &format!("cpu,host=a usage=1 {t}\nmem,host=a used=2 {t}"),
    )
    .await;
    let table = "/api/v3/configure/table";
    let (st, body) = configure(
        &s,
        Method::DELETE,
        &format!("{table}?db=metrics&table=disk"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("table 'disk' does not exist"), "{body}");
    let (st, body) = configure(
        &s,
        Method::DELETE,
        &format!("{table}?db=metrics&table=cpu"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = s.query_raw("metrics", "SELECT * FROM cpu", "json").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        s.sql("metrics", "SELECT used FROM mem").await,
        vec![json!({"used": 2.0})]
    );
    let (st, _) = configure(&s, Method::DELETE, table, None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn retention_hides_old_rows_at_once_and_a_compaction_drops_their_files() {
    use reqwest::Method;
    let s = Server::start();
    let db = "/api/v3/configure/database";
    s.write_lp("m", &rows(&[40, 10, 1])).await;
    let (st, body) = s.post("/api/v3/persist", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    s.write_lp("m", &rows(&[39, 2])).await;
    assert_eq!(hosts(&s, "m").await, ["h1", "h10", "h2", "h39", "h40"]);

    // files and buffer alike, whatever the query asks for
    let patch = |period: &str| json!({"db": "m", "retention_period": period});
    let (st, body) = configure(&s, Method::PATCH, db, Some(patch("30d"))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(hosts(&s, "m").await, ["h1", "h10", "h2"]);
    let n = s
        .sql("m", "SELECT count(*) AS n FROM cpu WHERE usage > 5")
        .await;
    assert_eq!(n, vec![json!({"n": 1})]);
    let newest = s
        .sql("m", "SELECT host FROM last_cache('cpu') ORDER BY host")
        .await;
    assert_eq!(newest.len(), 3, "{newest:?}");
    let (st, body) = configure(&s, Method::PATCH, db, Some(patch("5d"))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(hosts(&s, "m").await, ["h1", "h2"]);
    // until a retention round runs, nothing is deleted: a longer period shows the rows again
    let (st, _) = configure(&s, Method::PATCH, db, Some(patch("none"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(hosts(&s, "m").await.len(), 5);

    let (st, _) = configure(&s, Method::PATCH, db, Some(patch("30d"))).await;
    assert_eq!(st, StatusCode::OK);
    let files = "SELECT count(*) AS n FROM system.parquet_files";
    assert_eq!(s.sql("m", files).await, vec![json!({"n": 3})]);
    let (st, body) = s.post("/api/v3/compact", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["files_expired"], 1, "{v}");
    assert_eq!(v["partitions_expired"], 1, "{v}");
    assert_eq!(s.sql("m", files).await, vec![json!({"n": 2})]);
    let (st, _) = configure(&s, Method::PATCH, db, Some(patch("none"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(hosts(&s, "m").await, ["h1", "h10", "h2"]);
}

#[tokio::test]
async fn databases_a_write_creates_get_the_default_retention_and_too_old_points_are_refused() {
    let s = Server::start_with(&["--default-retention", "7d"]);
    // the point already past the period is refused, by line, and the rest are stored
    let (st, body) = s.post("/api/v3/write_lp?db=auto", rows(&[8, 6])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["line_number"], 1, "{v}");
    let why = v["data"][0]["error_message"].as_str().unwrap();
    assert!(
        why.contains("older than the retention period of database 'auto' (7d"),
        "{why}"
    );
    assert_eq!(hosts(&s, "auto").await, ["h6"]);
    assert_eq!(databases(&s).await[0]["retention_period"], "7d");
}

fn sluice(args: &[&str]) -> String {
    let out = Command::new(sluice_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_cli_manages_databases_and_tables() {
    let s = Server::start();
    let host = s.url.as_str();
    sluice(&["db", "create", "--host", host, "--retention", "30d", "ops"]);
    let list = sluice(&["db", "list", "--host", host]);
    assert!(
        list.lines()
            .any(|l| l.contains("| ops ") && l.contains("| 30d ")),
        "{list}"
    );
    s.write_lp("ops", &rows(&[3, 1])).await;
    sluice(&["db", "set-retention", "--host", host, "ops", "2d"]);
    assert_eq!(databases(&s).await[0]["retention_period"], "2d");
    s.write_lp("ops", &format!("mem,host=a used=1 {}", now()))
        .await;
    assert_eq!(hosts(&s, "ops").await, ["h1"]);
    let tables = sluice(&[
        "table", "list", "--host", host, "--db", "ops", "--format", "csv",
    ]);
    assert_eq!(tables, "table_name\ncpu\nmem\n");
    sluice(&["table", "delete", "--host", host, "--db", "ops", "mem"]);
    let tables = sluice(&[
        "table", "list", "--host", host, "--db", "ops", "--format", "csv",
    ]);
    assert_eq!(tables, "table_name\ncpu\n");
    sluice(&["db", "delete", "--host", host, "ops"]);
    assert!(databases(&s).await.is_empty());

    // errors say what went wrong, and fail the command
    let out = Command::new(sluice_bin())
        .args(["db", "delete", "--host", host, "ops"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404") && err.contains("database 'ops' does not exist"),
        "{err}"
    );
    let out = Command::new(sluice_bin())
        .args(["db", "create", "--host", host, "--retention", "soon", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention period 'soon'"));
}
