//! What survives a crash (`kill -9`), a clean shutdown, and a damaged WAL tail.

use std::io::Write;

use serde_json::json;

use crate::common::Server;

/// `n` points of one request: series `host=h<k>` for k < 10, distinct times from `start`.
fn body(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| {
            format!(
                "cpu,host=h{} v={i}i {}\n",
                i % 10,
                1_767_225_600_000_000_000i64 + i as i64
            )
        })
        .collect()
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let s = Server::start();
    // many concurrent requests, so that group commit is exercised
    let mut tasks = Vec::new();
    for r in 0..40 {
        let client = s.client.clone();
        let url = s.at("/api/v3/write_lp?db=crash");
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .body(body(r * 250, 250))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 204);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // a merge that must survive too: a later point overwrites one field of an earlier one
    s.write_lp("crash", "cpu,host=h3 v=-1i,extra=true 1767225600000000003")
        .await;
    let before = s
        .sql("crash", "SELECT count(*) AS n, sum(v) AS s FROM cpu")
        .await;
    assert_eq!(
        before,
        vec![json!({"n": 10000, "s": (0..10000i64).sum::<i64>() - 3 - 1})]
    );

    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    let after = s
        .sql("crash", "SELECT count(*) AS n, sum(v) AS s FROM cpu")
        .await;
    assert_eq!(after, before);
    let merged = s
        .sql("crash", "SELECT v, extra FROM cpu WHERE extra IS NOT NULL")
        .await;
    assert_eq!(merged, vec![json!({"v": -1, "extra": true})]);
    // and the restarted server keeps taking writes after the replayed ones
    s.write_lp("crash", "cpu,host=new v=1i 1").await;
    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    let n = s.sql("crash", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(n, vec![json!({"n": 10001})]);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_no_sync_writes() {
    let s = Server::start();
    let (st, text) = s
        .post("/api/v3/write_lp?db=t&no_sync=true", body(0, 100))
        .await;
    assert_eq!(st, 204, "{text}");
    let (status, dir) = s.terminate();
    assert!(status.success(), "exit status {status}");
    let s = Server::start_in(dir, &[]);
    let n = s.sql("t", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(n, vec![json!({"n": 100})]);
    assert!(s.log().contains("shut down cleanly"), "{}", s.log());
}

#[tokio::test]
async fn a_torn_wal_tail_is_cut_and_earlier_writes_are_kept() {
    let s = Server::start();
    s.write_lp("w", &body(0, 50)).await;
    s.write_lp("w", &body(50, 50)).await;
    let dir = s.kill();
    // a crash in the middle of an append leaves half a record behind
    let wal = dir.path().join("data").join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'c', b'p'])
        .unwrap();
    drop(f);

    let s = Server::start_in(dir, &[]);
    let n = s.sql("w", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(n, vec![json!({"n": 100})]);
    let log = s.log();
    assert!(log.contains("cut off the damaged tail"), "{log}");
}
