//! `sluice-load`: the end-to-end load benchmark.
//!
//! Generates the TSBS cpu-only shaped data set (see [`sluice_bench::tsbs`]), posts it as
//! line-protocol bodies (or Prometheus remote write requests, `--protocol remote-write`) over
//! several concurrent keep-alive connections to a running server (Sluice, or VictoriaMetrics /
//! InfluxDB for comparison), and prints rows/s, field values/s and the server's peak RSS. Bodies are generated before the clock starts, so the figures
//! measure the server, not the generator. Optionally it then times a query.
//!
//! See `benches/README.md` for the commands that produced the recorded figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use sluice_bench::tsbs::{self, Spec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Sluice: `POST /api/v3/write_lp?db=<db>&precision=ns`
    Sluice,
    /// VictoriaMetrics: `POST /write?db=<db>` (its InfluxDB endpoint)
    VictoriaMetrics,
    /// InfluxDB 1.x: `POST /write?db=<db>&precision=ns`
    Influxdb,
}

/// What to send; the names are the `--protocol` values.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// InfluxDB line protocol, to the target's line-protocol endpoint.
    LineProtocol,
    /// Prometheus remote write 1.0 (snappy protobuf) to `/api/v1/write`: each field a metric
    /// `cpu_<field>`, the ten tags as labels, one sample per series entry.
    RemoteWrite,
    /// OTLP/HTTP protobuf to `/v1/metrics`: each field a gauge `cpu.<field>`, the hosts as
    /// resources, `--samples-per-request` values a request.
    Otlp,
}

/// Posts TSBS cpu-only line protocol to a server and reports throughput and server memory.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice-load")]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8181")]
    url: String,
    /// Which kind of server it is (chooses the write path).
    #[arg(long, value_enum, default_value = "sluice")]
    target: Target,
    /// Database (bucket) to write to.
    #[arg(long, default_value = "bench")]
    db: String,
    /// Path and query of the write endpoint, overriding the target's.
    #[arg(long)]
    write_path: Option<String>,
    /// Number of hosts (series).
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Hours of data, one point per host every 10 s.
    #[arg(long, default_value_t = 24)]
    hours: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Lines per request body.
    #[arg(long, default_value_t = 5_000)]
    lines_per_body: usize,
    /// What to send.
    #[arg(long, value_enum, default_value = "line-protocol")]
    protocol: Protocol,
    /// Samples per remote write request (Prometheus' `max_samples_per_send`; 2,000 is its
    /// default since 2.48, 500 before), or field values per OTLP request (about: whole
    /// collection steps of every host; the Collector's batch processor sends 8,192 points).
    #[arg(long, default_value_t = 2_000)]
    samples_per_request: usize,
    /// Consecutive samples of one series in each remote write series entry (Prometheus sends
    /// 1; agents that batch per series, or a backfill, send more).
    #[arg(long, default_value_t = 1)]
    samples_per_series: usize,
    /// PID of the server process, to report its peak RSS (VmHWM from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// After loading, run this SQL (Sluice only) `--query-runs` times and report latency.
    #[arg(long)]
    query: Option<String>,
    /// How many timed runs of `--query`, after one warm-up run.
    #[arg(long, default_value_t = 20)]
    query_runs: usize,
    /// After loading, check with SQL (Sluice only) that every row arrived.
    #[arg(long)]
    verify: bool,
    /// Generate data starting this many hours after 2026-01-01T00:00Z (to extend a data set).
    #[arg(long, default_value_t = 0)]
    start_after_hours: usize,
    /// Generate the data set from its start but send only what comes after this many hours:
    /// the rest of a set whose first hours were sent with `--hours <that many>`.
    #[arg(long, default_value_t = 0)]
    send_after_hours: usize,
    /// Write each TSBS query's answer to `<dir>/<query number>` (to compare runs).
    #[arg(long)]
    answers_dir: Option<std::path::PathBuf>,
    /// Do not write anything: only run the checks and queries asked for.
    #[arg(long)]
    skip_load: bool,
    /// After loading (Sluice only): persist everything, report bytes per field value, compact,
    /// report again.
    #[arg(long)]
    persist: bool,
    /// The server's data folder: its size on disk is reported after the load (and after
    /// persist and compaction).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Wait this long before measuring `--data-dir` (lets a peer finish background merges);
    /// VictoriaMetrics is flushed first, and then waited for until no merge runs.
    #[arg(long, default_value_t = 0)]
    settle_secs: u64,
    /// Time the TSBS queries (SQL for Sluice, InfluxQL for InfluxDB, PromQL for
    /// VictoriaMetrics): median of `--tsbs-runs` runs after two warm-ups, and with
    /// `--server-pid` the server's CPU time per query over the timed runs.
    #[arg(long)]
    tsbs_queries: bool,
    /// Timed runs per TSBS query.
    #[arg(long, default_value_t = 10)]
    tsbs_runs: usize,
    /// Time the TSBS queries' PromQL forms against Sluice too (its Prometheus API at
    /// `/prometheus/<db>`), and a dashboard-sized range query, against either server.
    #[arg(long)]
    tsbs_promql: bool,
    /// After loading (Sluice only), run this SQL `--query-runs` times over HTTP (JSON) and
    /// over Arrow Flight (`DoGet` with a JSON ticket), and report for each the time to the
    /// first bytes (HTTP) or first record batch (Flight) and to the last.
    #[arg(long)]
    compare_flight: Option<String>,
}

