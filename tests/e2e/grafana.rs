//! Grafana: the data sources and dashboards of `docs/grafana/`, run the way Grafana's InfluxDB
//! data source in SQL mode runs them. Grafana itself cannot run here, so the test does its
//! part: the browser replaces template variables, the backend expands its macros (the same
//! matching as `grafana-plugin-sdk-go`'s `sqlutil.Interpolate`, with the InfluxDB data
//! source's `$__dateBin`, `$__timeFrom` ...), then runs each query as a Flight SQL statement
//! with the `database` call header (GetFlightInfo, which must name exactly one endpoint, then
//! DoGet) and turns the batches into a frame, which needs Arrow types it can read and, for a
//! time series, a `time` column in ascending order.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use sluice_storage::time::rfc3339;
use tonic::transport::Channel;

use crate::common::Server;
use crate::common::external;
use crate::flight::channel;
use crate::remote_write::{Child, free_port, start_prometheus};

fn docs() -> PathBuf {
    // at run time: a test binary built from another clone sharing CARGO_TARGET_DIR keeps
    // working
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    PathBuf::from(dir).join("docs/grafana")
}

/// One data source of the provisioning file, with the settings Grafana's SQL mode reads.
#[derive(Debug, Default)]
struct DataSource {
    uid: String,
    kind: String,
    url: String,
    version: String,
    db_name: String,
    insecure_grpc: bool,
}

/// The data sources of `provisioning/datasources/sluice.yaml` (a flat list: each entry
/// starts at `- name:`, its settings are `key: value` lines).
fn data_sources() -> Vec<DataSource> {
    let text =
        std::fs::read_to_string(docs().join("provisioning/datasources/sluice.yaml")).unwrap();
    let mut all: Vec<DataSource> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with("- name:") {
            all.push(DataSource::default());
        }
        let (Some(ds), Some((key, value))) = (all.last_mut(), line.split_once(':')) else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "uid" => ds.uid = value,
            "type" => ds.kind = value,
            "url" => ds.url = value,
            "version" => ds.version = value,
            "dbName" => ds.db_name = value,
            "insecureGrpc" => ds.insecure_grpc = value == "true",
            _ => {}
        }
    }
    all
}

/// The database of the data source `uid`, checking it is set up as Sluice needs.
fn database_of(uid: &str) -> String {
    let all = data_sources();
    let ds = all
        .iter()
        .find(|d| d.uid == uid)
        .unwrap_or_else(|| panic!("no provisioned data source {uid}: {all:?}"));
    assert_eq!(ds.kind, "influxdb", "{ds:?}");
    assert_eq!(ds.version, "SQL", "{ds:?}");
    assert!(ds.insecure_grpc, "Sluice serves plain h2c: {ds:?}");
    assert_eq!(ds.url, "http://localhost:8181", "{ds:?}");
    assert!(!ds.db_name.is_empty(), "{ds:?}");
    ds.db_name.clone()
}

/// One query of a dashboard panel (or of a template variable).
#[derive(Debug)]
struct PanelQuery {
    panel: String,
    ref_id: String,
    sql: String,
    /// `time_series` or `table`.
    format: String,
    /// The panel's minimum interval in seconds (Grafana's `$__dateBin` stride when the time
    /// range is short).
    interval: u64,
}

struct Dashboard {
    /// The data source every panel uses.
    data_source: String,
    variables: Vec<(String, String)>,
    queries: Vec<PanelQuery>,
}

