//! The in-memory rows of one table, split into hour partitions, readable as Arrow batches.
//!
//! Rows are appended, never rewritten in place: a partition keeps plain column vectors (time,
//! series id, one vector per field column) so that appending a point costs a few pushes. Tags
//! are not stored per row: a row holds its series id and the series holds its tag values, so
//! the ten tags of a TSBS row cost four bytes.
//!
//! Primary-key merge (a point with the tag set and time of an earlier one overwrites the
//! fields it carries and keeps the others) happens when a partition is turned into an Arrow
//! batch: a partition that may hold two rows of one key is sorted and merged then. Whether it
//! may is tracked cheaply on append (a row not newer than its series' last row sets a flag),
//! so in-order data never pays for the sort. The Arrow batch is cached until the next append
//! to that partition, so queries over data that is not changing share one copy.
//!
//! A partition is in `partition.rs`, the tag values and tag columns in `tags.rs`, the newest
//! row of each series in `last_rows.rs`. This file holds what changes a table's rows under
//! its lock (append, freeze, expire, the newest rows folded in from files) and reads them
//! (scan): about 650 lines, kept together because they share that lock's invariants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, RecordBatch, TimestampNanosecondArray, UInt32Array,
    new_null_array,
};
use arrow::datatypes::Int32Type;
use hashbrown::HashMap;
use parking_lot::RwLock;
use sluice_model::{FieldValue, Point, Sym, TagSetId, WriteBatch};

use super::last_rows::LastRows;
use super::partition::Partition;
use super::tags::{TagLookup, TagValues};
use crate::catalog::schema::{ColumnKind, TIME_COLUMN, TableSchema};
use crate::columns::align_to_schema;
use crate::time::{PARTITION_NANOS, TimeRange};

/// The rows of one buffer partition as a scan returns them.
#[derive(Debug, Clone)]
pub struct BufferChunk {
    /// The rows, one per primary key, in the table's current Arrow schema.
    pub batch: RecordBatch,
    /// Hour partition key (`time.div_euclid(PARTITION_NANOS)`).
    pub partition: i64,
    pub min_time: i64,
    pub max_time: i64,
    /// Age among the chunks of the buffer: frozen partitions in the order they were frozen,
    /// live ones ([`LIVE_ORDER`]) newest. All buffered rows are newer than every persisted
    /// file of the table.
    pub order: u64,
}

/// [`BufferChunk::order`] of live (not frozen) partitions.
pub const LIVE_ORDER: u64 = u64::MAX;

/// What a scan of the buffer returned, with the counts `EXPLAIN` shows.
#[derive(Debug, Default)]
pub struct BufferScan {
    pub chunks: Vec<BufferChunk>,
    /// Partitions (live and frozen) whose rows were returned.
    pub partitions_scanned: usize,
    /// Partitions (live and frozen) the table has in the buffer.
    pub partitions_total: usize,
}

impl BufferScan {
    /// The rows of every chunk.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.chunks.iter().map(|c| c.batch.clone()).collect()
    }
}

/// A partition taken out of the live buffer to be persisted. Its rows stay queryable (through
/// [`TableBuffer::scan`]) until [`TableBuffer::remove_frozen`] drops them, which the persister
/// does only once the Parquet file holding them is in the catalog.
#[derive(Debug)]
pub struct FrozenPartition {
    /// Hour partition key.
    pub partition: i64,
    /// Freeze order, unique across the server's life (see [`BufferChunk::order`]).
    pub seq: u64,
    /// The rows, one per primary key, in the table's Arrow schema at freeze time.
    pub batch: RecordBatch,
    pub min_time: i64,
    pub max_time: i64,
    /// The oldest WAL segment holding rows of this partition: the WAL must keep it until the
    /// partition is persisted.
    pub min_segment: u64,
    /// Buffer bytes this partition accounts for.
    pub bytes: usize,
    /// Buffer rows this partition accounts for: the rows written to it, before merging rows
    /// of one primary key (the batch has fewer when a series was written twice at one time).
    pub rows: usize,
}

