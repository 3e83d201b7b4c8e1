//! OTLP/HTTP metrics: the OpenTelemetry Python SDK's capture over HTTP, gzip, the database
//! header, and the error answers (google.rpc.Status bodies).

use std::io::Write as _;

use prost::Message;
use reqwest::StatusCode;
use serde_json::json;
use sluice_proto::otlp::{ExportMetricsServiceResponse, Status};

use crate::common::{Server, python};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    std::fs::read(
        std::path::Path::new(&dir)
            .join("tests/fixtures/otlp")
            .join(name),
    )
    .unwrap()
}

/// The OpenTelemetry Python SDK capture, in protobuf.
pub(crate) fn capture() -> Vec<u8> {
    fixture("python-sdk-metrics.pb")
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
    // the answer is in the request's encoding (protobuf when that is not one OTLP has)
    let asked = headers
        .iter()
        .find(|(k, _)| *k == "Content-Type")
        .map_or("", |(_, v)| *v);
    let want = if asked == JSON { JSON } else { PROTOBUF };
    assert_eq!(r.headers().get("content-type").unwrap(), want);
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
    // OTLP/JSON errors are JSON
    let (status, body) = export(
        &s,
        "",
        &[("Content-Type", JSON)],
        br#"{"resourceMetrics": {}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("'resourceMetrics' must be an array"),
        "{v}"
    );
}

