use super::*;
use crate::catalog::CatalogSnapshot;
use crate::validator::{Limits, validate};
use arrow::util::pretty::pretty_format_batches;
use sluice_ingest::line_protocol::{ParseOptions, Precision, parse};

/// A catalog and buffers fed through the real parser and validator.
struct Fixture {
    catalog: CatalogSnapshot,
    buffers: HashMap<String, TableBuffer>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            catalog: CatalogSnapshot::default(),
            buffers: HashMap::new(),
        }
    }

    fn write(&mut self, lp: &str) {
        let out = parse(
            lp.as_bytes(),
            &ParseOptions {
                precision: Precision::Nanosecond,
                default_time: 0,
                max_line_bytes: 1 << 20,
            },
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let v = validate(&self.catalog, "db", &out.batch, &Limits::default(), true).unwrap();
        assert!(v.rejected.is_empty(), "{:?}", v.rejected);
        if let Some(c) = v.catalog {
            self.catalog = c;
        }
        let batch = out.batch;
        let tables: Vec<Sym> = {
            let mut t: Vec<Sym> = batch.points().iter().map(|p| p.table).collect();
            t.dedup();
            t.sort();
            t.dedup();
            t
        };
        for table in tables {
            let name = batch.str(table).to_string();
            let schema = self.catalog.table("db", &name).unwrap().clone();
            let buf = self.buffers.entry(name).or_default();
            buf.apply(
                &schema,
                &batch,
                batch.points().iter().filter(|p| p.table == table),
                1,
            );
        }
    }

    fn scan(&self, table: &str, range: TimeRange) -> BufferScan {
        let schema = self.catalog.table("db", table).unwrap();
        self.buffers[table].scan(schema, range)
    }

    fn show(&self, table: &str) -> String {
        let scan = self.scan(table, TimeRange::ALL);
        pretty_format_batches(&scan.batches()).unwrap().to_string()
    }
}

fn table(lines: &[&str]) -> String {
    lines.join("\n")
}

#[test]
fn rows_come_back_with_tags_fields_and_time() {
    let mut f = Fixture::new();
    f.write("cpu,host=a,region=eu usage=1.5,n=2i 1000\ncpu,host=b usage=3 2000");
    assert_eq!(
        f.show("cpu"),
        table(&[
            "+------+---+--------+----------------------------+-------+",
            "| host | n | region | time                       | usage |",
            "+------+---+--------+----------------------------+-------+",
            "| a    | 2 | eu     | 1970-01-01T00:00:00.000001 | 1.5   |",
            "| b    |   |        | 1970-01-01T00:00:00.000002 | 3.0   |",
            "+------+---+--------+----------------------------+-------+",
        ])
    );
}

#[test]
fn same_tags_and_time_merge_fields() {
    let mut f = Fixture::new();
    f.write("m,host=a x=1,y=2 10\nm,host=b x=5 10");
    f.write("m,host=a y=20,z=30 10");
    f.write("m,host=a x=100 11");
    assert_eq!(
        f.show("m"),
        table(&[
            "+------+-------------------------------+-------+------+------+",
            "| host | time                          | x     | y    | z    |",
            "+------+-------------------------------+-------+------+------+",
            "| a    | 1970-01-01T00:00:00.000000010 | 1.0   | 20.0 | 30.0 |",
            "| a    | 1970-01-01T00:00:00.000000011 | 100.0 |      |      |",
            "| b    | 1970-01-01T00:00:00.000000010 | 5.0   |      |      |",
            "+------+-------------------------------+-------+------+------+",
        ])
    );
}

#[test]
fn tag_order_in_the_line_does_not_make_another_series() {
    let mut f = Fixture::new();
    f.write("m,a=1,b=2 x=1 5\nm,b=2,a=1 y=2 5");
    let scan = f.scan("m", TimeRange::ALL);
    assert_eq!(scan.batches()[0].num_rows(), 1);
    assert_eq!(f.buffers["m"].series_count(), 1);
}

#[test]
fn telegraf_system_lines_merge_into_one_row() {
    let mut f = Fixture::new();
    f.write(
        "system,host=web-00 load1=1.68,n_cpus=2i 1767225600000000000\n\
         system,host=web-00 uptime=86400i 1767225600000000000\n\
         system,host=web-00 uptime_format=\"1 day,  0:00\" 1767225600000000000",
    );
    let scan = f.scan("system", TimeRange::ALL);
    let batch = &scan.batches()[0];
    assert_eq!(batch.num_rows(), 1);
    let text = pretty_format_batches(&scan.batches()).unwrap().to_string();
    assert!(text.contains("| 1.68  |"), "{text}");
    assert!(text.contains("86400"), "{text}");
    assert!(text.contains("1 day,  0:00"), "{text}");
}

#[test]
fn repeated_field_in_one_line_keeps_the_last_value() {
    let mut f = Fixture::new();
    f.write("m v=1,v=2 5");
    let text = f.show("m");
    assert!(text.contains("| 2.0 |"), "{text}");
    assert_eq!(f.scan("m", TimeRange::ALL).chunks[0].batch.num_rows(), 1);
}

#[test]
fn out_of_order_rows_are_all_kept() {
    let mut f = Fixture::new();
    f.write("m,h=a v=3 30\nm,h=a v=1 10\nm,h=a v=2 20\nm,h=a v=4 10");
    let scan = f.scan("m", TimeRange::ALL);
    assert_eq!(scan.batches()[0].num_rows(), 3);
    let text = f.show("m");
    // merged partitions come out in (series, time) order; 10 was overwritten by v=4
    let pos = |s: &str| text.find(s).unwrap();
    assert!(
        pos("| 4.0 |") < pos("| 2.0 |") && pos("| 2.0 |") < pos("| 3.0 |"),
        "{text}"
    );
}

#[test]
fn scans_skip_partitions_outside_the_range() {
    let hour = PARTITION_NANOS;
    let mut f = Fixture::new();
    f.write(&format!(
        "m v=1 {}\nm v=2 {}\nm v=3 {}",
        10,
        hour + 10,
        2 * hour + 10
    ));
    let all = f.scan("m", TimeRange::ALL);
    assert_eq!((all.partitions_scanned, all.partitions_total), (3, 3));
    let one = f.scan(
        "m",
        TimeRange {
            min: hour,
            max: 2 * hour - 1,
        },
    );
    assert_eq!((one.partitions_scanned, one.partitions_total), (1, 3));
    assert_eq!(one.chunks[0].batch.num_rows(), 1);
}

#[test]
fn a_column_added_later_is_null_for_earlier_rows_and_cache_is_refreshed() {
    let mut f = Fixture::new();
    f.write("m v=1 1");
    assert_eq!(f.scan("m", TimeRange::ALL).chunks[0].batch.num_columns(), 2);
    f.write("m,h=x w=true 2");
    let text = f.show("m");
    assert_eq!(
        text,
        table(&[
            "+---+-------------------------------+-----+------+",
            "| h | time                          | v   | w    |",
            "+---+-------------------------------+-----+------+",
            "|   | 1970-01-01T00:00:00.000000001 | 1.0 |      |",
            "| x | 1970-01-01T00:00:00.000000002 |     | true |",
            "+---+-------------------------------+-----+------+",
        ])
    );
}

#[test]
fn string_unsigned_and_boolean_fields() {
    let mut f = Fixture::new();
    f.write("m s=\"a\",u=1u,b=f 1\nm u=2u 2\nm s=\"c\" 1");
    let text = f.show("m");
    assert!(text.contains("| false | c |"), "{text}");
    assert!(text.contains("|       |   |"), "{text}");
}
