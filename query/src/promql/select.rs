//! Reading a selector's samples: one SQL scan per table its matchers can match, through the
//! same executor (admission, memory limit, plan cache) as any SQL query, so PromQL sees the
//! write buffer and the files merged by primary key exactly as SQL does.
//!
//! Equality matchers on tags go into the scan's `WHERE` (they narrow it to the files and rows
//! of those series); every matcher is then applied to each series' labels, once per series.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type};
use promql_parser::label::{MatchOp, Matcher};
use sluice_storage::catalog::schema::{ColumnKind, DatabaseSchema, TableSchema};

use super::error::PromError;
use super::labels::{Labels, METRIC_NAME};
use super::metrics::{VALUE_FIELD, matching, metric_name};
use super::value::{RawSeries, Series};
use crate::QueryExecutor;
use sluice_model::staleness::{STALE_NAN_BITS, stale_table};

/// Where and as whom a PromQL query reads.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub executor: &'a QueryExecutor,
    pub db: &'a str,
    pub readable: Option<&'a [String]>,
}

impl Source<'_> {
    /// The schema of the database, if it exists (and may be read).
    pub fn schema(&self) -> Option<Arc<DatabaseSchema>> {
        if self
            .readable
            .is_some_and(|r| !r.iter().any(|d| d == self.db))
        {
            return None;
        }
        self.executor.storage().catalog().database(self.db).cloned()
    }
}

/// The series matching `matchers` with their samples in `(after, until]` (milliseconds).
/// `budget` is what is left of the query's sample limit; the samples read are taken from it.
pub async fn select(
    source: Source<'_>,
    matchers: &[Matcher],
    after: i64,
    until: i64,
    budget: &mut Budget,
) -> Result<Vec<RawSeries>, PromError> {
    let request = Request {
        matchers,
        after,
        until,
    };
    Ok(select_all(source, &[request], budget)
        .await?
        .pop()
        .unwrap_or_default())
}

/// Samples to read: those in `(after, until]` (ms) of the series matching `matchers`.
pub struct Request<'m> {
    pub matchers: &'m [Matcher],
    pub after: i64,
    pub until: i64,
}

/// The series of each request, as [`select`] reads them, but with one scan of a table for
/// all the requests whose scans of it would read the same rows (the same times and tag
/// equalities; q5's `{__name__=~"cpu_usage_.+"} and on (hostname) (cpu_usage_user > 90)`
/// reads `cpu` once, not twice): it reads the fields any of them needs.
pub async fn select_all(
    source: Source<'_>,
    requests: &[Request<'_>],
    budget: &mut Budget,
) -> Result<Vec<Vec<RawSeries>>, PromError> {
    let mut out: Vec<Vec<RawSeries>> = requests.iter().map(|_| Vec::new()).collect();
    let Some(schema) = source.schema() else {
        return Ok(out);
    };
    // one scan per table and filter: the fields it reads, and which request wants which
    let mut scans: Vec<SharedScan<'_>> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        for (table, fields) in matching(&schema, r.matchers) {
            let filter = from_where(&table, r.matchers, r.after, r.until);
            let names = fields.iter().map(|f| metric_name(&table.name, f)).collect();
            match scans
                .iter_mut()
                .find(|s| s.table.name == table.name && s.filter == filter)
            {
                Some(scan) => {
                    for f in fields {
                        if !scan.fields.contains(&f) {
                            scan.fields.push(f);
                        }
                    }
                    scan.wanted.push((i, names));
                }
                None => scans.push(SharedScan {
                    table,
                    filter,
                    fields,
                    request: r,
                    wanted: vec![(i, names)],
                }),
            }
        }
    }
    for scan in scans {
        let mut series = scan_rows(source, &scan.table, &scan.fields, &scan.filter).await?;
        // the metric named after its table may have stale markers
        if scan.fields.iter().any(|f| &**f == VALUE_FIELD)
            && let Some(stale) = schema.tables.get(stale_table(&scan.table.name).as_str())
            && stale.column(VALUE_FIELD).is_some()
        {
            let value: [Arc<str>; 1] = [Arc::from(VALUE_FIELD)];
            let r = scan.request;
            let filter = from_where(stale, r.matchers, r.after, r.until);
            let markers = scan_rows(source, stale, &value, &filter).await?;
            add_markers(&mut series, markers, &scan.table.name);
        }
        for mut s in series {
            if s.t.is_empty() {
                continue;
            }
            let wanting: Vec<usize> = scan
                .wanted
                .iter()
                .filter(|(i, names)| {
                    names.iter().any(|n| n == s.labels.name())
                        && requests[*i]
                            .matchers
                            .iter()
                            .all(|m| m.is_match(s.labels.get(&m.name)))
                })
                .map(|(i, _)| *i)
                .collect();
            let Some((&last, others)) = wanting.split_last() else {
                continue;
            };
            in_time_order(&mut s);
            for &i in others {
                budget.take(s.t.len())?;
                out[i].push(s.clone());
            }
            budget.take(s.t.len())?;
            out[last].push(s);
        }
    }
    Ok(out)
}

