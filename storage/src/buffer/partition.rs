//! One hour of a table's buffered rows: plain column vectors appended to, turned into one
//! Arrow batch (rows of one primary key merged) when read, and that batch cached until the
//! next append.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, RecordBatch, TimestampNanosecondArray, UInt32Array, new_null_array,
};
use parking_lot::Mutex;
use sluice_model::FieldValue;

use super::last_rows::LastRows;
use super::tags::TagLookup;
use crate::catalog::{ColumnKind, TableSchema};
use crate::columns::FieldColumn;

/// The rows of one hour partition of a table.
pub(super) struct Partition {
    time: Vec<i64>,
    series: Vec<u32>,
    /// Per column id; `None` for tags, `time` and fields this partition has no value for.
    fields: Vec<Option<FieldColumn>>,
    pub(super) min_time: i64,
    pub(super) max_time: i64,
    may_have_duplicates: bool,
    /// The WAL segment the partition's first row was logged in.
    pub(super) min_segment: u64,
    /// Bytes of rows (not series) this partition accounts for.
    pub(super) bytes: usize,
    /// Rows its columns make room for when they are created (see [`Partition::new`]).
    expected_rows: usize,
    cache: Mutex<Option<CachedBatch>>,
}

struct CachedBatch {
    /// The schema the batch was built for, by column count (columns are only appended).
    columns: usize,
    batch: RecordBatch,
}

impl Partition {
    /// Forgets the cached Arrow batch: rows are about to be appended.
    pub(super) fn invalidate(&mut self) {
        self.cache.get_mut().take();
    }

    /// An empty partition whose columns start with room for `expected_rows` rows.
    pub(super) fn new(min_segment: u64, expected_rows: usize) -> Self {
        Partition {
            time: Vec::with_capacity(expected_rows),
            series: Vec::with_capacity(expected_rows),
            fields: Vec::new(),
            min_time: i64::MAX,
            max_time: i64::MIN,
            may_have_duplicates: false,
            min_segment,
            bytes: 0,
            expected_rows,
            cache: Mutex::new(None),
        }
    }

    pub(super) fn rows(&self) -> usize {
        self.time.len()
    }

    /// The series id of each row.
    pub(super) fn series(&self) -> &[u32] {
        &self.series
    }

    /// Gives each row the series id `new_id[its old one]` (the table dropped idle series).
    /// A cached batch stays right: it holds tag values, not series ids.
    pub(super) fn renumber_series(&mut self, new_id: &[u32]) {
        for s in &mut self.series {
            *s = new_id[*s as usize];
        }
    }

    /// Appends a row's key (series, time), noting whether the partition may now hold two
    /// rows of one key; returns whether the row is its series' newest ([`LastRows`]).
    #[inline]
    pub(super) fn push_key(&mut self, last: &mut LastRows, series: u32, time: i64) -> bool {
        // a point not newer than its series' newest may share its key with a buffered one
        if time <= last.time[series as usize] {
            self.may_have_duplicates = true;
        }
        self.time.push(time);
        self.series.push(series);
        self.min_time = self.min_time.min(time);
        self.max_time = self.max_time.max(time);
        last.start_point(series, time)
    }

    /// Field column `col`, created for values like `value` (with room for `capacity` rows)
    /// if the partition has none yet.
    #[inline]
    pub(super) fn field_column(
        &mut self,
        col: usize,
        value: &FieldValue,
        capacity: usize,
    ) -> &mut FieldColumn {
        if self.fields.len() <= col {
            self.fields.resize_with(col + 1, || None);
        }
        let capacity = capacity.max(self.expected_rows);
        self.fields[col].get_or_insert_with(|| FieldColumn::new(value, capacity))
    }

    /// Builds the partition's rows as one batch in `schema`'s Arrow layout, merging rows of
    /// one primary key.
    pub(super) fn to_batch(&self, schema: &TableSchema, data: &mut TagLookup<'_>) -> RecordBatch {
        if let Some(c) = &*self.cache.lock()
            && c.columns == schema.columns().len()
        {
            return c.batch.clone();
        }
        let rows = self.rows();
        let batch = merged_batch(schema, self.key_groups(), |id, kind| match kind {
            ColumnKind::Time => Arc::new(TimestampNanosecondArray::from(self.time.clone())),
            ColumnKind::Tag => data.tag_column(id, &self.series),
            ColumnKind::Field(_) => match self.fields.get(id).and_then(Option::as_ref) {
                Some(col) => col.to_array(rows),
                None => new_null_array(&kind.data_type(), rows),
            },
        });
        *self.cache.lock() = Some(CachedBatch {
            columns: schema.columns().len(),
            batch: batch.clone(),
        });
        batch
    }