/// The buffered rows of one table.
#[derive(Default)]
pub struct TableBuffer {
    inner: RwLock<TableData>,
    /// Whether the newest rows include the table's files ([`TableBuffer::merge_last_rows`]).
    last_rows_complete: AtomicBool,
}

#[derive(Default)]
struct TableData {
    /// Tag values per tag column id.
    tag_values: Vec<TagValues>,
    series: HashMap<Arc<[(u32, u32)]>, u32>,
    /// Series ids by the [`TagSetId`] a decoder gave their tags: a repeat set costs one
    /// lookup, not a dictionary lookup per tag and a hash of the tag set. Valid because a
    /// series id, once given, always means the same tags; emptied when it grows past
    /// [`TableData::trim_series_of_set`]'s bound (ids of caches that started over linger).
    series_of_set: HashMap<TagSetId, u32, foldhash::fast::FixedState>,
    /// Per series id: its (tag column id, value id) pairs, sorted by column id.
    series_tags: Vec<Arc<[(u32, u32)]>>,
    /// Per series id: its newest row, among every point seen since start-up and, once
    /// [`TableBuffer::merge_last_rows`] ran, the table's files.
    last: LastRows,
    /// Per series id: its rows in live partitions. A series with none has all its rows
    /// frozen or persisted; once such series outnumber the others, they are dropped
    /// ([`TableData::drop_idle_series`]).
    live_rows: Vec<u32>,
    /// Series whose `live_rows` is not zero.
    series_with_rows: usize,
    /// Bytes of `bytes` that are the series index (tag sets and tag values; the newest
    /// rows' field values are not counted) rather than rows.
    index_bytes: usize,
    partitions: BTreeMap<i64, Partition>,
    /// Partitions being persisted, oldest first.
    frozen: Vec<Arc<FrozenPartition>>,
    rows: usize,
    bytes: usize,
}

/// Bytes a series costs in the index besides its tag values: its tag set (in the map and the
/// list), its newest row's time and its row count.
fn series_bytes(tags: usize) -> usize {
    16 * tags + 48
}

/// Bytes a tag value costs: its text, its place in the column's dictionary and its entry in
/// the Arrow array built from it.
fn tag_value_bytes(value: &str) -> usize {
    value.len() + 40
}

/// Idle series are dropped only past this many, so that a small table never spends time on it.
const IDLE_SERIES_FLOOR: usize = 1024;

impl TableData {
    /// Counts the rows of `series` leaving the live partitions (frozen or dropped).
    fn rows_left(&mut self, series: &[u32]) {
        for &s in series {
            let n = &mut self.live_rows[s as usize];
            *n -= 1;
            if *n == 0 {
                self.series_with_rows -= 1;
            }
        }
    }

