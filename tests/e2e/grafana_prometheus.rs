//! Grafana's Prometheus data source pointed at Sluice (`docs/grafana/`): the calls Grafana
//! makes, in the order it makes them, over what a real Prometheus 2.42 scrapes from a real
//! node_exporter and remote-writes to Sluice. Grafana itself cannot run here, so the test
//! makes its requests: "Save & test", the metric and label browser, the template variables
//! (`label_values()`), and every panel's query with `$__interval` and `$__rate_interval`
//! expanded, as `POST /api/v1/query_range` forms with Grafana's step-aligned range. The same
//! Prometheus holds the same samples, so each panel's answer is also compared with its own.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Server, external};
use crate::grafana::start_node_exporter;
use crate::promql::{close, form};
use crate::remote_write::{free_port, start_prometheus_at};

fn docs() -> std::path::PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    std::path::PathBuf::from(dir).join("docs/grafana")
}

/// The provisioned Prometheus data source: its URL and scrape interval (`timeInterval`).
fn data_source() -> (String, u64) {
    let text =
        std::fs::read_to_string(docs().join("provisioning/datasources/sluice.yaml")).unwrap();
    let entry = text
        .split("- name:")
        .find(|e| e.contains("uid: sluice-promql"))
        .expect("a data source sluice-promql");
    let get = |key: &str| {
        entry
            .lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("sluice-promql has no {key}"))
    };
    assert_eq!(get("type"), "prometheus");
    assert_eq!(get("httpMethod"), "POST");
    let interval = get("timeInterval");
    let secs = interval.trim_end_matches('s').parse().unwrap();
    (get("url"), secs)
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    let r = client.get(url).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "success", "{url}: {text}");
    v["data"].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Grafana's `$__interval` for a range of `range` seconds drawn in `points` points, at least
/// `min` seconds, rounded as Grafana rounds it (to 1s, 2s, 5s, 10s, 15s, 20s, 30s, 1m, ...).
fn interval(range: u64, points: u64, min: u64) -> u64 {
    let raw = (range / points).max(1);
    let nice = [
        1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600,
    ]
    .into_iter()
    .find(|&n| n >= raw)
    .unwrap_or(3600);
    nice.max(min)
}

/// (name, query) of each template variable, or (panel title, expression) of each target.
type Named = Vec<(String, String)>;

