//! Hostile or unlucky input (issue 19): each case against the real server, checking the
//! status, that `/health` still answers, and that what was acknowledged is all there after a
//! restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, sample};

/// `/health` answers within a second.
async fn healthy(s: &Server) {
    let r = s
        .client
        .get(s.at("/health"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("/health answers within a second");
    assert_eq!(r.status(), StatusCode::OK);
}

async fn persist(s: &Server) -> Value {
    let (status, body) = s.post("/api/v3/persist", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn names_get_a_rule_and_any_allowed_name_survives_persist_and_restart() {
    let s = Server::start();
    let long = "m".repeat(300);
    let (status, body) = s
        .post(
            "/api/v3/write_lp?db=h",
            format!("{long} v=1 1\nok v=1 1\nok,{long}=x v=2 2\n"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{v}");
    assert_eq!(data[0]["line_number"], 1);
    let msg = data[0]["error_message"].as_str().unwrap();
    assert!(
        msg.contains("table name") && msg.contains("--max-name-bytes"),
        "{msg}"
    );
    assert_eq!(data[1]["line_number"], 3);

    // names the object store escapes or that look like paths
    let names = ["cpu%x", "disk#1", "a//b", "..", "x/../y"];
    let lp: String = names.iter().map(|n| format!("{n} v=1 1000\n")).collect();
    s.write_lp("h", &lp).await;
    let summary = persist(&s).await;
    assert_eq!(summary["files"], names.len() + 1, "{summary}");
    healthy(&s).await;
    let (status, metrics) = s.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sample(&metrics, "sluice_persist_partition_errors_total"),
        0.0
    );

    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    for n in names {
        let sql = format!("SELECT v FROM \"{}\"", n.replace('"', "\"\""));
        assert_eq!(s.sql("h", &sql).await, vec![json!({"v": 1.0})], "{n}");
    }
    assert!(!s.log().contains("deleting a Parquet file"), "{}", s.log());
}

#[tokio::test]
async fn a_point_far_in_the_future_is_refused_unless_the_server_allows_it() {
    let s = Server::start();
    // 2255-01-01: its buffered hour would never end, and the WAL never be cut
    let far = "m v=1 9020000000000000000\nm v=2 1767225600000000000\n";
    let (status, body) = s.post("/api/v3/write_lp?db=h", far).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["line_number"], 1, "{v}");
    let msg = v["data"][0]["error_message"].as_str().unwrap();
    assert!(
        msg.contains("2255-") && msg.contains("--max-future"),
        "{msg}"
    );
    assert_eq!(s.sql("h", "SELECT v FROM m").await, vec![json!({"v": 2.0})]);
    // the InfluxDB 1.x API refuses it the same way
    let (status, body) = s
        .post("/write?db=h&precision=s", "m v=3 9020000000\n")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("--max-future"), "{body}");
    healthy(&s).await;

    // a server told to take any time takes it, and persists it when the WAL passes its bound
    let s = Server::start_with(&[
        "--max-future",
        "none",
        "--wal-persist-bytes",
        "1",
        "--persist-interval",
        "50ms",
    ]);
    s.write_lp("h", far).await;
    let mut persisted = 0.0;
    for _ in 0..200 {
        let (_, metrics) = s.get("/metrics").await;
        persisted = sample(&metrics, "sluice_persisted_rows_total");
        if persisted == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        persisted, 2.0,
        "the background persister persisted both rows"
    );
    let dir = s.kill();
    let s = Server::start_in(dir, &["--max-future", "none"]);
    assert_eq!(
        s.sql("h", "SELECT v FROM m ORDER BY time").await,
        vec![json!({"v": 2.0}), json!({"v": 1.0})]
    );
}

/// A small filesystem of its own (tmpfs), unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    /// A `size` (e.g. `16m`) tmpfs, or `None` after printing that `test` is SKIPPED (mounting
    /// needs root, which CI has).
    fn mount(size: &str, test: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED {test}: cannot mount a tmpfs (needs root, as CI runs)");
            return None;
        }
        Some(SmallDisk(dir))
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// One request's line protocol: `n` points of series `req=<req>`.
fn request_lines(req: usize, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "disk,req=r{req} v={i}.25,pad=\"{:016x}{:016x}\" {}\n",
                (req * 7919 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                (req * 104_729 + i).wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
                1_767_225_600_000_000_000i64 + i as i64
            )
        })
        .collect()
}

#[tokio::test]
async fn a_full_wal_disk_gets_503_loses_nothing_acknowledged_and_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount("24m", "a_full_wal_disk_gets_503...") else {
        return;
    };
    // most of the disk taken by something else, so the WAL's 8 MiB zero-fill cannot fit
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![1u8; 20 << 20]).unwrap();
    let wal_dir = disk.path().join("wal");
    let wal_arg = wal_dir.to_str().unwrap();
    // nothing persisted (which would let WAL segments go) until asked
    let s = Server::start_with(&["--wal-dir", wal_arg, "--persist-after", "3650d"]);
    let mut acked = Vec::new();
    let mut refused = None;
    for req in 0..2000 {
        let r = s
            .client
            .post(s.at("/api/v3/write_lp?db=h"))
            .body(request_lines(req, 200))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::NO_CONTENT => acked.push(req),
            status => {
                let retry = r.headers().get("retry-after").cloned();
                refused = Some((status, retry, r.text().await.unwrap()));
                break;
            }
        }
    }
    let (status, retry, body) = refused.expect("the disk filled up");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(retry.is_some(), "503 carries Retry-After");
    assert!(
        body.contains("write-ahead log") && body.contains("retry"),
        "{body}"
    );
    assert!(acked.len() > 10, "{}", acked.len());
    healthy(&s).await;
    // while the disk is full, writes keep getting 503 and queries answer
    let (status, _) = s
        .post("/api/v3/write_lp?db=h", request_lines(9999, 200))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let n = s
        .sql("h", "SELECT count(DISTINCT req) AS n FROM disk")
        .await;
    assert!(n[0]["n"].as_u64().unwrap() >= acked.len() as u64, "{n:?}");

    // room again: writes resume without a restart
    std::fs::remove_file(&filler).unwrap();
    let mut resumed = false;
    for attempt in 0..100 {
        let (status, _) = s
            .post("/api/v3/write_lp?db=h", request_lines(5000 + attempt, 200))
            .await;
        if status == StatusCode::NO_CONTENT {
            acked.push(5000 + attempt);
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "writes resumed once the disk had room");

    // a crash: every acknowledged request is there in full
    let dir = s.kill();
    let s = Server::start_in(dir, &["--wal-dir", wal_arg, "--persist-after", "3650d"]);
    let rows = s
        .sql("h", "SELECT req, count(*) AS n FROM disk GROUP BY req")
        .await;
    let counts: std::collections::HashMap<String, u64> = rows
        .iter()
        .map(|r| {
            (
                r["req"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    for req in &acked {
        assert_eq!(counts.get(&format!("r{req}")), Some(&200), "request {req}");
    }
    // a write refused mid-append is all there or not at all
    assert!(counts.values().all(|&n| n == 200), "{counts:?}");
    drop(s);
    drop(disk);
}

#[tokio::test]
async fn sixty_thousand_rejected_lines_get_a_short_report() {
    let s = Server::start();
    s.write_lp("h", "m v=1 1").await;
    // 0.8 MB of type conflicts: each line's report used to rescan the body from its start
    let body: String = (0..60_000).map(|i| format!("m v={i}i {i}\n")).collect();
    let (status, text) = s.post("/api/v3/write_lp?db=h", body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.len() < 40_000, "{} bytes", text.len());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 100);
    assert_eq!(v["data"][99]["line_number"], 100);
    assert_eq!(v["data"][99]["original_line"], "m v=99i 99");
    let summary = v["error"].as_str().unwrap();
    assert!(
        summary.contains("all 60000 lines were rejected (the first 100 are listed)"),
        "{summary}"
    );
    // the 1.x API says the same in one message
    let (status, text) = s.post("/write?db=h", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.len() < 2_000, "{text}");
    healthy(&s).await;
}

#[tokio::test]
async fn tokens_ids_and_names_that_change_access() {
    let s = Server::start();
    let create = |auth: Option<String>, body: Value| {
        let mut r = s
            .client
            .post(s.at("/api/v3/configure/token/admin"))
            .json(&body);
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, admin) = create(None, json!({"name": "root"})).await;
    assert_eq!(status, StatusCode::CREATED, "{admin}");
    let admin = admin["token"].as_str().unwrap().to_string();
    let path = "/api/v3/configure/token";
    let mk = |body: Value, auth: String| {
        let r = s.client.post(s.at(path)).bearer_auth(auth).json(&body);
        async move {
            let r = r.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, writer) = mk(json!({"name": "w", "write": ["*"]}), admin.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{writer}");
    assert_eq!(writer["id"], 2);
    // a token that may not administer is forbidden to make tokens: 403, not 401
    let writer_token = writer["token"].as_str().unwrap().to_string();
    let (status, _) = mk(json!({"name": "x", "admin": true}), writer_token.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // `iox` is InfluxDB 3's name for the database queried: no database may take it
    let (status, body) = s
        .client
        .post(s.at("/api/v3/write_lp?db=iox"))
        .bearer_auth(&writer_token)
        .body("cpu v=1 1")
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.text().await.unwrap().contains("reserved"));
    // a deleted token's id is never given again, not even after a restart
    let delete_here = |id: u64| {
        s.client
            .delete(s.at(&format!("/api/v3/configure/token?id={id}")))
            .bearer_auth(&admin)
            .send()
    };
    assert_eq!(delete_here(2).await.unwrap().status(), StatusCode::OK);
    let (_, third) = mk(json!({"name": "w2", "write": ["*"]}), admin.clone()).await;
    assert_eq!(third["id"], 3);
    assert_eq!(delete_here(3).await.unwrap().status(), StatusCode::OK);
    let dir = s.kill();

    // started beyond loopback (it has a token, so it may), it keeps its last token
    let mut child = std::process::Command::new(crate::common::sluice_bin())
        .args(["serve", "--http-bind", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/api/v3/configure/token"))
        .bearer_auth(&admin)
        .json(&json!({"name": "w3", "write": ["*"]}))
        .send()
        .await
        .unwrap();
    let fourth: Value = r.json().await.unwrap();
    assert_eq!(fourth["id"], 4, "{fourth}");
    let delete = |id: u64| {
        client
            .delete(format!("{url}/api/v3/configure/token?id={id}"))
            .bearer_auth(&admin)
            .send()
    };
    assert_eq!(delete(4).await.unwrap().status(), StatusCode::OK);
    let r = delete(1).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("last token") && text.contains("beyond loopback"),
        "{text}"
    );
    // and the server still refuses requests without a token
    let r = client
        .get(format!("{url}/api/v3/configure/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn pages_of_other_sites_cannot_use_a_server_on_loopback() {
    let s = Server::start();
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let post = |path: &str, headers: &[(&'static str, String)], body: &'static str| {
        let mut r = s.client.post(s.at(path)).body(body);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let evil = [("origin", "http://evil.example".to_string())];
    let (status, body) = post("/api/v3/configure/token/admin", &evil, "{}").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("--allow-origin"), "{body}");
    let (status, _) = post("/api/v3/write_lp?db=h", &evil, "m v=1 1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // DNS rebinding: the page's name resolves to 127.0.0.1, so it is "the same site"
    let rebound = [
        ("host", format!("evil.example:{port}")),
        ("origin", format!("http://evil.example:{port}")),
    ];
    let (status, _) = post("/api/v3/write_lp?db=h", &rebound, "m v=1 1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // the server's own page, and every client that is not a browser, pass
    let own = [("origin", format!("http://127.0.0.1:{port}"))];
    let (status, body) = post("/api/v3/write_lp?db=h", &own, "m v=1 1").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // nothing the refused requests asked for happened: no token, one row
    let (status, _) = s.get("/api/v3/configure/token").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s.sql("h", "SELECT count(*) AS n FROM m").await,
        vec![json!({"n": 1})]
    );
    let (status, _) = s.post("/api/v3/configure/token/admin", "{}").await;
    assert_eq!(status, StatusCode::CREATED);
    drop(s);

    // an origin the operator allows passes
    let s = Server::start_with(&["--allow-origin", "http://evil.example"]);
    let r = s
        .client
        .post(s.at("/api/v3/write_lp?db=h"))
        .header("origin", "http://evil.example")
        .body("m v=1 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// Reads from `stream` until the server closes it; returns what it sent. Panics if that takes
/// longer than `limit` (far longer than the timeout under test).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_and_bounded() {
    use tokio::io::AsyncWriteExt;
    let s = Server::start_with(&[
        "--http-header-timeout",
        "1s",
        "--http-body-timeout",
        "1s",
        "--max-connections",
        "3",
    ]);
    let addr = s.url.trim_start_matches("http://").to_string();
    // a half-sent header
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"POST /api/v3/write_lp?db=h HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    read_until_closed(&mut half, Duration::from_secs(30)).await;
    // a body that stops coming
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"POST /api/v3/write_lp?db=h HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nm v=1 1\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stalled, Duration::from_secs(30)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--http-body-timeout"), "{answer}");
    healthy(&s).await;

    // at the connection limit, a new connection waits until one closes
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    // (their accept is asynchronous: give the server a moment to take all three)
    tokio::time::sleep(Duration::from_millis(200)).await;
    // (a client of its own: the shared one would reuse a connection it keeps open)
    let waiting = reqwest::Client::new()
        .get(s.at("/health"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        waiting.is_err(),
        "a fourth connection was served: {waiting:?}"
    );
    drop(held);
    healthy(&s).await;
}

#[tokio::test]
async fn a_client_that_sends_its_whole_oversize_body_first_reads_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start_with(&["--max-request-bytes", "1MiB"]);
    let addr = s.url.trim_start_matches("http://").to_string();
    let body = "m v=1 1\n".repeat(400_000); // 3.2 MB
    for chunked in [false, true] {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = if chunked {
            "POST /api/v3/write_lp?db=h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_string()
        } else {
            format!(
                "POST /api/v3/write_lp?db=h HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
        };
        c.write_all(head.as_bytes()).await.unwrap();
        // all of it, before reading anything, as urllib does
        for piece in body.as_bytes().chunks(64 << 10) {
            if chunked {
                c.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await
                    .unwrap();
                c.write_all(piece).await.unwrap();
                c.write_all(b"\r\n").await.unwrap();
            } else {
                c.write_all(piece)
                    .await
                    .expect("the server reads the whole body");
            }
        }
        if chunked {
            c.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let mut answer = vec![0; 4096];
        let n = c.read(&mut answer).await.expect("an answer, not a reset");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "chunked={chunked}: {answer}"
        );
    }
    healthy(&s).await;
}

/// Item 11: high-cardinality churn. Each round writes 20,000 series never seen before, then
/// persists; the series index lets go of the series whose rows are all persisted, so the
/// buffer's counted bytes go back down instead of ratcheting up to the memory limit.
#[tokio::test]
async fn series_that_stop_are_forgotten_once_their_rows_are_persisted() {
    let s = Server::start();
    let mut after_persist = Vec::new();
    for round in 0..3 {
        let lp: String = (0..20_000)
            .map(|i| format!("churn,pod=p{round}x{i},node=n{} v=1 {}\n", i % 50, 1000 + i))
            .collect();
        s.write_lp("h", &lp).await;
        let (_, metrics) = s.get("/metrics").await;
        let written = sample(&metrics, "sluice_buffer_bytes");
        assert!(written > 20_000.0 * 60.0, "the index is counted: {written}");
        persist(&s).await;
        let (_, metrics) = s.get("/metrics").await;
        assert_eq!(sample(&metrics, "sluice_buffer_rows"), 0.0);
        after_persist.push(sample(&metrics, "sluice_buffer_bytes"));
    }
    assert!(
        after_persist.iter().all(|&b| b < 500_000.0),
        "bytes counted after each persist: {after_persist:?}"
    );
    healthy(&s).await;
    // the series are still queryable, from the files
    let rows = s
        .sql("h", "SELECT count(DISTINCT pod) AS n FROM churn")
        .await;
    assert_eq!(rows, vec![json!({"n": 60_000})]);
}

/// Item 14: a load faster than the persister (here: writes back to back into a buffer of
/// 256 KiB, rows whose hours are not due) is slowed to persistence's pace past half the
/// buffer's limit, instead of filling it and getting 503s.
#[tokio::test]
async fn writes_past_half_the_buffer_limit_wait_for_persistence_instead_of_failing() {
    let s = Server::start_with(&[
        "--buffer-memory-limit",
        "256KiB",
        "--persist-after",
        "100000h",
        // generous, so that a slow machine's persist rounds do not run past it
        "--buffer-wait",
        "60s",
    ]);
    for request in 0..40 {
        let lp: String = (0..2_000)
            .map(|i| format!("paced,host=h{} v={i} {}\n", i % 10, request * 2_000 + i))
            .collect();
        s.write_lp("db", &lp).await;
    }
    let (_, metrics) = s.get("/metrics").await;
    assert!(
        sample(&metrics, "sluice_write_buffer_waits_total") > 0.0,
        "{metrics}"
    );
    assert!(sample(&metrics, "sluice_persisted_files_total") > 0.0);
    assert!(sample(&metrics, "sluice_buffer_bytes") < 256.0 * 1024.0);
    healthy(&s).await;
    let rows = s.sql("db", "SELECT count(*) AS n FROM paced").await;
    assert_eq!(rows, vec![json!({"n": 80_000})]);
}