    /// Drops the series without live rows once they outnumber the others (and
    /// [`IDLE_SERIES_FLOOR`]): their tag sets, the tag values no other series uses and their
    /// newest rows. Series ids are renumbered. Costs a pass over the live rows and the
    /// series, paid for by the at least as many series added since the last time. Returns
    /// the bytes released.
    ///
    /// The newest rows of dropped series come back from the files the next time they are
    /// asked for ([`TableBuffer::last_rows_complete`] is reset), and a dropped series that is
    /// written to again is added again.
    fn drop_idle_series(&mut self) -> Option<usize> {
        let idle = self.series_tags.len() - self.series_with_rows;
        if idle <= self.series_with_rows.max(IDLE_SERIES_FLOOR) {
            return None;
        }
        // old series id -> new one, u32::MAX for a dropped series
        let mut new_id = vec![u32::MAX; self.series_tags.len()];
        let kept: Vec<u32> = (0..self.series_tags.len() as u32)
            .filter(|&s| self.live_rows[s as usize] > 0)
            .collect();
        for (n, &s) in kept.iter().enumerate() {
            new_id[s as usize] = n as u32;
        }
        for p in self.partitions.values_mut() {
            p.renumber_series(&new_id);
        }
        // tag values still used, renumbered per column
        let mut value_ids: Vec<Vec<u32>> = self
            .tag_values
            .iter()
            .map(|v| vec![u32::MAX; v.values.len()])
            .collect();
        let mut values: Vec<TagValues> = Vec::new();
        values.resize_with(self.tag_values.len(), TagValues::default);
        let mut index_bytes = 0;
        let mut series_tags = Vec::with_capacity(kept.len());
        let mut series = HashMap::with_capacity(kept.len());
        for (n, &s) in kept.iter().enumerate() {
            let tags: Arc<[(u32, u32)]> = self.series_tags[s as usize]
                .iter()
                .map(|&(col, value)| {
                    let slot = &mut value_ids[col as usize][value as usize];
                    if *slot == u32::MAX {
                        let text = self.tag_values[col as usize].values.get(Sym(value));
                        index_bytes += tag_value_bytes(text);
                        *slot = values[col as usize].values.intern(text).0;
                    }
                    (col, *slot)
                })
                .collect();
            index_bytes += series_bytes(tags.len());
            series.insert(tags.clone(), n as u32);
            series_tags.push(tags);
        }
        self.last.retain(&kept);
        self.tag_values = values;
        self.series_tags = series_tags;
        self.series = series;
        self.series_of_set.clear();
        self.live_rows = kept.iter().map(|&s| self.live_rows[s as usize]).collect();
        let released = self.index_bytes.saturating_sub(index_bytes);
        self.index_bytes = index_bytes;
        self.bytes = self.bytes.saturating_sub(released);
        Some(released)
    }

    /// Keeps `series_of_set` within a few entries per series.
    fn trim_series_of_set(&mut self) {
        if self.series_of_set.len() > 4 * self.series_tags.len() + 4096 {
            self.series_of_set.clear();
        }
    }

