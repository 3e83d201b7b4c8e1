use datafusion::sql::parser::DFParserBuilder;

use super::{reads_as_timestamp, template};

fn parsed(sql: &str) -> datafusion::sql::parser::Statement {
    DFParserBuilder::new(sql)
        .build()
        .unwrap()
        .parse_statements()
        .unwrap()
        .pop_front()
        .unwrap()
}

#[test]
fn timestamp_literals_become_placeholders_in_order() {
    let t = template(&parsed(
        "SELECT max(v) FROM cpu WHERE host = 'h1' AND time >= '2026-01-01T12:00:00Z' \
         AND time < '2026-01-01 13:00:00' AND d > '2026-01-01'",
    ))
    .unwrap();
    assert_eq!(
        t.values,
        ["2026-01-01T12:00:00Z", "2026-01-01 13:00:00", "2026-01-01"]
    );
    assert!(
        t.text.contains("time >= $1 AND time < $2 AND d > $3"),
        "{}",
        t.text
    );
    assert!(t.text.contains("host = 'h1'"), "{}", t.text);
    // the same shape with other times: the same template
    let other = template(&parsed(
        "SELECT max(v) FROM cpu WHERE host = 'h1' AND time >= '2026-01-02T00:00:00Z' \
         AND time < '2026-01-02 01:00:00' AND d > '2025-12-31'",
    ))
    .unwrap();
    assert_eq!(t.text, other.text);
}

#[test]
fn texts_without_timestamps_or_with_placeholders_have_no_template() {
    assert!(template(&parsed("SELECT * FROM cpu WHERE host = 'h1'")).is_none());
    assert!(template(&parsed("SELECT * FROM cpu WHERE time > $1")).is_none());
    assert!(
        template(&parsed(
            "SELECT * FROM cpu WHERE time > $1 AND time < '2026-01-01T00:00:00Z'"
        ))
        .is_none()
    );
    for s in [
        "2026-1-01",
        "20260101",
        "2026-01-01X",
        "h-01-01-01",
        "1 minute",
        "",
    ] {
        assert!(!reads_as_timestamp(s), "{s}");
    }
}
