//! Hostile or unlucky input (issue 19): each case against the real server, checking the
//! status, that `/health` still answers, and that what was acknowledged is all there after a
//! restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, sample};

/// `/health` answers within a second.
async fn healthy(s: &Server) {
    let r = s
        .client
        .get(s.at("/health"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("/health answers within a second");
    assert_eq!(r.status(), StatusCode::OK);
}

async fn persist(s: &Server) -> Value {
    let (status, body) = s.post("/api/v3/persist", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn names_get_a_rule_and_any_allowed_name_survives_persist_and_restart() {
    let s = Server::start();
    let long = "m".repeat(300);
    let (status, body) = s
        .post(
            "/api/v3/write_lp?db=h",
            format!("{long} v=1 1\nok v=1 1\nok,{long}=x v=2 2\n"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{v}");
    assert_eq!(data[0]["line_number"], 1);
    let msg = data[0]["error_message"].as_str().unwrap();
    assert!(
        msg.contains("table name") && msg.contains("--max-name-bytes"),
        "{msg}"
    );
    assert_eq!(data[1]["line_number"], 3);

    // names the object store escapes or that look like paths
    let names = ["cpu%x", "disk#1", "a//b", "..", "x/../y"];
    let lp: String = names.iter().map(|n| format!("{n} v=1 1000\n")).collect();
    s.write_lp("h", &lp).await;
    let summary = persist(&s).await;
    assert_eq!(summary["files"], names.len() + 1, "{summary}");
    healthy(&s).await;
    let (status, metrics) = s.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sample(&metrics, "sluice_persist_partition_errors_total"),
        0.0
    );

    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    for n in names {
        let sql = format!("SELECT v FROM \"{}\"", n.replace('"', "\"\""));
        assert_eq!(s.sql("h", &sql).await, vec![json!({"v": 1.0})], "{n}");
    }
    assert!(!s.log().contains("deleting a Parquet file"), "{}", s.log());
}

#[tokio::test]
async fn a_point_far_in_the_future_is_refused_unless_the_server_allows_it() {
    let s = Server::start();
    // 2255-01-01: its buffered hour would never end, and the WAL never be cut
    let far = "m v=1 9020000000000000000\nm v=2 1767225600000000000\n";
    let (status, body) = s.post("/api/v3/write_lp?db=h", far).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["line_number"], 1, "{v}");
    let msg = v["data"][0]["error_message"].as_str().unwrap();
    assert!(
        msg.contains("2255-") && msg.contains("--max-future"),
        "{msg}"
    );
    assert_eq!(s.sql("h", "SELECT v FROM m").await, vec![json!({"v": 2.0})]);
    // the InfluxDB 1.x API refuses it the same way
    let (status, body) = s
        .post("/write?db=h&precision=s", "m v=3 9020000000\n")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("--max-future"), "{body}");
    healthy(&s).await;

    // a server told to take any time takes it, and persists it when the WAL passes its bound
    let s = Server::start_with(&[
        "--max-future",
        "none",
        "--wal-persist-bytes",
        "1",
        "--persist-interval",
        "50ms",
    ]);
    s.write_lp("h", far).await;
    let mut persisted = 0.0;
    for _ in 0..200 {
        let (_, metrics) = s.get("/metrics").await;
        persisted = sample(&metrics, "sluice_persisted_rows_total");
        if persisted == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        persisted, 2.0,
        "the background persister persisted both rows"
    );
    let dir = s.kill();
    let s = Server::start_in(dir, &["--max-future", "none"]);
    assert_eq!(
        s.sql("h", "SELECT v FROM m ORDER BY time").await,
        vec![json!({"v": 2.0}), json!({"v": 1.0})]
    );
}
