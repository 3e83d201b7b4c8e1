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

use std::collections::HashSet;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::{SortOptions, concat, take};
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
///
/// Memory: the rows are held about once and a column more. Several batches are joined a
/// column at a time, each column of the inputs let go once joined (a single batch is not
/// copied), and the sorted columns are built one at a time, each unsorted one let go once
/// built; only what the caller still holds of the inputs stays. [`Merged::slices`] holds less
/// still: the inputs and one slice.
pub fn merge_by_primary_key(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(RecordBatch, Vec<usize>), ArrowError> {
    let merged = Merged::new(schema, batches)?;
    let key = merged.key.clone();
    Ok((merged.into_batch()?, key))
}

/// Rows of one table merged per primary key and sorted by [`sort_key`] (see
/// [`merge_by_primary_key`]), not built yet: the inputs joined and the order to take their
/// rows in, so that a caller that writes the rows out can build them a slice at a time
/// instead of holding a sorted copy of them all.
pub struct Merged {
    schema: SchemaRef,
    /// The input rows, joined: a column per schema field.
    inputs: Vec<ArrayRef>,
    key: Vec<usize>,
    /// Input rows in key order, equal keys by position (age, oldest first).
    order: Vec<u32>,
    /// When two rows share a key: the runs of `order` with one key, as (start, end).
    runs: Option<Vec<(usize, usize)>>,
}

impl Merged {
    /// `batches` (all of `schema`, oldest first) joined and their merged order worked out.
    pub fn new(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Merged, ArrowError> {
        let all = join(schema, batches)?;
        let n = all.num_rows();
        let key = sort_key(schema, &all).ok_or_else(|| {
            ArrowError::SchemaError("a table without a time column has no primary key".into())
        })?;
        let (order, runs, has_duplicates) = if n == 0 {
            (Vec::new(), Vec::new(), false)
        } else {
            match packed_tags(&all, &key) {
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
                                SortField::new_with_options(
                                    schema.field(i).data_type().clone(),
                                    KEY_ORDER,
                                )
                            })
                            .collect(),
                    )?;
                    let key_arrays: Vec<ArrayRef> =
                        key.iter().map(|&i| all.column(i).clone()).collect();
                    let rows = converter.convert_columns(&key_arrays)?;
                    let mut order: Vec<u32> = (0..n as u32).collect();
                    order.sort_unstable_by(|&a, &b| {
                        rows.row(a as usize)
                            .cmp(&rows.row(b as usize))
                            .then(a.cmp(&b))
                    });
                    runs(order, |a, b| rows.row(a) == rows.row(b))
                }
            }
        };
        let (_, inputs, _) = all.into_parts();
        Ok(Merged {
            schema: schema.clone(),
            inputs,
            key,
            order,
            runs: has_duplicates.then_some(runs),
        })
    }

    /// The sort key the rows are in (column positions).
    pub fn key(&self) -> &[usize] {
        &self.key
    }

    /// Rows once merged.
    pub fn num_rows(&self) -> usize {
        self.runs.as_ref().map_or(self.order.len(), Vec::len)
    }

    /// Every input row's value of the schema's column `i`, merged away or not.
    pub fn input(&self, i: usize) -> &ArrayRef {
        &self.inputs[i]
    }

    /// Bytes the joined inputs hold.
    pub fn input_bytes(&self) -> usize {
        self.inputs.iter().map(|c| c.get_array_memory_size()).sum()
    }

    /// The merged rows in batches of at most `rows` rows, each built when it is asked for.
    pub fn slices(&self, rows: usize) -> impl Iterator<Item = Result<RecordBatch, ArrowError>> {
        let rows = rows.max(1);
        (0..self.num_rows())
            .step_by(rows)
            .map(move |start| self.slice(start..(start + rows).min(self.num_rows())))
    }

    /// The merged rows `range`, as a batch.
    fn slice(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> {
        let columns = (0..self.inputs.len())
            .map(|i| self.column(i, &self.inputs[i], range.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(range.len())),
        )
    }

    /// The merged rows, as one batch: the sorted columns built one at a time, each input
    /// column let go once its sorted one is built.
    pub fn into_batch(mut self) -> Result<RecordBatch, ArrowError> {
        let n = self.num_rows();
        let inputs = std::mem::take(&mut self.inputs);
        let columns = inputs
            .into_iter()
            .enumerate()
            .map(|(i, c)| self.column(i, &c, 0..n))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
    }

    /// Merged rows `range` of input column `i` (`column`).
    fn column(
        &self,
        i: usize,
        column: &ArrayRef,
        range: std::ops::Range<usize>,
    ) -> Result<ArrayRef, ArrowError> {
        let order = &self.order;
        let indices: UInt32Array = match &self.runs {
            None => order[range].iter().copied().collect(),
            // a key column: the key's first row
            Some(runs) if self.key.contains(&i) => {
                runs[range].iter().map(|&(s, _)| order[s]).collect()
            }
            // the newest row of the key that has a value, else (all null) any row of it
            Some(runs) => runs[range]
                .iter()
                .map(|&(s, e)| {
                    order[s..e]
                        .iter()
                        .rev()
                        .copied()
                        .find(|&r| column.is_valid(r as usize))
                        .unwrap_or(order[s])
                })
                .collect(),
        };
        take(column, &indices, None)
    }
}

/// `batches` as one batch of `schema`, joined a column at a time: each input column is let go
/// (dropped here, freed unless the caller holds it too) once its joined column is built.
fn join(schema: &SchemaRef, mut batches: Vec<RecordBatch>) -> Result<RecordBatch, ArrowError> {
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    if batches.len() == 1 && batches[0].schema() == *schema {
        return Ok(batches.pop().expect("one batch"));
    }
    let mut rows = 0;
    let width = schema.fields().len();
    let mut per_column: Vec<Vec<ArrayRef>> = vec![Vec::with_capacity(batches.len()); width];
    for b in batches {
        if b.num_columns() != width {
            return Err(ArrowError::SchemaError(format!(
                "a batch to merge has {} columns, its table {width}",
                b.num_columns()
            )));
        }
        rows += b.num_rows();
        let (_, columns, _) = b.into_parts();
        for (i, c) in columns.into_iter().enumerate() {
            per_column[i].push(c);
        }
    }
    let columns = per_column
        .into_iter()
        .map(|arrays| {
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            concat(&refs)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
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
mod tests;
