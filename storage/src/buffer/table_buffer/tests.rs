use super::*;
use crate::catalog::CatalogSnapshot;
use crate::catalog::{Limits, validate};
use crate::test_util::batch;
use arrow::util::pretty::pretty_format_batches;

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
        let batch = batch(lp);
        let v = validate(&self.catalog, "db", &batch, &Limits::default(), true).unwrap();
        assert!(v.rejected.is_empty(), "{:?}", v.rejected);
        if let Some(c) = v.catalog {
            self.catalog = c;
        }
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
fn one_string_as_the_value_of_two_tags_is_in_both_columns() {
    let mut f = Fixture::new();
    // "x" is one symbol of the batch, a value of two columns (and again in a second batch)
    f.write("m,a=x,b=x v=1 1\nm,a=y,b=x v=2 2\nm,a=x,b=y v=3 3");
    f.write("m,b=x,a=x v=4 4");
    assert_eq!(
        f.show("m"),
        table(&[
            "+---+---+-------------------------------+-----+",
            "| a | b | time                          | v   |",
            "+---+---+-------------------------------+-----+",
            "| x | x | 1970-01-01T00:00:00.000000001 | 1.0 |",
            "| y | x | 1970-01-01T00:00:00.000000002 | 2.0 |",
            "| x | y | 1970-01-01T00:00:00.000000003 | 3.0 |",
            "| x | x | 1970-01-01T00:00:00.000000004 | 4.0 |",
            "+---+---+-------------------------------+-----+",
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
fn rows_in_a_range_are_counted_by_the_share_of_each_partition_inside_it() {
    let hour = PARTITION_NANOS;
    let mut f = Fixture::new();
    // 10 rows over the first half of hour 0, 30 in hour 2
    let lp: Vec<String> = (0..10)
        .map(|i| format!("m,k=a v={i} {}", i * hour / 20))
        .chain((0..30).map(|i| format!("m,k=a v={i} {}", 2 * hour + i * hour / 30)))
        .collect();
    f.write(&lp.join("\n"));
    let b = &f.buffers["m"];
    assert_eq!(b.rows_in(TimeRange::ALL), 40);
    let hour_1 = TimeRange {
        min: hour,
        max: 2 * hour - 1,
    };
    assert_eq!(b.rows_in(hour_1), 0);
    assert!(!b.has_rows_in(hour_1));
    let hour_2 = TimeRange {
        min: 2 * hour,
        max: 3 * hour - 1,
    };
    assert_eq!(b.rows_in(hour_2), 30);
    assert!(b.has_rows_in(hour_2));
    // the first half of hour 2's rows, spread evenly: about 15
    let half = TimeRange {
        min: 2 * hour,
        max: 2 * hour + hour / 2,
    };
    assert!((14..=17).contains(&b.rows_in(half)), "{}", b.rows_in(half));
    assert_eq!(f.scan("m", half).chunks.len(), 1);
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

impl Fixture {
    fn last(&self, table: &str) -> String {
        let schema = self.catalog.table("db", table).unwrap();
        let batch = self.buffers[table].last_rows(schema);
        let sorted = sort_rows(&batch);
        pretty_format_batches(&[sorted]).unwrap().to_string()
    }
}

/// `batch` sorted by every column, so that tables compare independent of series ids.
fn sort_rows(batch: &RecordBatch) -> RecordBatch {
    use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
    let columns: Vec<SortColumn> = batch
        .columns()
        .iter()
        .map(|c| SortColumn {
            values: c.clone(),
            options: None,
        })
        .collect();
    let idx = lexsort_to_indices(&columns, None).unwrap();
    take_record_batch(batch, &idx).unwrap()
}

#[test]
fn newest_row_per_series_follows_merges_and_ignores_older_points() {
    let mut f = Fixture::new();
    f.write("m,host=a x=1,y=2 10\nm,host=b x=5 10");
    // same time: merges; newer: replaces (y becomes null); older: ignored
    f.write("m,host=a y=20,z=30 10");
    f.write("m,host=b x=6 20\nm,host=b y=7 20\nm,host=a x=100 11\nm,host=a x=-1 5");
    assert_eq!(
        f.last("m"),
        table(&[
            "+------+-------------------------------+-------+-----+---+",
            "| host | time                          | x     | y   | z |",
            "+------+-------------------------------+-------+-----+---+",
            "| a    | 1970-01-01T00:00:00.000000011 | 100.0 |     |   |",
            "| b    | 1970-01-01T00:00:00.000000020 | 6.0   | 7.0 |   |",
            "+------+-------------------------------+-------+-----+---+",
        ])
    );
}

#[test]
fn newest_rows_equal_the_newest_rows_of_a_scan_for_shuffled_writes() {
    newest_rows_match_the_scan(false);
}

#[test]
fn newest_rows_of_one_float_field_runs_equal_the_newest_rows_of_a_scan() {
    // writes of one float field a line take the run append, which sets a series' newest
    // value once per run of its rows
    newest_rows_match_the_scan(true);
}

fn newest_rows_match_the_scan(one_float_field: bool) {
    // A differential check: random writes (out of order, repeated keys, partial fields, all
    // field types), then the newest rows must be what the deduplicated scan says.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut f = Fixture::new();
    for write in 0..40 {
        let mut lines = Vec::new();
        let mut host = next(5);
        for _ in 0..25 {
            // (a series' points often come in runs)
            if next(2) == 0 {
                host = next(5);
            }
            let mut fields = Vec::new();
            if one_float_field {
                fields.push(format!("f={}", next(100)));
            } else {
                if next(2) == 0 {
                    fields.push(format!("f={}", next(100)));
                }
                if next(2) == 0 {
                    fields.push(format!("i={}i", next(100)));
                }
                if next(3) == 0 {
                    fields.push(format!("s=\"v{}\"", next(9)));
                }
                if next(3) == 0 {
                    fields.push(format!("b={}", next(2) == 0));
                }
                if fields.is_empty() {
                    fields.push("u=1u".to_string());
                }
            }
            let region = if host == 4 { "" } else { ",region=r" };
            // (runs of rows stop at an hour's end: the one-field writes stay in one hour and
            // move forward in time, so that a run holds several newest rows of a series)
            let time = if one_float_field {
                (write * 10 + next(30)) as i64 * PARTITION_NANOS / 600
            } else {
                next(30) as i64 * PARTITION_NANOS / 10
            };
            lines.push(format!(
                "m,host=h{host}{region} {} {time}",
                fields.join(","),
            ));
        }
        f.write(&lines.join("\n"));
    }
    let schema = f.catalog.table("db", "m").unwrap().clone();
    // newest row per series from the scan: sort by series then time, keep each series' last
    let scan = f.scan("m", TimeRange::ALL).batches();
    let all = arrow::compute::concat_batches(schema.arrow_schema(), &scan).unwrap();
    let mut newest: HashMap<String, (i64, usize)> = HashMap::new();
    let times = all
        .column_by_name("time")
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap();
    let hosts = arrow::compute::cast(
        all.column_by_name("host").unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let hosts = hosts.as_string::<i32>();
    for row in 0..all.num_rows() {
        let e = newest
            .entry(hosts.value(row).to_string())
            .or_insert((i64::MIN, row));
        if times.value(row) > e.0 {
            *e = (times.value(row), row);
        }
    }
    let rows: Vec<u32> = newest.values().map(|&(_, r)| r as u32).collect();
    let expected = arrow::compute::take_record_batch(&all, &UInt32Array::from(rows)).unwrap();
    let expected = pretty_format_batches(&[sort_rows(&expected)])
        .unwrap()
        .to_string();
    assert_eq!(f.last("m"), expected);

    // folding the scan back in changes nothing; folding it into an empty table rebuilds it
    f.buffers["m"].merge_last_rows(&schema, &all);
    assert_eq!(f.last("m"), expected);
    let fresh = TableBuffer::new();
    fresh.merge_last_rows(&schema, &all);
    let rebuilt = pretty_format_batches(&[sort_rows(&fresh.last_rows(&schema))]).unwrap();
    assert_eq!(rebuilt.to_string(), expected);
}

#[test]
fn files_fill_in_series_and_older_fields_but_never_replace_newer_rows() {
    let mut f = Fixture::new();
    // (an older point of a brings column y into the schema)
    f.write("m,host=a x=1 10\nm,host=b x=2 10\nm,host=a y=0 1");
    let schema = f.catalog.table("db", "m").unwrap().clone();
    // what a file might hold: an older row of a, a row of a at the same time with another
    // field, and a series the buffer has not seen
    let mut g = Fixture::new();
    g.write("m,host=a x=0 5\nm,host=a y=9 10\nm,host=c x=3 7\nm,host=b x=8,y=8 10");
    let file = g.scan("m", TimeRange::ALL).batches();
    for b in &file {
        let aligned = align_to_schema(b, schema.arrow_schema());
        f.buffers["m"].merge_last_rows(&schema, &aligned);
    }
    assert_eq!(
        f.last("m"),
        table(&[
            "+------+-------------------------------+-----+-----+",
            "| host | time                          | x   | y   |",
            "+------+-------------------------------+-----+-----+",
            "| a    | 1970-01-01T00:00:00.000000010 | 1.0 | 9.0 |",
            "| b    | 1970-01-01T00:00:00.000000010 | 2.0 | 8.0 |",
            "| c    | 1970-01-01T00:00:00.000000007 | 3.0 |     |",
            "+------+-------------------------------+-----+-----+",
        ])
    );
}

/// Points go to the partition of their hour wherever they fall, including the first and last
/// hours of time, whose bounds do not fit an i64, and runs that leave an hour and come back.
#[test]
fn points_land_in_their_hours_partitions_at_the_ends_of_time_too() {
    let mut f = Fixture::new();
    let hour = PARTITION_NANOS;
    let times = [
        i64::MIN,
        i64::MIN + 1,
        -1,
        0,
        hour - 1,
        hour,
        1,
        i64::MAX - 1,
        i64::MAX,
        2 * hour + 5,
    ];
    let lines: Vec<String> = times
        .iter()
        .enumerate()
        .map(|(i, t)| format!("m,h=a v={i} {t}"))
        .collect();
    f.write(&lines.join("\n"));
    let scan = f.scan("m", TimeRange::ALL);
    let mut got: Vec<(i64, i64, i64)> = scan
        .chunks
        .iter()
        .map(|c| (c.partition, c.min_time, c.max_time))
        .collect();
    got.sort();
    let mut want: Vec<(i64, i64, i64)> = Vec::new();
    for &t in &times {
        let key = t.div_euclid(hour);
        match want.iter_mut().find(|w| w.0 == key) {
            Some(w) => (w.1, w.2) = (w.1.min(t), w.2.max(t)),
            None => want.push((key, t, t)),
        }
    }
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        scan.chunks
            .iter()
            .map(|c| c.batch.num_rows())
            .sum::<usize>(),
        times.len()
    );
}

/// A tag set the decoder named by a [`TagSetId`] finds its series by the id in later batches,
/// wherever its range is in them; sets without an id resolve by their tags as before.
#[test]
fn tag_set_ids_find_series_across_batches() {
    let mut f = Fixture::new();
    let named = |lp: &str, ids: &[(&str, u64)]| {
        let mut b = batch(lp);
        let points: Vec<_> = b.points().to_vec();
        for p in points {
            let host = b.str(b.tags_of(&p)[0].value).to_string();
            if let Some(&(_, id)) = ids.iter().find(|(h, _)| *h == host) {
                let r = p.tag_range();
                b.set_tag_set_id((r.start as u32, r.end as u32), TagSetId(id));
            }
        }
        b
    };
    let apply = |f: &mut Fixture, b: &WriteBatch| {
        let v = validate(&f.catalog, "db", b, &Limits::default(), true).unwrap();
        if let Some(c) = v.catalog {
            f.catalog = c;
        }
        let schema = f.catalog.table("db", "m").unwrap().clone();
        f.buffers
            .entry("m".into())
            .or_default()
            .apply(&schema, b, b.points().iter(), 1);
    };
    apply(
        &mut f,
        &named("m,h=a v=1 1\nm,h=b v=2 1", &[("a", 100), ("b", 200)]),
    );
    apply(
        &mut f,
        &named(
            "m,h=b v=3 2\nm,h=a v=4 2\nm,h=c v=5 2",
            &[("a", 100), ("b", 200)],
        ),
    );
    // The id is trusted: a (misbehaving) batch that gives id 100 to other tags lands in the
    // series id 100 named first, which shows the tags were not read again.
    apply(&mut f, &named("m,h=z v=6 3", &[("z", 100)]));
    assert_eq!(
        f.show("m"),
        table(&[
            "+---+-------------------------------+-----+",
            "| h | time                          | v   |",
            "+---+-------------------------------+-----+",
            "| a | 1970-01-01T00:00:00.000000001 | 1.0 |",
            "| b | 1970-01-01T00:00:00.000000001 | 2.0 |",
            "| b | 1970-01-01T00:00:00.000000002 | 3.0 |",
            "| a | 1970-01-01T00:00:00.000000002 | 4.0 |",
            "| c | 1970-01-01T00:00:00.000000002 | 5.0 |",
            "| a | 1970-01-01T00:00:00.000000003 | 6.0 |",
            "+---+-------------------------------+-----+",
        ])
    );
}

#[test]
fn series_whose_rows_all_left_are_dropped_and_their_bytes_released() {
    const HOUR: i64 = PARTITION_NANOS;
    let mut f = Fixture::new();
    let schema = |f: &Fixture| f.catalog.table("db", "m").unwrap().clone();
    // hour 0: 3,000 series that will go idle; two of them keep writing in hour 1
    let lp: String = (0..3000)
        .map(|i| format!("m,id=s{i},zone=z{} v={i} {}\n", i % 7, i))
        .collect();
    f.write(&lp);
    f.write(&format!(
        "m,id=s1,zone=z1 v=-1 {HOUR}\nm,id=s2,zone=z2 v=-2 {HOUR}\n"
    ));
    let buffer = &f.buffers["m"];
    assert_eq!(buffer.series_count(), 3000);
    let written = buffer.bytes();
    let mut seq = 0;
    let frozen = buffer.freeze(&schema(&f), |p, _| p == 0, &mut seq);
    assert_eq!(frozen.len(), 1);
    let (rows, released) = buffer.remove_frozen(&[frozen[0].seq]);
    assert_eq!(rows, 3000);
    // the idle series went: their tag sets and the values only they used
    assert_eq!(buffer.series_count(), 2);
    assert!(
        released > frozen[0].bytes + 3000 * 40,
        "{released} of {written} bytes released; rows alone were {}",
        frozen[0].bytes
    );
    assert!(!buffer.last_rows_complete());
    // the two live series keep their rows, tags and newest rows under their new ids
    let live = table(&[
        "+----+---------------------+------+------+",
        "| id | time                | v    | zone |",
        "+----+---------------------+------+------+",
        "| s1 | 1970-01-01T01:00:00 | -1.0 | z1   |",
        "| s2 | 1970-01-01T01:00:00 | -2.0 | z2   |",
        "+----+---------------------+------+------+",
    ]);
    assert_eq!(f.show("m"), live);
    assert_eq!(f.last("m"), live);
    // a dropped series written again is a series again, and a repeated key still merges
    f.write(&format!(
        "m,id=s9,zone=z2 v=9 {HOUR}\nm,id=s1,zone=z1 w=5 {HOUR}\nm,id=s9,zone=z2 w=1 {HOUR}\n"
    ));
    assert_eq!(f.buffers["m"].series_count(), 3);
    assert_eq!(
        f.show("m"),
        table(&[
            "+----+---------------------+------+-----+------+",
            "| id | time                | v    | w   | zone |",
            "+----+---------------------+------+-----+------+",
            "| s1 | 1970-01-01T01:00:00 | -1.0 | 5.0 | z1   |",
            "| s2 | 1970-01-01T01:00:00 | -2.0 |     | z2   |",
            "| s9 | 1970-01-01T01:00:00 | 9.0  | 1.0 | z2   |",
            "+----+---------------------+------+-----+------+",
        ])
    );
    // once every row left, the table holds no bytes
    let buffer = &f.buffers["m"];
    let frozen = buffer.freeze(&schema(&f), |_, _| true, &mut seq);
    let seqs: Vec<u64> = frozen.iter().map(|p| p.seq).collect();
    buffer.remove_frozen(&seqs);
    assert_eq!(
        buffer.series_count(),
        3,
        "three idle series are under the floor"
    );
    assert_eq!(buffer.rows(), 0);
}

/// Freezing builds a partition's batch from its own vectors (no copy): the rows are the
/// ones a scan of the live partition shows, with keys merged, every field type, fields
/// missing from later rows and a column added after the first rows.
#[test]
fn frozen_partitions_hold_the_rows_a_live_scan_shows() {
    let lines = [
        "m,h=a f=1,i=1i,u=1u,b=t,s=\"x\" 10",
        "m,h=b f=2 10",
        "m,h=a i=2i 10",
        "m,h=a f=3,s=\"y\" 5",
        "m,h=c n=7i 20",
        "m,h=b f=4 3600000000005",
    ];
    let (mut live, mut frozen) = (Fixture::new(), Fixture::new());
    for line in lines {
        live.write(line);
        frozen.write(line);
    }
    let expected = live.show("m");
    assert!(
        expected.contains("| true | 1.0 | a | 2 |   | x |"),
        "{expected}"
    );
    let schema = frozen.catalog.table("db", "m").unwrap().clone();
    let mut seq = 0;
    let parts = frozen.buffers["m"].freeze(&schema, |_, _| true, &mut seq);
    assert_eq!(parts.len(), 2, "two hours");
    assert_eq!(frozen.show("m"), expected);
}