/// One scan that serves several requests: see [`select_all`].
struct SharedScan<'r> {
    table: Arc<TableSchema>,
    filter: String,
    fields: Vec<Arc<str>>,
    /// a request it serves (for the tag equalities of its stale markers' scan)
    request: &'r Request<'r>,
    /// the requests it serves, each with the metric names it wants
    wanted: Vec<(usize, Vec<String>)>,
}

/// The label sets of the series matching `matchers` with a sample in `(after, until]` (ms),
/// without reading the samples: one aggregate per table, counting each field's values per
/// tag set (what the series and label APIs need).
pub async fn select_label_sets(
    source: Source<'_>,
    matchers: &[Matcher],
    after: i64,
    until: i64,
) -> Result<Vec<Labels>, PromError> {
    let Some(schema) = source.schema() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (table, fields) in matching(&schema, matchers) {
        let tags = tag_names(&table);
        let filter = from_where(&table, matchers, after, until);
        let counts: Vec<String> = fields
            .iter()
            .map(|f| format!("count({})", ident(f)))
            .collect();
        let mut sql = String::from("SELECT ");
        for t in &tags {
            sql.push_str(&ident(t));
            sql.push_str(", ");
        }
        sql.push_str(&counts.join(", "));
        sql.push_str(" FROM ");
        sql.push_str(&filter);
        if !tags.is_empty() {
            let grouped: Vec<String> = tags.iter().map(|t| ident(t)).collect();
            sql.push_str(" GROUP BY ");
            sql.push_str(&grouped.join(", "));
        }
        let result = source
            .executor
            .query_as(source.db, &sql, HashMap::new(), source.readable)
            .await?;
        for batch in &result.batches {
            let columns = tag_columns(batch, tags.len())?;
            let mut present = Vec::with_capacity(fields.len());
            for i in 0..fields.len() {
                let c =
                    cast(batch.column(tags.len() + i), &DataType::Int64).map_err(arrow_error)?;
                present.push(
                    c.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .clone(),
                );
            }
            for row in 0..batch.num_rows() {
                for (f, counts) in fields.iter().zip(&present) {
                    if counts.is_null(row) || counts.value(row) == 0 {
                        continue;
                    }
                    let labels = row_labels(&table.name, f, &tags, &columns, row);
                    if matchers.iter().all(|m| m.is_match(labels.get(&m.name))) {
                        out.push(labels);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn arrow_error(e: datafusion::arrow::error::ArrowError) -> PromError {
    PromError::Internal(e.to_string())
}

/// A table's tag columns, in schema order (the order scans select them).
fn tag_names(table: &TableSchema) -> Vec<&str> {
    table
        .columns()
        .iter()
        .filter(|c| c.kind == ColumnKind::Tag)
        .map(|c| &*c.name)
        .collect()
}

/// Windows a scan aggregates: `count` windows of `range` ms, the first ending at `first`,
/// each the next's start; `aggregate` is SQL's function that computes the PromQL one.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub aggregate: &'static str,
    pub first: i64,
    pub range: i64,
    pub count: usize,
}

/// The answer of an `<agg>_over_time` call whose windows do not overlap: for each series
/// matching `matchers`, the aggregate of each step's window (`(end - range, end]`, in milliseconds), computed by the scan: rows are
/// binned with `date_bin` from one millisecond after the first window's start, so each bin
/// holds one window's samples.
pub async fn select_windows(
    source: Source<'_>,
    matchers: &[Matcher],
    w: Windows,
) -> Result<Vec<Series>, PromError> {
    let Some(schema) = source.schema() else {
        return Ok(Vec::new());
    };
    let origin = w.first - w.range + 1;
    let last_end = w.first + w.range * (w.count as i64 - 1);
    let mut out = Vec::new();
    for (table, fields) in matching(&schema, matchers) {
        let tags = tag_names(&table);
        let filter = from_where(&table, matchers, origin - 1, last_end);
        let mut sql = String::from("SELECT ");
        for t in &tags {
            sql.push_str(&ident(t));
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "date_bin(INTERVAL '{} milliseconds', time, TIMESTAMP '{}') AS window",
            w.range,
            timestamp(origin).trim_end_matches('Z')
        ));
        for f in &fields {
            sql.push_str(&format!(", {}({})", w.aggregate, ident(f)));
        }
        sql.push_str(" FROM ");
        sql.push_str(&filter);
        sql.push_str(" GROUP BY ");
        for t in &tags {
            sql.push_str(&ident(t));
            sql.push_str(", ");
        }
        sql.push_str("window");
        let result = source
            .executor
            .query_as(source.db, &sql, HashMap::new(), source.readable)
            .await?;
        let mut slots = Slots::new(&table, &fields);
        let mut series: Vec<Series> = Vec::new();
        for batch in &result.batches {
            let columns = tag_columns(batch, tags.len())?;
            let window = cast(
                batch.column(tags.len()),
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None),
            )
            .map_err(arrow_error)?;
            let window = window
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .ok_or_else(|| PromError::Internal("window is not a timestamp".into()))?
                .clone();
            let mut values = Vec::with_capacity(fields.len());
            for i in 0..fields.len() {
                let c = cast(batch.column(tags.len() + 1 + i), &DataType::Float64)
                    .map_err(arrow_error)?;
                values.push(
                    c.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .clone(),
                );
            }
            for row in 0..batch.num_rows() {
                let slot = slots.slot(&columns, row, |labels| {
                    series.push(Series {
                        labels,
                        points: vec![None; w.count],
                        drop_name: true,
                    })
                });
                if window.is_null(row) {
                    continue;
                }
                let bin = window.value(row).div_euclid(1_000_000) - origin;
                if bin < 0 || bin % w.range != 0 {
                    continue;
                }
                let step = (bin / w.range) as usize;
                if step >= w.count {
                    continue;
                }
                for (i, v) in values.iter().enumerate() {
                    // a window without values of this field has none (count says 0)
                    if v.is_null(row) || (w.aggregate == "count" && v.value(row) == 0.0) {
                        continue;
                    }
                    series[slot + i].points[step] = Some(v.value(row));
                }
            }
        }
        series.retain(|s| {
            s.points.iter().any(Option::is_some)
                && matchers.iter().all(|m| m.is_match(s.labels.get(&m.name)))
        });
        out.append(&mut series);
    }
    Ok(out)
}

/// The labels of field `field`'s metric in row `row`: its name and the row's tags.
fn row_labels(
    table: &str,
    field: &str,
    tags: &[&str],
    columns: &[TagColumn<'_>],
    row: usize,
) -> Labels {
    let name = metric_name(table, field);
    Labels::from_pairs(
        std::iter::once((METRIC_NAME, name.as_str())).chain(
            tags.iter()
                .zip(columns)
                .filter_map(|(t, c)| c.value(row).map(|v| (*t, v))),
        ),
    )
}

/// The first `n` columns of a result, read as tags.
fn tag_columns(
    batch: &datafusion::arrow::record_batch::RecordBatch,
    n: usize,
) -> Result<Vec<TagColumn<'_>>, PromError> {
    let mut columns = Vec::with_capacity(n);
    for i in 0..n {
        let c = batch.column(i);
        columns.push(match c.data_type() {
            DataType::Dictionary(_, _) => match c.as_dictionary_opt::<Int32Type>() {
                Some(d) => TagColumn::Dictionary(d),
                None => TagColumn::Strings(cast(c, &DataType::Utf8).map_err(arrow_error)?),
            },
            DataType::Utf8 => TagColumn::Strings(c.clone()),
            _ => TagColumn::Strings(cast(c, &DataType::Utf8).map_err(arrow_error)?),
        });
    }
    Ok(columns)
}

/// The series of one table's scan of `fields` from `filter` (a [`from_where`]), samples
/// in scan order.
async fn scan_rows(
    source: Source<'_>,
    table: &TableSchema,
    fields: &[Arc<str>],
    filter: &str,
) -> Result<Vec<RawSeries>, PromError> {
    let mut sql = String::from("SELECT ");
    for t in tag_names(table) {
        sql.push_str(&ident(t));
        sql.push_str(", ");
    }
    sql.push_str("time");
    for f in fields {
        sql.push_str(", ");
        sql.push_str(&ident(f));
    }
    sql.push_str(" FROM ");
    sql.push_str(filter);
    let result = source
        .executor
        .query_as(source.db, &sql, HashMap::new(), source.readable)
        .await?;
    group(table, fields, &result.batches)
}

/// Puts stale markers (series of the stale-marker table of `metric`) among the samples of
/// the series they end, before a sample of the same millisecond. A marker of a series
/// without samples here ends nothing and is left out.
fn add_markers(series: &mut [RawSeries], markers: Vec<RawSeries>, metric: &str) {
    if markers.is_empty() {
        return;
    }
    let index: HashMap<Labels, usize> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.labels.clone(), i))
        .collect();
    for m in markers {
        let labels = m.labels.with(METRIC_NAME, metric);
        let Some(&i) = index.get(&labels) else {
            continue;
        };
        let s = &mut series[i];
        let (mut t, mut v) = (Vec::new(), Vec::new());
        std::mem::swap(&mut t, &mut s.t);
        std::mem::swap(&mut v, &mut s.v);
        let mut order: Vec<(i64, bool, f64)> = t
            .into_iter()
            .zip(v)
            .map(|(t, v)| (t, true, v))
            .chain(
                m.t.iter()
                    .map(|&t| (t, false, f64::from_bits(STALE_NAN_BITS))),
            )
            .collect();
        // by time; at one time the marker first, so the sample is the one kept
        order.sort_by_key(|&(t, sample, _)| (t, sample));
        for (t, _, v) in order {
            s.t.push(t);
            s.v.push(v);
        }
    }
}

/// What is left of a query's sample limit (`--promql-max-samples`).
#[derive(Debug)]
pub struct Budget {
    pub limit: usize,
    pub used: usize,
}

impl Budget {
    /// Counts `n` more samples held, failing past the limit.
    pub fn take(&mut self, n: usize) -> Result<(), PromError> {
        self.used += n;
        if self.used > self.limit {
            return Err(PromError::TooManySamples(self.limit));
        }
        Ok(())
    }
}

/// `<table> WHERE time in (after, until] ms AND <tag = v>`: what every scan of a selector
/// reads, whatever it selects from it.
fn from_where(table: &TableSchema, matchers: &[Matcher], after: i64, until: i64) -> String {
    let mut sql = ident(&table.name);
    // A sample at nanosecond n is at millisecond floor(n / 1e6). Bounds past what a
    // nanosecond timestamp holds (about 1678-2262) bound nothing.
    sql.push_str(" WHERE true");
    if after > -NANOS_SPAN_MS {
        sql.push_str(&format!(" AND time >= '{}'", timestamp(after + 1)));
    }
    if until < NANOS_SPAN_MS {
        sql.push_str(&format!(" AND time < '{}'", timestamp(until + 1)));
    }
    for m in matchers {
        if m.name != METRIC_NAME
            && matches!(m.op, MatchOp::Equal)
            && !m.value.is_empty()
            && table
                .column(&m.name)
                .is_some_and(|c| c.kind == ColumnKind::Tag)
        {
            sql.push_str(&format!(" AND {} = {}", ident(&m.name), literal(&m.value)));
        }
    }
    sql
}

/// Milliseconds either side of the epoch that a nanosecond timestamp can reach, roughly.
const NANOS_SPAN_MS: i64 = 9_000_000_000_000;

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`: a literal the plan cache
/// reads as a timestamp, so scans that differ only in their window share a plan.
fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let s = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        sluice_storage::time::date(secs.div_euclid(86_400)),
        s / 3600,
        s % 3600 / 60,
        s % 60,
        ms.rem_euclid(1000)
    )
}

/// A tag column of a result, read row by row.
enum TagColumn<'a> {
    Dictionary(&'a DictionaryArray<Int32Type>),
    Strings(ArrayRef),
}

impl TagColumn<'_> {
    fn value(&self, row: usize) -> Option<&str> {
        match self {
            TagColumn::Dictionary(d) => {
                if d.is_null(row) {
                    return None;
                }
                let values = d.values().as_string_opt::<i32>()?;
                Some(values.value(d.keys().value(row) as usize))
            }
            TagColumn::Strings(a) => (!a.is_null(row)).then(|| a.as_string::<i32>().value(row)),
        }
    }

    /// Whether rows `a` and `b` hold the same value (cheaply, for a dictionary).
    fn same(&self, a: usize, b: usize) -> bool {
        match self {
            TagColumn::Dictionary(d) => {
                d.is_null(a) == d.is_null(b) && d.keys().value(a) == d.keys().value(b)
            }
            TagColumn::Strings(_) => self.value(a) == self.value(b),
        }
    }
}

/// The series of one table's scan, found by the tags of a row: each tag set has one series
/// per field, `fields.len()` consecutive ones from its slot. Label names and values are
/// shared by every series that has them, not copied per series, and a row with the previous
/// row's tags (a series' rows come together) is not looked up again.
struct Slots {
    tags: Vec<Arc<str>>,
    names: Vec<Arc<str>>,
    name_label: Arc<str>,
    /// non-empty tag values -> slot
    slots: HashMap<Vec<Option<Arc<str>>>, usize>,
    count: usize,
    last: usize,
}

impl Slots {
    fn new(table: &TableSchema, fields: &[Arc<str>]) -> Self {
        Slots {
            tags: table
                .columns()
                .iter()
                .filter(|c| c.kind == ColumnKind::Tag)
                .map(|c| c.name.clone())
                .collect(),
            names: fields
                .iter()
                .map(|f| Arc::from(metric_name(&table.name, f)))
                .collect(),
            name_label: Arc::from(METRIC_NAME),
            slots: HashMap::new(),
            count: 0,
            last: 0,
        }
    }

    /// The slot of `row`'s tags; a new tag set's labels, one per field, go to `add` first.
    fn slot(
        &mut self,
        columns: &[TagColumn<'_>],
        row: usize,
        mut add: impl FnMut(Labels),
    ) -> usize {
        if row > 0 && columns.iter().all(|c| c.same(row - 1, row)) {
            return self.last;
        }
        let key: Vec<Option<Arc<str>>> = columns
            .iter()
            .map(|c| c.value(row).filter(|v| !v.is_empty()).map(Arc::from))
            .collect();
        self.last = match self.slots.get(&key) {
            Some(&s) => s,
            None => {
                let s = self.count;
                for name in &self.names {
                    add(Labels::from_pairs(
                        std::iter::once((self.name_label.clone(), name.clone())).chain(
                            self.tags
                                .iter()
                                .zip(&key)
                                .filter_map(|(t, v)| v.clone().map(|v| (t.clone(), v))),
                        ),
                    ));
                }
                self.count += self.names.len();
                self.slots.insert(key, s);
                s
            }
        };
        self.last
    }
}

/// The scan's rows as series: one per tag set and field, labelled with the metric name and
/// the non-empty tags.
fn group(
    table: &TableSchema,
    fields: &[Arc<str>],
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> Result<Vec<RawSeries>, PromError> {
    let tags = tag_names(table).len();
    let mut slots = Slots::new(table, fields);
    let mut out: Vec<RawSeries> = Vec::new();
    for batch in batches {
        let columns = tag_columns(batch, tags)?;
        let time = batch.column(tags);
        let time = time
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .ok_or_else(|| PromError::Internal(format!("time column is {}", time.data_type())))?;
        let mut values: Vec<Float64Array> = Vec::with_capacity(fields.len());
        for i in 0..fields.len() {
            let c = cast(batch.column(tags + 1 + i), &DataType::Float64).map_err(arrow_error)?;
            values.push(
                c.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .clone(),
            );
        }
        // a tag set's rows come together: appended a run of rows at a time
        let rows = batch.num_rows();
        let mut millis = Vec::new();
        let mut row = 0;
        while row < rows {
            let slot = slots.slot(&columns, row, |labels| {
                out.push(RawSeries {
                    labels,
                    ..RawSeries::default()
                })
            });
            let mut end = row + 1;
            while end < rows && columns.iter().all(|c| c.same(end - 1, end)) {
                end += 1;
            }
            let series = &mut out[slot..slot + fields.len()];
            if time.null_count() == 0 {
                millis.clear();
                millis.extend(
                    time.values()[row..end]
                        .iter()
                        .map(|t| t.div_euclid(1_000_000)),
                );
            }
            for (s, v) in series.iter_mut().zip(&values) {
                if time.null_count() == 0 && v.null_count() == 0 {
                    s.t.extend_from_slice(&millis);
                    s.v.extend_from_slice(&v.values()[row..end]);
                    continue;
                }
                for r in row..end {
                    if time.is_valid(r) && v.is_valid(r) {
                        s.t.push(time.value(r).div_euclid(1_000_000));
                        s.v.push(v.value(r));
                    }
                }
            }
            row = end;
        }
    }
    Ok(out)
}

/// Sorts a series' samples by time, keeping the last of two in one millisecond.
fn in_time_order(s: &mut RawSeries) {
    if s.t.windows(2).all(|w| w[0] < w[1]) {
        return;
    }
    // The scan gives each file's rows in time order, one file after another: a stable sort
    // of (time, value) pairs merges those runs (it finds them) and keeps the order of equal
    // times, so the last of one millisecond is the one kept.
    let mut pairs: Vec<(i64, f64)> = s.t.iter().copied().zip(s.v.iter().copied()).collect();
    pairs.sort_by_key(|p| p.0);
    s.t.clear();
    s.v.clear();
    for (t, v) in pairs {
        if s.t.last() == Some(&t) {
            *s.v.last_mut().expect("a value for each time") = v;
        } else {
            s.t.push(t);
            s.v.push(v);
        }
    }
}
