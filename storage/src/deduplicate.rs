//! Primary-key merge of rows from several sources: the rule that makes a retried write
//! harmless, applied wherever rows of one table meet (persisting, compaction, and queries
//! over sources that overlap in time).
//!
//! Rows with the same tag set and time are one row: each field takes the value of the newest
//! row that has one, a field no row has stays null (InfluxDB's merge). "Newest" is the order of
//! the input: batches are given oldest first and rows within a batch in arrival order. The
//! result is sorted by the tags and then time (nulls first): the order Sluice's Parquet files
//! are written in.
//!
//! The tags are ordered by how many distinct values they have in the data, most first (ties by
//! name): the tag that tells series apart best (a host name, say) leads, so that a page or row
//! group of a file holds few of its values and its statistics prune well for the filters
//! queries use most (`WHERE host = ...`). Every series is one run of rows either way, so
//! compression does not suffer.

use std::sync::Arc;

use std::collections::HashSet;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{SortOptions, concat_batches, take};
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, Int32Type};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};

use crate::catalog::{ROLE_METADATA_KEY, TIME_COLUMN};

/// Positions of the primary-key columns of `schema`: its tags (columns whose role metadata
/// says `tag`), in schema order, then `time`. `None` if there is no `time` column.
pub fn primary_key_columns(schema: &SchemaRef) -> Option<Vec<usize>> {
    let mut key: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.metadata().get(ROLE_METADATA_KEY).map(String::as_str) == Some("tag"))
        .map(|(i, _)| i)
        .collect();
    key.push(schema.index_of(TIME_COLUMN).ok()?);
    Some(key)
}

/// Number of distinct values (null counting as one) of a tag column.
fn distinct_values(column: &ArrayRef) -> usize {
    let null = usize::from(column.null_count() > 0);
    match column.data_type() {
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let dict = column.as_dictionary::<Int32Type>();
            let values = dict.values().as_string::<i32>();
            let mut used = vec![false; values.len()];
            for k in dict.keys().iter().flatten() {
                used[k as usize] = true;
            }
            let distinct: HashSet<&str> = used
                .iter()
                .enumerate()
                .filter(|(_, u)| **u)
                .map(|(i, _)| values.value(i))
                .collect();
            distinct.len() + null
        }
        _ => column.len(),
    }
}

/// The sort key of `batch`: its tag columns, most distinct values first (ties in schema
/// order), then `time`.
pub fn sort_key(schema: &SchemaRef, batch: &RecordBatch) -> Option<Vec<usize>> {
    let mut key = primary_key_columns(schema)?;
    let time = key.pop()?;
    let mut counted: Vec<(usize, usize)> = key
        .into_iter()
        .map(|i| (distinct_values(batch.column(i)), i))
        .collect();
    counted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut key: Vec<usize> = counted.into_iter().map(|(_, i)| i).collect();
    key.push(time);
    Some(key)
}

/// How rows are sorted by each column of the sort key: ascending, nulls last, which is what
/// SQL's `ORDER BY col` means in DataFusion, so that a scan declaring this order spares the
/// sort.
pub const KEY_ORDER: SortOptions = SortOptions {
    descending: false,
    nulls_first: false,
};