/// CPU time of process `pid` so far: the sum of its threads' run time from
/// `/proc/<pid>/task/*/schedstat` (nanoseconds), or, where that is missing, user plus
/// system time from `/proc/<pid>/stat` (10 ms ticks). Threads that have exited are not in
/// the first; over a query's runs the server's threads live on.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut nanos = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        if let Some(n) = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            nanos += n;
            any = true;
        }
    }
    if any {
        return Some(nanos as f64 / 1e9);
    }
    stat_cpu_seconds(pid)
}

/// User plus system CPU time of process `pid` so far, from `/proc/<pid>/stat`.
fn stat_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name (which may hold spaces) start at state, field 3
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture Sluice builds for
    Some(ticks / 100.0)
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    protocol: Protocol,
    retries: &AtomicUsize,
) -> Result<(), String> {
    loop {
        let mut request = client.post(url).body(body.clone());
        if protocol == Protocol::RemoteWrite {
            request = request
                .header("Content-Type", "application/x-protobuf")
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        }
        if protocol == Protocol::Otlp {
            request = request.header("Content-Type", "application/x-protobuf");
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == 429 || status == 503 {
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let text = response.text().await.unwrap_or_default();
        return Err(format!("POST {url}: {status}: {text}"));
    }
}

async fn sql(client: &reqwest::Client, args: &Args, q: &str) -> Result<String, String> {
    let url = format!("{}/api/v3/query_sql", args.url.trim_end_matches('/'));
    let r = client
        .get(&url)
        .query(&[("db", args.db.as_str()), ("q", q), ("format", "csv")])
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("query failed with {status}: {text}"));
    }
    Ok(text)
}

/// Size of all files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Median, p90 and min of `times` (milliseconds), sorted in place.
fn summarize(times: &mut [f64]) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.9), times[0])
}

/// Waits (up to two minutes) until VictoriaMetrics has no merge running and has started
/// none for two seconds (`vm_active_merges`, `vm_merges_total` at `/metrics`): its merges
/// after a load take CPU from the queries timed next. Returns the seconds waited.
async fn victoria_metrics_merged(client: &reqwest::Client, args: &Args) -> Result<f64, String> {
    let url = format!("{}/metrics", args.url.trim_end_matches('/'));
    let started = Instant::now();
    let mut last: Option<f64> = None;
    let mut quiet = 0;
    while started.elapsed() < Duration::from_secs(120) && quiet < 2 {
        let text = client
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (active, total) = (sum("vm_active_merges{"), sum("vm_merges_total{"));
        quiet = if active == 0.0 && last == Some(total) {
            quiet + 1
        } else {
            0
        };
        last = Some(total);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn admin(client: &reqwest::Client, args: &Args, path: &str) -> Result<String, String> {
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let r = client
        .post(&url)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("POST {url}: {status}: {text}"));
    }
    Ok(text)
}