    /// Step one of [`TableBuffer::apply`]: the series id of each point, adding the series
    /// (and their tag values) the buffer does not have yet (counted in `index_bytes`).
    /// Returns the points with their series.
    fn series_of_points<'a>(
        &mut self,
        batch: &WriteBatch,
        points: impl Iterator<Item = &'a Point>,
        columns: &mut BatchColumns<'_>,
    ) -> Vec<(&'a Point, u32)> {
        const UNRESOLVED: u32 = u32::MAX;
        // Points of one series in one batch share a tag range: resolve each range once.
        let mut series_of_tags: HashMap<(usize, usize), u32> = HashMap::with_capacity(64);
        // Tag values repeat across series (a region, a datacenter): look each batch symbol
        // up in a column's dictionary once per batch. By symbol, (column, value id) for the
        // first column it was a value of; the map for a symbol that is a value of several.
        let mut value_of_sym = vec![(UNRESOLVED, 0u32); batch.symbols.len()];
        let mut value_ids: HashMap<(usize, Sym), u32, foldhash::fast::FixedState> =
            HashMap::default();
        let mut scratch: Vec<(u32, u32)> = Vec::new();
        let mut last_range = (usize::MAX, 0, 0);
        let points: Vec<(&'a Point, u32)> = points
            .map(|point| {
                let range = point.tag_range();
                if (range.start, range.end) == (last_range.0, last_range.1) {
                    // the next point of the same series (the usual order of a batch)
                    return (point, last_range.2);
                }
                let set_id = batch.tag_set_id(range.clone());
                // (a range with a known id needs no entry in `series_of_tags`)
                let known = set_id.and_then(|id| self.series_of_set.get(&id).copied());
                let series = match known
                    .or_else(|| series_of_tags.get(&(range.start, range.end)).copied())
                {
                    Some(s) => s,
                    None => {
                        scratch.clear();
                        for tag in batch.tags_of(point) {
                            let Some(col) = columns.get(tag.key) else {
                                continue;
                            };
                            if self.tag_values.len() <= col {
                                self.tag_values.resize_with(col + 1, TagValues::default);
                            }
                            let values = &mut self.tag_values[col].values;
                            let index_bytes = &mut self.index_bytes;
                            let mut intern = || {
                                let (text, known) = (batch.str(tag.value), values.len());
                                let id = values.intern(text).0;
                                if values.len() > known {
                                    *index_bytes += tag_value_bytes(text);
                                }
                                id
                            };
                            let slot = &mut value_of_sym[tag.value.index()];
                            let value = if slot.0 == col as u32 {
                                slot.1
                            } else if slot.0 == UNRESOLVED {
                                *slot = (col as u32, intern());
                                slot.1
                            } else {
                                *value_ids.entry((col, tag.value)).or_insert_with(intern)
                            };
                            scratch.push((col as u32, value));
                        }
                        scratch.sort_unstable();
                        let s = self.series_id(&scratch);
                        series_of_tags.insert((range.start, range.end), s);
                        if let Some(id) = set_id {
                            self.trim_series_of_set();
                            self.series_of_set.insert(id, s);
                        }
                        s
                    }
                };
                last_range = (range.start, range.end, series);
                (point, series)
            })
            .collect();
        points
    }

    /// Step two of [`TableBuffer::apply`]: appends the rows of `points` (with their series)
    /// to their partitions, a run of points of one hour at a time, and keeps each series'
    /// newest row. Returns the bytes added.
    fn append_rows(
        &mut self,
        batch: &WriteBatch,
        points: &[(&Point, u32)],
        segment: u64,
        columns: &mut BatchColumns<'_>,
    ) -> usize {
        let TableData {
            partitions, last, ..
        } = self;
        let mut bytes = 0;
        // (a run ends at the first point outside its partition's hour: a compare per point
        // instead of a division)
        let mut values: Vec<f64> = Vec::new();
        let mut rest = points;
        while let Some(&(first, _)) = rest.first() {
            let key = first.time.div_euclid(PARTITION_NANOS);
            // (no bounds for the hours at the ends of time, whose bounds do not fit an i64)
            let bounds = key
                .checked_mul(PARTITION_NANOS)
                .and_then(|start| Some((start, start.checked_add(PARTITION_NANOS)?)));
            let len = rest
                .iter()
                .position(|(p, _)| match bounds {
                    Some((start, end)) => p.time < start || p.time >= end,
                    None => p.time.div_euclid(PARTITION_NANOS) != key,
                })
                .unwrap_or(rest.len());
            let (run, after) = rest.split_at(len);
            rest = after;
            // A new newest hour of a steady stream fills about as the hour before it did: its
            // columns start with that room instead of growing (and being copied) step by step.
            // An older hour (late data) starts empty.
            let expected = match partitions.last_key_value() {
                Some((&newest, p)) if newest < key => p.rows(),
                _ => 0,
            };
            let partition = partitions
                .entry(key)
                .or_insert_with(|| Partition::new(segment, expected));
            partition.invalidate();
            // A run of rows with one float field each (metric rows: OTLP, remote write): the
            // values are gathered first and appended to their column at once.
            values.clear();
            let mut single = None;
            for &(point, _) in run {
                match batch.fields_of(point) {
                    [f] if single.is_none_or(|k| k == f.key)
                        && let FieldValue::F64(v) = f.value =>
                    {
                        single = Some(f.key);
                        values.push(v);
                    }
                    _ => {
                        single = None;
                        break;
                    }
                }
            }
            if let Some(col) = single.and_then(|k| columns.get(k)) {
                let start = partition.rows();
                let fc = partition.field_column(col, &FieldValue::F64(0.0), start + run.len());
                if fc.append_f64s(start, &values) {
                    // A series' newest value is set once per run of its rows, not per row: of
                    // the rows that were its newest when they came, the last one's value stays.
                    let mut newest: Option<(u32, f64)> = None;
                    for (&(point, series), &v) in run.iter().zip(&values) {
                        if let Some((s, value)) = newest
                            && s != series
                        {
                            last.set(s, col, &FieldValue::F64(value), &batch.symbols);
                            newest = None;
                        }
                        if partition.push_key(last, series, point.time) {
                            newest = Some((series, v));
                        }
                    }
                    if let Some((s, value)) = newest {
                        last.set(s, col, &FieldValue::F64(value), &batch.symbols);
                    }
                    partition.bytes += 20 * run.len();
                    bytes += 20 * run.len();
                    continue;
                }
            }
            for &(point, series) in run {
                let row = partition.rows();
                let newest = partition.push_key(last, series, point.time);
                let mut row_bytes = 12;
                for field in batch.fields_of(point) {
                    let Some(col) = columns.get(field.key) else {
                        continue;
                    };
                    let fc = partition.field_column(col, &field.value, row + 1);
                    row_bytes += fc.set(row, &field.value, &batch.symbols);
                    if newest {
                        last.set(series, col, &field.value, &batch.symbols);
                    }
                }
                partition.bytes += row_bytes;
                bytes += row_bytes;
            }
        }
        bytes
    }

    /// The id of the series with tag set `key` ((tag column id, value id) pairs sorted by
    /// column id), added if new.
    fn series_id(&mut self, key: &[(u32, u32)]) -> u32 {
        if let Some(&s) = self.series.get(key) {
            return s;
        }
        let s = self.series_tags.len() as u32;
        self.index_bytes += series_bytes(key.len());
        let key: Arc<[(u32, u32)]> = key.into();
        self.series.insert(key.clone(), s);
        self.series_tags.push(key);
        self.last.add_series();
        self.live_rows.push(0);
        s
    }
}