fn dashboard(file: &str) -> Dashboard {
    let path = docs().join("dashboards").join(file);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut sources = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in json["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap().to_string();
        let interval = panel["interval"].as_str().map_or(1, seconds);
        sources.insert(panel["datasource"]["uid"].as_str().unwrap().to_string());
        for t in panel["targets"].as_array().unwrap() {
            sources.insert(t["datasource"]["uid"].as_str().unwrap().to_string());
            queries.push(PanelQuery {
                panel: title.clone(),
                ref_id: t["refId"].as_str().unwrap().to_string(),
                sql: t["rawSql"].as_str().unwrap().to_string(),
                format: t["format"].as_str().unwrap().to_string(),
                interval,
            });
        }
    }
    let mut variables = Vec::new();
    for v in json["templating"]["list"].as_array().unwrap() {
        sources.insert(v["datasource"]["uid"].as_str().unwrap().to_string());
        let name = v["name"].as_str().unwrap().to_string();
        variables.push((name, v["query"]["query"].as_str().unwrap().to_string()));
    }
    assert_eq!(sources.len(), 1, "{file}: one data source: {sources:?}");
    assert!(!queries.is_empty());
    Dashboard {
        data_source: sources.pop_first().unwrap(),
        variables,
        queries,
    }
}

/// `10s`, `1m`: Grafana's interval strings, in seconds.
fn seconds(text: &str) -> u64 {
    let (n, unit) = text.split_at(text.len() - 1);
    n.parse::<u64>().unwrap() * if unit == "m" { 60 } else { 1 }
}

/// The time range of a dashboard request, in Unix seconds.
#[derive(Clone, Copy)]
struct Range {
    from: i64,
    to: i64,
}

/// What the browser does first: `$name` and `${name}` become the variable's values, each
/// quoted, separated by commas (how Grafana's SQL data sources write a multi-value variable).
fn replace_variables(sql: &str, values: &HashMap<String, Vec<String>>) -> String {
    let mut names: Vec<_> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = sql.to_string();
    for name in names {
        let list = values[name]
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(",");
        out = out.replace(&format!("${{{name}}}"), &list);
        let pattern = format!("${name}");
        let mut rest = out.as_str();
        let mut replaced = String::new();
        while let Some(at) = rest.find(&pattern) {
            let after = &rest[at + pattern.len()..];
            replaced.push_str(&rest[..at]);
            if after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                replaced.push_str(&pattern);
            } else {
                replaced.push_str(&list);
            }
            rest = after;
        }
        replaced.push_str(rest);
        out = replaced;
    }
    out
}

/// Where `$__<name>` occurs in `sql`, with its argument text: the same scan as the SDK's
/// `getMacroMatches` (the arguments run from the first `(` after the name to its matching
/// `)`; a `)` before any `(` means there are none).
fn macro_matches(sql: &str, name: &str) -> Vec<(String, Option<String>)> {
    let needle = format!("$__{name}");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = sql[from..].find(&needle).map(|i| i + from) {
        from = at + needle.len();
        let next = sql[from..].chars().next();
        if next.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `\b` in the SDK's pattern
        }
        let tail = &sql[at..];
        let (mut depth, mut arg_start, mut end) = (0usize, None, None);
        for (i, c) in tail.char_indices() {
            if depth == 0 && end.is_some() {
                break;
            }
            match c {
                '(' => {
                    depth += 1;
                    arg_start.get_or_insert(i + 1);
                }
                ')' if depth == 0 => {
                    end = None;
                    break;
                }
                ')' => {
                    depth -= 1;
                    end = Some(i + 1);
                }
                _ => {}
            }
        }
        match (arg_start, end) {
            (Some(start), Some(end)) => found.push((
                tail[..end].to_string(),
                Some(tail[start..end - 1].to_string()),
            )),
            _ => found.push((needle.clone(), None)),
        }
    }
    found
}

