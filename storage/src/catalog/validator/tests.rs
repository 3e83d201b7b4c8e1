//! Schema on write: which points a batch may keep, and which catalog changes they make.

use super::*;
use crate::test_util::batch;
use sluice_model::FieldType;

fn run(cat: &CatalogSnapshot, lp: &str, limits: Limits) -> Validated {
    validate(cat, "db", &batch(lp), &limits, true).unwrap()
}

fn messages(v: &Validated) -> Vec<(u32, String)> {
    v.rejected
        .iter()
        .map(|r| (r.line, r.message.clone()))
        .collect()
}

#[test]
fn first_write_creates_database_table_and_columns() {
    let v = run(
        &CatalogSnapshot::default(),
        "cpu,host=a usage=1.5,n=1i,ok=true,s=\"x\",u=3u 1",
        Limits::default(),
    );
    assert!(v.rejected.is_empty());
    let cat = v.catalog.unwrap();
    let t = cat.table("db", "cpu").unwrap();
    let kinds: Vec<_> = t
        .columns()
        .iter()
        .map(|c| (c.name.to_string(), c.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("time".into(), ColumnKind::Time),
            ("host".into(), ColumnKind::Tag),
            ("usage".into(), ColumnKind::Field(FieldType::Float)),
            ("n".into(), ColumnKind::Field(FieldType::Integer)),
            ("ok".into(), ColumnKind::Field(FieldType::Boolean)),
            ("s".into(), ColumnKind::Field(FieldType::String)),
            ("u".into(), ColumnKind::Field(FieldType::UInteger)),
        ]
    );
}

#[test]
fn type_conflict_rejects_only_that_line_and_names_both_types() {
    let cat = run(
        &CatalogSnapshot::default(),
        "cpu usage=1.5 1",
        Limits::default(),
    )
    .catalog
    .unwrap();
    let v = run(&cat, "cpu usage=2i 2\ncpu usage=3.0 3", Limits::default());
    assert_eq!(v.keep, vec![false, true]);
    let (line, msg) = &messages(&v)[0];
    assert_eq!(*line, 1);
    assert!(msg.contains("field 'usage'"), "{msg}");
    assert!(msg.contains("table 'cpu'"), "{msg}");
    assert!(msg.contains("float") && msg.contains("integer"), "{msg}");
    // an existing column and no new one: the catalog does not change
    assert!(v.catalog.is_none());
}

#[test]
fn conflict_within_one_batch_is_caught() {
    let v = run(
        &CatalogSnapshot::default(),
        "m x=1i 1\nm x=1.5 2\nm,x=a y=1 3",
        Limits::default(),
    );
    assert_eq!(v.keep, vec![true, false, false]);
    let m = messages(&v);
    assert!(
        m[0].1.contains("integer") && m[0].1.contains("float"),
        "{m:?}"
    );
    assert!(m[1].1.contains("cannot also be a tag"), "{m:?}");
}

#[test]
fn a_run_of_one_series_is_checked_where_its_fields_change() {
    let v = run(
        &CatalogSnapshot::default(),
        "m,h=a v=1 1\nm,h=a v=2 2\nm,h=a v=3i 3\nm,h=a v=4 4\nm,h=a v=5,h=1 5\nm,h=a v=6 6",
        Limits::default(),
    );
    assert_eq!(v.keep, vec![true, true, false, true, false, true]);
    let m = messages(&v);
    assert_eq!(m[0].0, 3);
    assert!(m[0].1.contains("integer"), "{m:?}");
    assert_eq!(m[1].0, 5);
    assert!(m[1].1.contains("cannot also be a field"), "{m:?}");
}

#[test]
fn tag_and_field_with_one_name_are_rejected() {
    let v = run(
        &CatalogSnapshot::default(),
        "m,a=x a=1 1",
        Limits::default(),
    );
    assert_eq!(v.keep, vec![false]);
    assert!(v.rejected[0].message.contains("cannot also be a field"));
    // and the rejected point created nothing
    assert!(v.catalog.is_none());

    let cat = run(
        &CatalogSnapshot::default(),
        "m,a=x v=1 1",
        Limits::default(),
    )
    .catalog
    .unwrap();
    let v = run(&cat, "m a=1 2", Limits::default());
    assert!(
        v.rejected[0].message.contains("is a tag"),
        "{:?}",
        v.rejected
    );
}

#[test]
fn time_is_reserved_and_tags_are_unique() {
    let v = run(
        &CatalogSnapshot::default(),
        "m,time=x v=1 1\nm time=1 2\nm,a=1,a=2 v=1 3",
        Limits::default(),
    );
    assert_eq!(v.keep, vec![false, false, false]);
    let m = messages(&v);
    assert!(m[0].1.contains("reserved"));
    assert!(m[1].1.contains("reserved"));
    assert!(m[2].1.contains("appears twice"));
}

