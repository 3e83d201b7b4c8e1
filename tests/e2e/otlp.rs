//! OTLP/HTTP metrics: the OpenTelemetry Python SDK's capture over HTTP, gzip, the database
//! header, and the error answers (google.rpc.Status bodies).

use std::io::Write as _;

use prost::Message;
use reqwest::StatusCode;
use serde_json::json;
use sluice_proto::otlp::{ExportMetricsServiceResponse, Status};

use crate::common::Server;

const PROTOBUF: &str = "application/x-protobuf";

fn capture() -> Vec<u8> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    std::fs::read(std::path::Path::new(&dir).join("tests/fixtures/otlp/python-sdk-metrics.pb"))
        .unwrap()
}

/// POSTs `body` to `/v1/metrics<query>`; returns the status and the raw response body.
async fn export(
    s: &Server,
    query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut r = s
        .client
        .post(s.at(&format!("/v1/metrics{query}")))
        .body(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        PROTOBUF,
        "OTLP answers in protobuf"
    );
    (status, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn the_python_sdk_capture_is_stored_under_prometheus_names() {
    let s = Server::start();
    let (status, body) = export(&s, "?db=otel", &[("Content-Type", PROTOBUF)], capture()).await;
    assert_eq!(status, StatusCode::OK);
    let response = ExportMetricsServiceResponse::decode(&body[..]).unwrap();
    // the exponential histogram's one point is reported, not silently dropped
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("exponential histogram"),
        "{partial:?}"
    );

    let rows = s
        .sql(
            "otel",
            "SELECT job, instance, otel_scope_name, count(*) AS n, sum(value) AS total \
             FROM http_server_requests_total GROUP BY 1, 2, 3",
        )
        .await;
    assert_eq!(
        rows,
        [json!({"job": "shop/checkout", "instance": "checkout-1",
                "otel_scope_name": "shop.checkout", "n": 18, "total": 200.0})]
    );
    let rows = s
        .sql(
            "otel",
            "SELECT count(*) AS n FROM http_server_request_duration_seconds_bucket \
             WHERE le = '+Inf'",
        )
        .await;
    assert_eq!(rows, [json!({"n": 18})]);
    let rows = s
        .sql(
            "otel",
            "SELECT state, value FROM system_memory_utilization_ratio",
        )
        .await;
    assert_eq!(rows, [json!({"state": "used", "value": 0.43})]);
    let rows = s
        .sql(
            "otel",
            "SELECT host_name, deployment_environment FROM target_info",
        )
        .await;
    assert_eq!(
        rows,
        [json!({"host_name": "node-1", "deployment_environment": "staging"})]
    );

    // the same export gzipped, to the database in the header: same rows, and a retry of it
    // merges instead of doubling
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&capture()).unwrap();
    let gz = gz.finish().unwrap();
    for _ in 0..2 {
        let (status, _) = export(
            &s,
            "",
            &[
                ("Content-Type", PROTOBUF),
                ("Content-Encoding", "gzip"),
                ("X-Sluice-Database", "otel2"),
            ],
            gz.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let rows = s
        .sql(
            "otel2",
            "SELECT count(*) AS n FROM http_server_requests_total",
        )
        .await;
    assert_eq!(rows, [json!({"n": 18})]);
}

#[tokio::test]
async fn bad_exports_get_an_otlp_status_body() {
    let s = Server::start_with(&["--max-request-bytes", "1000"]);
    for (headers, body, want, text) in [
        (
            vec![("Content-Type", PROTOBUF)],
            b"\xff\xff\xff not protobuf".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an OTLP ExportMetricsServiceRequest",
        ),
        (
            vec![("Content-Type", "application/json")],
            b"{}".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "OTLP/JSON is not supported yet",
        ),
        (
            vec![("Content-Type", "text/plain")],
            b"x".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/x-protobuf",
        ),
        (
            vec![("Content-Type", PROTOBUF), ("Content-Encoding", "br")],
            b"x".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding 'br'",
        ),
        (
            vec![("Content-Type", PROTOBUF)],
            capture(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "--max-request-bytes",
        ),
    ] {
        let (status, body) = export(&s, "", &headers, body).await;
        assert_eq!(status, want, "{headers:?}");
        let st = Status::decode(&body[..]).unwrap();
        assert!(st.message.contains(text), "{headers:?}: {st:?}");
        assert_ne!(st.code, 0);
    }
}
