//! Liveness endpoints and the server's own metrics.

use reqwest::StatusCode;

use crate::common::{Server, sample};

#[tokio::test]
async fn ping_and_health() {
    let s = Server::start();
    let r = s.client.get(s.at("/ping")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let version = r.headers()["x-influxdb-version"].to_str().unwrap();
    assert!(version.starts_with("3."), "{version}");
    let r = s.client.head(s.at("/ping")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.client.get(s.at("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.client.get(s.at("/no/such/page")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_count_lines_values_requests_and_the_buffer() {
    let s = Server::start();
    s.write_lp("m", "cpu a=1,b=2 1\ncpu a=3 2").await;
    let (st, _) = s.post("/write?db=m", "cpu a=1 3\ncpu a=\n").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.sql("m", "SELECT * FROM cpu").await;
    let text = s
        .client
        .get(s.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v3 = "{endpoint=\"/api/v3/write_lp\"}";
    let v1 = "{endpoint=\"/write\"}";
    assert_eq!(
        sample(&text, &format!("sluice_write_lines_accepted_total{v3}")),
        2.0
    );
    assert_eq!(
        sample(&text, &format!("sluice_write_values_accepted_total{v3}")),
        3.0
    );
    assert_eq!(
        sample(&text, &format!("sluice_write_lines_accepted_total{v1}")),
        1.0
    );
    assert_eq!(
        sample(&text, &format!("sluice_write_lines_rejected_total{v1}")),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "sluice_http_request_duration_seconds_count{endpoint=\"/api/v3/query_sql\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "sluice_http_responses_total{endpoint=\"/write\",status=\"400\"}"
        ),
        1.0
    );
    assert!(sample(&text, "sluice_wal_fsync_duration_seconds_count") >= 1.0);
    assert_eq!(sample(&text, "sluice_buffer_rows"), 3.0);
    assert!(sample(&text, "sluice_buffer_bytes") > 0.0);
}