#[test]
fn column_limit_counts_time_tags_and_fields() {
    let limits = Limits {
        max_columns_per_table: 3,
        ..Limits::default()
    };
    let v = run(
        &CatalogSnapshot::default(),
        "m,t=1 a=1 1\nm,t=1 a=2,b=3 2\nm a=1 3",
        limits,
    );
    assert_eq!(v.keep, vec![true, false, true]);
    let m = messages(&v);
    assert!(m[0].1.contains("4 columns, over the limit of 3"), "{m:?}");
    assert!(m[0].1.contains("--max-columns-per-table"));
}

#[test]
fn table_limit() {
    let limits = Limits {
        max_tables_per_database: 2,
        ..Limits::default()
    };
    let v = run(
        &CatalogSnapshot::default(),
        "a v=1 1\nb v=1 1\nc v=1 1\na v=2 2",
        limits,
    );
    assert_eq!(v.keep, vec![true, true, false, true]);
    assert!(v.rejected[0].message.contains("--max-tables-per-database"));
}

#[test]
fn missing_database_without_auto_create() {
    assert!(
        validate(
            &CatalogSnapshot::default(),
            "nope",
            &batch("m v=1 1"),
            &Limits::default(),
            false
        )
        .is_none()
    );
}

#[test]
fn table_and_column_names_have_a_rule() {
    let long = "x".repeat(257);
    let lp = format!("{long} v=1 1\nm,{long}=a v=1 2\nm {long}=1 3\nok v=1 4");
    let v = run(&CatalogSnapshot::default(), &lp, Limits::default());
    assert_eq!(v.keep, vec![false, false, false, true]);
    let m = messages(&v);
    assert!(m[0].1.contains("table name \"xxx"), "{m:?}");
    assert!(
        m[0].1.contains("257 bytes long, over the limit of 256"),
        "{m:?}"
    );
    assert!(m[0].1.contains("--max-name-bytes"), "{m:?}");
    assert!(m[1].1.starts_with("column name"), "{m:?}");
    assert!(m[2].1.starts_with("column name"), "{m:?}");
    // 256 bytes is allowed
    let v = run(
        &CatalogSnapshot::default(),
        &format!("{} v=1 1", "y".repeat(256)),
        Limits::default(),
    );
    assert_eq!(v.keep, vec![true]);
    // control characters never reach a name
    let mut b = WriteBatch::new();
    let (t, k) = (b.symbols.intern("a\u{1}b"), b.symbols.intern("v"));
    let tags = b.begin_tags();
    let tags = b.end_tags(tags);
    let f = b.begin_fields();
    b.push_field(k, FieldValue::F64(1.0));
    b.push_point(t, tags, f, 1, 1);
    let v = validate(
        &CatalogSnapshot::default(),
        "db",
        &b,
        &Limits::default(),
        true,
    )
    .unwrap();
    assert!(v.rejected[0].message.contains("U+0001"), "{:?}", v.rejected);
}

#[test]
fn a_batch_of_many_tables_and_names_costs_what_it_holds() {
    // 20,000 one-line tables, each its own field name: a table x symbol table would be
    // 20,000 x 40,000 entries (3.2 GB); what validation holds grows with the names used
    let lp: String = (0..20_000).map(|i| format!("m{i} f{i}=1 1\n")).collect();
    let v = run(&CatalogSnapshot::default(), &lp, Limits::default());
    assert_eq!(v.accepted(), 10_000, "the table limit holds");
    assert!(v.rejected[0].message.contains("--max-tables-per-database"));
}

#[test]
fn a_point_with_thousands_of_tags_is_refused_at_the_column_limit() {
    // each tag is checked once, and the point stops at the limit
    let tags: String = (0..50_000).map(|i| format!(",t{i}=v")).collect();
    let dup: String = (0..50_000).map(|_| ",a=v").collect();
    let lp = format!("m{tags} v=1 1\nm{dup} v=1 2\nm,a=1,b=2,a=3 v=1 3");
    let v = run(&CatalogSnapshot::default(), &lp, Limits::default());
    assert_eq!(v.keep, vec![false, false, false]);
    let m = messages(&v);
    assert!(
        m[0].1.contains("501 columns, over the limit of 500"),
        "{m:?}"
    );
    assert!(m[1].1.contains("tag 'a' appears twice"), "{m:?}");
    assert!(m[2].1.contains("tag 'a' appears twice"), "{m:?}");
}
