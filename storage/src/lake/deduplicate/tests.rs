//! The primary-key merge: newer rows win field by field, output sorted by tags then time.

use super::*;
use arrow::array::{DictionaryArray, Float64Array, Int64Array, TimestampNanosecondArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
use arrow::util::pretty::pretty_format_batches;
use std::collections::HashMap;
use std::sync::Arc;

/// A row of the jumbled test table: two tags, a value, a time.
type TagRow = (Option<&'static str>, Option<&'static str>, Option<i64>, i64);

fn schema() -> SchemaRef {
    let role = |r: &str| HashMap::from([(ROLE_METADATA_KEY.to_string(), r.to_string())]);
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Float64, true).with_metadata(role("field")),
        Field::new(
            "host",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )
        .with_metadata(role("tag")),
        Field::new("n", DataType::Int64, true).with_metadata(role("field")),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        )
        .with_metadata(role("time")),
    ]))
}

/// (a, host, n, time)
type Row<'a> = (Option<f64>, Option<&'a str>, Option<i64>, i64);

fn batch(rows: &[Row<'_>]) -> RecordBatch {
    let a: Float64Array = rows.iter().map(|r| r.0).collect();
    let host: DictionaryArray<Int32Type> = rows.iter().map(|r| r.1).collect();
    let n: Int64Array = rows.iter().map(|r| r.2).collect();
    let t: TimestampNanosecondArray = rows.iter().map(|r| Some(r.3)).collect();
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(a), Arc::new(host), Arc::new(n), Arc::new(t)],
    )
    .unwrap()
}

fn show(b: &RecordBatch) -> String {
    pretty_format_batches(std::slice::from_ref(b))
        .unwrap()
        .to_string()
}

#[test]
fn newer_fields_win_and_absent_fields_keep_older_values() {
    let old = batch(&[
        (Some(1.0), Some("b"), Some(10), 5),
        (Some(2.0), Some("a"), None, 5),
        (Some(3.0), None, Some(30), 1),
    ]);
    let new = batch(&[
        (None, Some("b"), Some(11), 5),
        (Some(4.0), Some("a"), Some(40), 6),
    ]);
    let (merged, _) = merge_by_primary_key(&schema(), vec![old, new]).unwrap();
    assert_eq!(
        show(&merged),
        "+-----+------+----+-------------------------------+\n\
         | a   | host | n  | time                          |\n\
         +-----+------+----+-------------------------------+\n\
         | 2.0 | a    |    | 1970-01-01T00:00:00.000000005 |\n\
         | 4.0 | a    | 40 | 1970-01-01T00:00:00.000000006 |\n\
         | 1.0 | b    | 11 | 1970-01-01T00:00:00.000000005 |\n\
         | 3.0 |      | 30 | 1970-01-01T00:00:00.000000001 |\n\
         +-----+------+----+-------------------------------+"
    );
}

#[test]
fn later_rows_of_one_batch_win_too_and_unique_rows_are_only_sorted() {
    let b = batch(&[
        (Some(1.0), Some("x"), None, 2),
        (Some(9.0), Some("x"), None, 2),
        (Some(5.0), Some("w"), None, 3),
    ]);
    let (merged, _) = merge_by_primary_key(&schema(), vec![b]).unwrap();
    let a = merged
        .column(0)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(a.values().to_vec(), vec![5.0, 9.0]);
    let unique = batch(&[
        (Some(1.0), Some("z"), None, 2),
        (Some(2.0), Some("y"), None, 9),
    ]);
    let (sorted, _) = merge_by_primary_key(&schema(), vec![unique]).unwrap();
    let a = sorted
        .column(0)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(a.values().to_vec(), vec![2.0, 1.0]);
    assert_eq!(
        merge_by_primary_key(&schema(), vec![])
            .unwrap()
            .0
            .num_rows(),
        0
    );
}