/// What Grafana's backend does next: the InfluxDB SQL mode's macros, then the SDK's.
fn expand_macros(sql: &str, range: Range, interval: u64) -> String {
    // RFC 3339 in UTC to the second, as Go's `time.RFC3339` writes them
    let (from, to) = (
        rfc3339(range.from * 1_000_000_000),
        rfc3339(range.to * 1_000_000_000),
    );
    let macro_names = [
        "dateBin",
        "dateBinAlias",
        "interval",
        "timeFrom",
        "timeTo",
        "timeFilter",
    ];
    let mut out = sql.to_string();
    for name in macro_names {
        for (text, args) in macro_matches(&out, name) {
            let args: Vec<String> = args
                .map(|a| a.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            let with = match name {
                "dateBin" | "dateBinAlias" => {
                    assert_eq!(args.len(), 1, "{text}");
                    let alias = if name == "dateBinAlias" {
                        format!(" as {}_binned", args[0])
                    } else {
                        String::new()
                    };
                    format!(
                        "date_bin(interval '{interval} second', {}, timestamp '1970-01-01T00:00:00Z'){alias}",
                        args[0]
                    )
                }
                "interval" => format!("interval '{interval} second'"),
                "timeFrom" => format!("cast('{from}' as timestamp)"),
                "timeTo" => format!("cast('{to}' as timestamp)"),
                _ => {
                    assert_eq!(args.len(), 1, "{text}");
                    let c = &args[0];
                    format!("{c} >= '{from}' AND {c} <= '{to}'")
                }
            };
            out = out.replace(&text, &with);
        }
    }
    assert!(!out.contains("$"), "left unexpanded: {out}");
    out
}

/// A query's answer as Grafana gets it.
struct Frame {
    batches: Vec<RecordBatch>,
}

impl Frame {
    fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.batches[0].schema()
    }

    fn strings(&self, column: &str) -> Vec<String> {
        let mut all = Vec::new();
        for b in &self.batches {
            let a = b.column_by_name(column).unwrap().as_string::<i32>();
            all.extend(a.iter().map(|v| v.unwrap_or_default().to_string()));
        }
        all
    }

    fn floats(&self, column: &str) -> Vec<Option<f64>> {
        let mut all = Vec::new();
        for b in &self.batches {
            let a = b.column_by_name(column).unwrap();
            let a = arrow::compute::cast(a, &DataType::Float64).unwrap();
            all.extend(a.as_primitive::<Float64Type>().iter());
        }
        all
    }

    fn times(&self) -> Vec<i64> {
        let mut all = Vec::new();
        for b in &self.batches {
            let a = b.column_by_name("time").unwrap();
            let a = a.as_primitive::<TimestampNanosecondType>();
            assert_eq!(a.null_count(), 0);
            all.extend(a.values().iter().copied());
        }
        all
    }
}

/// Runs `sql` as Grafana's Flight SQL client does.
async fn run(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Frame, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    if info.endpoint.len() != 1 {
        return Err(format!(
            "unsupported endpoint count in response: {}",
            info.endpoint.len()
        ));
    }
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| e.to_string())?;
    Ok(Frame { batches })
}

/// Types Grafana's `newField` turns into a frame field (anything else becomes JSON and loses
/// its values); timestamps are read as nanoseconds whatever their unit says.
fn grafana_reads(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Utf8 | Float32
            | Float64
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Boolean
            | Duration(_)
            | Timestamp(TimeUnit::Nanosecond, _)
    )
}

/// Checks `frame` as Grafana would turn it into a panel's data: readable types, and for a
/// time series a `time` column in ascending order, one row per series and time.
fn check_frame(q: &PanelQuery, frame: &Frame, sql: &str) {
    let what = format!("panel {:?} query {}:\n{sql}", q.panel, q.ref_id);
    assert!(frame.rows() > 0, "no rows for {what}");
    let schema = frame.schema();
    for f in schema.fields() {
        assert!(
            grafana_reads(f.data_type()),
            "{what}: column {} is {}, which Grafana cannot read",
            f.name(),
            f.data_type()
        );
    }
    if q.format != "time_series" {
        return;
    }
    assert!(
        schema.column_with_name("time").is_some(),
        "{what}: a time series needs a column named time"
    );
    let times = frame.times();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "{what}: Grafana's long-to-wide needs time ascending"
    );
    let labels: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.data_type() == &DataType::Utf8)
        .map(|f| frame.strings(f.name()))
        .collect();
    let mut seen = BTreeSet::new();
    for (i, t) in times.iter().enumerate() {
        let key: Vec<&str> = labels.iter().map(|l| l[i].as_str()).collect();
        assert!(
            seen.insert((*t, key)),
            "{what}: two rows for one series at {t}"
        );
    }
    assert!(
        schema.fields().iter().any(|f| f.data_type().is_numeric()),
        "{what}: no values"
    );
}

