//! Line-protocol writes through each endpoint, partial writes, gzip, limits.

use std::io::Write;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::Server;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn each_write_endpoint_stores_what_it_is_sent() {
    let s = Server::start();
    // v3: nanoseconds guessed from magnitude (precision=auto)
    let (st, body) = s
        .post(
            "/api/v3/write_lp?db=v3db",
            "cpu,host=a usage=1.5 1767225600000000000\ncpu,host=b usage=2.5 1767225600",
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    // v2: bucket names the database, org is ignored
    let (st, body) = s
        .post(
            "/api/v2/write?org=any&bucket=v2db&precision=s",
            "cpu,host=a usage=3i 1767225600",
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    // v1: db names the database, rp is ignored; minutes precision
    let (st, body) = s
        .post(
            "/write?db=v1db&rp=autogen&precision=m",
            "cpu,host=a up=true 29453760",
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    // no database named: the default one
    let (st, body) = s
        .post("/api/v3/write_lp", "mem used=7u 1767225600000")
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");

    let rows = s
        .sql("v3db", "SELECT host, usage, time FROM cpu ORDER BY host")
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"host": "a", "usage": 1.5, "time": "2026-01-01T00:00:00"}),
            json!({"host": "b", "usage": 2.5, "time": "2026-01-01T00:00:00"}),
        ]
    );
    let rows = s.sql("v2db", "SELECT host, usage, time FROM cpu").await;
    assert_eq!(
        rows,
        vec![json!({"host": "a", "usage": 3, "time": "2026-01-01T00:00:00"})]
    );
    let rows = s.sql("v1db", "SELECT up, time FROM cpu").await;
    assert_eq!(
        rows,
        vec![json!({"up": true, "time": "2026-01-01T00:00:00"})]
    );
    let rows = s.sql("main", "SELECT used, time FROM mem").await;
    assert_eq!(
        rows,
        vec![json!({"used": 7, "time": "2026-01-01T00:00:00"})]
    );
}

#[tokio::test]
async fn partial_write_keeps_good_lines_and_lists_the_bad_ones() {
    let s = Server::start();
    let body = "cpu,host=a usage=1 1\n\
                cpu,host=a usage= 2\n\
                # a comment\n\
                cpu,host=b usage=2 3\n\
                cpu,host=c usage=\"text\" 4\n\
                cpu,host=d usage=4 5\n";
    let (st, text) = s.post("/api/v3/write_lp?db=p&precision=ns", body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("3 of 5 lines were written"),
        "{v}"
    );
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{v}");
    assert_eq!(data[0]["line_number"], 2);
    assert_eq!(data[0]["original_line"], "cpu,host=a usage= 2");
    assert!(
        data[0]["error_message"].as_str().unwrap().contains("usage"),
        "{v}"
    );
    // a schema conflict found after parsing is reported the same way
    assert_eq!(data[1]["line_number"], 5);
    assert_eq!(data[1]["original_line"], "cpu,host=c usage=\"text\" 4");
    let msg = data[1]["error_message"].as_str().unwrap();
    assert!(
        msg.contains("usage") && msg.contains("float") && msg.contains("string"),
        "{msg}"
    );

    let rows = s.sql("p", "SELECT host FROM cpu ORDER BY host").await;
    assert_eq!(
        rows,
        vec![
            json!({"host": "a"}),
            json!({"host": "b"}),
            json!({"host": "d"})
        ]
    );
}