    /// [`Partition::to_batch`], for a partition that is done with (frozen): its time and
    /// field vectors become the batch's arrays rather than being copied into them, so that
    /// the rows are not held twice while the batch is built.
    pub(super) fn into_batch(
        mut self,
        schema: &TableSchema,
        data: &mut TagLookup<'_>,
    ) -> RecordBatch {
        if let Some(c) = self.cache.get_mut().take()
            && c.columns == schema.columns().len()
        {
            return c.batch;
        }
        let rows = self.rows();
        let groups = self.key_groups();
        let mut time = std::mem::take(&mut self.time);
        let series = std::mem::take(&mut self.series);
        let mut fields = std::mem::take(&mut self.fields);
        drop(self);
        merged_batch(schema, groups, |id, kind| match kind {
            ColumnKind::Time => Arc::new(TimestampNanosecondArray::from(std::mem::take(&mut time))),
            ColumnKind::Tag => data.tag_column(id, &series),
            ColumnKind::Field(_) => match fields.get_mut(id).and_then(Option::take) {
                Some(col) => col.into_array(rows),
                None => new_null_array(&kind.data_type(), rows),
            },
        })
    }

    /// Row indices grouped by primary key (series, time), keys in (series, time) order and
    /// rows within a key in arrival order; `None` if no two rows share a key. (Rows that
    /// arrive out of order, as writes over several connections do, make a partition one that
    /// may hold duplicates; most such partitions hold none, and finding that out by hashing
    /// costs less than the sort.)
    fn key_groups(&self) -> Option<KeyGroups> {
        if !self.may_have_duplicates {
            return None;
        }
        let mut seen: hashbrown::HashSet<(u32, i64), foldhash::fast::FixedState> =
            hashbrown::HashSet::with_capacity_and_hasher(self.rows(), Default::default());
        if (0..self.rows()).all(|r| seen.insert((self.series[r], self.time[r]))) {
            return None;
        }
        drop(seen);
        let mut keyed: Vec<(u32, i64, u32)> = (0..self.rows())
            .map(|r| (self.series[r], self.time[r], r as u32))
            .collect();
        // the row number makes every key distinct: an unstable sort keeps arrival order
        keyed.sort_unstable();
        let mut ends = Vec::new();
        for i in 1..keyed.len() {
            if (keyed[i].0, keyed[i].1) != (keyed[i - 1].0, keyed[i - 1].1) {
                ends.push(i as u32);
            }
        }
        ends.push(keyed.len() as u32);
        Some(KeyGroups {
            rows: keyed.into_iter().map(|(_, _, r)| r).collect(),
            ends,
        })
    }
}

/// The batch of `schema`'s columns that `column` builds (by column id, each asked for once,
/// in Arrow order), with the rows of each primary key in `groups` merged into one: keys take
/// the group's first row, fields the last value the group has.
fn merged_batch(
    schema: &TableSchema,
    groups: Option<KeyGroups>,
    mut column: impl FnMut(usize, ColumnKind) -> ArrayRef,
) -> RecordBatch {
    let first_of_group: Option<UInt32Array> = groups
        .as_ref()
        .map(|g| g.iter().map(|rows| rows[0]).collect());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.columns().len());
    for &id in schema.arrow_order() {
        let kind = schema.columns()[id].kind;
        let full = column(id, kind);
        let merged = match (&groups, &first_of_group, kind) {
            (None, _, _) => full,
            (Some(groups), _, ColumnKind::Field(_)) => {
                // the last non-null value of the key wins
                let idx: UInt32Array = groups
                    .iter()
                    .map(|rows| {
                        rows.iter()
                            .rev()
                            .copied()
                            .find(|&r| full.is_valid(r as usize))
                    })
                    .collect();
                arrow::compute::take(&full, &idx, None).expect("indices are in range")
            }
            (Some(_), Some(first), _) => {
                arrow::compute::take(&full, first, None).expect("indices are in range")
            }
            (Some(_), None, _) => unreachable!("first_of_group is set with groups"),
        };
        columns.push(merged);
    }
    RecordBatch::try_new(schema.arrow_schema().clone(), columns)
        .expect("columns are built from the schema")
}

/// Rows grouped by primary key: `rows` in key order, each group ending at the next of `ends`.
struct KeyGroups {
    rows: Vec<u32>,
    ends: Vec<u32>,
}

impl KeyGroups {
    fn iter(&self) -> impl Iterator<Item = &[u32]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let group = &self.rows[start..end as usize];
            start = end as usize;
            group
        })
    }
}