/// The column each symbol of a batch names in the table's schema, looked up once per batch.
struct BatchColumns<'a> {
    schema: &'a TableSchema,
    batch: &'a WriteBatch,
    /// By symbol: the column id, [`BatchColumns::ABSENT`] or [`BatchColumns::UNRESOLVED`].
    of_sym: Vec<u32>,
}

impl<'a> BatchColumns<'a> {
    const UNRESOLVED: u32 = u32::MAX;
    const ABSENT: u32 = u32::MAX - 1;

    fn new(schema: &'a TableSchema, batch: &'a WriteBatch) -> Self {
        BatchColumns {
            schema,
            batch,
            of_sym: vec![Self::UNRESOLVED; batch.symbols.len()],
        }
    }

    /// The column `sym` names, if the schema has it.
    #[inline]
    fn get(&mut self, sym: Sym) -> Option<usize> {
        let slot = &mut self.of_sym[sym.index()];
        if *slot == Self::UNRESOLVED {
            *slot = self
                .schema
                .column_id(self.batch.str(sym))
                .map_or(Self::ABSENT, |c| c as u32);
        }
        (*slot != Self::ABSENT).then_some(*slot as usize)
    }
}

impl std::fmt::Debug for TableBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = self.inner.read();
        f.debug_struct("TableBuffer")
            .field("rows", &data.rows)
            .field("series", &data.series_tags.len())
            .field("partitions", &data.partitions.len())
            .field("bytes", &data.bytes)
            .finish()
    }
}