/// Live Parquet bytes and file count of table `cpu`, from `system.parquet_files`.
/// The live Parquet files of the data set's tables (`cpu` for line protocol, a table per
/// metric `cpu_<field>` for remote write and OTLP) and their bytes.
async fn parquet_bytes(client: &reqwest::Client, args: &Args) -> Result<(u64, u64), String> {
    let out = sql(
        client,
        args,
        "SELECT count(*) AS files, sum(size_bytes) AS bytes FROM system.parquet_files \
         WHERE starts_with(table_name, 'cpu')",
    )
    .await?;
    let line = out.lines().nth(1).unwrap_or("");
    let mut parts = line
        .split(',')
        .map(|v| v.trim().parse::<u64>().unwrap_or(0));
    Ok((parts.next().unwrap_or(0), parts.next().unwrap_or(0)))
}

async fn influxql(client: &reqwest::Client, args: &Args, q: &str) -> Result<String, String> {
    let url = format!("{}/query", args.url.trim_end_matches('/'));
    let r = client
        .get(&url)
        .query(&[("db", args.db.as_str()), ("q", q)])
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() || text.contains("\"error\"") {
        return Err(format!("InfluxQL query failed with {status}: {text}"));
    }
    Ok(text)
}

/// Sluice's query profile from `GET /metrics` (seconds, by phase, scan part and operator),
/// or `None` from another server.
async fn query_profile(
    client: &reqwest::Client,
    args: &Args,
) -> Option<std::collections::BTreeMap<String, f64>> {
    if args.target != Target::Sluice {
        return None;
    }
    let url = format!("{}/metrics", args.url.trim_end_matches('/'));
    let text = client.get(&url).send().await.ok()?.text().await.ok()?;
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        for (metric, label) in [
            ("sluice_query_phase_seconds_total{phase=\"", ""),
            ("sluice_query_scan_seconds_total{part=\"", "scan."),
            ("sluice_query_operator_seconds_total{operator=\"", "op."),
        ] {
            if let Some(rest) = line.strip_prefix(metric)
                && let Some((name, value)) = rest.split_once("\"} ")
                && let Ok(v) = value.parse::<f64>()
            {
                out.insert(format!("{label}{name}"), v);
            }
        }
    }
    Some(out)
}

/// `q` against a Prometheus HTTP API (VictoriaMetrics), as JSON.
async fn promql(
    client: &reqwest::Client,
    args: &Args,
    q: &tsbs::PromQuery,
) -> Result<String, String> {
    let (path, params) = q.request();
    let base = args.url.trim_end_matches('/');
    let url = match args.target {
        Target::Sluice => format!("{base}/prometheus/{}{path}", args.db),
        _ => format!("{base}{path}"),
    };
    let r = client
        .get(&url)
        .query(&params)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() || !text.contains("\"status\":\"success\"") {
        return Err(format!("PromQL query failed with {status}: {text}"));
    }
    Ok(text)
}

async fn run(args: Args) -> Result<(), String> {
    let spec = Spec::hours(args.hosts, args.hours)
        .starting_after_hours(args.start_after_hours)
        .sending_after_hours(args.send_after_hours);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()
        .map_err(|e| e.to_string())?;
    if !args.skip_load {
        load(&args, spec, &client).await?;
    }
    after_load(&args, spec, &client).await?;
    if let Some(pid) = args.server_pid
        && (args.persist || args.settle_secs > 0)
        && let Some(mib) = peak_rss_mib(pid)
    {
        // the peak again, now that it covers persistence and compaction (or a peer's
        // background merges during --settle-secs)
        println!("server peak RSS:   {mib:.0} MiB (whole run)");
    }
    Ok(())
}

