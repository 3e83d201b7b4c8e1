//! The walk over an export request: resources, scopes, metrics, data points, each read in
//! place, each data point's tags resolved through the cache, and its rows appended to the
//! batch. One type, [`Mapper`], holds the walk's state; about 800 lines, because the steps
//! share it and read best top to bottom in the request's own order.

use prost::Message;
use sluice_model::{FieldValue, Sym, TagSetId, WriteBatch};
use sluice_proto::otlp::{AggregationTemporality, KeyValue};

use super::cache::{Cache, HashMap, new_context, point_tags, tags_bytes};
use super::labels::float_label;
use super::options::Options;
use super::points::{AttributeSpan, read_histogram_point, read_summary_point};
use crate::bytes_map::BytesMap;
use crate::otlp::names::{MetricKind, metric_name};
use crate::protowire::{Reader, WireError, WireType, invalid, len, string};

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// What a request maps to.
#[derive(Debug, Default)]
pub struct Mapped {
    pub batch: WriteBatch,
    /// Data points not stored, with the reasons (each reason once, with its count).
    pub rejected_points: u64,
    pub reasons: Vec<(String, u64)>,
    /// Data points flagged as having no recorded value, skipped.
    pub no_recorded_value: u64,
}

impl Mapped {
    fn reject(&mut self, points: usize, reason: String) {
        if points == 0 {
            return;
        }
        self.rejected_points += points as u64;
        match self.reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += points as u64,
            None => self.reasons.push((reason, points as u64)),
        }
    }

    /// The `partial_success.error_message` for what was rejected, empty when nothing was.
    pub fn error_message(&self) -> String {
        self.reasons
            .iter()
            .map(|(r, n)| format!("{n} data point(s): {r}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why a body is not an export request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MapError(pub String);

/// A failure to read the request, with where it happened.
#[derive(Debug, thiserror::Error)]
#[error("in a {what} starting at byte {at} of the body: {source}")]
pub(super) struct ReadError {
    what: &'static str,
    at: usize,
    source: WireError,
}

pub(super) type R<T> = Result<T, ReadError>;

/// Makes errors in message `what`, which starts at byte `at` of the body.
fn at(what: &'static str, at: usize) -> impl Fn(WireError) -> ReadError {
    move |source| ReadError { what, at, source }
}

/// A data point's tags: a set resolved earlier in this scope, or the ones in `Mapper::syms`.
#[derive(Debug, Clone, Copy)]
enum TagSet {
    Cached(u32),
    Loaded,
}

/// A distinct attribute set of the current scope, resolved.
struct ResolvedSet {
    /// Its tags: a range of `Mapper::set_syms`.
    syms: (u32, u32),
    /// Its tag range in the batch, once a row without extra tags used it.
    range: Option<(u32, u32)>,
    /// Its id across requests (see [`TagSetId`]).
    id: TagSetId,
}

/// Which of `Metric`'s `data` members a metric has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

pub(super) struct Mapper<'b, 'o> {
    body: &'b [u8],
    options: &'o Options,
    cache: &'o mut Cache,
    /// The context (in `cache.contexts`) of the scope being mapped.
    context: u32,
    out: Mapped,
    value: Sym,
    /// Scratch: the same, interned (empty values left out), for all the point's rows.
    syms: Vec<(Sym, Sym)>,
    /// By position in `Cache::strings`, its symbol in this request's batch (`u32::MAX` until
    /// the request uses it).
    batch_syms: Vec<u32>,
    /// Scratch: the tags of one row (`syms` and its `le` or `quantile`).
    key: Vec<(Sym, Sym)>,
    /// The tag range of each distinct tag set so far: the metrics of one resource share
    /// attribute sets, and storage checks and resolves each tag range of a batch once.
    ranges: HashMap<Vec<(Sym, Sym)>, (u32, u32)>,
    /// The attribute sets of the current scope, by their bytes: an index into `sets`.
    seen: BytesMap<'b, u32>,
    /// The attribute bytes of the last data point and their index in `sets`: the points of
    /// a series often follow one another, and comparing costs less than hashing.
    last_set: Option<(&'b [u8], u32)>,
    sets: Vec<ResolvedSet>,
    set_syms: Vec<(Sym, Sym)>,
    /// Table names of (metric name, unit, kind) in this request.
    tables: HashMap<(&'b str, &'b str, MetricKind), Sym>,
    /// By a metric's position in its scope, the table of the metric last seen there: every
    /// resource of an SDK or Collector lists the same metrics in the same order.
    table_at: Vec<Option<(&'b str, &'b str, MetricKind, Sym)>>,
    /// The position in its scope of the metric being mapped.
    metric_position: usize,
    /// Scratch, one per level, so that walking the request allocates once.
    resource_bufs: Vec<&'b [u8]>,
    scope_bufs: Vec<&'b [u8]>,
    scope_parts: Vec<&'b [u8]>,
    context_key: Vec<u8>,
    metric_bufs: Vec<&'b [u8]>,
    data_bufs: Vec<&'b [u8]>,
    counts: Vec<u64>,
    bounds: Vec<f64>,
    quantiles: Vec<(f64, f64)>,
}

impl<'b, 'o> Mapper<'b, 'o> {
    pub(super) fn new(body: &'b [u8], options: &'o Options, cache: &'o mut Cache) -> Self {
        let mut out = Mapped::default();
        // a number point with a few attributes takes 60-120 bytes: room for most requests'
        // points without growing, and never more than about the body's size in memory
        out.batch.reserve(body.len() / 64);
        let value = out.batch.symbols.intern("value");
        Mapper {
            body,
            options,
            cache,
            context: 0,
            out,
            value,
            syms: Vec::new(),
            batch_syms: Vec::new(),
            key: Vec::new(),
            ranges: HashMap::default(),
            seen: BytesMap::default(),
            last_set: None,
            sets: Vec::new(),
            set_syms: Vec::new(),
            tables: HashMap::default(),
            table_at: Vec::new(),
            metric_position: 0,
            resource_bufs: Vec::new(),
            scope_bufs: Vec::new(),
            scope_parts: Vec::new(),
            context_key: Vec::new(),
            metric_bufs: Vec::new(),
            data_bufs: Vec::new(),
            counts: Vec::new(),
            bounds: Vec::new(),
            quantiles: Vec::new(),
        }
    }

    /// Where `buf`, a slice of the body, starts in it.
    fn offset(&self, buf: &[u8]) -> usize {
        buf.as_ptr() as usize - self.body.as_ptr() as usize
    }

    /// What the walk made of the request.
    pub(super) fn into_mapped(self) -> Mapped {
        self.out
    }

    pub(super) fn request(&mut self) -> R<()> {
        let (mut r, err) = (Reader::new(self.body), at("ExportMetricsServiceRequest", 0));
        let mut line = 0u32;
        while let Some((field, wire)) = r.key().map_err(&err)? {
            if field == 1 {
                let rm = len(&mut r, wire).map_err(&err)?;
                line += 1;
                self.resource_metrics(rm, line)?;
            } else {
                r.skip(wire).map_err(&err)?;
            }
        }
        Ok(())
    }

    /// One `ResourceMetrics`; `line` counts them from 1 (the "line" of its rows' errors).
    fn resource_metrics(&mut self, buf: &'b [u8], line: u32) -> R<()> {
        let (mut r, err) = (Reader::new(buf), at("ResourceMetrics", self.offset(buf)));
        let mut resources = std::mem::take(&mut self.resource_bufs);
        let mut scopes = std::mem::take(&mut self.scope_bufs);
        resources.clear();
        scopes.clear();
        while let Some((field, wire)) = r.key().map_err(&err)? {
            match field {
                1 => resources.push(len(&mut r, wire).map_err(&err)?),
                2 => scopes.push(len(&mut r, wire).map_err(&err)?),
                _ => r.skip(wire).map_err(&err)?,
            }
        }
        // (on an error the scratch vectors are dropped with the mapper)
        let mut newest = None;
        let mut context = None;
        for &sm in &scopes {
            let (t, c) = self.scope_metrics(sm, &resources, line)?;
            newest = newest.max(t);
            context = Some(c);
        }
        self.resource_bufs = resources;
        self.scope_bufs = scopes;
        let (Some(time), Some(context)) = (newest, context) else {
            return Ok(());
        };
        if !self.cache.contexts[context as usize]
            .resource
            .info
            .is_empty()
        {
            self.load_ids(|cache| &cache.contexts[context as usize].info.0);
            let table = self.intern("target_info");
            let range = self.tag_range(None);
            let id = self.cache.contexts[context as usize].info.1;
            self.out.batch.set_tag_set_id(range, id);
            self.push_row(table, range, 1.0, time, line);
        }
        Ok(())
    }

    /// One `ScopeMetrics` of the resource in `resources` (the bytes of each occurrence of the
    /// field, nearly always one); returns the newest time stored and the scope's context.
    fn scope_metrics(
        &mut self,
        buf: &'b [u8],
        resources: &[&'b [u8]],
        line: u32,
    ) -> R<(Option<i64>, u32)> {
        let (mut r, err) = (Reader::new(buf), at("ScopeMetrics", self.offset(buf)));
        let mut metrics = std::mem::take(&mut self.metric_bufs);
        metrics.clear();
        let mut key = std::mem::take(&mut self.context_key);
        key.clear();
        for b in resources {
            key.extend_from_slice(&(b.len() as u32).to_le_bytes());
            key.extend_from_slice(b);
        }
        key.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut scopes = std::mem::take(&mut self.scope_parts);
        scopes.clear();
        while let Some((field, wire)) = r.key().map_err(&err)? {
            match field {
                1 => {
                    let b = len(&mut r, wire).map_err(&err)?;
                    key.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    key.extend_from_slice(b);
                    scopes.push(b);
                }
                2 => metrics.push(len(&mut r, wire).map_err(&err)?),
                _ => r.skip(wire).map_err(&err)?,
            }
        }
        self.context = match self.cache.index.get(&key[..]) {
            Some(&c) => c,
            None => {
                let mut context = new_context(resources, &scopes, self.options)
                    .map_err(at("ScopeMetrics", self.offset(buf)))?;
                let resource = &context.resource;
                let info: Vec<(String, String)> = resource
                    .identity
                    .iter()
                    .chain(&resource.info)
                    .filter(|(_, v)| !v.is_empty())
                    .cloned()
                    .collect();
                context.info = (self.cache.tag_ids(&info), TagSetId::next());
                let c = self.cache.contexts.len() as u32;
                self.cache.bytes += key.len() + tags_bytes(&context.scope) * 2;
                self.cache.contexts.push(context);
                self.cache.index.insert(key[..].into(), c);
                c
            }
        };
        self.context_key = key;
        self.scope_parts = scopes;
        // attribute sets are resolved per scope: the same bytes here mean the same tags
        self.seen.clear();
        self.last_set = None;
        self.sets.clear();
        self.set_syms.clear();
        let mut newest = None;
        for (position, &m) in metrics.iter().enumerate() {
            self.metric_position = position;
            newest = newest.max(self.metric(m, line)?);
        }
        self.metric_bufs = metrics;
        Ok((newest, self.context))
    }

    /// One `Metric`; returns the newest time stored.
    fn metric(&mut self, buf: &'b [u8], line: u32) -> R<Option<i64>> {
        let (mut r, err) = (Reader::new(buf), at("Metric", self.offset(buf)));
        let (mut name, mut unit): (&'b str, &'b str) = ("", "");
        let mut kind = None;
        let mut data = std::mem::take(&mut self.data_bufs);
        data.clear();
        while let Some((field, wire)) = r.key().map_err(&err)? {
            let k = match field {
                1 => {
                    name = string(&mut r, wire).map_err(&err)?;
                    continue;
                }
                3 => {
                    unit = string(&mut r, wire).map_err(&err)?;
                    continue;
                }
                5 => Kind::Gauge,
                7 => Kind::Sum,
                9 => Kind::Histogram,
                10 => Kind::ExponentialHistogram,
                11 => Kind::Summary,
                _ => {
                    r.skip(wire).map_err(&err)?;
                    continue;
                }
            };
            // `oneof data`: a later member replaces an earlier one; the same one merges
            if kind != Some(k) {
                data.clear();
                kind = Some(k);
            }
            data.push(len(&mut r, wire).map_err(&err)?);
        }
        let newest = match kind {
            Some(kind) => self.metric_data(name, unit, kind, &data, line)?,
            None => None,
        };
        self.data_bufs = data;
        Ok(newest)
    }

    fn metric_data(
        &mut self,
        name: &'b str,
        unit: &'b str,
        kind: Kind,
        data: &[&'b [u8]],
        line: u32,
    ) -> R<Option<i64>> {
        // temporality (field 2) and monotonicity (field 3) come after the points (field 1) in
        // the usual field order, so they are read first
        let (mut temporality, mut monotonic, mut points) = (0, false, 0usize);
        // (gauges and summaries have neither: their data is read once, below)
        let settings = !matches!(kind, Kind::Gauge | Kind::Summary);
        for &d in data.iter().filter(|_| settings) {
            let (mut r, err) = (Reader::new(d), at("metric data", self.offset(d)));
            while let Some((field, wire)) = r.key().map_err(&err)? {
                match (field, wire) {
                    (1, _) => {
                        points += 1;
                        r.skip(wire).map_err(&err)?;
                    }
                    (2, WireType::Varint) => temporality = r.varint().map_err(&err)? as i32,
                    (3, WireType::Varint) if kind == Kind::Sum => {
                        monotonic = r.varint().map_err(&err)? != 0;
                    }
                    _ => r.skip(wire).map_err(&err)?,
                }
            }
        }
        let not_cumulative = |t: i32| {
            format!(
                "metric '{name}' has {} temporality; Prometheus series are cumulative: configure \
                 the exporter for cumulative temporality \
                 (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative)",
                if t == AggregationTemporality::Delta as i32 {
                    "delta"
                } else {
                    "unspecified"
                }
            )
        };
        let cumulative = temporality == AggregationTemporality::Cumulative as i32;
        match kind {
            Kind::Gauge => {
                let table = self.table(name, unit, MetricKind::Gauge);
                self.numbers(name, table, data, line)
            }
            Kind::Sum if !cumulative => {
                self.out.reject(points, not_cumulative(temporality));
                Ok(None)
            }
            Kind::Sum => {
                let kind = if monotonic {
                    MetricKind::Counter
                } else {
                    MetricKind::UpDownSum
                };
                let table = self.table(name, unit, kind);
                self.numbers(name, table, data, line)
            }
            Kind::Histogram if !cumulative => {
                self.out.reject(points, not_cumulative(temporality));
                Ok(None)
            }
            Kind::Histogram => self.histogram(name, unit, data, line),
            Kind::ExponentialHistogram => {
                self.out.reject(
                    points,
                    format!(
                        "metric '{name}' is an exponential histogram, which Sluice does not store \
                         yet (it would be a Prometheus native histogram); configure the SDK's \
                         view for explicit buckets"
                    ),
                );
                Ok(None)
            }
            Kind::Summary => self.summary(name, unit, data, line),
        }
    }

    /// The table of metric `name`, in `unit`, of `kind`.
    fn table(&mut self, name: &'b str, unit: &'b str, kind: MetricKind) -> Sym {
        let position = self.metric_position;
        if let Some(Some((n, u, k, t))) = self.table_at.get(position)
            && *k == kind
            && same_short(n.as_bytes(), name.as_bytes())
            && same_short(u.as_bytes(), unit.as_bytes())
        {
            return *t;
        }
        let t = match self.tables.get(&(name, unit, kind)) {
            Some(&t) => t,
            None => {
                let t = self
                    .out
                    .batch
                    .symbols
                    .intern(&metric_name(name, unit, kind));
                self.tables.insert((name, unit, kind), t);
                t
            }
        };
        if self.table_at.len() <= position {
            self.table_at.resize(position + 1, None);
        }
        self.table_at[position] = Some((name, unit, kind, t));
        t
    }

    /// The points of gauge or sum `metric`, stored as table `table`; returns the newest time
    /// stored.
    fn numbers(
        &mut self,
        metric: &str,
        table: Sym,
        data: &[&'b [u8]],
        line: u32,
    ) -> R<Option<i64>> {
        let mut newest = None;
        for &d in data {
            let (mut r, err) = (Reader::new(d), at("metric data", self.offset(d)));
            while let Some((field, wire)) = r.key().map_err(&err)? {
                if field != 1 {
                    r.skip(wire).map_err(&err)?;
                    continue;
                }
                let p = len(&mut r, wire).map_err(&err)?;
                if let Some(t) = self.number_point(metric, table, p, line)? {
                    newest = newest.max(Some(t));
                }
            }
        }
        Ok(newest)
    }

    /// One `NumberDataPoint`; returns its time if it was stored.
    fn number_point(
        &mut self,
        metric: &str,
        table: Sym,
        buf: &'b [u8],
        line: u32,
    ) -> R<Option<i64>> {
        let (mut r, err) = (Reader::new(buf), at("NumberDataPoint", self.offset(buf)));
        let (mut time, mut flags, mut value) = (0u64, 0u32, None);
        let mut attributes = AttributeSpan::new();
        loop {
            let start = r.pos;
            // The usual fields by their one-byte keys first: this loop runs for every value.
            match buf.get(start..) {
                Some([key @ (0x11 | 0x19 | 0x21 | 0x31), v @ ..]) if v.len() >= 8 => {
                    let v = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                    match key {
                        0x19 => time = v,
                        0x21 => value = Some(f64::from_bits(v)),
                        0x31 => value = Some(v as i64 as f64),
                        _ => {} // start_time_unix_nano
                    }
                    r.pos += 9;
                    continue;
                }
                Some([0x3a, len, rest @ ..]) if *len < 0x80 && rest.len() >= usize::from(*len) => {
                    r.pos += 2 + usize::from(*len);
                    attributes.field(true, start, r.pos);
                    continue;
                }
                _ => {}
            }
            let Some((field, wire)) = r.key().map_err(&err)? else {
                break;
            };
            match (field, wire) {
                (3, WireType::Fixed64) => time = r.fixed64().map_err(&err)?,
                (4, WireType::Fixed64) => value = Some(f64::from_bits(r.fixed64().map_err(&err)?)),
                (6, WireType::Fixed64) => value = Some(r.fixed64().map_err(&err)? as i64 as f64),
                (8, WireType::Varint) => flags = r.varint().map_err(&err)? as u32,
                _ => r.skip(wire).map_err(&err)?,
            }
            attributes.field(field == 7, start, r.pos);
        }
        let Some(time) = self.time(metric, time, flags) else {
            return Ok(None);
        };
        let Some(value) = value else {
            self.out.reject(
                1,
                format!("a data point of '{metric}' has neither as_double nor as_int"),
            );
            return Ok(None);
        };
        let set = self.tag_set(buf, 7, attributes)?;
        let range = self.plain_range(set);
        self.push_row(table, range, value, time, line);
        Ok(Some(time))
    }

    /// The points of an explicit-bucket histogram; returns the newest time stored.
    fn histogram(
        &mut self,
        name: &str,
        unit: &str,
        data: &[&'b [u8]],
        line: u32,
    ) -> R<Option<i64>> {
        let base = metric_name(name, unit, MetricKind::Histogram);
        let bucket = self.intern(&format!("{base}_bucket"));
        let sum_table = self.intern(&format!("{base}_sum"));
        let count_table = self.intern(&format!("{base}_count"));
        let mut newest = None;
        let mut counts = std::mem::take(&mut self.counts);
        let mut bounds = std::mem::take(&mut self.bounds);
        for &d in data {
            let (mut r, err) = (Reader::new(d), at("Histogram", self.offset(d)));
            while let Some((field, wire)) = r.key().map_err(&err)? {
                if field != 1 {
                    r.skip(wire).map_err(&err)?;
                    continue;
                }
                let p = len(&mut r, wire).map_err(&err)?;
                counts.clear();
                bounds.clear();
                let point = read_histogram_point(p, &mut counts, &mut bounds)
                    .map_err(at("HistogramDataPoint", self.offset(p)))?;
                let Some(time) = self.time(name, point.time, point.flags) else {
                    continue;
                };
                if !counts.is_empty() && counts.len() != bounds.len() + 1 {
                    self.out.reject(
                        1,
                        format!(
                            "histogram '{name}' has {} bucket counts for {} bounds (it needs \
                             one more count than bounds)",
                            counts.len(),
                            bounds.len()
                        ),
                    );
                    continue;
                }
                let set = self.tag_set(p, 9, point.attributes)?;
                self.load(set);
                let mut cumulative_count = 0u64;
                for (i, n) in counts.iter().enumerate() {
                    cumulative_count = cumulative_count.saturating_add(*n);
                    let le = match bounds.get(i) {
                        Some(b) => float_label(*b),
                        None => "+Inf".to_string(),
                    };
                    let range = self.tag_range(Some(("le", le.as_str())));
                    self.push_row(bucket, range, cumulative_count as f64, time, line);
                }
                if counts.is_empty() {
                    // no buckets: the +Inf bucket is the count
                    let range = self.tag_range(Some(("le", "+Inf")));
                    self.push_row(bucket, range, point.count as f64, time, line);
                }
                let range = self.plain_range(set);
                if let Some(s) = point.sum {
                    self.push_row(sum_table, range, s, time, line);
                }
                self.push_row(count_table, range, point.count as f64, time, line);
                newest = newest.max(Some(time));
            }
        }
        self.counts = counts;
        self.bounds = bounds;
        Ok(newest)
    }

    /// The points of a summary; returns the newest time stored.
    fn summary(&mut self, name: &str, unit: &str, data: &[&'b [u8]], line: u32) -> R<Option<i64>> {
        let base = metric_name(name, unit, MetricKind::Summary);
        let sum_table = self.intern(&format!("{base}_sum"));
        let count_table = self.intern(&format!("{base}_count"));
        let table = self.intern(&base);
        let mut newest = None;
        let mut quantiles = std::mem::take(&mut self.quantiles);
        for &d in data {
            let (mut r, err) = (Reader::new(d), at("Summary", self.offset(d)));
            while let Some((field, wire)) = r.key().map_err(&err)? {
                if field != 1 {
                    r.skip(wire).map_err(&err)?;
                    continue;
                }
                let p = len(&mut r, wire).map_err(&err)?;
                quantiles.clear();
                let point = read_summary_point(p, &mut quantiles)
                    .map_err(at("SummaryDataPoint", self.offset(p)))?;
                let Some(time) = self.time(name, point.time, point.flags) else {
                    continue;
                };
                let set = self.tag_set(p, 7, point.attributes)?;
                self.load(set);
                for &(q, v) in &quantiles {
                    let quantile = float_label(q);
                    let range = self.tag_range(Some(("quantile", quantile.as_str())));
                    self.push_row(table, range, v, time, line);
                }
                let range = self.plain_range(set);
                self.push_row(sum_table, range, point.sum.unwrap_or(0.0), time, line);
                self.push_row(count_table, range, point.count as f64, time, line);
                newest = newest.max(Some(time));
            }
        }
        self.quantiles = quantiles;
        Ok(newest)
    }

    /// The time of a point to store, or `None` (counted) for one not to.
    fn time(&mut self, metric: &str, time_unix_nano: u64, flags: u32) -> Option<i64> {
        if flags & NO_RECORDED_VALUE != 0 {
            self.out.no_recorded_value += 1;
            return None;
        }
        match i64::try_from(time_unix_nano) {
            Ok(t) if t > 0 => Some(t),
            _ => {
                self.out.reject(
                    1,
                    format!("a data point of '{metric}' has no time (time_unix_nano)"),
                );
                None
            }
        }
    }

    /// The tags of the data point `point`, whose attributes are field `field` at `span`: the
    /// set resolved for the same attribute bytes earlier in this scope, or now (from the
    /// cache, or decoded).
    fn tag_set(&mut self, point: &'b [u8], field: u64, span: AttributeSpan) -> R<TagSet> {
        if !span.contiguous {
            // the attributes are split by other fields: resolved without the caches
            let attributes = self.attributes(point, field)?;
            let scope = &self.cache.contexts[self.context as usize].scope;
            let tags = point_tags(scope, &attributes);
            intern_tags(&mut self.out.batch, &mut self.syms, &tags);
            return Ok(TagSet::Loaded);
        }
        let bytes = &point[span.start..span.end];
        if let Some((last, i)) = self.last_set
            && last == bytes
        {
            return Ok(TagSet::Cached(i));
        }
        let hash = self.seen.hash(bytes);
        if let Some(i) = self.seen.get(hash, bytes) {
            self.last_set = Some((bytes, i));
            return Ok(TagSet::Cached(i));
        }
        let context = self.context as usize;
        let id = match self.cache.contexts[context].sets.get(bytes) {
            Some(&(_, id)) => id,
            None => {
                let attributes = self.attributes(bytes, field)?;
                let tags = point_tags(&self.cache.contexts[context].scope, &attributes);
                self.cache.bytes += bytes.len();
                let tags = self.cache.tag_ids(&tags);
                let id = TagSetId::next();
                self.cache.contexts[context]
                    .sets
                    .insert(bytes.into(), (tags, id));
                id
            }
        };
        self.load_ids(|cache| &cache.contexts[context].sets[bytes].0);
        let start = self.set_syms.len() as u32;
        self.set_syms.extend_from_slice(&self.syms);
        let i = self.sets.len() as u32;
        self.sets.push(ResolvedSet {
            syms: (start, self.set_syms.len() as u32),
            range: None,
            id,
        });
        self.seen.insert(hash, bytes, i);
        self.last_set = Some((bytes, i));
        Ok(TagSet::Cached(i))
    }

    /// Puts the tags `ids` picks from the cache (positions in `Cache::strings`) in
    /// `self.syms`, interning each string in the batch the first time the request uses it.
    fn load_ids(&mut self, ids: impl FnOnce(&Cache) -> &[(u32, u32)]) {
        let Mapper {
            cache,
            out,
            syms,
            batch_syms,
            ..
        } = self;
        let ids = ids(cache);
        if batch_syms.len() < cache.strings.len() {
            batch_syms.resize(cache.strings.len(), u32::MAX);
        }
        let mut sym = |id: u32| {
            let slot = &mut batch_syms[id as usize];
            if *slot == u32::MAX {
                *slot = out.batch.symbols.intern(&cache.strings[id as usize]).0;
            }
            Sym(*slot)
        };
        syms.clear();
        syms.extend(ids.iter().map(|&(k, v)| (sym(k), sym(v))));
    }

    /// The attributes (field `field`) of the message in `buf`, decoded.
    fn attributes(&self, buf: &'b [u8], field: u64) -> R<Vec<KeyValue>> {
        let (mut r, err) = (Reader::new(buf), at("attributes", self.offset(buf)));
        let mut out = Vec::new();
        while let Some((f, wire)) = r.key().map_err(&err)? {
            if f == field {
                let b = len(&mut r, wire).map_err(&err)?;
                out.push(KeyValue::decode(b).map_err(|e| err(invalid(e)))?);
            } else {
                r.skip(wire).map_err(&err)?;
            }
        }
        Ok(out)
    }

    /// Puts the tags of `set` in `self.syms`.
    fn load(&mut self, set: TagSet) {
        if let TagSet::Cached(i) = set {
            let (start, end) = self.sets[i as usize].syms;
            self.syms.clear();
            self.syms
                .extend_from_slice(&self.set_syms[start as usize..end as usize]);
        }
    }

    /// The tag range of `set` with no extra tag.
    fn plain_range(&mut self, set: TagSet) -> (u32, u32) {
        match set {
            TagSet::Cached(i) => {
                if let Some(range) = self.sets[i as usize].range {
                    return range;
                }
                self.load(set);
                let range = self.tag_range(None);
                self.sets[i as usize].range = Some(range);
                let id = self.sets[i as usize].id;
                self.out.batch.set_tag_set_id(range, id);
                range
            }
            TagSet::Loaded => self.tag_range(None),
        }
    }

    fn intern(&mut self, s: &str) -> Sym {
        self.out.batch.symbols.intern(s)
    }

    /// The tag range of the tags in `self.syms` and `extra`, added to the batch the first
    /// time the request has them.
    fn tag_range(&mut self, extra: Option<(&str, &str)>) -> (u32, u32) {
        let batch = &mut self.out.batch;
        self.key.clear();
        self.key.extend_from_slice(&self.syms);
        if let Some((k, v)) = extra {
            self.key
                .push((batch.symbols.intern(k), batch.symbols.intern(v)));
        }
        match self.ranges.get(&self.key) {
            Some(&range) => range,
            None => {
                let start = batch.begin_tags();
                for &(k, v) in &self.key {
                    batch.push_tag(k, v);
                }
                let range = batch.end_tags(start);
                self.ranges.insert(self.key.clone(), range);
                range
            }
        }
    }

    /// Adds one row: table `table`, the tags `tags`, field `value`.
    fn push_row(&mut self, table: Sym, tags: (u32, u32), value: f64, time: i64, line: u32) {
        let batch = &mut self.out.batch;
        let fields = batch.begin_fields();
        batch.push_field(self.value, FieldValue::F64(value));
        batch.push_point(table, tags, fields, time, line);
    }
}

/// Interns `tags` in `batch` into `syms`.
fn intern_tags(batch: &mut WriteBatch, syms: &mut Vec<(Sym, Sym)>, tags: &[(String, String)]) {
    syms.clear();
    for (k, v) in tags {
        syms.push((batch.symbols.intern(k), batch.symbols.intern(v)));
    }
}

/// Whether `a` and `b` are equal, for the short strings of names and units: up to 16 bytes in
/// two word compares, without a call to `memcmp` (which costs more than the compare there).
#[inline]
pub(super) fn same_short(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8"));
    match n {
        0 => true,
        1..8 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}
