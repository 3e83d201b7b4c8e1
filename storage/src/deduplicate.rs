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
    let converter = RowConverter::new(
        key.iter()
            .map(|&i| SortField::new_with_options(schema.field(i).data_type().clone(), KEY_ORDER))
            .collect(),
    )?;
    let key_arrays: Vec<ArrayRef> = key.iter().map(|&i| all.column(i).clone()).collect();
    let rows = converter.convert_columns(&key_arrays)?;
    // Sort by key; among equal keys, by position, which is age (oldest first).
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        rows.row(a as usize)
            .cmp(&rows.row(b as usize))
            .then(a.cmp(&b))
    });
    // Runs of equal keys in `order`: (start, end) positions.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut has_duplicates = false;
    let mut start = 0;
    for i in 1..=n {
        if i == n || rows.row(order[i] as usize) != rows.row(order[start] as usize) {
            has_duplicates |= i - start > 1;
            runs.push((start, i));
            start = i;
        }
    }
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
}
