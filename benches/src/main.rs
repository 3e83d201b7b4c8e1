//! `sluice-load`: the end-to-end load benchmark.
//!
//! Generates the TSBS cpu-only shaped data set (see [`sluice_bench::tsbs`]), posts it as
//! line-protocol bodies over several concurrent keep-alive connections to a running server
//! (Sluice, or VictoriaMetrics / InfluxDB for comparison), and prints rows/s, field values/s
//! and the server's peak RSS. Bodies are generated before the clock starts, so the figures
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

/// Posts TSBS cpu-only line protocol to a server and reports throughput and server memory.
#[derive(Debug, Parser)]
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
    retries: &AtomicUsize,
) -> Result<(), String> {
    loop {
        let response = client
            .post(url)
            .body(body.clone())
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

async fn run(args: Args) -> Result<(), String> {
    let spec = Spec::hours(args.hosts, args.hours);
    let path = args
        .write_path
        .clone()
        .unwrap_or_else(|| match args.target {
            Target::Sluice => format!("/api/v3/write_lp?db={}&precision=ns", args.db),
            Target::VictoriaMetrics => format!("/write?db={}", args.db),
            Target::Influxdb => format!("/write?db={}&precision=ns", args.db),
        });
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    eprintln!(
        "generating {} hosts x {} h: {} rows, {} field values",
        args.hosts,
        args.hours,
        spec.rows(),
        spec.values()
    );
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        tsbs::bodies(spec, args.lines_per_body)
            .into_iter()
            .map(Bytes::from)
            .collect(),
    );
    let bytes: usize = bodies.iter().map(|b| b.len()).sum();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    eprintln!(
        "posting {} bodies ({:.1} MB) to {url} over {} connections",
        bodies.len(),
        bytes as f64 / 1e6,
        args.connections
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (client, url, bodies, next, retries) = (
            client.clone(),
            url.clone(),
            bodies.clone(),
            next.clone(),
            retries.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok::<(), String>(());
                };
                post(&client, &url, body.clone(), &retries).await?;
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed().as_secs_f64();
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
    println!("MB/s:              {:.1}", bytes as f64 / 1e6 / elapsed);
    println!("retries (429/503): {}", retries.load(Ordering::Relaxed));
    if let Some(pid) = args.server_pid {
        match peak_rss_mib(pid) {
            Some(mib) => println!("server peak RSS:   {mib:.0} MiB"),
            None => println!("server peak RSS:   unknown (cannot read /proc/{pid}/status)"),
        }
    }
    if args.verify {
        let out = sql(&client, &args, "SELECT count(*) AS n FROM cpu").await?;
        let n: usize = out
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("unexpected count answer: {out}"))?;
        if n != spec.rows() {
            return Err(format!("verify: {n} rows in cpu, expected {}", spec.rows()));
        }
        println!("verified:          {n} rows in cpu");
    }
    if let Some(q) = &args.query {
        sql(&client, &args, q).await?;
        let mut times = Vec::with_capacity(args.query_runs);
        for _ in 0..args.query_runs {
            let t = Instant::now();
            sql(&client, &args, q).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!("query:             {q}");
        println!(
            "query latency:     median {:.2} ms, p90 {:.2} ms, min {:.2} ms over {} runs",
            pct(0.5),
            pct(0.9),
            times[0],
            times.len()
        );
    }
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
