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
    assert!(msg.contains("table name") && msg.contains("--max-name-bytes"), "{msg}");
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
    assert_eq!(sample(&metrics, "sluice_persist_partition_errors_total"), 0.0);

    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    for n in names {
        let sql = format!("SELECT v FROM \"{}\"", n.replace('"', "\"\""));
        assert_eq!(s.sql("h", &sql).await, vec![json!({"v": 1.0})], "{n}");
    }
    assert!(!s.log().contains("deleting a Parquet file"), "{}", s.log());
}
