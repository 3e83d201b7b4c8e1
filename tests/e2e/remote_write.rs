//! Prometheus remote write: real Prometheus 2.42 captures, 2.0 requests, malformed input, and a
//! real Prometheus scraping a target and remote-writing to Sluice.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use prost::Message;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sluice_proto::prometheus::{Sample, v1, v2};

use crate::common::{Server, external};

const V1: &str = "application/x-protobuf";

fn fixtures() -> std::path::PathBuf {
    // at run time: a test binary built from another clone sharing CARGO_TARGET_DIR keeps
    // working
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&dir).join("tests/fixtures/prometheus")
}

fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(data).unwrap()
}

/// POSTs `body` (already compressed) to `/api/v1/write<query>` with `content_type` and
/// `Content-Encoding: snappy`.
async fn send(
    s: &Server,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, String) {
    post_remote_write(
        &s.client,
        &s.at(&format!("/api/v1/write{query}")),
        content_type,
        body,
    )
    .await
}

/// POSTs a remote write `body` (already compressed) to `url`, as Prometheus does.
pub(crate) async fn post_remote_write(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, String) {
    let r = client
        .post(url)
        .header("Content-Type", content_type)
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

fn label(name: &str, value: &str) -> v1::Label {
    v1::Label {
        name: name.into(),
        value: value.into(),
    }
}

fn series(labels: Vec<v1::Label>, samples: &[(f64, i64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels,
        samples: samples
            .iter()
            .map(|&(value, timestamp)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

fn count(rows: &[Value]) -> u64 {
    rows[0]["n"].as_u64().unwrap()
}

#[tokio::test]
async fn prometheus_captures_are_stored_with_their_metadata() {
    let s = Server::start();
    let mut expected_rows: HashMap<String, usize> = HashMap::new();
    let mut families = HashSet::new();
    for n in 1..=3 {
        let path = fixtures().join(format!("remote-write-1.0-000{n}.bin"));
        let body = std::fs::read(&path).unwrap();
        let headers: Value = serde_json::from_str(
            &std::fs::read_to_string(path.with_extension("headers.json")).unwrap(),
        )
        .unwrap();
        let ct = headers["headers"]["Content-Type"].as_str().unwrap();
        // the independent reading: prost over the same bytes
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = v1::WriteRequest::decode(&raw[..]).unwrap();
        for ts in &req.timeseries {
            let name = &ts
                .labels
                .iter()
                .find(|l| l.name == "__name__")
                .unwrap()
                .value;
            *expected_rows.entry(name.clone()).or_default() += ts.samples.len();
        }
        families.extend(req.metadata.iter().map(|m| m.metric_family_name.clone()));
        let (status, _, text) = send(&s, "?db=prom", ct, body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path:?}: {text}");
    }
    assert!(expected_rows.len() > 100 && families.len() > 100);
    // every table, with as many rows as samples were sent (the captures hold no duplicates)
    let tables = s
        .sql(
            "prom",
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'prom'",
        )
        .await;
    assert_eq!(tables.len(), expected_rows.len());
    for (table, rows) in expected_rows.iter().take(40) {
        let got = s
            .sql(
                "prom",
                &format!("SELECT count(value) AS n FROM \"{table}\""),
            )
            .await;
        assert_eq!(count(&got) as usize, *rows, "{table}");
    }
    let up = s
        .sql(
            "prom",
            "SELECT job, instance, value FROM up ORDER BY job, instance LIMIT 1",
        )
        .await;
    assert!(
        up[0]["job"].is_string() && up[0]["value"].is_number(),
        "{up:?}"
    );
    let meta = s
        .sql("prom", "SELECT count(*) AS n FROM system.metric_metadata")
        .await;
    assert_eq!(count(&meta) as usize, families.len());
    let go = s
        .sql(
            "prom",
            "SELECT type, help FROM system.metric_metadata WHERE metric = 'go_goroutines'",
        )
        .await;
    assert_eq!(go[0]["type"], "gauge", "{go:?}");
    assert!(
        go[0]["help"].as_str().unwrap().contains("goroutines"),
        "{go:?}"
    );
}

#[tokio::test]
async fn remote_write_2_reports_what_it_wrote() {
    let s = Server::start();
    let symbols = [
        "",
        "__name__",
        "http_requests_total",
        "job",
        "api",
        "Requests.",
    ];
    let req = v2::Request {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![
                Sample {
                    value: 1.0,
                    timestamp: 1_767_225_600_000,
                },
                Sample {
                    value: 2.0,
                    timestamp: 1_767_225_615_000,
                },
            ],
            exemplars: vec![v2::Exemplar {
                labels_refs: vec![],
                value: 1.0,
                timestamp: 1_767_225_600_000,
            }],
            metadata: Some(v2::Metadata {
                r#type: v2::MetricType::Counter as i32,
                help_ref: 5,
                unit_ref: 0,
            }),
            ..Default::default()
        }],
    };
    let (status, headers, text) =
        send(&s, "", v2::CONTENT_TYPE, snappy(&req.encode_to_vec())).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let written = |h: &str| {
        headers
            .get(format!("x-prometheus-remote-write-{h}-written"))
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(written("samples").as_deref(), Some("2"));
    assert_eq!(written("histograms").as_deref(), Some("0"));
    assert_eq!(written("exemplars").as_deref(), Some("0"));
    // no db parameter: the default database
    let rows = s
        .sql(
            "main",
            "SELECT job, value, time FROM http_requests_total ORDER BY time",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"job": "api", "value": 1.0, "time": "2026-01-01T00:00:00"}),
            json!({"job": "api", "value": 2.0, "time": "2026-01-01T00:00:15"}),
        ]
    );
    let meta = s
        .sql(
            "main",
            "SELECT metric, type, help, unit FROM system.metric_metadata",
        )
        .await;
    assert_eq!(
        meta,
        vec![
            json!({"metric": "http_requests_total", "type": "counter", "help": "Requests.", "unit": ""})
        ]
    );
    // the exemplar was counted, not silently dropped
    let (_, metrics) = s.get("/metrics").await;
    assert!(
        metrics.contains("sluice_remote_write_not_stored_total{kind=\"exemplar\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn stale_markers_are_kept_apart_from_values_and_retries_do_not_duplicate() {
    let s = Server::start();
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let req = v1::WriteRequest {
        timeseries: vec![series(
            vec![label("__name__", "temp"), label("room", "a")],
            &[
                (20.5, 1_767_225_600_000),
                (f64::NAN, 1_767_225_615_000),
                (stale, 1_767_225_630_000),
            ],
        )],
        metadata: vec![],
    };
    let body = snappy(&req.encode_to_vec());
    for _ in 0..2 {
        let (status, _, text) = send(&s, "?db=t", V1, body.clone()).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    }
    let rows = s
        .sql("t", "SELECT count(*) AS n, count(value) AS v FROM temp")
        .await;
    assert_eq!(rows, vec![json!({"n": 2, "v": 2})]);
    let nan = s
        .sql("t", "SELECT count(*) AS n FROM temp WHERE isnan(value)")
        .await;
    assert_eq!(count(&nan), 1);
    // the marker is in the metric's stale-marker table, once, which SQL does not list
    let markers = s
        .sql(
            "t",
            "SELECT count(*) AS n FROM __stale_temp WHERE room = 'a'",
        )
        .await;
    assert_eq!(count(&markers), 1);
    let tables = s.sql("t", "SHOW TABLES").await;
    assert!(
        !tables.iter().any(|t| t["table_name"] == "__stale_temp"),
        "{tables:?}"
    );
}

#[tokio::test]
async fn malformed_requests_get_the_status_senders_expect() {
    let s = Server::start();
    let good = || {
        series(
            vec![label("__name__", "up"), label("job", "a")],
            &[(1.0, 1_767_225_600_000)],
        )
    };
    let valid = v1::WriteRequest {
        timeseries: vec![good()],
        metadata: vec![],
    }
    .encode_to_vec();

    // not snappy
    let (status, _, text) = send(&s, "?db=m", V1, b"\xff\xff\xff\xff\xffjunk".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("snappy"), "{text}");
    // snappy, but a truncated message
    let (status, _, text) = send(&s, "?db=m", V1, snappy(&valid[..valid.len() - 4])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("malformed"), "{text}");
    // wrong content type, wrong encoding
    let (status, _, text) = send(&s, "?db=m", "application/json", snappy(&valid)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");
    let r = s
        .client
        .post(s.at("/api/v1/write?db=m"))
        .header("Content-Type", V1)
        .header("Content-Encoding", "gzip")
        .body(valid.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, text) = send(
        &s,
        "?db=m",
        "application/x-protobuf;proto=io.prometheus.write.v9.Request",
        snappy(&valid),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");

    // bad series are refused and named; the good ones in the same request are stored
    let req = v1::WriteRequest {
        timeseries: vec![
            good(),
            series(vec![label("job", "nameless")], &[(1.0, 1_767_225_600_000)]),
            series(
                vec![
                    label("__name__", "up"),
                    label("job", "a"),
                    label("job", "b"),
                ],
                &[(1.0, 1_767_225_600_000)],
            ),
        ],
        metadata: vec![],
    };
    let (status, _, text) = send(&s, "?db=m", V1, snappy(&req.encode_to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("2 of 3 series were not stored"), "{text}");
    assert!(
        text.contains("series 2 {job=\\\"nameless\\\"}: the series has no __name__ label"),
        "{text}"
    );
    assert!(
        text.contains("label \\\"job\\\" appears more than once"),
        "{text}"
    );
    assert_eq!(count(&s.sql("m", "SELECT count(*) AS n FROM up").await), 1);

    // a series whose value column is already an integer (from line protocol) is refused alone
    s.write_lp("m", "count_lp,job=a value=1i 1767225600000000000")
        .await;
    let req = v1::WriteRequest {
        timeseries: vec![
            series(
                vec![label("__name__", "count_lp"), label("job", "a")],
                &[(2.0, 1_767_225_660_000)],
            ),
            good(),
        ],
        metadata: vec![],
    };
    let (status, _, text) = send(&s, "?db=m", V1, snappy(&req.encode_to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("1 of 2 series were not stored"), "{text}");
}

/// A real Prometheus (the Debian package's 2.42) scrapes Sluice's own `/metrics` and
/// remote-writes what it scrapes to Sluice; SQL then sees the scraped series.
#[tokio::test]
async fn a_real_prometheus_scrapes_and_remote_writes_to_sluice() {
    let Some(prometheus) = external(
        "SLUICE_TEST_PROMETHEUS",
        "a real Prometheus",
        "the prometheus program",
    ) else {
        return;
    };
    let s = Server::start();
    let addr = s.at("").trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{addr}']\n\
         remote_write:\n  - url: http://{addr}/api/v1/write?db=prom\n    \
         queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n    \
         metadata_config:\n      send_interval: 1s\n"
    );
    let prometheus = start_prometheus(&prometheus, dir.path(), &config);
    // wait (up to a minute) for the scraped series to arrive
    let mut found: Vec<Value> = Vec::new();
    for _ in 0..600 {
        let (status, body) = s
            .query_raw(
                "prom",
                "SELECT job, instance, value FROM up WHERE job = 'sluice'",
                "json",
            )
            .await;
        if status == StatusCode::OK {
            found = serde_json::from_str(&body).unwrap();
            if !found.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        !found.is_empty(),
        "no scraped series arrived; prometheus log:\n{log}"
    );
    assert_eq!(found[0]["instance"], addr.as_str(), "{found:?}");
    assert_eq!(found[0]["value"], 1.0, "{found:?}");
    // Sluice's own metrics came through too, and Prometheus' metadata for them
    let rows = s
        .sql(
            "prom",
            "SELECT count(*) AS n FROM sluice_http_responses_total WHERE job = 'sluice'",
        )
        .await;
    assert!(count(&rows) > 0);
    let mut meta = 0;
    for _ in 0..300 {
        meta = count(
            &s.sql(
                "prom",
                "SELECT count(*) AS n FROM system.metric_metadata \
                 WHERE metric = 'sluice_http_responses_total' AND type = 'counter'",
            )
            .await,
        );
        if meta > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(prometheus);
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert_eq!(meta, 1, "metadata did not arrive; prometheus log:\n{log}");
    assert!(
        !log.contains("non-recoverable error"),
        "Prometheus dropped data:\n{log}"
    );
}

/// A child process, killed when the test ends however it ends.
pub(crate) struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `prometheus` with `config` (its YAML), keeping its files and its log
/// (`prometheus.log`) in `dir`.
pub(crate) fn start_prometheus(prometheus: &Path, dir: &Path, config: &str) -> Child {
    start_prometheus_at(prometheus, dir, config, free_port())
}

/// [`start_prometheus`] listening on `port`.
pub(crate) fn start_prometheus_at(prometheus: &Path, dir: &Path, config: &str, port: u16) -> Child {
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    Child(
        std::process::Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}