/// Runs every query of `dash` over `range` as Grafana would, variables set to all their
/// values. Returns the frames by `(panel, refId)`.
async fn run_dashboard(
    s: &Server,
    dash: &Dashboard,
    range: Range,
) -> HashMap<(String, String), Frame> {
    let db = database_of(&dash.data_source);
    let mut client = FlightSqlServiceClient::new(channel(s).await);
    client.set_header("database", &db);
    // Grafana's "Save & test" of the data source
    let health = run(&mut client, "select 1").await.unwrap();
    assert_eq!(health.rows(), 1);
    let mut values = HashMap::new();
    for (name, sql) in &dash.variables {
        let sql = expand_macros(sql, range, 1);
        let frame = run(&mut client, &sql)
            .await
            .unwrap_or_else(|e| panic!("variable {name}: {e}\n{sql}"));
        let first = frame.schema().field(0).name().clone();
        let all = frame.strings(&first);
        assert!(!all.is_empty(), "variable {name} has no values: {sql}");
        values.insert(name.clone(), all);
    }
    let mut frames = HashMap::new();
    for q in &dash.queries {
        let sql = expand_macros(&replace_variables(&q.sql, &values), range, q.interval);
        let frame = run(&mut client, &sql)
            .await
            .unwrap_or_else(|e| panic!("panel {:?} query {}: {e}\n{sql}", q.panel, q.ref_id));
        check_frame(q, &frame, &sql);
        frames.insert((q.panel.clone(), q.ref_id.clone()), frame);
    }
    frames
}

fn frame<'a>(frames: &'a HashMap<(String, String), Frame>, panel: &str) -> &'a Frame {
    &frames[&(panel.to_string(), "A".to_string())]
}

/// TSBS cpu-only lines (the shape `sluice-load` writes): `hosts` hosts every 10 s for an hour
/// from 2026-01-01T00:00Z, with deterministic values.
fn tsbs_cpu(hosts: usize) -> String {
    const START: i64 = 1_767_225_600_000_000_000;
    // the fields the dashboard reads, of the ten
    let fields = ["usage_user", "usage_system", "usage_idle"];
    let regions = ["us-east-1", "eu-west-1"];
    let mut lines = String::new();
    for step in 0..360i64 {
        for h in 0..hosts {
            let region = regions[h % regions.len()];
            lines.push_str(&format!(
                "cpu,hostname=host_{h},region={region},datacenter={region}a,rack={h},os=Ubuntu16.10,\
                 arch=x64,team=SF,service=9,service_version=1,service_environment=test "
            ));
            let values: Vec<String> = fields
                .iter()
                .enumerate()
                .map(|(i, f)| format!("{f}={}i", (step * 7 + h as i64 * 13 + i as i64 * 5) % 100))
                .collect();
            lines.push_str(&values.join(","));
            lines.push_str(&format!(" {}\n", START + step * 10_000_000_000));
        }
    }
    lines
}