#[tokio::test]
async fn the_json_capture_gives_the_same_rows_as_the_protobuf_one() {
    let s = Server::start();
    let (status, body) = export(
        &s,
        "?db=j",
        &[("Content-Type", JSON)],
        fixture("python-sdk-metrics.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "1", "{v}");
    let (status, _) = export(&s, "?db=p", &[("Content-Type", PROTOBUF)], capture()).await;
    assert_eq!(status, StatusCode::OK);
    for table in [
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "http_server_active_requests",
        "target_info",
    ] {
        let q = format!("SELECT * EXCLUDE (value), round(value, 9) AS value FROM {table}");
        let sorted = |rows: Vec<serde_json::Value>| {
            let mut rows: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
            rows.sort();
            rows
        };
        let (j, p) = (sorted(s.sql("j", &q).await), sorted(s.sql("p", &q).await));
        assert!(!j.is_empty(), "{table}");
        assert_eq!(j, p, "{table}");
    }
}

/// The real OpenTelemetry Python SDK (the packages `.ci/run` installs) exporting over
/// OTLP/HTTP protobuf, as an application would with `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`.
#[tokio::test]
async fn the_python_sdk_exports_to_sluice_over_http() {
    let s = Server::start();
    let exporter = "\
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
exporter = OTLPMetricExporter(endpoint=sys.argv[1] + '/v1/metrics?db=' + sys.argv[2])
";
    if python_sdk_export(&s.url, "py", exporter) {
        check_python_sdk_rows(&s, "py").await;
    }
}

/// The same over OTLP/gRPC: on the main port with the database in metadata, and gzip on
/// the `--otlp-grpc-bind` port to the default database.
#[tokio::test]
async fn the_python_sdk_exports_to_sluice_over_grpc() {
    let s = Server::start_with(&["--otlp-grpc-bind", "127.0.0.1:0"]);
    let exporter = "\
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
exporter = OTLPMetricExporter(endpoint=sys.argv[1], insecure=True,
                              headers={'x-sluice-database': sys.argv[2]})
";
    if python_sdk_export(&s.url, "pyg", exporter) {
        check_python_sdk_rows(&s, "pyg").await;
    }
    let exporter = "\
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression
exporter = OTLPMetricExporter(endpoint=sys.argv[1], insecure=True,
                              compression=Compression.Gzip)
";
    let grpc_url = s.otlp_grpc_url.as_deref().unwrap();
    if python_sdk_export(grpc_url, "unused", exporter) {
        check_python_sdk_rows(&s, "main").await;
    }
}

/// Runs a Python program that makes one of each kind of instrument, exports with the
/// `exporter` it is given (Python code that reads the URL from `sys.argv[1]` and the
/// database from `sys.argv[2]`), and flushes. False, with a note, when there is no Python
/// with the SDK to run it.
fn python_sdk_export(url: &str, db: &str, exporter: &str) -> bool {
    let Some(python) = python(
        "the Python SDK export",
        "opentelemetry-sdk and its OTLP exporters",
    ) else {
        return false;
    };
    let script = r#"
import sys
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
EXPORTER
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
resource = Resource.create({"service.name": "checkout", "service.namespace": "shop",
                            "service.instance.id": "py-1", "host.name": "h1"})
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("shop.orders", "2.0.1")
orders = meter.create_counter("orders.placed", unit="{order}")
orders.add(3, {"region": "eu"})
orders.add(2, {"region": "us"})
latency = meter.create_histogram("http.client.duration", unit="s")
latency.record(0.2, {"peer": "db"})
latency.record(0.7, {"peer": "db"})
queue = meter.create_up_down_counter("queue.size", unit="{item}")
queue.add(5)
queue.add(-2)
meter.create_observable_gauge("cpu.temperature", unit="Cel",
                              callbacks=[lambda options: [Observation(61.5, {"core": "0"})]])
ok = provider.force_flush()
provider.shutdown()
print("flushed" if ok else "flush failed")
"#;
    let script = script.replace("EXPORTER", exporter);
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(url)
        .arg(db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // force_flush exports once and shutdown once more: two collections of the same
    // cumulative values, at two times
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "flushed",
        "{stderr}"
    );
    // the SDK warns when an export was only partly stored, or failed and was retried
    for warning in ["partial", "Failed", "error"] {
        assert!(!stderr.contains(warning), "{stderr}");
    }
    true
}

/// The rows [`python_sdk_export`] makes in `db`.
async fn check_python_sdk_rows(s: &Server, db: &str) {
    let rows = s
        .sql(
            db,
            "SELECT DISTINCT region, value, job, instance, otel_scope_name, otel_scope_version \
             FROM orders_placed_total ORDER BY region",
        )
        .await;
    assert_eq!(
        rows,
        [
            json!({"region": "eu", "value": 3.0, "job": "shop/checkout", "instance": "py-1",
                   "otel_scope_name": "shop.orders", "otel_scope_version": "2.0.1"}),
            json!({"region": "us", "value": 2.0, "job": "shop/checkout", "instance": "py-1",
                   "otel_scope_name": "shop.orders", "otel_scope_version": "2.0.1"}),
        ]
    );
    let rows = s
        .sql(
            db,
            "SELECT DISTINCT c.value AS count, s.value AS sum, b.value AS inf \
             FROM http_client_duration_seconds_count c \
             JOIN http_client_duration_seconds_sum s ON c.peer = s.peer \
             JOIN http_client_duration_seconds_bucket b ON b.peer = c.peer AND b.le = '+Inf'",
        )
        .await;
    assert_eq!(
        rows,
        [json!({"count": 2.0, "sum": 0.8999999999999999, "inf": 2.0})]
    );
    let rows = s
        .sql(db, "SELECT count(DISTINCT time) AS exports FROM queue_size")
        .await;
    assert_eq!(rows, [json!({"exports": 2})]);
    let rows = s.sql(db, "SELECT DISTINCT value FROM queue_size").await;
    assert_eq!(rows, [json!({"value": 3.0})]);
    let rows = s
        .sql(
            db,
            "SELECT DISTINCT core, value FROM cpu_temperature_celsius",
        )
        .await;
    assert_eq!(rows, [json!({"core": "0", "value": 61.5})]);
    let rows = s
        .sql(db, "SELECT DISTINCT host_name FROM target_info")
        .await;
    assert_eq!(rows, [json!({"host_name": "h1"})]);
}
