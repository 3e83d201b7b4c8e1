//! `sluice write` and `sluice query` against a running server.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{Server, sluice_bin};

#[tokio::test]
async fn write_a_file_and_stdin_then_query_as_a_table() {
    let s = Server::start();
    let file = s.dir().join("points.lp");
    std::fs::write(&file, "cpu,host=a usage=1.5 1767225600\n").unwrap();
    let out = Command::new(sluice_bin())
        .args(["write", "--host", &s.url, "--db", "cli", "--precision", "s"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = Command::new(sluice_bin())
        .args(["write", "--host", &s.url, "--db", "cli", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"cpu,host=b usage=2.5 1767225600000000000\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(sluice_bin())
        .args(["query", "--host", &s.url, "--db", "cli"])
        .arg("SELECT host, usage, time FROM cpu ORDER BY host")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        table,
        "+------+-------+---------------------+\n\
         | host | usage | time                |\n\
         +------+-------+---------------------+\n\
         | a    | 1.5   | 2026-01-01T00:00:00 |\n\
         | b    | 2.5   | 2026-01-01T00:00:00 |\n\
         +------+-------+---------------------+\n"
    );
    let out = Command::new(sluice_bin())
        .args(["query", "--host", &s.url, "--db", "cli", "--format", "csv"])
        .arg("SELECT count(*) AS n FROM cpu")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "n\n2\n");
}

#[tokio::test]
async fn cli_errors_show_the_servers_message_and_fail() {
    let s = Server::start();
    let mut child = Command::new(sluice_bin())
        .args(["write", "--host", &s.url, "--db", "cli", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"cpu v=1 1\ncpu v=bad 2\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("400") && err.contains("line 2"), "{err}");

    let out = Command::new(sluice_bin())
        .args(["query", "--host", &s.url, "--db", "cli", "DROP TABLE cpu"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("400"), "{err}");
}

#[tokio::test]
async fn a_file_larger_than_one_request_goes_in_pieces_with_whole_file_line_numbers() {
    let s = Server::start_with(&["--max-request-bytes", "2KiB"]);
    let mut lines: Vec<String> = (0..200)
        .map(|i| format!("cpu,host=h{} v={i} {i}", i % 7))
        .collect();
    lines[150] = "cpu,host=x v=notanumber 150".to_string();
    let file = s.dir().join("big.lp");
    std::fs::write(&file, lines.join("\n")).unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() > 4096);
    let out = Command::new(sluice_bin())
        .args([
            "write",
            "--host",
            &s.url,
            "--db",
            "big",
            "--precision",
            "ns",
            "--max-body-bytes",
            "1KiB",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("line 151: ") && err.contains("notanumber"),
        "{err}"
    );
    let n = s.sql("big", "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(n, vec![serde_json::json!({"n": 199})]);
}