#[tokio::test]
async fn accept_partial_false_writes_nothing_when_a_line_is_bad() {
    let s = Server::start();
    s.write_lp("p", "cpu v=1 1").await;
    let (st, text) = s
        .post(
            "/api/v3/write_lp?db=p&accept_partial=false",
            "cpu v=2 2\ncpu v=oops 3\n",
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(text.contains("nothing was written"), "{text}");
    assert!(text.contains("\"line_number\":2"), "{text}");
    let rows = s.sql("p", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(rows, vec![json!({"n": 1})]);
}

#[tokio::test]
async fn v1_and_v2_errors_use_the_influxdb_shape() {
    let s = Server::start();
    for path in ["/api/v2/write?bucket=x", "/write?db=x"] {
        let (st, text) = s.post(path, "cpu v=1 1\ncpu v=\n").await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["code"], "invalid", "{path}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains("line 2") && m.contains("cpu v="), "{path}: {m}");
    }
    let (st, text) = s.post("/write?db=x&precision=fortnight", "cpu v=1 1").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(text.contains("precision"), "{text}");
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_unknown_encodings_refused() {
    let s = Server::start();
    let lp: String = (0..1000)
        .map(|i| format!("cpu,host=h{} v={i} {}\n", i % 10, 1_000_000 + i))
        .collect();
    let r = s
        .client
        .post(s.at("/api/v2/write?bucket=z&precision=s"))
        .header("Content-Encoding", "gzip")
        .body(gzip(lp.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let rows = s
        .sql("z", "SELECT count(*) AS n, sum(v) AS s FROM cpu")
        .await;
    assert_eq!(rows, vec![json!({"n": 1000, "s": 499500.0})]);

    let r = s
        .client
        .post(s.at("/api/v3/write_lp?db=z"))
        .header("Content-Encoding", "br")
        .body("cpu v=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = s
        .client
        .post(s.at("/api/v3/write_lp?db=z"))
        .header("Content-Encoding", "gzip")
        .body("this is not gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("gzip"));
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_before_and_after_decompression() {
    let s = Server::start_with(&["--max-request-bytes", "4KiB"]);
    let big: String = (0..500).map(|i| format!("cpu v={i} {i}\n")).collect();
    assert!(big.len() > 4096);
    let (st, text) = s.post("/api/v3/write_lp?db=l", big.clone()).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(text.contains("--max-request-bytes"), "{text}");
    // small on the wire, big once inflated
    let bomb = gzip(&vec![b'\n'; 1 << 20]);
    assert!(bomb.len() < 4096);
    let r = s
        .client
        .post(s.at("/api/v3/write_lp?db=l"))
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().await.unwrap().contains("decompressed"));
    // nothing of either reached storage, and the server still serves
    s.write_lp("l", "cpu v=1 1").await;
    let rows = s.sql("l", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(rows, vec![json!({"n": 1})]);
}

#[tokio::test]
async fn limits_reject_lines_with_clear_errors() {
    let s = Server::start_with(&["--max-columns-per-table", "4", "--max-line-bytes", "64"]);
    let (st, text) = s
        .post("/api/v3/write_lp?db=lim", "t a=1,b=2,c=3 1\nt,x=1 a=2 2\n")
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(text.contains("--max-columns-per-table"), "{text}");
    let long = format!("t a=\"{}\" 3", "x".repeat(100));
    let (st, text) = s.post("/api/v3/write_lp?db=lim", long).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(text.contains("--max-line-bytes"), "{text}");
}

#[tokio::test]
async fn lines_without_timestamp_share_the_request_time_and_merge() {
    let s = Server::start();
    s.write_lp(
        "m",
        "sys,host=a load=1\nsys,host=a uptime=5i\nsys,host=b load=2",
    )
    .await;
    let rows = s
        .sql("m", "SELECT host, load, uptime FROM sys ORDER BY host")
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"host": "a", "load": 1.0, "uptime": 5}),
            json!({"host": "b", "load": 2.0})
        ]
    );
    let rows = s
        .sql("m", "SELECT count(DISTINCT time) AS n FROM sys")
        .await;
    assert_eq!(rows, vec![json!({"n": 1})]);
}

#[tokio::test]
async fn telegraf_fixture_loads_completely_and_system_lines_merge() {
    let s = Server::start();
    // where cargo runs the test from (a shared target directory may hold a binary built
    // from another checkout)
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let fixture = std::fs::read_to_string(format!(
        "{dir}/tests/fixtures/line-protocol/telegraf-system.lp"
    ))
    .expect("fixture");
    let (st, body) = s.post("/write?db=telegraf", fixture.clone()).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");

    // Rows expected per table, worked out from the fixture itself: one per primary key
    // (series, time). Lines without a timestamp take the request's time, so the lines of one
    // series without one in this single request are one row.
    let mut keys: std::collections::BTreeMap<&str, std::collections::BTreeSet<(String, &str)>> =
        Default::default();
    let mut system_lines = 0;
    for line in fixture
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        // the series key ends at the first space that no backslash escapes
        let cut = (0..line.len())
            .find(|&i| line.as_bytes()[i] == b' ' && (i == 0 || line.as_bytes()[i - 1] != b'\\'))
            .unwrap();
        let (series, rest) = line.split_at(cut);
        let mut tags: Vec<&str> = series.split(',').collect();
        let table = tags.remove(0);
        tags.sort();
        let last = rest.rsplit(' ').next().unwrap();
        let time = if last.bytes().all(|b| b.is_ascii_digit()) {
            last
        } else {
            "now"
        };
        keys.entry(table)
            .or_default()
            .insert((tags.join(","), time));
        if table == "system" {
            system_lines += 1;
        }
    }
    assert!(keys.len() > 3, "{keys:?}");
    for (table, keys) in &keys {
        let rows = s
            .sql(
                "telegraf",
                &format!("SELECT count(*) AS n FROM \"{table}\""),
            )
            .await;
        assert_eq!(
            rows[0]["n"].as_u64().unwrap() as usize,
            keys.len(),
            "rows of {table}"
        );
    }
    // the three system lines per host and timestamp became one row
    assert_eq!(keys["system"].len() * 3, system_lines);
    let rows = s
        .sql(
            "telegraf",
            "SELECT count(*) AS n FROM system \
             WHERE load1 IS NOT NULL AND uptime IS NOT NULL AND uptime_format IS NOT NULL",
        )
        .await;
    assert_eq!(rows[0]["n"].as_u64().unwrap() as usize * 3, system_lines);
    let rows = s
        .sql(
            "telegraf",
            "SELECT load1, uptime, uptime_format FROM system WHERE host = 'web-00' ORDER BY time LIMIT 1",
        )
        .await;
    assert_eq!(
        rows,
        vec![json!({"load1": 1.68, "uptime": 86400, "uptime_format": "1 day,  0:00"})]
    );
}