async fn load(args: &Args, spec: Spec, client: &reqwest::Client) -> Result<(), String> {
    let path = args
        .write_path
        .clone()
        .unwrap_or_else(|| match (args.protocol, args.target) {
            (Protocol::RemoteWrite, Target::Sluice) => format!("/api/v1/write?db={}", args.db),
            (Protocol::RemoteWrite, _) => "/api/v1/write".to_string(),
            (Protocol::Otlp, Target::Sluice) => format!("/v1/metrics?db={}", args.db),
            (Protocol::Otlp, _) => "/v1/metrics".to_string(),
            (_, Target::Sluice) => format!("/api/v3/write_lp?db={}&precision=ns", args.db),
            (_, Target::VictoriaMetrics) => format!("/write?db={}", args.db),
            (_, Target::Influxdb) => format!("/write?db={}&precision=ns", args.db),
        });
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    eprintln!(
        "generating {} hosts x {} h: {} rows, {} field values",
        args.hosts,
        args.hours,
        spec.rows(),
        spec.values()
    );
    let bodies: Vec<Bytes> = match args.protocol {
        Protocol::LineProtocol => tsbs::bodies(spec, args.lines_per_body)
            .into_iter()
            .map(Bytes::from)
            .collect(),
        Protocol::Otlp => tsbs::otlp_requests(spec, args.samples_per_request)
            .into_iter()
            .map(Bytes::from)
            .collect(),
        Protocol::RemoteWrite => {
            let mut encoder = snap::raw::Encoder::new();
            tsbs::remote_write_requests(spec, args.samples_per_request, args.samples_per_series)
                .into_iter()
                .map(|r| encoder.compress_vec(&r).map(Bytes::from))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?
        }
    };
    let bodies = Arc::new(bodies);
    let bytes: usize = bodies.iter().map(|b| b.len()).sum();
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    eprintln!(
        "posting {} bodies ({:.1} MB) to {url} over {} connections",
        bodies.len(),
        bytes as f64 / 1e6,
        args.connections
    );
    let cpu_before = args.server_pid.and_then(stat_cpu_seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (client, bodies, next, retries) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            retries.clone(),
        );
        let url = url.to_string();
        let protocol = args.protocol;
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok::<(), String>(());
                };
                post(&client, &url, body.clone(), protocol, &retries).await?;
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = args.server_pid.and_then(stat_cpu_seconds);
    println!("target:            {:?} {url}", args.target);
    println!(
        "data:              {} hosts x {} h = {} rows, {} field values, {:.1} MB in {} bodies",
        args.hosts,
        args.hours,
        spec.rows(),
        spec.values(),
        bytes as f64 / 1e6,
        bodies.len()
    );
    println!("connections:       {}", args.connections);
    println!("elapsed:           {elapsed:.2} s");
    println!("rows/s:            {:.0}", spec.rows() as f64 / elapsed);
    println!("field values/s:    {:.0}", spec.values() as f64 / elapsed);
    if args.protocol == Protocol::RemoteWrite {
        println!("samples/s:         {:.0}", spec.values() as f64 / elapsed);
    }
    println!("MB/s:              {:.1}", bytes as f64 / 1e6 / elapsed);
    println!("retries (429/503): {}", retries.load(Ordering::Relaxed));
    if let Some(pid) = args.server_pid {
        match peak_rss_mib(pid) {
            Some(mib) => println!("server peak RSS:   {mib:.0} MiB"),
            None => println!("server peak RSS:   unknown (cannot read /proc/{pid}/status)"),
        }
        if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
            // steadier than throughput on a machine whose speed drifts, and it counts the
            // cores a server leaves idle as free
            let cpu = after - before;
            println!(
                "server CPU:        {cpu:.2} s ({:.0} ns per field value, {:.2} cores)",
                cpu * 1e9 / spec.values() as f64,
                cpu / elapsed
            );
        }
    }
    Ok(())
}

