//! The newest row of every series of a table, kept up to date as points arrive, so that "the
//! latest value of each series" (TSBS `lastpoint`, a Grafana stat panel, InfluxDB 3's
//! `last_cache()`) is answered from memory instead of a scan of everything.
//!
//! A series' newest row is what a deduplicated scan would return for its greatest time: a
//! point newer than the row replaces it (fields the point lacks become null), a point at the
//! same time merges into it (the fields it carries overwrite, as the primary-key merge does),
//! an older point leaves it alone. Rows are indexed by the table buffer's series ids, one
//! column vector per field, so a series costs its time and, per field, a value and its time.
//!
//! The rows start empty at start-up and see every point written or replayed from the WAL
//! afterwards; the rows only in Parquet files are folded in once per table by
//! [`super::TableBuffer::merge_last_rows`] (the query side scans the table the first time
//! the newest rows are asked for). Folding in rows that were seen already changes nothing,
//! so the scan may overlap the points seen since start-up.

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::compute::nullif;
use sluice_model::{FieldValue, Symbols};

use crate::columns::{FieldColumn, OwnedValue};

/// The newest row per series id.
#[derive(Default)]
pub(crate) struct LastRows {
    /// Per series id: the time of its newest row, `i64::MIN` while it has none.
    pub(crate) time: Vec<i64>,
    /// Per column id: each series' latest value of the field and the time it is from.
    fields: Vec<Option<LastColumn>>,
}

/// One field's latest value per series. A value belongs to its series' newest row only if it
/// is from that row's time: a newer point makes the older values stale without touching
/// every column, so a point costs its own fields however wide the table is.
struct LastColumn {
    values: FieldColumn,
    /// Per series id: the time of the row `values` holds the value of.
    times: Vec<i64>,
}

impl LastColumn {
    fn new(values: FieldColumn) -> Self {
        LastColumn {
            values,
            times: Vec::new(),
        }
    }

    /// Whether `series` holds a value from the row at `time`.
    fn is_current(&self, series: usize, time: i64) -> bool {
        self.times.get(series) == Some(&time) && self.values.is_set(series)
    }

    fn stamp(&mut self, series: usize, time: i64) {
        if self.times.len() <= series {
            self.times.resize(series + 1, i64::MIN);
        }
        self.times[series] = time;
    }
}

impl LastRows {
    /// Makes room for a new series id.
    pub(crate) fn add_series(&mut self) {
        self.time.push(i64::MIN);
    }

    /// Starts a point of `series` at `time`: returns whether its fields belong in the newest
    /// row (the point is newer, which starts a new row, or as new).
    pub(crate) fn start_point(&mut self, series: u32, time: i64) -> bool {
        let newest = &mut self.time[series as usize];
        if time > *newest {
            *newest = time;
            true
        } else {
            time == *newest
        }
    }

    /// Sets field column `column` of `series`' newest row.
    pub(crate) fn set(
        &mut self,
        series: u32,
        column: usize,
        value: &FieldValue,
        symbols: &Symbols,
    ) {
        let s = series as usize;
        let time = self.time[s];
        let c = self.column(column, || FieldColumn::new(value, 0));
        c.values.put(s, value, symbols);
        c.stamp(s, time);
    }

    /// Folds row `row` of a scan into `series`' newest row: `time` and the values of `fields`
    /// (column id, array). At equal times the newest row keeps the values it has: it was
    /// built from points at least as new as any file's.
    pub(crate) fn merge_row(
        &mut self,
        series: u32,
        time: i64,
        fields: &[(usize, ArrayRef)],
        row: usize,
    ) {
        let s = series as usize;
        if !self.start_point(series, time) {
            return;
        }
        for (column, array) in fields {
            if !array.is_valid(row) {
                continue;
            }
            if self
                .fields
                .get(*column)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.is_current(s, time))
            {
                continue;
            }
            let Some(value) = OwnedValue::from_array(array.as_ref(), row) else {
                tracing::error!(
                    data_type = %array.data_type(),
                    "a field column of an unexpected type; its newest values are left out"
                );
                continue;
            };
            let c = self.column(*column, || FieldColumn::new(&value.as_field_value(), 0));
            c.values.put_owned(s, value);
            c.stamp(s, time);
        }
    }

    /// Column `column`, created with `new` if it has no value yet.
    fn column(&mut self, column: usize, new: impl FnOnce() -> FieldColumn) -> &mut LastColumn {
        if self.fields.len() <= column {
            self.fields.resize_with(column + 1, || None);
        }
        self.fields[column].get_or_insert_with(|| LastColumn::new(new()))
    }

    /// Keeps the newest rows of series `kept` (old ids, ascending), which become series
    /// `0..kept.len()`.
    pub(crate) fn retain(&mut self, kept: &[u32]) {
        for slot in &mut self.fields {
            let Some(c) = slot else { continue };
            let array = c.values.to_array(self.time.len());
            let mut values: Option<FieldColumn> = None;
            let mut times = Vec::with_capacity(kept.len());
            for (n, &s) in kept.iter().enumerate() {
                let s = s as usize;
                times.push(c.times.get(s).copied().unwrap_or(i64::MIN));
                if let Some(v) = c
                    .values
                    .is_set(s)
                    .then(|| OwnedValue::from_array(&array, s))
                    .flatten()
                {
                    values
                        .get_or_insert_with(|| FieldColumn::new(&v.as_field_value(), kept.len()))
                        .put_owned(n, v);
                }
            }
            *slot = values.map(|values| LastColumn { values, times });
        }
        self.time = kept.iter().map(|&s| self.time[s as usize]).collect();
    }

    /// The series ids that have a newest row.
    pub(crate) fn series(&self) -> Vec<u32> {
        (0..self.time.len() as u32)
            .filter(|&s| self.time[s as usize] != i64::MIN)
            .collect()
    }

    /// Column `column`'s values in every series' newest row, by series id (null where that
    /// row has none), if the column has ever had one.
    pub(crate) fn field_array(&self, column: usize) -> Option<ArrayRef> {
        let c = self.fields.get(column)?.as_ref()?;
        let values = c.values.to_array(self.time.len());
        let stale: BooleanArray = (0..self.time.len())
            .map(|s| Some(!c.is_current(s, self.time[s])))
            .collect();
        Some(nullif(&values, &stale).expect("arrays of one length"))
    }
}
