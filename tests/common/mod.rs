//! The one way end-to-end tests start Sluice: the real `sluice` binary on port 0 with a
//! temporary data folder, talked to over HTTP like any client.
//!
//! A [`Server`] owns its process; dropping it kills the process. [`Server::kill`] sends SIGKILL
//! and hands back the data folder, so a test can start a new server on the same data and check
//! what survived a crash.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use tempfile::TempDir;

/// How long a server may take to start listening before the test gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `sluice serve`.
pub struct Server {
    child: Option<Child>,
    data: Option<TempDir>,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    /// `http://127.0.0.1:<port>` of the `--otlp-grpc-bind` listener, when there is one.
    pub otlp_grpc_url: Option<String>,
    pub client: reqwest::Client,
}

/// The path of the `sluice` binary Cargo built for these tests.
pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

impl Server {
    /// A server on a new, empty data folder.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// A server on a new, empty data folder, with extra `serve` flags.
    pub fn start_with(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temporary folder");
        Self::start_in(dir, args)
    }

    /// A server on `dir`, which may hold data of an earlier server.
    pub fn start_in(dir: TempDir, args: &[&str]) -> Server {
        Self::start_in_env(dir, args, &[])
    }

    /// A server on `dir` with extra environment variables.
    pub fn start_in_env(dir: TempDir, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))
            .expect("server log file");
        let mut child = Command::new(sluice_bin())
            .arg("serve")
            .arg("--http-bind")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the sluice binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut otlp_grpc_url = None;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("Sluice OTLP/gRPC listening on ") {
                    otlp_grpc_url = Some(url.to_string());
                }
                if let Some(url) = line.strip_prefix("Sluice listening on ") {
                    let _ = tx.send((url.to_string(), otlp_grpc_url));
                    break;
                }
            }
            // keep draining so the server never blocks on a full pipe
            for _ in lines {}
        });
        let (url, otlp_grpc_url) = match rx.recv_timeout(START_TIMEOUT) {
            Ok(urls) => urls,
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                panic!("sluice did not start listening; its log:\n{log}");
            }
        };
        Server {
            child: Some(child),
            data: Some(dir),
            url,
            otlp_grpc_url,
            client: reqwest::Client::new(),
        }
    }

    /// The folder holding this server's data (and its log, `server.log`).
    pub fn dir(&self) -> &Path {
        self.data.as_ref().expect("data folder").path()
    }

    /// The server's data folder (`--data-dir`).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir().join("data")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and returns its folder.
    pub fn kill(mut self) -> TempDir {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
        self.data.take().expect("data folder")
    }

    /// Waits for the process to end by itself (a crash the test provoked); returns its status
    /// and the folder.
    pub fn wait_for_exit(mut self) -> (std::process::ExitStatus, TempDir) {
        let mut child = self.child.take().expect("running");
        let status = child.wait().expect("wait");
        (status, self.data.take().expect("data folder"))
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status and the folder.
    pub fn terminate(mut self) -> (std::process::ExitStatus, TempDir) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = child.wait().expect("wait");
        (status, self.data.take().expect("data folder"))
    }

    /// `url` + `path_and_query`.
    pub fn at(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.url)
    }

    /// POSTs `body` to `path_and_query`; returns the status and the body text.
    pub async fn post(
        &self,
        path_and_query: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, String) {
        let r = self
            .client
            .post(self.at(path_and_query))
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status();
        (status, r.text().await.expect("body"))
    }

    /// GETs `path_and_query`; returns the status and the body text.
    pub async fn get(&self, path_and_query: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(self.at(path_and_query))
            .send()
            .await
            .expect("request");
        let status = r.status();
        (status, r.text().await.expect("body"))
    }

    /// Writes line protocol to `/api/v3/write_lp?db=<db>` and asserts a 204.
    pub async fn write_lp(&self, db: &str, lp: &str) {
        let (status, body) = self
            .post(&format!("/api/v3/write_lp?db={db}"), lp.to_string())
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "write failed: {body}");
    }

    /// GETs `/api/v3/query_sql` and returns the status and the body text.
    pub async fn query_raw(&self, db: &str, sql: &str, format: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(self.at("/api/v3/query_sql"))
            .query(&[("db", db), ("q", sql), ("format", format)])
            .send()
            .await
            .expect("request");
        let status = r.status();
        (status, r.text().await.expect("body"))
    }

    /// Runs `sql` in `db`, asserts success and returns the rows as JSON objects.
    pub async fn sql(&self, db: &str, sql: &str) -> Vec<serde_json::Value> {
        let (status, body) = self.query_raw(db, sql, "json").await;
        assert_eq!(status, StatusCode::OK, "query {sql:?} failed: {body}");
        serde_json::from_str(&body).expect("JSON rows")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of the sample `series` (name and labels, as rendered) in Prometheus text
/// `text`; panics, showing the text, when there is none.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Runs `script` with `python -c`, passing `args`, and returns the JSON it prints; panics,
/// showing its standard error, when it fails.
pub fn python_json(
    python: &std::ffi::OsStr,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> serde_json::Value {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The program the environment variable `var` names (`.ci/run` installs it and sets the
/// variable), or `None` after printing that `test` is SKIPPED and what it needs. Every test
/// that drives an outside program (Python with its packages, Prometheus, node_exporter) asks
/// here, so a machine without them skips those tests the same way and CI skips none.
pub fn external(var: &str, test: &str, needs: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os(var).map(std::path::PathBuf::from);
    if found.is_none() {
        eprintln!("SKIPPED {test}: set {var} to {needs} (.ci/run installs it and does)");
    }
    found
}

/// The Python `SLUICE_TEST_PYTHON` names, with `packages` installed (see [`external`]).
pub fn python(test: &str, packages: &str) -> Option<std::ffi::OsString> {
    external(
        "SLUICE_TEST_PYTHON",
        test,
        &format!("a Python with {packages}"),
    )
    .map(std::path::PathBuf::into_os_string)
}

/// xorshift64*: a deterministic generator, so that a failing run can be repeated.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}