async fn after_load(args: &Args, spec: Spec, client: &reqwest::Client) -> Result<(), String> {
    let client = client.clone();
    let values = spec.values() as f64;
    if args.verify {
        let table = match args.protocol {
            Protocol::LineProtocol => "cpu",
            Protocol::RemoteWrite | Protocol::Otlp => "cpu_usage_user",
        };
        let out = sql(&client, args, &format!("SELECT count(*) AS n FROM {table}")).await?;
        let n: usize = out
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("unexpected count answer: {out}"))?;
        if n != spec.rows() {
            return Err(format!(
                "verify: {n} rows in {table}, expected {}",
                spec.rows()
            ));
        }
        println!("verified:          {n} rows in {table}");
    }
    let report_disk = |when: &str| {
        if let Some(dir) = &args.data_dir {
            let b = dir_bytes(dir);
            println!(
                "on disk {when:<9} {:.2} MB in {}, {:.3} bytes per field value",
                b as f64 / 1e6,
                dir.display(),
                b as f64 / values
            );
        }
    };
    if args.settle_secs > 0 {
        if args.target == Target::VictoriaMetrics {
            let url = format!("{}/internal/force_flush", args.url.trim_end_matches('/'));
            client.get(&url).send().await.map_err(|e| e.to_string())?;
        }
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        if args.target == Target::VictoriaMetrics {
            let waited = victoria_metrics_merged(&client, args).await?;
            println!(
                "settled:           no VictoriaMetrics merge running or started for 2 s ({waited:.0} s after --settle-secs)"
            );
        }
    }
    report_disk("(load):");
    if args.persist {
        let t = Instant::now();
        admin(&client, args, "/api/v3/persist").await?;
        let took = t.elapsed().as_secs_f64();
        let (files, b) = parquet_bytes(&client, args).await?;
        println!(
            "persisted:         {files} files, {:.2} MB, {:.3} bytes per field value ({took:.2} s)",
            b as f64 / 1e6,
            b as f64 / values
        );
        report_disk("(persist):");
        let t = Instant::now();
        admin(&client, args, "/api/v3/compact").await?;
        let took = t.elapsed().as_secs_f64();
        let (files, b) = parquet_bytes(&client, args).await?;
        println!(
            "compacted:         {files} files, {:.2} MB, {:.3} bytes per field value ({took:.2} s)",
            b as f64 / 1e6,
            b as f64 / values
        );
    }
    if args.tsbs_queries {
        // Timed on the runtime's worker thread, where the client's connection tasks run: from
        // the thread that blocks on the runtime each request and its answer would cross
        // threads, adding a wakeup (and its variance) to every timing, for each server alike.
        let (args, client) = (args.clone(), client.clone());
        tokio::spawn(async move { time_tsbs_queries(&args, &client).await })
            .await
            .map_err(|e| e.to_string())??;
    }
    if let Some(q) = &args.compare_flight {
        compare_flight(&client, args, q).await?;
    }
    if let Some(q) = &args.query {
        // on the worker thread, as the TSBS queries are timed
        let (args, client, q) = (args.clone(), client.clone(), q.clone());
        tokio::spawn(async move { time_query(&args, &client, &q).await })
            .await
            .map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Times `--query` over `--query-runs` runs after one warm-up, with the server's CPU time per
/// run when `--server-pid` is given.
async fn time_query(args: &Args, client: &reqwest::Client, q: &str) -> Result<(), String> {
    sql(client, args, q).await?;
    let mut times = Vec::with_capacity(args.query_runs);
    let cpu_before = args.server_pid.and_then(cpu_seconds);
    for _ in 0..args.query_runs {
        let t = Instant::now();
        sql(client, args, q).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = match (cpu_before, args.server_pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => format!(
            ", server CPU {:.3} ms a query",
            (after - before) * 1e3 / args.query_runs.max(1) as f64
        ),
        _ => String::new(),
    };
    let (median, p90, min) = summarize(&mut times);
    println!("query:             {q}");
    println!(
        "query latency:     median {median:.3} ms, p90 {p90:.3} ms, min {min:.3} ms over {} runs{cpu}",
        times.len()
    );
    Ok(())
}

/// A query `--tsbs-queries` times: a TSBS one (in the target's language), or one only in
/// PromQL.
#[derive(Debug, Clone)]
enum Job {
    Tsbs(tsbs::Query),
    PromQl(tsbs::PromQuery),
}

/// Times each TSBS query against the target: two warm-ups, then `--tsbs-runs` runs, with the
/// server's CPU time and (for Sluice) its own breakdown over them.
async fn time_tsbs_queries(args: &Args, client: &reqwest::Client) -> Result<(), String> {
    let mut jobs: Vec<(&'static str, Job)> = tsbs::queries()
        .into_iter()
        .map(|q| (q.name, Job::Tsbs(q)))
        .collect();
    if args.tsbs_promql {
        let (name, q) = tsbs::dashboard_promql();
        jobs.push((name, Job::PromQl(q)));
    }
    for (name, q) in jobs {
        let run = |client: reqwest::Client, q: Job| async move {
            match (q, args.target) {
                (Job::PromQl(q), _) => promql(&client, args, &q).await,
                (Job::Tsbs(q), Target::Influxdb) => influxql(&client, args, &q.influxql).await,
                (Job::Tsbs(q), Target::VictoriaMetrics) => promql(&client, args, &q.promql).await,
                (Job::Tsbs(q), Target::Sluice) if args.tsbs_promql => {
                    promql(&client, args, &q.promql).await
                }
                (Job::Tsbs(q), Target::Sluice) => sql(&client, args, &q.sql).await,
            }
        };
        let answer = run(client.clone(), q.clone()).await?;
        if let Some(dir) = &args.answers_dir {
            let name = name.split(' ').next().unwrap_or(name);
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            std::fs::write(dir.join(name), &answer).map_err(|e| e.to_string())?;
        }
        run(client.clone(), q.clone()).await?;
        let mut times = Vec::with_capacity(args.tsbs_runs);
        let profile_before = query_profile(client, args).await;
        let cpu_before = args.server_pid.and_then(cpu_seconds);
        for _ in 0..args.tsbs_runs {
            let t = Instant::now();
            run(client.clone(), q.clone()).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let cpu = match (cpu_before, args.server_pid.and_then(cpu_seconds)) {
            (Some(before), Some(after)) => format!(
                ", server CPU {:8.2} ms a query",
                (after - before) * 1e3 / args.tsbs_runs as f64
            ),
            _ => String::new(),
        };
        let profile_after = query_profile(client, args).await;
        let (median, p90, min) = summarize(&mut times);
        println!(
            "tsbs {:<24} median {median:8.2} ms, p90 {p90:8.2} ms, min {min:8.2} ms{cpu} ({} bytes of answer)",
            name,
            answer.len()
        );
        if let (Some(before), Some(after)) = (profile_before, profile_after) {
            let parts: Vec<String> = after
                .iter()
                .map(|(k, v)| {
                    (
                        k,
                        (v - before.get(k).unwrap_or(&0.0)) * 1e3 / args.tsbs_runs as f64,
                    )
                })
                .filter(|(_, ms)| *ms >= 0.005)
                .map(|(k, ms)| format!("{k} {ms:.2}"))
                .collect();
            println!("  ms a query: {}", parts.join(", "));
        }
    }
    Ok(())
}

/// Times `q` over HTTP as JSON and over Flight: first bytes or batch, and all of it.
async fn compare_flight(client: &reqwest::Client, args: &Args, q: &str) -> Result<(), String> {
    use futures::TryStreamExt;
    let url = format!("{}/api/v3/query_sql", args.url);
    let channel = tonic::transport::Channel::from_shared(args.url.clone())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {} over gRPC: {e}", args.url))?;
    let mut flight = arrow_flight::FlightClient::new(channel);
    let ticket = serde_json::json!({"database": args.db, "sql_query": q, "query_type": "sql"});
    let (mut http_first, mut http_all, mut fl_first, mut fl_all) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut http_bytes, mut rows) = (0usize, 0usize);
    for run in 0..=args.query_runs {
        let t = Instant::now();
        let mut r = client
            .get(&url)
            .query(&[("db", args.db.as_str()), ("q", q), ("format", "json")])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("HTTP query failed: {}", r.status()));
        }
        let mut first = None;
        http_bytes = 0;
        while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
            first.get_or_insert_with(|| t.elapsed());
            http_bytes += chunk.len();
        }
        let all = t.elapsed();
        let t = Instant::now();
        let mut stream = flight
            .do_get(arrow_flight::Ticket::new(ticket.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let mut fl_first_batch = None;
        rows = 0;
        while let Some(b) = stream.try_next().await.map_err(|e| e.to_string())? {
            fl_first_batch.get_or_insert_with(|| t.elapsed());
            rows += b.num_rows();
        }
        let fl_done = t.elapsed();
        if run == 0 {
            continue; // warm-up
        }
        let ms = |d: Option<std::time::Duration>| d.unwrap_or_default().as_secs_f64() * 1e3;
        http_first.push(ms(first));
        http_all.push(ms(Some(all)));
        fl_first.push(ms(fl_first_batch));
        fl_all.push(ms(Some(fl_done)));
    }
    let median = |v: &mut Vec<f64>| summarize(v).0;
    println!(
        "compare-flight:    {q} ({rows} rows; JSON {:.1} MB)",
        http_bytes as f64 / 1e6
    );
    println!(
        "HTTP JSON:         first bytes {:.1} ms, all {:.1} ms (median of {})",
        median(&mut http_first),
        median(&mut http_all),
        args.query_runs
    );
    println!(
        "Flight:            first batch {:.1} ms, all {:.1} ms (median of {})",
        median(&mut fl_first),
        median(&mut fl_all),
        args.query_runs
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