/// Merges `batches` (all of `schema`, oldest first) into one batch with one row per primary
/// key, sorted by [`sort_key`]. Returns the rows and the sort key they are in (column
/// positions).
pub fn merge_by_primary_key(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(RecordBatch, Vec<usize>), ArrowError> {
    let all = concat_batches(schema, batches)?;
    let n = all.num_rows();
    let key = sort_key(schema, &all).ok_or_else(|| {
        ArrowError::SchemaError("a table without a time column has no primary key".into())
    })?;
    if n == 0 {
        return Ok((all, key));
    }
    // Rows by key, equal keys by position (age, oldest first).
    let (order, runs, has_duplicates) = match packed_tags(&all, &key) {
        Some((tags, time)) => {
            let mut keyed: Vec<(u64, i64, u32)> =
                (0..n).map(|r| (tags[r], time[r], r as u32)).collect();
            keyed.sort_unstable();
            let order = keyed.into_iter().map(|(_, _, r)| r).collect();
            runs(order, |a, b| tags[a] == tags[b] && time[a] == time[b])
        }
        None => {
            let converter = RowConverter::new(
                key.iter()
                    .map(|&i| {
                        SortField::new_with_options(schema.field(i).data_type().clone(), KEY_ORDER)
                    })
                    .collect(),
            )?;
            let key_arrays: Vec<ArrayRef> = key.iter().map(|&i| all.column(i).clone()).collect();
            let rows = converter.convert_columns(&key_arrays)?;
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_unstable_by(|&a, &b| {
                rows.row(a as usize)
                    .cmp(&rows.row(b as usize))
                    .then(a.cmp(&b))
            });
            runs(order, |a, b| rows.row(a) == rows.row(b))
        }
    };
    let sorted = UInt32Array::from(order.clone());
    if !has_duplicates {
        let columns = all
            .columns()
            .iter()
            .map(|c| take(c, &sorted, None))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((RecordBatch::try_new(schema.clone(), columns)?, key));
    }
    let first: UInt32Array = runs.iter().map(|&(s, _)| order[s]).collect();
    let mut columns = Vec::with_capacity(all.num_columns());
    for (i, column) in all.columns().iter().enumerate() {
        let merged = if key.contains(&i) {
            take(column, &first, None)?
        } else {
            // the newest row of the key that has a value, else (all null) any row of it
            let pick: UInt32Array = runs
                .iter()
                .map(|&(s, e)| {
                    order[s..e]
                        .iter()
                        .rev()
                        .copied()
                        .find(|&r| column.is_valid(r as usize))
                        .unwrap_or(order[s])
                })
                .collect();
            take(column, &pick, None)?
        };
        columns.push(merged);
    }
    Ok((RecordBatch::try_new(Arc::clone(schema), columns)?, key))
}

/// `order` (row positions sorted by key) with its runs of rows whose keys `same` says are
/// equal, as (start, end) positions in it, and whether any run has more than one row.
fn runs(
    order: Vec<u32>,
    same: impl Fn(usize, usize) -> bool,
) -> (Vec<u32>, Vec<(usize, usize)>, bool) {
    let n = order.len();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut has_duplicates = false;
    let mut start = 0;
    for i in 1..=n {
        if i == n || !same(order[i] as usize, order[start] as usize) {
            has_duplicates |= i - start > 1;
            runs.push((start, i));
            start = i;
        }
    }
    (order, runs, has_duplicates)
}

/// The sort key of each row of `batch` as two integers, when that is possible: the tags
/// (the key's columns but the last) as their values' ranks packed into one `u64`, the first
/// tag in the highest bits, and the time. Comparing these orders rows as comparing the key's
/// columns does ([`KEY_ORDER`]: strings by bytes, nulls last), at the cost of a few integer
/// compares instead of a row encoding and a `memcmp` per comparison, which is what persisting
/// narrow tables (one value per row, as Prometheus and OpenTelemetry metrics are) spends most
/// of its time on. `None` (the caller encodes rows instead) unless every tag column is a
/// string dictionary, the ranks fit in 64 bits and the time has no null.
fn packed_tags(batch: &RecordBatch, key: &[usize]) -> Option<(Vec<u64>, Vec<i64>)> {
    let (&time, tags) = key.split_last()?;
    let time = batch.column(time);
    let time = match time.data_type() {
        DataType::Timestamp(_, _) if time.null_count() == 0 => time
            .as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()?
            .values()
            .to_vec(),
        _ => return None,
    };
    let n = batch.num_rows();
    let mut packed = vec![0u64; n];
    let mut bits_used = 0u32;
    for &c in tags {
        let column = batch.column(c);
        let dict = column.as_dictionary_opt::<Int32Type>()?;
        let values = dict.values().as_string_opt::<i32>()?;
        // rank of each dictionary entry among the distinct values; nulls rank after all
        let mut by_value: Vec<u32> = (0..values.len() as u32).collect();
        by_value.sort_unstable_by(|&a, &b| values.value(a as usize).cmp(values.value(b as usize)));
        let mut rank_of = vec![0u64; values.len()];
        let mut rank = 0u64;
        for (i, &v) in by_value.iter().enumerate() {
            if i > 0 && values.value(v as usize) != values.value(by_value[i - 1] as usize) {
                rank += 1;
            }
            rank_of[v as usize] = rank;
        }
        let null_rank = if values.is_empty() { 0 } else { rank + 1 };
        let bits = 64 - null_rank.leading_zeros();
        bits_used += bits;
        if bits_used > 64 {
            return None;
        }
        let keys = dict.keys();
        for (row, p) in packed.iter_mut().enumerate() {
            let r = if keys.is_valid(row) && values.is_valid(keys.value(row) as usize) {
                rank_of[keys.value(row) as usize]
            } else {
                null_rank
            };
            // shifting by 64 (a first column of zero bits) is not allowed: there is nothing
            // to shift then
            *p = if bits == 0 { *p } else { (*p << bits) | r };
        }
    }
    Some((packed, time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Float64Array, Int64Array, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
    use arrow::util::pretty::pretty_format_batches;
    use std::collections::HashMap;

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
        let (merged, _) = merge_by_primary_key(&schema(), &[old, new]).unwrap();
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
        let (merged, _) = merge_by_primary_key(&schema(), &[b]).unwrap();
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
        let (sorted, _) = merge_by_primary_key(&schema(), &[unique]).unwrap();
        let a = sorted
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(a.values().to_vec(), vec![2.0, 1.0]);
        assert_eq!(
            merge_by_primary_key(&schema(), &[]).unwrap().0.num_rows(),
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
            let rows: Vec<(Option<&str>, Option<&str>, Option<i64>, i64)> = (0..200)
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
            let columns: Vec<ArrayRef> =
                vec![Arc::new(dc), Arc::new(host), Arc::new(v), Arc::new(t)];
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

        let (packed, _) = merge_by_primary_key(&dict_schema, &dict_batches).unwrap();
        let (rows, _) = merge_by_primary_key(&plain_schema, &plain_batches).unwrap();
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
}