/// The TSBS dashboard over an hour of three hosts, from the write buffer and again from
/// Parquet once persisted.
#[tokio::test]
async fn the_tsbs_dashboard_draws_as_grafana_would() {
    let dash = dashboard("tsbs-cpu.json");
    let db = database_of(&dash.data_source);
    let s = Server::start();
    s.write_lp(&db, &tsbs_cpu(3)).await;
    let hour = Range {
        from: 1_767_225_600,
        to: 1_767_225_600 + 3600,
    };
    let before = run_dashboard(&s, &dash, hour).await;
    let points = frame(&before, "Points in range");
    assert_eq!(points.floats("points"), [Some(1080.0)]);
    assert_eq!(points.floats("hosts"), [Some(3.0)]);
    // three hosts, one row each per 10 s bin (the panel's minimum interval)
    assert_eq!(frame(&before, "CPU user by host").rows(), 3 * 360);
    let last = frame(&before, "Last point per host");
    assert_eq!(last.strings("hostname"), ["host_0", "host_1", "host_2"]);
    // step 359, host 1: (359 * 7 + 13) % 100
    assert_eq!(last.floats("usage_user")[1], Some(26.0));

    let (status, body) = s.post("/api/v3/persist", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = run_dashboard(&s, &dash, hour).await;
    // the same rows (rows of one time may come in another order)
    let rows = |f: &Frame| {
        let text = arrow::util::pretty::pretty_format_batches(&f.batches)
            .unwrap()
            .to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    for (key, frame) in &before {
        let (a, b) = (rows(frame), rows(&after[key]));
        let differ = a.iter().zip(&b).find(|(x, y)| x != y);
        assert!(
            a.len() == b.len() && differ.is_none(),
            "{key:?} after persist: {} rows, then {}; first difference {differ:?}",
            a.len(),
            b.len()
        );
    }
}

/// SQL written for InfluxDB 3 (`iox.<table>`, as Grafana's examples have it) and the SQL
/// query builder's own queries (schemas, tables, columns) work as they are.
#[tokio::test]
async fn grafanas_query_builder_and_influxdb3_sql_work() {
    let s = Server::start();
    s.write_lp("bench", &tsbs_cpu(1)).await;
    let mut client = FlightSqlServiceClient::new(channel(&s).await);
    client.set_header("database", "bench");
    let datasets = run(
        &mut client,
        "SELECT DISTINCT TABLE_SCHEMA from information_schema.TABLES \
         where TABLE_TYPE != 'SYSTEM VIEW' ORDER BY TABLE_SCHEMA",
    )
    .await
    .unwrap();
    assert!(
        datasets
            .strings("table_schema")
            .contains(&"bench".to_string())
    );
    let tables = run(
        &mut client,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'bench' \
         ORDER BY table_name",
    )
    .await
    .unwrap();
    assert_eq!(tables.strings("table_name"), ["cpu"]);
    let columns = run(
        &mut client,
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_schema = 'bench' AND table_name = 'cpu' ORDER BY column_name",
    )
    .await
    .unwrap();
    let names = columns.strings("column_name");
    assert!(
        names.contains(&"hostname".to_string()) && names.contains(&"usage_user".to_string()),
        "{names:?}"
    );
    // what the builder writes, then the macros
    let built = "SELECT \"hostname\", \"usage_user\" FROM \"cpu\" \
                 WHERE \"time\" >= $__timeFrom AND \"time\" <= $__timeTo ORDER BY \"hostname\" LIMIT 5";
    let range = Range {
        from: 1_767_225_600,
        to: 1_767_225_600 + 60,
    };
    let frame = run(&mut client, &expand_macros(built, range, 10))
        .await
        .unwrap();
    assert_eq!(frame.rows(), 5);
    let influxdb3 = run(&mut client, "SELECT count(*) AS n FROM iox.cpu")
        .await
        .unwrap();
    assert_eq!(influxdb3.floats("n"), [Some(360.0)]);
    // an error is a status with SQL's message, which Grafana shows in the panel
    let e = run(&mut client, "SELECT nope FROM cpu")
        .await
        .err()
        .unwrap();
    assert!(e.contains("nope"), "{e}");
}

/// The node_exporter dashboard over what a real Prometheus scrapes from a real node_exporter
/// and remote-writes to Sluice.
#[tokio::test]
async fn the_node_exporter_dashboard_draws_from_real_prometheus_data() {
    let dash = dashboard("node-exporter.json");
    let db = database_of(&dash.data_source);
    let test = "the node_exporter dashboard";
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
    let s = Server::start();
    let addr = s.at("").trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let (_node, node_port) = start_node_exporter(&node_exporter, dir.path());
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n\
         remote_write:\n  - url: http://{addr}/api/v1/write?db={db}\n    \
         queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n"
    );
    let _prometheus = start_prometheus(&prometheus, dir.path(), &config);
    // wait (up to two minutes) for eight scrapes of every table the dashboard reads
    let tables = [
        "node_cpu_seconds_total",
        "node_load1",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_network_receive_bytes_total",
        "node_filesystem_size_bytes",
        "up",
    ];
    let scrapes = |table: &str| {
        format!(
            "SELECT count(DISTINCT time) AS n FROM \"{table}\" WHERE instance = '127.0.0.1:{node_port}'"
        )
    };
    let mut counts = Vec::new();
    for _ in 0..1200 {
        counts.clear();
        for t in tables {
            let (status, body) = s.query_raw(&db, &scrapes(t), "json").await;
            let n = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v[0]["n"].as_u64());
            counts.push((t, if status == StatusCode::OK { n } else { None }));
        }
        if counts.iter().all(|(_, n)| n.unwrap_or(0) >= 8) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        counts.iter().all(|(_, n)| n.unwrap_or(0) >= 8),
        "the scrapes did not arrive: {counts:?}; prometheus:\n{}\nnode_exporter:\n{}",
        log("prometheus.log"),
        log("node.log")
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let range = Range {
        from: now - 600,
        to: now + 60,
    };
    // the network panel has rows only where there is a device besides loopback, and the
    // filesystem table only where node_exporter sees a real filesystem
    let network = count(
        &s,
        &db,
        "SELECT count(*) AS n FROM node_network_receive_bytes_total WHERE device <> 'lo'",
    )
    .await
        > 0;
    let filesystems = count(
        &s,
        &db,
        "SELECT count(*) AS n FROM node_filesystem_size_bytes WHERE value > 0",
    )
    .await
        > 0;
    let dash = Dashboard {
        queries: dash
            .queries
            .into_iter()
            .filter(|q| {
                (network || q.panel != "Network") && (filesystems || q.panel != "Filesystems")
            })
            .collect(),
        ..dash
    };
    let frames = run_dashboard(&s, &dash, range).await;
    let instance = format!("127.0.0.1:{node_port}");
    let busy = frame(&frames, "CPU busy");
    assert!(busy.strings("instance").iter().all(|i| *i == instance));
    assert!(
        busy.floats("cpu_busy")
            .iter()
            .flatten()
            .all(|v| (0.0..=100.0).contains(v)),
        "{:?}",
        busy.floats("cpu_busy")
    );
    let memory = frame(&frames, "Memory used").floats("memory_used");
    assert!(
        memory.iter().flatten().all(|v| *v > 0.0 && *v < 100.0),
        "{memory:?}"
    );
    let up = frame(&frames, "Up");
    assert_eq!(up.strings("instance"), [instance]);
    assert_eq!(up.floats("up"), [Some(1.0)]);
    assert!(
        !log("prometheus.log").contains("non-recoverable error"),
        "Prometheus dropped data:\n{}",
        log("prometheus.log")
    );
}

/// Starts `node_exporter` on a free port, its log (`node.log`) in `dir`.
pub(crate) fn start_node_exporter(
    node_exporter: &std::path::Path,
    dir: &std::path::Path,
) -> (Child, u16) {
    let port = free_port();
    let child = Child(
        std::process::Command::new(node_exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("node.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    (child, port)
}

/// The `n` that `sql` (over HTTP) answers.
async fn count(s: &Server, db: &str, sql: &str) -> u64 {
    s.sql(db, sql).await[0]["n"].as_u64().unwrap()
}