impl TableBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `points` (all of this table, from `batch`, logged in WAL segment `segment`)
    /// under `schema`, which has every column they use. Returns the bytes added.
    ///
    /// Two steps: first every point's series ([`TableData::series_of_points`]), then the
    /// rows, a run of points of one partition at a time ([`TableData::append_rows`]).
    pub fn apply<'a>(
        &self,
        schema: &TableSchema,
        batch: &WriteBatch,
        points: impl Iterator<Item = &'a Point>,
        segment: u64,
    ) -> usize {
        let mut data = self.inner.write();
        let mut columns = BatchColumns::new(schema, batch);
        let index_before = data.index_bytes;
        let points = data.series_of_points(batch, points, &mut columns);
        let row_bytes = data.append_rows(batch, &points, segment, &mut columns);
        for &(_, s) in &points {
            let n = &mut data.live_rows[s as usize];
            *n += 1;
            if *n == 1 {
                data.series_with_rows += 1;
            }
        }
        let bytes = data.index_bytes - index_before + row_bytes;
        data.rows += points.len();
        data.bytes += bytes;
        bytes
    }

    /// The buffered rows whose partition overlaps `range`, one chunk per partition (frozen
    /// ones included), in `schema`'s Arrow layout with rows of one primary key merged within
    /// each chunk. Rows outside `range` may be included: callers filter.
    pub fn scan(&self, schema: &TableSchema, range: TimeRange) -> BufferScan {
        // Batches are built under the write lock because building caches tag value arrays;
        // cached partitions (all but the one being written) are cheap clones.
        let mut data = self.inner.write();
        let data = &mut *data;
        let mut lookup = TagLookup {
            tag_values: &mut data.tag_values,
            series_tags: &data.series_tags,
        };
        let mut out = BufferScan {
            partitions_total: data.partitions.len() + data.frozen.len(),
            ..BufferScan::default()
        };
        for f in &data.frozen {
            if !range.overlaps(f.min_time, f.max_time) {
                continue;
            }
            out.partitions_scanned += 1;
            out.chunks.push(BufferChunk {
                batch: align_to_schema(&f.batch, schema.arrow_schema()),
                partition: f.partition,
                min_time: f.min_time,
                max_time: f.max_time,
                order: f.seq,
            });
        }
        for (&key, p) in &data.partitions {
            if p.rows() == 0 || !range.overlaps(p.min_time, p.max_time) {
                continue;
            }
            out.partitions_scanned += 1;
            out.chunks.push(BufferChunk {
                batch: p.to_batch(schema, &mut lookup),
                partition: key,
                min_time: p.min_time,
                max_time: p.max_time,
                order: LIVE_ORDER,
            });
        }
        out
    }

    /// Whether [`TableBuffer::scan`] of `range` would return any chunk, found without
    /// building one.
    pub fn has_rows_in(&self, range: TimeRange) -> bool {
        let data = self.inner.read();
        data.frozen
            .iter()
            .any(|f| range.overlaps(f.min_time, f.max_time))
            || data
                .partitions
                .values()
                .any(|p| p.rows() > 0 && range.overlaps(p.min_time, p.max_time))
    }

    /// About how many rows [`TableBuffer::scan`] of `range` returns: of each partition that
    /// overlaps it, the share of its rows inside (see [`TimeRange::share_of`]).
    pub fn rows_in(&self, range: TimeRange) -> usize {
        let data = self.inner.read();
        let frozen = data
            .frozen
            .iter()
            .map(|f| f.batch.num_rows() as f64 * range.share_of(f.min_time, f.max_time));
        let live = data
            .partitions
            .values()
            .map(|p| p.rows() as f64 * range.share_of(p.min_time, p.max_time));
        frozen.chain(live).sum::<f64>().ceil() as usize
    }

    /// Takes the live partitions for which `due(partition key, its bytes)` holds out of the
    /// live buffer and freezes them (rows merged per primary key, in `schema`'s layout),
    /// numbering them from `*next_seq`. Later writes to the same hours start new partitions.
    /// Returns every frozen partition of the table, those frozen earlier and not yet removed
    /// first.
    pub fn freeze(
        &self,
        schema: &TableSchema,
        mut due: impl FnMut(i64, usize) -> bool,
        next_seq: &mut u64,
    ) -> Vec<Arc<FrozenPartition>> {
        let mut data = self.inner.write();
        let data = &mut *data;
        let keys: Vec<i64> = data
            .partitions
            .iter()
            .filter(|(k, p)| due(**k, p.bytes))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(p) = data.partitions.remove(&key) else {
                continue;
            };
            data.rows_left(p.series());
            if p.rows() == 0 {
                continue;
            }
            let mut lookup = TagLookup {
                tag_values: &mut data.tag_values,
                series_tags: &data.series_tags,
            };
            let (min_time, max_time, min_segment, bytes, rows) =
                (p.min_time, p.max_time, p.min_segment, p.bytes, p.rows());
            let batch = p.into_batch(schema, &mut lookup);
            data.frozen.push(Arc::new(FrozenPartition {
                partition: key,
                seq: *next_seq,
                batch,
                min_time,
                max_time,
                min_segment,
                bytes,
                rows,
            }));
            *next_seq += 1;
        }
        data.frozen.clone()
    }

    /// Drops the frozen partitions numbered in `seqs` (their rows are now in files the
    /// catalog lists). Returns the (rows, bytes) released.
    pub fn remove_frozen(&self, seqs: &[u64]) -> (usize, usize) {
        let mut data = self.inner.write();
        let (mut rows, mut bytes) = (0, 0);
        data.frozen.retain(|f| {
            let drop = seqs.contains(&f.seq);
            if drop {
                rows += f.rows;
                bytes += f.bytes;
            }
            !drop
        });
        data.rows = data.rows.saturating_sub(rows);
        data.bytes = data.bytes.saturating_sub(bytes);
        let index = data.drop_idle_series();
        if index.is_some() {
            self.last_rows_complete.store(false, Ordering::Release);
        }
        (rows, bytes + index.unwrap_or(0))
    }

    /// Drops the live partitions whose hour ended at or before `cutoff` (Unix nanoseconds):
    /// rows a retention period no longer keeps. Returns the (partitions, rows, bytes)
    /// released.
    pub fn drop_partitions_before(&self, cutoff: i64) -> (usize, usize, usize) {
        let mut data = self.inner.write();
        let expired: Vec<i64> = data
            .partitions
            .keys()
            .copied()
            .take_while(|&k| (k + 1).saturating_mul(PARTITION_NANOS) <= cutoff)
            .collect();
        let (mut rows, mut bytes) = (0, 0);
        let partitions = expired.len();
        for key in expired {
            if let Some(p) = data.partitions.remove(&key) {
                data.rows_left(p.series());
                rows += p.rows();
                bytes += p.bytes;
            }
        }
        data.rows = data.rows.saturating_sub(rows);
        data.bytes = data.bytes.saturating_sub(bytes);
        let index = data.drop_idle_series();
        if index.is_some() {
            self.last_rows_complete.store(false, Ordering::Release);
        }
        (partitions, rows, bytes + index.unwrap_or(0))
    }

    /// The oldest WAL segment that holds rows still only in this buffer (live or frozen).
    pub fn min_segment(&self) -> Option<u64> {
        let data = self.inner.read();
        let live = data.partitions.values().map(|p| p.min_segment);
        let frozen = data.frozen.iter().map(|f| f.min_segment);
        live.chain(frozen).min()
    }

    /// Keys of the live partitions and how many bytes each holds.
    pub fn live_partitions(&self) -> Vec<(i64, usize)> {
        let data = self.inner.read();
        data.partitions.iter().map(|(&k, p)| (k, p.bytes)).collect()
    }

    /// Rows held (live rows counted before merging).
    pub fn rows(&self) -> usize {
        self.inner.read().rows
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.read().bytes
    }

    /// Number of distinct series.
    pub fn series_count(&self) -> usize {
        self.inner.read().series_tags.len()
    }

    /// The newest row of every series, in `schema`'s Arrow layout: for each series the row a
    /// deduplicated scan returns for its greatest time, among the points written or replayed
    /// since start-up and, once [`Self::merge_last_rows`] has run, the table's files.
    pub fn last_rows(&self, schema: &TableSchema) -> RecordBatch {
        let mut data = self.inner.write();
        let data = &mut *data;
        let series = data.last.series();
        let ids = UInt32Array::from(series.clone());
        let mut lookup = TagLookup {
            tag_values: &mut data.tag_values,
            series_tags: &data.series_tags,
        };
        let columns: Vec<ArrayRef> = schema
            .arrow_order()
            .iter()
            .map(|&id| {
                let kind = schema.columns()[id].kind;
                match kind {
                    ColumnKind::Time => Arc::new(TimestampNanosecondArray::from_iter_values(
                        series.iter().map(|&s| data.last.time[s as usize]),
                    )) as ArrayRef,
                    ColumnKind::Tag => lookup.tag_column(id, &series),
                    ColumnKind::Field(_) => match data.last.field_array(id) {
                        Some(all) => {
                            arrow::compute::take(&all, &ids, None).expect("ids are series ids")
                        }
                        None => new_null_array(&kind.data_type(), series.len()),
                    },
                }
            })
            .collect();
        RecordBatch::try_new(schema.arrow_schema().clone(), columns)
            .expect("columns are built from the schema")
    }

    /// Folds the rows of `batch` (a scan of this table, in `schema`'s columns) into the
    /// newest rows. Rows already seen change nothing, so scans may overlap the points written
    /// since start-up.
    pub fn merge_last_rows(&self, schema: &TableSchema, batch: &RecordBatch) {
        let Some(times) = batch
            .column_by_name(TIME_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            return;
        };
        let mut data = self.inner.write();
        let data = &mut *data;
        // Per tag column (in column id order): the value id of each dictionary key.
        let mut tags: Vec<(u32, Int32Array, Vec<u32>)> = Vec::new();
        let mut fields: Vec<(usize, ArrayRef)> = Vec::new();
        for (i, f) in batch.schema().fields().iter().enumerate() {
            let Some(id) = schema.column_id(f.name()) else {
                continue;
            };
            match schema.columns()[id].kind {
                ColumnKind::Tag => {
                    let dict_type = ColumnKind::Tag.data_type();
                    let Ok(column) = arrow::compute::cast(batch.column(i), &dict_type) else {
                        continue;
                    };
                    let dict = column.as_dictionary::<Int32Type>();
                    let values = dict.values().as_string::<i32>();
                    if data.tag_values.len() <= id {
                        data.tag_values.resize_with(id + 1, TagValues::default);
                    }
                    let ids = values
                        .iter()
                        .map(|v| data.tag_values[id].values.intern(v.unwrap_or_default()).0)
                        .collect();
                    tags.push((id as u32, dict.keys().clone(), ids));
                }
                ColumnKind::Field(_) => fields.push((id, batch.column(i).clone())),
                ColumnKind::Time => {}
            }
        }
        tags.sort_by_key(|(id, _, _)| *id);
        let mut key: Vec<(u32, u32)> = Vec::with_capacity(tags.len());
        for row in 0..batch.num_rows() {
            if !times.is_valid(row) {
                continue;
            }
            key.clear();
            for (id, keys, value_ids) in &tags {
                if keys.is_valid(row) {
                    key.push((*id, value_ids[keys.value(row) as usize]));
                }
            }
            let series = data.series_id(&key);
            data.last.merge_row(series, times.value(row), &fields, row);
        }
    }

    /// Whether [`Self::merge_last_rows`] has folded in the table's files.
    pub fn last_rows_complete(&self) -> bool {
        self.last_rows_complete.load(Ordering::Acquire)
    }

    /// Records that the newest rows now include the table's files.
    pub fn set_last_rows_complete(&self) {
        self.last_rows_complete.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
