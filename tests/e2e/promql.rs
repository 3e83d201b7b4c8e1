//! PromQL and the Prometheus HTTP API against the real thing: the same generated samples are
//! remote-written to a real Prometheus 2.42 and to Sluice, the same queries go to both, and
//! the answers must be equal (the same series with the same labels, values within 1e-9).
//!
//! Evaluation times sit off the sample grid, so that Prometheus 2's closed range and lookback
//! boundaries and Prometheus 3's left-open ones (what Sluice implements) select the same
//! samples.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use sluice_proto::prometheus::{Sample, v1};

use crate::common::{Rng, Server, external};
use crate::remote_write::{Child, free_port, post_remote_write};

/// 2026-01-01T00:00:00Z in milliseconds: the generated data starts here.
const BASE: i64 = 1_767_225_600_000;
/// Scrape interval of the generated data.
const INTERVAL: i64 = 15_000;
/// Samples per series: 40 minutes.
const SAMPLES: i64 = 161;
/// Prometheus's stale marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A real Prometheus with its remote-write receiver on.
struct Prometheus {
    url: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// A Prometheus with `config` after its global section.
    async fn start(bin: &std::path::Path, client: &reqwest::Client, config: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!("global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\n{config}"),
        )
        .unwrap();
        let port = free_port();
        let child = Child(
            std::process::Command::new(bin)
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
                && r.status() == StatusCode::OK
            {
                return Prometheus {
                    url,
                    _child: child,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        panic!("Prometheus did not become ready:\n{log}");
    }
}

fn series(labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> v1::TimeSeries {
    let mut labels: Vec<v1::Label> = labels
        .iter()
        .map(|(n, v)| v1::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    v1::TimeSeries {
        labels,
        samples: samples
            .into_iter()
            .map(|(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

/// Each instance scrapes at its own offset from the minute, none of them on a whole second
/// five apart from the query times.
fn offset(instance: &str) -> i64 {
    match instance {
        "i1" => 1234,
        "i2" => 2345,
        "i3" => 3456,
        "i4" => 4567,
        _ => 5678,
    }
}

/// Counters with resets, gauges (negative ones too), a classic histogram, a target that
/// goes away with stale markers and one that just stops.
fn generate() -> Vec<v1::TimeSeries> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut out = Vec::new();
    for instance in ["i1", "i2", "i3"] {
        for code in ["200", "500"] {
            let mut v = 1000.0 + rng.below(100) as f64;
            let samples = (0..SAMPLES)
                .map(|i| {
                    if i > 0 {
                        if rng.chance(3) {
                            v = rng.below(5) as f64; // a restart
                        } else {
                            v += rng.below(20) as f64 + if rng.chance(50) { 0.5 } else { 0.0 };
                        }
                    }
                    (BASE + i * INTERVAL + offset(instance), v)
                })
                .collect();
            out.push(series(
                &[
                    ("__name__", "d_http_requests_total"),
                    ("job", "api"),
                    ("instance", instance),
                    ("code", code),
                ],
                samples,
            ));
        }
        for room in ["a", "b"] {
            if instance == "i3" && room == "b" {
                continue;
            }
            // a hundredth apart, so that no two series tie (topk's choice among equals is
            // Prometheus's heap order)
            let distinct = out.len() as f64 / 100.0;
            let mut v = rng.below(30) as f64 - 5.0 + distinct;
            let samples = (0..SAMPLES)
                .map(|i| {
                    v += (rng.below(41) as f64 - 20.0) / 8.0;
                    (BASE + i * INTERVAL + offset(instance), v)
                })
                .collect();
            out.push(series(
                &[
                    ("__name__", "d_temperature_celsius"),
                    ("instance", instance),
                    ("room", room),
                ],
                samples,
            ));
        }
    }
    // a classic histogram per instance
    let bounds = ["0.05", "0.1", "0.5", "1", "+Inf"];
    for instance in ["i1", "i2"] {
        // long-running counters: a window over the first scrape extrapolates the same way in
        // Prometheus 2 and 3 (they differ on counters that start near zero)
        let mut buckets = [1000.0, 2000.0, 3000.0, 4000.0, 5000.0];
        let mut sum = 4321.0;
        let mut per_bucket: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 5];
        let mut sums = Vec::new();
        let mut counts = Vec::new();
        for i in 0..SAMPLES {
            let t = BASE + i * INTERVAL + offset(instance);
            for _ in 0..rng.below(30) {
                let b = rng.below(5);
                for c in buckets.iter_mut().skip(b) {
                    *c += 1.0;
                }
                sum += [0.03, 0.07, 0.3, 0.8, 2.0][b];
            }
            for (b, c) in buckets.iter().enumerate() {
                per_bucket[b].push((t, *c));
            }
            sums.push((t, sum));
            counts.push((t, buckets[4]));
        }
        for (b, samples) in per_bucket.into_iter().enumerate() {
            out.push(series(
                &[
                    ("__name__", "d_request_duration_seconds_bucket"),
                    ("instance", instance),
                    ("le", bounds[b]),
                ],
                samples,
            ));
        }
        out.push(series(
            &[
                ("__name__", "d_request_duration_seconds_sum"),
                ("instance", instance),
            ],
            sums,
        ));
        out.push(series(
            &[
                ("__name__", "d_request_duration_seconds_count"),
                ("instance", instance),
            ],
            counts,
        ));
    }
    // a target that goes away at minute 20: its last scrape is followed by a stale marker
    let mut gone: Vec<(i64, f64)> = (0..80)
        .map(|i| (BASE + i * INTERVAL + offset("i4"), (i % 9) as f64))
        .collect();
    gone.push((
        BASE + 80 * INTERVAL + offset("i4"),
        f64::from_bits(STALE_NAN),
    ));
    out.push(series(&[("__name__", "d_gone"), ("instance", "i4")], gone));
    // one that just stops at minute 25
    let stopped = (0..100)
        .map(|i| (BASE + i * INTERVAL + offset("i5"), 100.0 - i as f64))
        .collect();
    out.push(series(
        &[("__name__", "d_stopped"), ("instance", "i5")],
        stopped,
    ));
    out
}

async fn remote_write(client: &reqwest::Client, url: &str, series: &[v1::TimeSeries]) {
    // what Prometheus sends of the metric families (Prometheus itself keeps none it receives)
    let metadata = vec![v1::MetricMetadata {
        r#type: v1::MetricType::Counter as i32,
        metric_family_name: "d_http_requests_total".into(),
        help: "Requests served.".into(),
        unit: String::new(),
    }];
    let body = v1::WriteRequest {
        timeseries: series.to_vec(),
        metadata,
    }
    .encode_to_vec();
    let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    let (status, _, text) = post_remote_write(client, url, "application/x-protobuf", body).await;
    assert!(status.is_success(), "{url}: {status} {text}");
}

/// POSTs a form to `url` as Grafana does; the status and the JSON answer.
pub(crate) async fn form(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
) -> (StatusCode, Value) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let r = client
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}")),
    )
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Whether two sample values (as the API writes them) are equal within 1e-9 relative.
pub(crate) fn close(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_str(), b.as_str()) else {
        return false;
    };
    let parse = |s: &str| match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse::<f64>().unwrap_or(f64::NAN),
    };
    let (x, y) = (parse(a), parse(b));
    (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
}

/// Series of a vector or matrix answer keyed by their label sets, in answer order.
fn keyed(result: &Value) -> Vec<(String, Value)> {
    result
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let m: BTreeMap<String, Value> =
                        serde_json::from_value(s["metric"].clone()).unwrap();
                    (serde_json::to_string(&m).unwrap(), s.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Where two answers differ, in words; `None` when they are equal.
fn difference(ours: &Value, theirs: &Value, ordered: bool) -> Option<String> {
    let (od, td) = (&ours["data"], &theirs["data"]);
    if od["resultType"] != td["resultType"] {
        return Some(format!(
            "result types {} vs {}",
            od["resultType"], td["resultType"]
        ));
    }
    match td["resultType"].as_str() {
        Some("scalar") | Some("string") => {
            let (o, t) = (&od["result"], &td["result"]);
            (o[0] != t[0] || !(close(&o[1], &t[1]) || o[1] == t[1])).then(|| format!("{o} vs {t}"))
        }
        _ => {
            let mut o = keyed(&od["result"]);
            let mut t = keyed(&td["result"]);
            if !ordered {
                o.sort_by(|a, b| a.0.cmp(&b.0));
                t.sort_by(|a, b| a.0.cmp(&b.0));
            }
            let on: Vec<&String> = o.iter().map(|x| &x.0).collect();
            let tn: Vec<&String> = t.iter().map(|x| &x.0).collect();
            if on != tn {
                return Some(format!("series {on:?} vs {tn:?}"));
            }
            for ((name, os), (_, ts)) in o.iter().zip(&t) {
                let (op, tp): (Vec<Value>, Vec<Value>) = if ts.get("value").is_some() {
                    (vec![os["value"].clone()], vec![ts["value"].clone()])
                } else {
                    (
                        os["values"].as_array().cloned().unwrap_or_default(),
                        ts["values"].as_array().cloned().unwrap_or_default(),
                    )
                };
                if op.len() != tp.len() {
                    return Some(format!(
                        "{name}: {} points vs {}: {op:?} vs {tp:?}",
                        op.len(),
                        tp.len()
                    ));
                }
                for (a, b) in op.iter().zip(&tp) {
                    if a[0].as_f64() != b[0].as_f64() || !close(&a[1], &b[1]) {
                        return Some(format!("{name}: {a} vs {b}"));
                    }
                }
            }
            None
        }
    }
}

/// The expressions both servers answer; `double_exponential_smoothing` is asked of
/// Prometheus 2.42 by its old name, `holt_winters`.
fn corpus() -> Vec<String> {
    let at = secs(BASE + 10 * 60_000 + 7_777);
    let mut q: Vec<String> = [
        // selectors
        "d_temperature_celsius",
        "d_temperature_celsius{room=\"a\"}",
        "d_temperature_celsius{room!=\"a\"}",
        "d_temperature_celsius{instance=~\"i[12]\"}",
        "d_temperature_celsius{instance!~\"i1\", room=~\"a|b\"}",
        "{__name__=~\"d_temp.*\"}",
        "{__name__=~\"d_http_requests_total|d_temperature_celsius\", instance=\"i2\"}",
        "{__name__=~\"d_request_duration_seconds_(sum|count)\"}",
        "d_temperature_celsius offset 5m",
        "d_temperature_celsius offset -2m",
        "d_temperature_celsius @ start()",
        "d_temperature_celsius @ end()",
        "d_stopped",
        "d_gone",
        "d_http_requests_total{code=\"500\", job=\"api\"}",
        "d_nonexistent",
        // scalars and their operators
        "1 + 2 * 3",
        "2 ^ 3 ^ 2",
        "-(3 - 5) % 3",
        "1 > bool 2",
        "7 / 0",
        "-7 / 0 < bool 1",
        "0 / 0",
        "time()",
        "pi() * 2",
        "scalar(sum(d_temperature_celsius))",
        "scalar(d_temperature_celsius)",
        // vector and scalar
        "d_temperature_celsius * 2",
        "2 - d_temperature_celsius",
        "d_temperature_celsius % 7",
        "d_temperature_celsius ^ 2",
        "atan2(d_temperature_celsius, 10)",
        "d_temperature_celsius > 20",
        "20 < d_temperature_celsius",
        "d_temperature_celsius >= bool 20",
        "-d_temperature_celsius",
        "d_temperature_celsius != 0",
        // vector and vector
        "d_temperature_celsius == bool d_temperature_celsius",
        "d_temperature_celsius - d_temperature_celsius offset 1m",
        "d_temperature_celsius > on(instance, room) d_temperature_celsius offset 1m",
        "rate(d_http_requests_total{code=\"500\"}[5m]) / ignoring(code) rate(d_http_requests_total{code=\"200\"}[5m])",
        "rate(d_http_requests_total{code=\"500\"}[5m]) / on(instance) rate(d_http_requests_total{code=\"200\"}[5m])",
        "d_temperature_celsius * on(instance) group_left sum by (instance) (rate(d_http_requests_total[5m]))",
        "sum by (instance) (rate(d_http_requests_total[5m])) * on(instance) group_right d_temperature_celsius",
        "d_temperature_celsius + on(instance) group_left(job) max by (instance, job) (d_http_requests_total)",
        "d_temperature_celsius > bool ignoring(room) group_left avg by (instance) (d_temperature_celsius)",
        "rate(d_request_duration_seconds_sum[5m]) / rate(d_request_duration_seconds_count[5m])",
        "d_http_requests_total - d_http_requests_total",
        "d_temperature_celsius + d_http_requests_total",
        // set operators
        "d_temperature_celsius and d_temperature_celsius > 10",
        "d_temperature_celsius or d_stopped",
        "d_temperature_celsius unless on(instance) d_stopped",
        "d_temperature_celsius unless d_temperature_celsius < 0",
        "d_http_requests_total and on(instance) d_temperature_celsius{room=\"a\"} > 15",
        "d_gone or on() vector(1)",
        "d_temperature_celsius{room=\"a\"} or ignoring(room) d_temperature_celsius{room=\"b\"}",
        // aggregations
        "sum(d_temperature_celsius)",
        "sum by (instance) (d_temperature_celsius)",
        "sum without (room) (d_temperature_celsius)",
        "avg by (room) (d_temperature_celsius)",
        "min by (code) (rate(d_http_requests_total[5m]))",
        "max without (instance) (rate(d_http_requests_total[5m]))",
        "count(d_temperature_celsius > 0)",
        "count by (__name__) ({__name__=~\"d_.+\"})",
        "group by (instance) (d_http_requests_total)",
        "stddev(d_temperature_celsius)",
        "stdvar by (instance) (d_temperature_celsius)",
        "topk(2, d_temperature_celsius)",
        "bottomk by (code) (1, rate(d_http_requests_total[5m]))",
        "topk(scalar(count(d_stopped)), d_temperature_celsius)",
        "quantile(0.5, d_temperature_celsius)",
        "quantile by (room) (0.9, d_temperature_celsius)",
        "quantile(1.5, d_temperature_celsius)",
        "count_values(\"value\", round(d_temperature_celsius))",
        "count_values by (room) (\"v\", ceil(d_temperature_celsius / 10))",
        "sum(rate(d_http_requests_total[5m])) by (job)",
        // range functions
        "rate(d_http_requests_total[5m] @ end())",
        "rate(d_http_requests_total[10m] offset 5m)",
        "quantile_over_time(0.9, d_temperature_celsius[10m])",
        "quantile_over_time(0.25, d_temperature_celsius[3m])",
        "predict_linear(d_temperature_celsius[10m], 600)",
        "predict_linear(d_http_requests_total[5m] offset 3m, 60)",
        "double_exponential_smoothing(d_temperature_celsius[10m], 0.5, 0.3)",
        "double_exponential_smoothing(d_http_requests_total[5m], 0.1, 0.9)",
        // windows the scan aggregates (range = step in the range queries)
        "avg_over_time(d_temperature_celsius[1m])",
        "sum_over_time(d_http_requests_total{code=\"200\"}[1m])",
        "count_over_time(d_gone[1m])",
        "count_over_time({__name__=~\"d_.+\"}[1m])",
        "avg_over_time(d_temperature_celsius[1m] offset 150s)",
        "sum by (instance) (avg_over_time({__name__=~\"d_temp.*|d_stopped\"}[1m]))",
        "avg_over_time(d_temperature_celsius[1m]) - avg_over_time(d_temperature_celsius[3m])",
        // subqueries
        "max_over_time(rate(d_http_requests_total[2m])[10m:1m])",
        "avg_over_time(d_temperature_celsius[5m:30s])",
        "min_over_time(sum by (instance) (d_temperature_celsius)[15m:2m] offset 1m)",
        "rate(d_http_requests_total[5m:])",
        "deriv(d_temperature_celsius[10m:1m])",
        "max_over_time(d_gone[10m:1m])",
        "sum_over_time(d_temperature_celsius[3m:45s] @ start())",
        // functions of instant vectors
        "abs(d_temperature_celsius)",
        "ceil(d_temperature_celsius)",
        "floor(d_temperature_celsius)",
        "exp(d_temperature_celsius / 100)",
        "sqrt(abs(d_temperature_celsius))",
        "sqrt(d_temperature_celsius)",
        "ln(abs(d_temperature_celsius) + 1)",
        "log2(d_temperature_celsius)",
        "log10(abs(d_temperature_celsius))",
        "sgn(d_temperature_celsius)",
        "round(d_temperature_celsius)",
        "round(d_temperature_celsius, 5)",
        "round(d_temperature_celsius, 0.3)",
        "clamp(d_temperature_celsius, 0, 20)",
        "clamp(d_temperature_celsius, 20, 0)",
        "clamp_min(d_temperature_celsius, 5)",
        "clamp_max(d_temperature_celsius, 5)",
        "sin(d_temperature_celsius)",
        "cos(d_temperature_celsius)",
        "tan(d_temperature_celsius)",
        "asin(d_temperature_celsius / 100)",
        "acos(d_temperature_celsius / 100)",
        "atan(d_temperature_celsius)",
        "sinh(d_temperature_celsius / 10)",
        "cosh(d_temperature_celsius / 10)",
        "tanh(d_temperature_celsius)",
        "asinh(d_temperature_celsius)",
        "acosh(abs(d_temperature_celsius) + 1)",
        "atanh(d_temperature_celsius / 100)",
        "deg(d_temperature_celsius)",
        "rad(d_temperature_celsius)",
        "timestamp(d_temperature_celsius)",
        "timestamp(d_temperature_celsius offset 1m)",
        "timestamp(sum(d_temperature_celsius))",
        "vector(time())",
        "vector(1) + vector(2)",
        "year()",
        "month()",
        "day_of_month()",
        "day_of_week()",
        "hour()",
        "minute()",
        "days_in_month()",
        "year(d_temperature_celsius * 1e8)",
        "hour(vector(time() + 3600 * 5))",
        "absent(d_nonexistent{job=\"x\"})",
        "absent(d_temperature_celsius)",
        "absent(sum(d_nonexistent))",
        "absent_over_time(d_nonexistent{instance=\"q\"}[5m])",
        "absent_over_time(d_gone[1m])",
        "label_replace(d_temperature_celsius, \"dst\", \"$1-x\", \"instance\", \"i(.*)\")",
        "label_replace(d_temperature_celsius, \"room\", \"\", \"room\", \"b\")",
        "label_replace(d_temperature_celsius, \"instance\", \"same\", \"instance\", \".*\")",
        "label_join(d_temperature_celsius, \"joined\", \"/\", \"instance\", \"room\")",
        "label_join(d_temperature_celsius, \"__name__\", \"_\", \"room\")",
        "histogram_quantile(0.9, rate(d_request_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(d_request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.99, d_request_duration_seconds_bucket)",
        "histogram_quantile(0, d_request_duration_seconds_bucket)",
        "histogram_quantile(1.2, d_request_duration_seconds_bucket)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    q.push(format!("increase(d_http_requests_total[1m] @ {at})"));
    q.push(format!("d_temperature_celsius @ {at} offset 30s"));
    for f in [
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "changes",
        "resets",
        "avg_over_time",
        "sum_over_time",
        "count_over_time",
        "min_over_time",
        "max_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "last_over_time",
        "present_over_time",
    ] {
        q.push(format!("{f}(d_http_requests_total[5m])"));
        q.push(format!("{f}(d_temperature_celsius[2m])"));
    }
    q.push("sort(d_temperature_celsius)".into());
    q.push("sort_desc(rate(d_http_requests_total[5m]))".into());
    q
}

/// Asks `ours` and `theirs` (Prometheus API roots) each expression, at six instants and as
/// a range query: how many queries were asked, and where the answers differ.
async fn ask_both(
    client: &reqwest::Client,
    ours: &str,
    theirs: &str,
    exprs: Vec<String>,
) -> (usize, Vec<String>) {
    let instants: Vec<i64> = [5, 12, 20, 26, 33, 39]
        .iter()
        .map(|m| BASE + m * 60_000 + 7_777)
        .collect();
    let (start, end) = (BASE + 2 * 60_000 + 7_777, BASE + 42 * 60_000 + 7_777);
    let mut asked = 0;
    let mut failures = Vec::new();
    for expr in exprs {
        let ordered = expr.starts_with("sort");
        let theirs_expr = expr.replace("double_exponential_smoothing", "holt_winters");
        let mut cases: Vec<(&str, Vec<(&str, String)>)> = instants
            .iter()
            .map(|&t| ("query", vec![("time", secs(t))]))
            .collect();
        if !ordered {
            cases.push((
                "query_range",
                vec![
                    ("start", secs(start)),
                    ("end", secs(end)),
                    ("step", "60".into()),
                ],
            ));
        }
        for (endpoint, mut params) in cases {
            asked += 1;
            params.push(("query", expr.clone()));
            let (os, ob) = form(client, &format!("{ours}/{endpoint}"), &params).await;
            params.pop();
            params.push(("query", theirs_expr.clone()));
            let (ts, tb) = form(client, &format!("{theirs}/{endpoint}"), &params).await;
            let at = format!("{endpoint} {expr} {params:?}");
            if os != ts {
                failures.push(format!("{at}: status {os} vs {ts}: {ob} vs {tb}"));
            } else if ts == StatusCode::OK {
                if let Some(d) = difference(&ob, &tb, ordered) {
                    failures.push(format!("{at}: {d}"));
                }
            } else if ob["errorType"] != tb["errorType"] {
                failures.push(format!("{at}: {ob} vs {tb}"));
            }
        }
    }
    (asked, failures)
}

#[tokio::test]
async fn promql_answers_as_a_real_prometheus_does() {
    let Some(bin) = external(
        "SLUICE_TEST_PROMETHEUS",
        "promql_answers_as_a_real_prometheus_does",
        "the prometheus program",
    ) else {
        return;
    };
    let s = Server::start();
    let client = reqwest::Client::new();
    let prometheus = Prometheus::start(&bin, &client, "").await;
    let data = generate();
    remote_write(&client, &format!("{}/api/v1/write", prometheus.url), &data).await;
    remote_write(&client, &s.at("/api/v1/write?db=promql"), &data).await;

    let ours = s.at("/prometheus/promql/api/v1");
    let theirs = format!("{}/api/v1", prometheus.url);
    let (asked, mut failures) = ask_both(&client, &ours, &theirs, corpus()).await;
    // Metric names go only from the answer (Prometheus 3's delayed name removal, as with
    // its promql-delayed-name-removal feature, and as VictoriaMetrics answers): a function's
    // result can still be grouped by the name it came from. Prometheus 2.42 drops the names
    // at once (one series {}, or an error for two metrics).
    let t = secs(BASE + 20 * 60_000 + 7_777);
    for (expr, names) in [
        (
            "max(max_over_time(d_temperature_celsius[1m])) by (__name__)",
            vec!["d_temperature_celsius"],
        ),
        (
            "sum by (__name__) (rate({__name__=~\"d_request_duration_seconds_(sum|count)\"}[5m]))",
            vec![
                "d_request_duration_seconds_count",
                "d_request_duration_seconds_sum",
            ],
        ),
    ] {
        let (status, v) = form(
            &client,
            &format!("{ours}/query"),
            &[("query", expr.into()), ("time", t.clone())],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{expr}: {v}");
        let mut got: Vec<&str> = v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metric"]["__name__"].as_str().unwrap_or(""))
            .collect();
        got.sort();
        assert_eq!(got, names, "{expr}: {v}");
    }
    let (status, v) = form(
        &client,
        &format!("{ours}/query"),
        &[
            (
                "query",
                "rate({__name__=~\"d_request_duration_seconds_(sum|count)\"}[5m])".into(),
            ),
            ("time", t.clone()),
        ],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "without their names the answer's series collide: {v}"
    );
    let (_, metadata) = s
        .get("/prometheus/promql/api/v1/metadata?metric=d_http_requests_total")
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&metadata).unwrap(),
        serde_json::json!({"status": "success", "data": {"d_http_requests_total": [
            {"type": "counter", "help": "Requests served.", "unit": ""}
        ]}})
    );
    // the metadata APIs, as the metric browser and label_values() ask them
    let window = format!(
        "start={}&end={}",
        secs(BASE + 60_000),
        secs(BASE + 30 * 60_000)
    );
    for path in [
        format!("series?match[]=d_temperature_celsius&{window}"),
        format!(
            "series?match[]=%7B__name__%3D~%22d_http.%2A%22%2Ccode%3D%22500%22%7D&match[]=d_gone&{window}"
        ),
        format!("labels?match[]=d_request_duration_seconds_bucket&{window}"),
        format!("label/instance/values?match[]=d_http_requests_total&{window}"),
        format!("label/le/values?{window}"),
        format!("label/__name__/values?{window}"),
    ] {
        let ask = |root: &str| {
            let url = format!("{root}/{path}");
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        };
        let (o, t) = (ask(&ours).await, ask(&theirs).await);
        let sorted = |v: &Value| {
            let mut items: Vec<String> = v["data"]
                .as_array()
                .map(|a| a.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            items.sort();
            items
        };
        if o["status"] != "success" || sorted(&o) != sorted(&t) {
            failures.push(format!("{path}: {o} vs {t}"));
        }
    }
    assert!(asked >= 150, "only {asked} queries");
    assert!(
        failures.is_empty(),
        "{} of {asked} answers differ from Prometheus's:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A Prometheus with nothing of its own reads Sluice's data through remote read
/// (`remote_read:`), and answers as Sluice does.
#[tokio::test]
async fn prometheus_reads_sluice_through_remote_read() {
    let Some(bin) = external(
        "SLUICE_TEST_PROMETHEUS",
        "prometheus_reads_sluice_through_remote_read",
        "the prometheus program",
    ) else {
        return;
    };
    let s = Server::start();
    let client = reqwest::Client::new();
    remote_write(&client, &s.at("/api/v1/write?db=promql"), &generate()).await;
    let prometheus = Prometheus::start(
        &bin,
        &client,
        &format!(
            "remote_read:\n  - url: {}\n    read_recent: true\n",
            s.at("/prometheus/promql/api/v1/read")
        ),
    )
    .await;
    let exprs: Vec<String> = [
        "d_temperature_celsius",
        "d_gone",
        "d_stopped",
        "{__name__=~\"d_request_duration_seconds_(sum|count)\", instance!=\"i2\"}",
        "rate(d_http_requests_total{code=~\"5..\"}[5m])",
        "sum by (instance) (increase(d_http_requests_total[10m] offset 3m))",
        "histogram_quantile(0.9, rate(d_request_duration_seconds_bucket[5m]))",
        "max_over_time(d_temperature_celsius{room!=\"b\"}[15m:1m])",
        "d_temperature_celsius > on(instance, room) d_temperature_celsius offset 1m",
        "absent(d_nonexistent{job=\"x\"})",
    ]
    .iter()
    .map(|e| e.to_string())
    .collect();
    let (asked, failures) = ask_both(
        &client,
        &s.at("/prometheus/promql/api/v1"),
        &format!("{}/api/v1", prometheus.url),
        exprs,
    )
    .await;
    assert!(
        failures.is_empty(),
        "{} of {asked} answers of Prometheus over remote read differ from Sluice's:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // the raw protocol: one query, its series and their samples
    use sluice_proto::prometheus::read::{
        LabelMatcher, MatchType, Query, ReadRequest, ReadResponse,
    };
    let request = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: BASE,
            end_timestamp_ms: BASE + 30 * 60_000,
            matchers: vec![LabelMatcher {
                r#type: MatchType::Eq as i32,
                name: "__name__".into(),
                value: "d_gone".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![0],
    };
    let read = |url: String, request: &ReadRequest| {
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        client
            .post(url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .body(body)
            .send()
    };
    let r = read(s.at("/api/v1/read?db=promql"), &request)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-encoding"], "snappy");
    let bytes = r.bytes().await.unwrap();
    let raw = snap::raw::Decoder::new().decompress_vec(&bytes).unwrap();
    let answer = ReadResponse::decode(&raw[..]).unwrap();
    let series = &answer.results[0].timeseries;
    assert_eq!(series.len(), 1);
    let samples = &series[0].samples;
    // 80 samples and the stale marker that ended them
    assert_eq!(samples.len(), 81);
    assert_eq!(samples[80].value.to_bits(), STALE_NAN);

    // the same, streamed as XOR chunks: one frame (length, CRC-32C, message)
    let streamed = ReadRequest {
        accepted_response_types: vec![1, 0],
        ..request
    };
    let r = read(s.at("/prometheus/promql/api/v1/read"), &streamed)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
    );
    let bytes = r.bytes().await.unwrap();
    let (mut len, mut at) = (0usize, 0usize);
    for shift in (0..).step_by(7) {
        let b = bytes[at];
        at += 1;
        len |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
    }
    let message = &bytes[at + 4..at + 4 + len];
    assert_eq!(at + 4 + len, bytes.len(), "one frame");
    let answer = sluice_proto::prometheus::read::ChunkedReadResponse::decode(message).unwrap();
    assert_eq!(answer.query_index, 0);
    let series = &answer.chunked_series[0];
    assert!(
        series
            .labels
            .iter()
            .any(|l| l.name == "instance" && l.value == "i4")
    );
    // 81 samples: a chunk of 120 at most, its sample count first (big-endian)
    assert_eq!(series.chunks.len(), 1);
    let chunk = &series.chunks[0];
    assert_eq!(chunk.r#type, 1, "XOR");
    assert_eq!(u16::from_be_bytes([chunk.data[0], chunk.data[1]]), 81);
    assert_eq!(
        (chunk.min_time_ms, chunk.max_time_ms),
        (BASE + offset("i4"), BASE + 80 * INTERVAL + offset("i4"))
    );
}

/// Errors and limits answer as Prometheus's do (status, `errorType`, a message that says
/// what and where), the database comes from the path, `db` or the default, and tokens
/// guard the API as every other one.
#[tokio::test]
async fn promql_errors_limits_databases_and_tokens() {
    let s = Server::start_with(&["--promql-max-samples", "100"]);
    let lp: String = (0..200)
        .map(|i| {
            format!(
                "cpu,host=h{} usage_user={i} {}\n",
                i % 2,
                1_767_225_600 + i * 10
            )
        })
        .collect();
    s.write_lp("m", lp.trim_end()).await;
    let client = reqwest::Client::new();
    let query = |path: &str, q: &str| {
        let url = s.at(path);
        let client = client.clone();
        let q = q.to_string();
        async move {
            form(
                &client,
                &url,
                &[("query", q), ("time", "1767227600".into())],
            )
            .await
        }
    };

    let (status, e) = query("/prometheus/m/api/v1/query", "sum(rate(cpu_usage_user[5m])").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["status"], "error");
    assert_eq!(e["errorType"], "bad_data");
    let message = e["error"].as_str().unwrap();
    assert!(
        message.starts_with("invalid parameter \"query\": 1:"),
        "{e}"
    );
    assert!(message.contains("parse error"), "{e}");

    // 200 samples of two series over the 100 allowed (max_over_time needs them all; an
    // average or count the scan would aggregate itself)
    let (status, e) = query(
        "/prometheus/m/api/v1/query",
        "max_over_time(cpu_usage_user[1h])",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["errorType"], "execution");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("--promql-max-samples"),
        "{e}"
    );
    assert!(e["error"].as_str().unwrap().contains("100"), "{e}");

    let range = |params: &[(&'static str, &'static str)]| {
        let url = s.at("/prometheus/m/api/v1/query_range");
        let client = client.clone();
        let params: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, v.to_string())).collect();
        async move { form(&client, &url, &params).await }
    };
    let (status, e) = range(&[
        ("query", "cpu_usage_user"),
        ("start", "1767227600"),
        ("end", "1767227000"),
        ("step", "60"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("end timestamp must not be before start"),
        "{e}"
    );
    let (status, e) = range(&[
        ("query", "cpu_usage_user"),
        ("start", "0"),
        ("end", "1767227000"),
        ("step", "1"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("maximum resolution"),
        "{e}"
    );
    let (status, e) = range(&[
        ("query", "cpu_usage_user"),
        ("start", "soon"),
        ("end", "1767227000"),
        ("step", "1m"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"].as_str().unwrap().contains("\"start\""), "{e}");
    let (status, e) = range(&[
        ("query", "cpu_usage_user[5m]"),
        ("start", "1767227000"),
        ("end", "1767227600"),
        ("step", "1m"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"].as_str().unwrap().contains("range vector"), "{e}");

    // the database: the path's, else db=, else the default (which has nothing)
    let series = |v: &Value| v["data"]["result"].as_array().map_or(0, Vec::len);
    let (_, v) = query("/prometheus/m/api/v1/query", "cpu_usage_user").await;
    assert_eq!(series(&v), 2, "{v}");
    let (_, v) = query("/api/v1/query?db=m", "cpu_usage_user").await;
    assert_eq!(series(&v), 2, "{v}");
    let (status, v) = query("/api/v1/query", "cpu_usage_user").await;
    assert_eq!((status, series(&v)), (StatusCode::OK, 0), "{v}");

    // tokens: none is refused once one exists; a token for another database is refused; a
    // token that may read m is taken as Bearer or as Basic's password (as Grafana sends it)
    let admin = s
        .client
        .post(s.at("/api/v3/configure/token/admin"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let token_for = |db: &str| {
        let r = s
            .client
            .post(s.at("/api/v3/configure/token"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"read": [db]}));
        async move {
            r.send().await.unwrap().json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (reader, other) = (token_for("m").await, token_for("elsewhere").await);
    let ask = |auth: Option<(&str, bool)>| {
        let mut r = client
            .post(s.at("/prometheus/m/api/v1/query"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("query=cpu_usage_user&time=1767227600");
        match auth {
            Some((t, true)) => r = r.bearer_auth(t),
            Some((t, false)) => r = r.basic_auth("grafana", Some(t)),
            None => {}
        }
        async move { r.send().await.unwrap().status() }
    };
    assert_eq!(ask(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(ask(Some((&other, true))).await, StatusCode::FORBIDDEN);
    assert_eq!(ask(Some((&reader, true))).await, StatusCode::OK);
    assert_eq!(ask(Some((&reader, false))).await, StatusCode::OK);
}
