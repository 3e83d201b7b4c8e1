//! SQL over HTTP: formats, parameters, catalogs, refused statements.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::Server;

const DATA: &str = "cpu,host=a,region=eu usage=10,idle=90i 1767225600000000000\n\
                    cpu,host=b,region=us usage=20,idle=80i 1767225610000000000\n\
                    cpu,host=a,region=eu usage=30,idle=70i 1767229200000000000\n\
                    mem,host=a used=1u 1767225600000000000\n";

async fn loaded() -> Server {
    let s = Server::start();
    s.write_lp("q", DATA).await;
    s
}

#[tokio::test]
async fn output_formats_by_parameter_and_accept_header() {
    let s = loaded().await;
    let sql = "SELECT host, usage FROM cpu ORDER BY time";
    let (st, csv) = s.query_raw("q", sql, "csv").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(csv, "host,usage\na,10.0\nb,20.0\na,30.0\n");
    let (_, jsonl) = s.query_raw("q", sql, "jsonl").await;
    assert_eq!(
        jsonl,
        "{\"host\":\"a\",\"usage\":10.0}\n{\"host\":\"b\",\"usage\":20.0}\n{\"host\":\"a\",\"usage\":30.0}\n"
    );
    let (_, pretty) = s.query_raw("q", sql, "pretty").await;
    assert!(pretty.contains("| host | usage |"), "{pretty}");
    assert!(pretty.contains("| b    | 20.0  |"), "{pretty}");

    let r = s
        .client
        .get(s.at("/api/v3/query_sql"))
        .query(&[("db", "q"), ("q", sql), ("format", "parquet")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = r.bytes().await.unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);

    let r = s
        .client
        .get(s.at("/api/v3/query_sql"))
        .query(&[("db", "q"), ("q", sql)])
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), csv);

    let (st, text) = s.query_raw("q", sql, "xml").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(text.contains("unknown format 'xml'"), "{text}");
    // an empty result still has a header in CSV and is [] in JSON
    let (_, csv) = s
        .query_raw("q", "SELECT host FROM cpu WHERE usage > 100", "csv")
        .await;
    assert_eq!(csv, "host\n");
    assert!(
        s.sql("q", "SELECT host FROM cpu WHERE usage > 100")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn post_takes_a_json_body_with_named_parameters() {
    let s = loaded().await;
    let r = s
        .client
        .post(s.at("/api/v3/query_sql"))
        .json(&json!({
            "db": "q",
            "q": "SELECT usage FROM cpu WHERE host = $host AND usage > $min ORDER BY usage",
            "params": {"host": "a", "min": 15},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rows: Vec<Value> = r.json().await.unwrap();
    assert_eq!(rows, vec![json!({"usage": 30.0})]);
    // GET takes params as a JSON string
    let r = s
        .client
        .get(s.at("/api/v3/query_sql"))
        .query(&[
            ("db", "q"),
            ("q", "SELECT count(*) AS n FROM cpu WHERE region = $r"),
            ("params", r#"{"r": "us"}"#),
        ])
        .send()
        .await
        .unwrap();
    let rows: Vec<Value> = r.json().await.unwrap();
    assert_eq!(rows, vec![json!({"n": 1})]);
}

#[tokio::test]
async fn catalog_views_and_other_databases() {
    let s = loaded().await;
    s.write_lp("other", "disk free=5 1").await;
    let tables = s.sql("q", "SHOW TABLES").await;
    let names: Vec<&str> = tables
        .iter()
        .filter(|t| t["table_schema"] == "q")
        .map(|t| t["table_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["cpu", "mem"]);
    let cols = s
        .sql(
            "q",
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_schema = 'q' AND table_name = 'cpu' ORDER BY column_name",
        )
        .await;
    assert_eq!(
        cols,
        vec![
            json!({"column_name": "host", "data_type": "Dictionary(Int32, Utf8)"}),
            json!({"column_name": "idle", "data_type": "Int64"}),
            json!({"column_name": "region", "data_type": "Dictionary(Int32, Utf8)"}),
            json!({"column_name": "time", "data_type": "Timestamp(ns)"}),
            json!({"column_name": "usage", "data_type": "Float64"}),
        ]
    );
    let show = s.sql("q", "SHOW COLUMNS FROM cpu").await;
    assert_eq!(show.len(), 5);
    let rows = s.sql("q", "SELECT free FROM other.disk").await;
    assert_eq!(rows, vec![json!({"free": 5.0})]);
}

#[tokio::test]
async fn time_filters_and_aggregates() {
    let s = loaded().await;
    let rows = s
        .sql(
            "q",
            "SELECT date_bin(INTERVAL '1 hour', time) AS hour, max(usage) AS max \
             FROM cpu WHERE time >= '2026-01-01T00:00:00Z' AND time < '2026-01-01T01:00:00Z' \
             GROUP BY hour ORDER BY hour",
        )
        .await;
    assert_eq!(
        rows,
        vec![json!({"hour": "2026-01-01T00:00:00", "max": 20.0})]
    );
}

#[tokio::test]
async fn statements_that_are_not_reads_are_refused_with_400() {
    let s = loaded().await;
    for sql in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY cpu TO '/tmp/out.csv'",
        "INSERT INTO cpu (usage) VALUES (1)",
        "DROP TABLE cpu",
        "CREATE TABLE t AS SELECT 1",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let (st, text) = s.query_raw("q", sql, "json").await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{sql}: {text}");
        assert!(text.contains("error"), "{sql}: {text}");
    }
    assert!(!std::path::Path::new("/tmp/out.csv").exists());
    // still there
    let rows = s.sql("q", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(rows, vec![json!({"n": 3})]);
}

#[tokio::test]
async fn unknown_database_table_and_missing_query() {
    let s = loaded().await;
    let (st, text) = s.query_raw("nope", "SELECT 1", "json").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("nope"));
    let (st, text) = s.query_raw("q", "SELECT * FROM nope", "json").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(text.contains("nope"), "{text}");
    let r = s
        .client
        .get(s.at("/api/v3/query_sql?db=q"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("'q'"));
}

/// GETs `sql` in `db` in `format` and returns the response, headers read, body not.
async fn start_query(s: &Server, db: &str, sql: &str, format: &str) -> reqwest::Response {
    s.client
        .get(s.at("/api/v3/query_sql"))
        .query(&[("db", db), ("q", sql), ("format", format)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_endless_answer_is_sent_as_it_is_computed_and_a_client_may_stop_reading() {
    // one query at a time: the second query below runs only if the first let go of its slot
    let s = Server::start_with(&["--max-concurrent-queries", "1"]);
    s.write_lp("q", "cpu v=1 1\n").await;
    for format in ["json", "jsonl", "csv", "parquet"] {
        let mut r = start_query(
            &s,
            "q",
            "SELECT value, 'some text' AS t FROM generate_series(1, 9223372036854775807)",
            format,
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        // 8 MB arrive while the query runs; collected first, they never would
        let mut got = 0;
        while got < 8 << 20 {
            got += r.chunk().await.unwrap().expect("more of the answer").len();
        }
        drop(r);
        let rows = s.sql("q", "SELECT count(*) AS n FROM cpu").await;
        assert_eq!(rows, vec![json!({"n": 1})], "{format}");
    }
}

#[tokio::test]
async fn an_error_before_the_first_row_gets_its_status_and_one_after_cuts_the_answer() {
    let s = Server::start();
    s.write_lp("q", "cpu v=1 1\n").await;
    // fails on the first batch: a status, and a message
    let r = start_query(
        &s,
        "q",
        "SELECT 1 / (value - 1) FROM generate_series(1, 100000)",
        "json",
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("Divide by zero"));
    // fails at row 2,000,000, after megabytes of rows were sent: the body ends without its
    // closing ']'
    let r = start_query(
        &s,
        "q",
        "SELECT 1 / (value - 2000000) AS x FROM generate_series(1, 3000000)",
        "json",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = Vec::new();
    let mut r = r;
    let cut = loop {
        match r.chunk().await {
            Ok(Some(piece)) => body.extend_from_slice(&piece),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "the answer ended as if complete");
    assert!(
        body.starts_with(b"[{\"x\":"),
        "{:?}",
        &body[..body.len().min(40)]
    );
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn the_pretty_format_is_held_up_to_the_query_memory_limit() {
    let s = Server::start_with(&["--query-memory-limit", "4MiB"]);
    s.write_lp("q", "cpu v=1 1\n").await;
    let (status, body) = s
        .query_raw("q", "SELECT value FROM generate_series(1, 10)", "pretty")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("| 10    |"), "{body}");
    let (status, body) = s
        .query_raw(
            "q",
            "SELECT value FROM generate_series(1, 10000000)",
            "pretty",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("--query-memory-limit") && body.contains("jsonl"),
        "{body}"
    );
}