/// The dashboard's template variables and panel expressions.
fn dashboard() -> (Named, Named) {
    let path = docs().join("dashboards/node-exporter-promql.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let variables = json["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["datasource"]["uid"], "sluice-promql");
            (
                v["name"].as_str().unwrap().to_string(),
                v["query"]["query"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut exprs = Vec::new();
    for p in json["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "sluice-promql");
            exprs.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    (variables, exprs)
}

/// `label_values(<selector>, <label>)` -> (selector, label).
fn label_values(query: &str) -> (String, String) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(): {query}"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    (selector.trim().to_string(), label.trim().to_string())
}

#[tokio::test]
async fn grafanas_prometheus_data_source_draws_the_node_exporter_dashboard() {
    let test = "grafanas_prometheus_data_source_draws_the_node_exporter_dashboard";
    let (Some(prometheus), Some(node_exporter)) = (
        external("SLUICE_TEST_PROMETHEUS", test, "the prometheus program"),
        external(
            "SLUICE_TEST_NODE_EXPORTER",
            test,
            "the prometheus-node-exporter program",
        ),
    ) else {
        return;
    };
    let (url, scrape) = data_source();
    let path = url
        .strip_prefix("http://localhost:8181")
        .expect("Sluice's default address");
    let db = path.strip_prefix("/prometheus/").unwrap().to_string();
    let s = Server::start();
    let api = s.at(&format!("{path}/api/v1"));
    let addr = s.at("").trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let (_node, node_port) = start_node_exporter(&node_exporter, dir.path());
    let prom_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n\
             remote_write:\n  - url: http://{addr}/api/v1/write?db={db}\n    \
             queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n"
    );
    let _prometheus = start_prometheus_at(&prometheus, dir.path(), &config, prom_port);
    let theirs = format!("http://127.0.0.1:{prom_port}/api/v1");
    let client = reqwest::Client::new();
    // wait (up to two minutes) for thirty scrapes to arrive: a rate over a minute at a
    // 15-second step needs them
    let mut scrapes = 0;
    for _ in 0..1200 {
        let (status, v) = form(
            &client,
            &format!("{api}/query"),
            &[("query", "count_over_time(up[5m])".into())],
        )
        .await;
        if status == StatusCode::OK {
            scrapes = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if scrapes >= 30 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        scrapes >= 30,
        "the scrapes did not arrive; prometheus:\n{}",
        log("prometheus.log")
    );

    // "Save & test"
    let info = get(&client, &format!("{api}/status/buildinfo")).await;
    assert!(info["version"].as_str().unwrap().starts_with('3'), "{info}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, one) = form(
        &client,
        &format!("{api}/query"),
        &[("query", "1+1".into()), ("time", now.to_string())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["data"]["resultType"], "scalar");
    assert_eq!(one["data"]["result"][1], "2");

    // the metric and label browser, over the last ten minutes
    let (start, end) = (now - 600, now);
    let window = format!("start={start}&end={end}");
    let labels = strings(&get(&client, &format!("{api}/labels?{window}")).await);
    for l in ["__name__", "instance", "job", "cpu", "mode", "device"] {
        assert!(labels.contains(&l.to_string()), "{l} not in {labels:?}");
    }
    let names = strings(&get(&client, &format!("{api}/label/__name__/values?{window}")).await);
    for n in [
        "up",
        "node_cpu_seconds_total",
        "node_load1",
        "node_uname_info",
    ] {
        assert!(names.contains(&n.to_string()), "{n} not in {names:?}");
    }
    let series = get(
        &client,
        &format!("{api}/series?match[]=node_load1&{window}"),
    )
    .await;
    let instance = format!("127.0.0.1:{node_port}");
    assert_eq!(series.as_array().unwrap().len(), 1, "{series}");
    assert_eq!(series[0]["instance"], instance.as_str());
    assert_eq!(series[0]["job"], "node");
    let modes = strings(
        &get(
            &client,
            &format!("{api}/label/mode/values?match[]=node_cpu_seconds_total&{window}"),
        )
        .await,
    );
    assert!(modes.contains(&"idle".to_string()), "{modes:?}");

    // the template variables, each as Grafana asks for label_values(<selector>, <label>)
    let (variables, panels) = dashboard();
    let mut values: HashMap<String, Vec<String>> = HashMap::new();
    for (name, query) in &variables {
        let (mut selector, label) = label_values(query);
        for (n, v) in &values {
            selector = selector.replace(&format!("${n}"), &v[0]);
        }
        let url = format!(
            "{api}/label/{label}/values?match[]={}&{window}",
            form_urlencoded::byte_serialize(selector.as_bytes()).collect::<String>()
        );
        let got = strings(&get(&client, &url).await);
        assert!(!got.is_empty(), "{name}: {query} has no values");
        values.insert(name.clone(), got);
    }
    assert_eq!(values["job"], ["node"]);
    assert_eq!(values["instance"], std::slice::from_ref(&instance));

    // every panel, as Grafana sends it for the last ten minutes in 300 points
    let step = interval(end - start, 300, scrape);
    let rate_interval = (step + scrape).max(4 * scrape);
    // Grafana aligns the range to the step; the comparison with Prometheus shifts it half a
    // second off the scrape times, where Prometheus 2's closed windows and Sluice's (3's)
    // left-open ones hold the same samples
    let (status, ts) = form(
        &client,
        &format!("{theirs}/query"),
        &[("query", "timestamp(up)".into())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ts}");
    let scrape_ms = (ts["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1000.0)
        .round() as u64
        % 1000;
    let shift = ((scrape_ms + 500) % 1000) as f64 / 1000.0;
    let aligned = (start / step * step, end / step * step);
    // what Sluice has of the scrapes so far (remote write sends them a second or so late):
    // the comparison ends a step before the newest
    let (status, newest) = form(
        &client,
        &format!("{api}/query"),
        &[("query", "max(timestamp(up))".into())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{newest}");
    let newest = newest["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap() as u64;
    let compared_end = (newest - 1) / step * step - step;
    for (panel, expr) in &panels {
        let expr = expr
            .replace("$__rate_interval", &format!("{rate_interval}s"))
            .replace("$__interval", &format!("{step}s"))
            .replace("$job", &values["job"][0])
            .replace(
                "$instance",
                &format!("({})", values["instance"].join("|")).replace('.', "\\\\."),
            );
        let params = |end: u64, offset: f64| {
            vec![
                ("query", expr.clone()),
                ("start", format!("{}", aligned.0 as f64 + offset)),
                ("end", format!("{}", end as f64 + offset)),
                ("step", step.to_string()),
            ]
        };
        let (status, drawn) = form(
            &client,
            &format!("{api}/query_range"),
            &params(aligned.1, 0.0),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{panel}: {expr}: {drawn}");
        assert_eq!(drawn["data"]["resultType"], "matrix", "{panel}");
        let result = drawn["data"]["result"].as_array().unwrap();
        let optional = panel == "Network" || panel == "Filesystem used" || panel == "Disk I/O";
        assert!(
            optional || !result.is_empty(),
            "{panel}: {expr} drew nothing"
        );
        for series in result {
            for point in series["values"].as_array().unwrap() {
                let v: f64 = point[1].as_str().unwrap().parse().unwrap();
                assert!(v.is_finite(), "{panel}: {expr}: {point}");
                if panel.starts_with("CPU busy") || panel == "Memory used" {
                    assert!((0.0..=100.0).contains(&v), "{panel}: {v}");
                }
            }
        }
        // the same query to Prometheus, off the scrape grid
        let (os, ours) = form(
            &client,
            &format!("{api}/query_range"),
            &params(compared_end, shift),
        )
        .await;
        let (ts, theirs) = form(
            &client,
            &format!("{theirs}/query_range"),
            &params(compared_end, shift),
        )
        .await;
        assert_eq!(
            (os, ts),
            (StatusCode::OK, StatusCode::OK),
            "{panel}: {ours} {theirs}"
        );
        let key = |s: &Value| s["metric"].to_string();
        let mut o: Vec<&Value> = ours["data"]["result"].as_array().unwrap().iter().collect();
        let mut t: Vec<&Value> = theirs["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        o.sort_by_key(|s| key(s));
        t.sort_by_key(|s| key(s));
        assert_eq!(
            o.iter().map(|s| key(s)).collect::<Vec<_>>(),
            t.iter().map(|s| key(s)).collect::<Vec<_>>(),
            "{panel}: {expr}"
        );
        for (a, b) in o.iter().zip(&t) {
            let (av, bv) = (
                a["values"].as_array().unwrap(),
                b["values"].as_array().unwrap(),
            );
            assert_eq!(av.len(), bv.len(), "{panel}: {expr}: {a} vs {b}");
            for (p, q) in av.iter().zip(bv) {
                assert_eq!(p[0], q[0], "{panel}: {expr}");
                assert!(close(&p[1], &q[1]), "{panel}: {expr}: {p} vs {q}");
            }
        }
    }
}