/// The packed-rank sort and the row-encoding sort give the same rows: two tag columns
/// with nulls, values repeated in a dictionary (as concatenating batches leaves them),
/// duplicate keys across and within batches.
#[test]
fn packed_ranks_order_rows_as_the_row_encoding_does() {
    let tag = |r: &str| HashMap::from([(ROLE_METADATA_KEY.to_string(), r.to_string())]);
    let schema_of = |t: DataType| -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("dc", t.clone(), true).with_metadata(tag("tag")),
            Field::new("host", t, true).with_metadata(tag("tag")),
            Field::new("v", DataType::Int64, true).with_metadata(tag("field")),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            )
            .with_metadata(tag("time")),
        ]))
    };
    let dict_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let (dict_schema, plain_schema) = (schema_of(dict_type), schema_of(DataType::Utf8));
    // a deterministic jumble of rows
    let mut seed = 7u64;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let names = ["a", "b", "ab", "", "é", "B"];
    let mut dict_batches = Vec::new();
    let mut plain_batches = Vec::new();
    for _ in 0..3 {
        let rows: Vec<TagRow> = (0..200)
            .map(|_| {
                let pick = |k: u64| (k < 6).then(|| names[k as usize]);
                (
                    pick(next(7)),
                    pick(next(7)),
                    (next(4) > 0).then(|| next(1000) as i64),
                    next(5) as i64 - 2,
                )
            })
            .collect();
        let dc: DictionaryArray<Int32Type> = rows.iter().map(|r| r.0).collect();
        let host: DictionaryArray<Int32Type> = rows.iter().map(|r| r.1).collect();
        let v: Int64Array = rows.iter().map(|r| r.2).collect();
        let t: TimestampNanosecondArray = rows.iter().map(|r| Some(r.3)).collect();
        let columns: Vec<ArrayRef> = vec![Arc::new(dc), Arc::new(host), Arc::new(v), Arc::new(t)];
        let plain: Vec<ArrayRef> = columns
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).unwrap())
            .enumerate()
            .map(|(i, c)| if i < 2 { c } else { columns[i].clone() })
            .collect();
        dict_batches.push(RecordBatch::try_new(dict_schema.clone(), columns).unwrap());
        plain_batches.push(RecordBatch::try_new(plain_schema.clone(), plain).unwrap());
    }
    let all = concat_batches(&dict_schema, &dict_batches).unwrap();
    let key = sort_key(&dict_schema, &all).unwrap();
    assert!(packed_tags(&all, &key).is_some(), "the packed path runs");
    let plain_all = concat_batches(&plain_schema, &plain_batches).unwrap();
    assert!(packed_tags(&plain_all, &key).is_none(), "the row path runs");

    let (packed, _) = merge_by_primary_key(&dict_schema, dict_batches.clone()).unwrap();
    let (rows, _) = merge_by_primary_key(&plain_schema, plain_batches.clone()).unwrap();
    assert!(packed.num_rows() < 600, "duplicates were merged");
    let as_plain: Vec<ArrayRef> = packed
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 2 {
                arrow::compute::cast(c, &DataType::Utf8).unwrap()
            } else {
                c.clone()
            }
        })
        .collect();
    let packed = RecordBatch::try_new(plain_schema.clone(), as_plain).unwrap();
    assert_eq!(show(&packed), show(&rows));
}

/// Taken a slice at a time (as files are encoded), the merged rows are the rows of the whole
/// merge, in order: with duplicate keys (fields picked per key) and without (only sorted).
#[test]
fn slices_hold_the_rows_of_the_whole_merge() {
    let hosts = ["c", "a", "b"];
    let rows = |dup: bool| -> Vec<Row<'static>> {
        (0..50i64)
            .map(|i| {
                let value = (i % 4 != 0).then_some(i as f64);
                let n = (i % 3 != 0).then_some(i);
                // with `dup`, times repeat every 10 rows and some keys meet several times
                let t = if dup { i % 10 } else { i };
                (value, Some(hosts[(i % 3) as usize]), n, t)
            })
            .collect()
    };
    for dup in [false, true] {
        let inputs = vec![batch(&rows(dup)[..30]), batch(&rows(dup)[30..])];
        let (whole, _) = merge_by_primary_key(&schema(), inputs.clone()).unwrap();
        let merged = Merged::new(&schema(), inputs).unwrap();
        assert_eq!(merged.num_rows(), whole.num_rows());
        assert_eq!(
            whole.num_rows() < 50,
            dup,
            "duplicates merged only with dup={dup}"
        );
        let slices: Vec<RecordBatch> = merged.slices(7).map(Result::unwrap).collect();
        assert_eq!(slices.len(), whole.num_rows().div_ceil(7));
        assert!(slices.iter().all(|s| s.num_rows() <= 7));
        let joined = concat_batches(&schema(), &slices).unwrap();
        assert_eq!(show(&joined), show(&whole), "dup={dup}");
    }
}
