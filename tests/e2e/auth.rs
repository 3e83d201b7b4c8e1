//! Access tokens: open until the first one exists, then required everywhere but liveness and
//! metrics, in every form InfluxDB and Prometheus clients send them, with scopes per database.

use std::process::{Command, Stdio};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, sluice_bin};
use crate::otlp::capture;
use crate::otlp_grpc::{EXPORT, call};

/// Creates a token through the API with `auth` (a token, or none) and returns it.
async fn create(s: &Server, auth: Option<&str>, path: &str, body: Value) -> (StatusCode, Value) {
    let mut r = s.client.post(s.at(path)).json(&body);
    if let Some(t) = auth {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn status_of(r: reqwest::RequestBuilder) -> (StatusCode, String) {
    let r = r.send().await.unwrap();
    let status = r.status();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn tokens_guard_every_endpoint_once_one_exists() {
    let s = Server::start();
    let c = &s.client;
    // open until the first token
    s.write_lp("a", "cpu,host=x usage=1 1").await;
    s.write_lp("b", "cpu,host=y usage=2 1").await;
    let (st, body) = create(&s, None, "/api/v3/configure/token", json!({"read": ["a"]})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body.to_string().contains("first token must be an admin"),
        "{body}"
    );
    let (st, body) = create(&s, None, "/api/v3/configure/token/admin", json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let admin = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["admin"], true);

    // from now on a token is needed, except for liveness and metrics
    let (st, body) = create(&s, None, "/api/v3/configure/token/admin", json!({})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    let (st, body) = status_of(c.post(s.at("/api/v3/write_lp?db=a")).body("cpu usage=3 2")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("requires a token"), "{body}");
    let (st, _) = status_of(
        c.post(s.at("/api/v3/write_lp?db=a"))
            .bearer_auth("apiv3_not-a-token")
            .body("cpu usage=3 2"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/health").await.0, StatusCode::OK);
    assert_eq!(s.get("/ping").await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.get("/metrics").await.0, StatusCode::OK);

    // scoped tokens, made by the admin
    let (st, w) = create(
        &s,
        Some(&admin),
        "/api/v3/configure/token",
        json!({"name": "agent", "write": ["a"]}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    let writer = w["token"].as_str().unwrap().to_string();
    let (_, r) = create(
        &s,
        Some(&admin),
        "/api/v3/configure/token",
        json!({"read": ["a"]}),
    )
    .await;
    let reader = r["token"].as_str().unwrap().to_string();
    let (st, body) = create(
        &s,
        Some(&writer),
        "/api/v3/configure/token",
        json!({"read": ["b"]}),
    )
    .await;
    // a valid token that may not administer: forbidden, not unauthenticated
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");

    // the writer, in every form clients send a token
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("telegraf:{writer}"));
    let writes = [
        c.post(s.at("/api/v3/write_lp?db=a")).bearer_auth(&writer),
        c.post(s.at("/api/v2/write?bucket=a"))
            .header("Authorization", format!("Token {writer}")),
        c.post(s.at("/write?db=a"))
            .header("Authorization", format!("Basic {basic}")),
        c.post(s.at(&format!("/write?db=a&u=telegraf&p={writer}"))),
    ];
    for (i, w) in writes.into_iter().enumerate() {
        let (st, body) = status_of(w.body(format!("cpu,host=w usage={i} {}", 10 + i))).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "form {i}: {body}");
    }
    let (st, body) = status_of(
        c.post(s.at("/api/v3/write_lp?db=b"))
            .bearer_auth(&writer)
            .body("cpu usage=1 1"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("token 2 (agent) may not write to database 'b'"),
        "{body}"
    );
    let (st, _) = status_of(
        c.get(s.at("/api/v3/query_sql?db=a&q=SELECT%201"))
            .bearer_auth(&writer),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let otlp = c
        .post(s.at("/v1/metrics?db=b"))
        .bearer_auth(&writer)
        .header("Content-Type", "application/x-protobuf")
        .body(capture());
    assert_eq!(status_of(otlp).await.0, StatusCode::FORBIDDEN);
    let remote_write = c
        .post(s.at("/api/v1/write?db=b"))
        .bearer_auth(&writer)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(Vec::new());
    assert_eq!(status_of(remote_write).await.0, StatusCode::FORBIDDEN);

    // the reader sees database a, and only a: not even as `b.cpu`
    let q = |db: &str, sql: &str, token: &str| {
        c.get(s.at("/api/v3/query_sql"))
            .query(&[("db", db), ("q", sql)])
            .bearer_auth(token.to_string())
    };
    let (st, body) = status_of(q("a", "SELECT count(*) AS n FROM cpu", &reader)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!([{"n": 5}])
    );
    let (st, body) = status_of(q("a", "SELECT * FROM b.cpu", &reader)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("b.cpu"), "{body}");
    let (st, body) = status_of(q("b", "SELECT 1", &reader)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let (st, _) = status_of(
        c.post(s.at("/api/v3/write_lp?db=a"))
            .bearer_auth(&reader)
            .body("cpu usage=1 1"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for (method, path) in [
        (reqwest::Method::GET, "/api/v3/configure/database"),
        (reqwest::Method::POST, "/api/v3/persist"),
        (reqwest::Method::POST, "/api/v3/compact"),
        (reqwest::Method::DELETE, "/api/v3/configure/database?db=a"),
    ] {
        let (st, body) = status_of(c.request(method, s.at(path)).bearer_auth(&reader)).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("may not administer"), "{body}");
    }
    // the admin may do anything
    let (st, body) = status_of(q("b", "SELECT * FROM a.cpu", &admin)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _) = status_of(
        c.get(s.at("/api/v3/configure/database"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    // OTLP over gRPC: the `authorization` metadata
    let bearer = |t: &str| format!("Bearer {t}");
    let no = call(
        &s.url,
        EXPORT,
        &[("x-sluice-database", "a")],
        &capture(),
        false,
    )
    .await;
    assert_eq!(no.code, 16, "{no:?}");
    let w = bearer(&writer);
    let ok = call(
        &s.url,
        EXPORT,
        &[("x-sluice-database", "a"), ("authorization", &w)],
        &capture(),
        false,
    )
    .await;
    assert_eq!(ok.code, 0, "{ok:?}");
    let r = bearer(&reader);
    let denied = call(
        &s.url,
        EXPORT,
        &[("x-sluice-database", "a"), ("authorization", &r)],
        &capture(),
        false,
    )
    .await;
    assert_eq!(denied.code, 7, "{denied:?}");
    assert!(
        denied.message.contains("may not write to database 'a'"),
        "{denied:?}"
    );

    // the tokens outlive a restart
    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    let (st, _) = status_of(s.client.get(s.at("/api/v3/query_sql?db=a&q=SELECT%201"))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = status_of(
        s.client
            .get(s.at("/api/v3/query_sql?db=a&q=SELECT%201"))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

/// Tokens with an expiry (`expiry` as in `30d`, or InfluxDB 3's `expiry_secs`) work until
/// then and get 401 after; the first admin token cannot expire.
#[tokio::test]
async fn tokens_can_expire() {
    let s = Server::start();
    s.write_lp("m", "cpu,host=a usage=1 1").await;
    let path = "/api/v3/configure/token";
    let (st, e) = create(
        &s,
        None,
        "/api/v3/configure/token/admin",
        json!({"expiry": "1h"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e.to_string().contains("first admin token cannot expire"),
        "{e}"
    );
    let (st, admin) = create(&s, None, "/api/v3/configure/token/admin", json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{admin}");
    let admin = admin["token"].as_str().unwrap().to_string();
    for (bad, says) in [
        (
            json!({"read": ["m"], "expiry": "3 weeks"}),
            "expiry '3 weeks'",
        ),
        (json!({"read": ["m"], "expiry_secs": 0}), "never works"),
        (
            json!({"read": ["m"], "expiry": "1d", "expiry_secs": 60}),
            "once",
        ),
    ] {
        let (st, e) = create(&s, Some(&admin), path, bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
    let (st, day) = create(
        &s,
        Some(&admin),
        path,
        json!({"read": ["m"], "expiry": "1d"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{day}");
    let valid_for = day["expires"].as_i64().unwrap() - day["created"].as_i64().unwrap();
    assert_eq!(valid_for, 86_400_000_000_000);
    let day = day["token"].as_str().unwrap().to_string();
    let query = |token: &str| {
        s.client
            .get(s.at("/api/v3/query_sql?db=m&q=SELECT%201"))
            .bearer_auth(token)
    };
    assert_eq!(status_of(query(&day)).await.0, StatusCode::OK);
    // one that lasts a second, asked once it is over
    let (st, brief) = create(
        &s,
        Some(&admin),
        path,
        json!({"read": ["m"], "expiry_secs": 1}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{brief}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (st, body) = status_of(query(brief["token"].as_str().unwrap())).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("the token expired at 20"), "{body}");
    // the CLI gives and shows expiries
    let out = Command::new(sluice_bin())
        .args(["token", "create", "--host", &s.url, "--token", &admin])
        .args(["--read", "m", "--expiry", "90d"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(sluice_bin())
        .args(["token", "list", "--host", &s.url, "--token", &admin])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    let expiries: Vec<&str> = list
        .lines()
        .skip(1)
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(expiries.len(), 4, "{list}");
    assert_eq!(expiries[0], "never", "{list}");
    assert!(
        expiries[1..]
            .iter()
            .all(|e| e.starts_with("20") && e.ends_with('Z')),
        "{list}"
    );
}

#[tokio::test]
async fn the_cli_creates_and_uses_tokens() {
    let s = Server::start();
    let run = |args: &[&str]| Command::new(sluice_bin()).args(args).output().unwrap();
    let out = run(&["token", "create", "--host", &s.url, "--admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(admin.starts_with("apiv3_"), "{admin}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not shown again"));
    let out = run(&[
        "token", "create", "--host", &s.url, "--token", &admin, "--write", "m", "--read", "m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scoped = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let out = run(&["db", "create", "--host", &s.url, "m"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let out = run(&["db", "create", "--host", &s.url, "--token", &admin, "m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = s.dir().join("p.lp");
    std::fs::write(&file, "cpu,host=a usage=1 1767225600\n").unwrap();
    let out = run(&[
        "write",
        "--host",
        &s.url,
        "--db",
        "m",
        "--token",
        &scoped,
        "--precision",
        "s",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(sluice_bin())
        .args([
            "query",
            "--host",
            &s.url,
            "--db",
            "m",
            "--format",
            "csv",
            "SELECT host FROM cpu",
        ])
        .env("SLUICE_TOKEN", &scoped)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "host\na\n", "{out:?}");

    // listed without the secret, then revoked: it stops working at once
    let out = run(&["token", "list", "--host", &s.url, "--token", &admin]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        list.lines()
            .any(|l| l.trim_start().starts_with("2 ") && l.contains(" m ")),
        "{list}"
    );
    assert!(!list.contains(&scoped) && !list.contains(&admin), "{list}");
    let out = run(&["token", "delete", "--host", &s.url, "--token", &scoped, "2"]);
    assert!(!out.status.success(), "only an admin revokes");
    let out = run(&["token", "delete", "--host", &s.url, "--token", &admin, "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "query", "--host", &s.url, "--db", "m", "--token", &scoped, "SELECT 1",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let out = run(&["token", "delete", "--host", &s.url, "--token", &admin, "2"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no token has id 2"),
        "{out:?}"
    );
}

#[test]
fn a_server_without_tokens_refuses_to_listen_beyond_loopback_unless_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        Command::new(sluice_bin())
            .args(["serve", "--http-bind", "0.0.0.0:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = serve(&[]).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without authentication")
            && err.contains("--without-auth"),
        "{err}"
    );
    // with --without-auth it starts, and says what that means
    let mut child = serve(&["--without-auth"]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        line.starts_with("Sluice listening on http://0.0.0.0:"),
        "{line}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--without-auth: every request is allowed"),
        "{err}"
    );
}
