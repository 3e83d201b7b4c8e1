//! OTLP/gRPC metrics as they are on the wire: HTTP/2 in clear text on the main port and on
//! `--otlp-grpc-bind`, the database from metadata, gzip, and the gRPC statuses (with the
//! `RetryInfo` exporters read when the buffer is full).

use std::io::Write as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use sluice_proto::otlp::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, RetryInfo, ScopeMetrics, Status,
};

use crate::common::{Server, sample};
use crate::otlp::capture;

pub(crate) const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// An export of one gauge point, `g` = 1 at 1 s after the epoch.
fn one_gauge_point() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    gauge: Some(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: 1_000_000_000,
                            as_double: Some(1.0),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// What a gRPC call came back with.
#[derive(Debug)]
pub(crate) struct Answer {
    /// `grpc-status`, from the trailers or, for an error before any message, the headers
    pub(crate) code: i32,
    pub(crate) message: String,
    /// the response message, without its 5-byte frame header
    body: Vec<u8>,
    /// `google.rpc.retryinfo-bin`
    retry_info: Option<RetryInfo>,
    /// `grpc-status-details-bin`
    details: Option<Status>,
}

/// Calls `path` at `base_url` with one message (gzip-compressed when `gzip`) and `metadata`.
pub(crate) async fn call(
    base_url: &str,
    path: &str,
    metadata: &[(&str, &str)],
    message: &[u8],
    gzip: bool,
) -> Answer {
    let (flag, payload) = if gzip {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(message).unwrap();
        (1u8, z.finish().unwrap())
    } else {
        (0u8, message.to_vec())
    };
    let mut framed = vec![flag];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    let mut request = Request::post(format!("{base_url}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if gzip {
        request = request.header("grpc-encoding", "gzip");
    }
    for (k, v) in metadata {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(Bytes::from(framed))).unwrap();
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let response = client.request(request).await.unwrap();
    // gRPC answers 200 whatever the outcome; the outcome is grpc-status
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let bytes = collected.to_bytes();
    let meta = |name: &str| trailers.get(name).or_else(|| headers.get(name)).cloned();
    let code = meta("grpc-status").expect("a grpc-status");
    let binary = |name: &str| meta(name).map(|v| base64_decode(v.to_str().unwrap()));
    Answer {
        code: code.to_str().unwrap().parse().unwrap(),
        message: meta("grpc-message")
            .map(|v| percent_decode(v.to_str().unwrap()))
            .unwrap_or_default(),
        body: if bytes.len() >= 5 {
            bytes[5..].to_vec()
        } else {
            Vec::new()
        },
        retry_info: binary("google.rpc.retryinfo-bin").map(|b| RetryInfo::decode(&b[..]).unwrap()),
        details: binary("grpc-status-details-bin").map(|b| Status::decode(&b[..]).unwrap()),
    }
}

/// gRPC's `-bin` metadata: base64, padded or not.
fn base64_decode(s: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {s}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(digit).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn the_capture_over_grpc_lands_in_the_database_the_metadata_names() {
    let s = Server::start();
    let a = call(
        &s.url,
        EXPORT,
        &[("x-sluice-database", "grpc")],
        &capture(),
        false,
    )
    .await;
    assert_eq!(a.code, 0, "{a:?}");
    // the capture's one exponential histogram point is not stored, and the answer says so
    let response = ExportMetricsServiceResponse::decode(&a.body[..]).unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("exponential histogram"),
        "{partial:?}"
    );
    // the same capture over OTLP/HTTP, in another database, gives the same rows
    let r = s
        .client
        .post(s.at("/v1/metrics?db=http"))
        .header("Content-Type", "application/x-protobuf")
        .body(capture())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let tables_of = |db: &'static str| {
        let sql = format!(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = '{db}' ORDER BY table_name"
        );
        let s = &s;
        async move { s.sql(db, &sql).await }
    };
    let tables = tables_of("grpc").await;
    assert!(tables.len() >= 5, "{tables:?}");
    assert_eq!(tables, tables_of("http").await);
    for t in &tables {
        let t = t["table_name"].as_str().unwrap();
        let sql = format!("SELECT * FROM \"{t}\" ORDER BY 1, 2, 3, 4");
        assert_eq!(s.sql("grpc", &sql).await, s.sql("http", &sql).await, "{t}");
    }
    // each transport's writes are counted under its own endpoint, alike
    let (_, metrics) = s.get("/metrics").await;
    let of = |name: &str, endpoint: &str| {
        sample(&metrics, &format!("{name}{{endpoint=\"{endpoint}\"}}"))
    };
    for endpoint in ["/v1/metrics", EXPORT] {
        assert_eq!(of("sluice_write_lines_rejected_total", endpoint), 1.0);
        assert_eq!(
            of("sluice_http_request_duration_seconds_count", endpoint),
            1.0
        );
    }
    for name in [
        "sluice_write_lines_accepted_total",
        "sluice_write_values_accepted_total",
    ] {
        assert!(of(name, EXPORT) > 0.0, "{name}");
        assert_eq!(of(name, EXPORT), of(name, "/v1/metrics"), "{name}");
    }
    // nothing went to the default database
    let (status, _) = s.query_raw("main", "SELECT 1", "json").await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_otlp_grpc_port_takes_gzip_and_serves_only_otlp() {
    let s = Server::start_with(&["--otlp-grpc-bind", "127.0.0.1:0"]);
    let grpc_url = s
        .otlp_grpc_url
        .clone()
        .expect("the OTLP/gRPC listener's address");
    assert_ne!(grpc_url, s.url);
    let a = call(&grpc_url, EXPORT, &[], &capture(), true).await;
    assert_eq!(a.code, 0, "{a:?}");
    // to the default database
    let rows = s.sql("main", "SELECT count(*) AS n FROM target_info").await;
    assert_eq!(rows[0]["n"], 1);
    // other gRPC methods are not served here (Flight is, on the main port), and unknown
    // ones nowhere
    for (base, method) in [
        (&grpc_url, "/arrow.flight.protocol.FlightService/Handshake"),
        (&grpc_url, "/grpc.health.v1.Health/Check"),
        (&s.url, "/grpc.health.v1.Health/Check"),
    ] {
        let a = call(base, method, &[], b"", false).await;
        assert_eq!(a.code, 12, "UNIMPLEMENTED: {a:?}");
        assert!(a.message.contains(method), "{a:?}");
    }
    // nor is HTTP
    let r = s
        .client
        .get(format!("{grpc_url}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_grpc_exports_get_the_status_the_otlp_retry_rules_expect() {
    let s = Server::start_with(&[
        "--max-request-bytes",
        "1000",
        "--buffer-memory-limit",
        "1",
        "--persist-after",
        "100000h",
    ]);
    let a = call(&s.url, EXPORT, &[], b"\xff\xff\xff not protobuf", false).await;
    assert_eq!(a.code, 3, "INVALID_ARGUMENT: {a:?}");
    assert!(
        a.message
            .contains("not an OTLP ExportMetricsServiceRequest"),
        "{a:?}"
    );
    let a = call(&s.url, EXPORT, &[], &capture(), false).await;
    assert_eq!(a.code, 11, "OUT_OF_RANGE: {a:?}");
    assert!(a.message.contains("--max-request-bytes"), "{a:?}");

    // the first write fills the one-byte buffer; an export after it is told to come back
    s.write_lp("main", "m v=1").await;
    let small = one_gauge_point().encode_to_vec();
    let a = call(&s.url, EXPORT, &[], &small, false).await;
    assert_eq!(a.code, 14, "UNAVAILABLE: {a:?}");
    assert!(a.message.contains("buffer"), "{a:?}");
    let delay = a.retry_info.expect("RetryInfo").retry_delay.unwrap();
    assert_eq!(delay.seconds, 5);
    let details = a.details.expect("status details");
    assert_eq!(details.code, 14);
    assert_eq!(details.details[0].type_url, RetryInfo::TYPE_URL);
}
