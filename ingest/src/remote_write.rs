//! Prometheus remote write 1.0 and 2.0 -> [`WriteBatch`].
//!
//! A series becomes points of table `__name__`, with its other labels as tags and one field
//! `value` (Float64) per sample, at the sample's millisecond time. The request is read in place:
//! label names and values are slices of the decompressed body, interned once per series into
//! the batch's symbols, and every sample of the series shares that series' tag range, so
//! decoding allocates per request and per distinct string, never per sample. A 1.0 series seen
//! in an earlier request comes from the caller's [`SeriesCache`] (its label bytes to its checked
//! labels) without being parsed or checked again.
//!
//! What is not stored is counted, never dropped silently: stale markers (the NaN Prometheus
//! writes when a series disappears; other NaNs are stored), native histograms and exemplars.
//! A series that breaks a rule (no `__name__`, a repeated or invalid label name, a limit) is
//! reported with its position and labels, and the request's other series are kept. Bytes that
//! are not a well-formed message refuse the whole request.
//!
//! The messages are those of `proto/prometheus/remote_write_v{1,2}.proto`; `sluice_proto` has
//! them as prost types, which the tests decode with independently.

use std::fmt::Write as _;

use crate::bytes_map::BytesMap;
use crate::protowire::{Reader, WireError, WireType};
use sluice_model::{FieldValue, MetricMetadata, MetricType, Sym, WriteBatch};

mod series_cache;
pub use series_cache::SeriesCache;

/// The bits of the NaN Prometheus writes as a stale marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The label that names the table.
pub const NAME_LABEL: &str = "__name__";

/// The `Content-Type` of a remote write 2.0 request.
pub const V2_CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// The field every sample is stored in.
pub const VALUE_FIELD: &str = "value";

/// Which message a request carries, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `prometheus.WriteRequest` (remote write 1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (remote write 2.0).
    V2,
}

impl Version {
    /// The version a `Content-Type` asks for: `application/x-protobuf` with no `proto`
    /// parameter (or none at all) is 1.0, as the 2.0 specification says. `None` for anything
    /// else.
    pub fn from_content_type(content_type: Option<&str>) -> Option<Version> {
        let Some(ct) = content_type else {
            return Some(Version::V1);
        };
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return None;
        }
        let mut version = Version::V1;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("proto") {
                version = match v.trim().trim_matches('"') {
                    "prometheus.WriteRequest" => Version::V1,
                    "io.prometheus.write.v2.Request" => Version::V2,
                    _ => return None,
                };
            }
        }
        Some(version)
    }
}

/// Limits on what one series may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Labels per series, `__name__` included.
    pub max_labels_per_series: usize,
    /// Bytes of a label name.
    pub max_label_name_bytes: usize,
    /// Bytes of a label value.
    pub max_label_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_labels_per_series: 64,
            max_label_name_bytes: 256,
            max_label_value_bytes: 4096,
        }
    }
}

/// A series that was not stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesError {
    /// 1-based position of the series in the request.
    pub series: u32,
    /// Its labels, as `{a="b", ...}`, for the error message.
    pub labels: String,
    pub message: String,
}

/// A decoded request.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The points to store: a point's `line` is its series' 1-based position.
    pub batch: WriteBatch,
    pub series: usize,
    /// Float samples in the request, stale markers included.
    pub samples: usize,
    /// Stale markers, not stored.
    pub stale_markers: usize,
    /// Native histogram samples, not stored.
    pub histograms: usize,
    /// Exemplars, not stored.
    pub exemplars: usize,
    /// Metadata: (metric family name, what the sender says of it), at most one per family
    /// (the last one sent).
    pub metadata: Vec<(String, MetricMetadata)>,
    pub errors: Vec<SeriesError>,
}

/// Why a request could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// Decompresses a snappy block-format body (what Prometheus sends, `Content-Encoding:
/// snappy`), refusing one that would be larger than `limit` bytes before allocating for it.
pub fn decompress_snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, RequestError> {
    let mut out = Vec::new();
    decompress_snappy_into(body, limit, &mut out)?;
    Ok(out)
}

/// [`decompress_snappy`] into `out` (replacing what it held), so that a caller can reuse one
/// buffer from request to request instead of having fresh pages zeroed for each.
pub fn decompress_snappy_into(
    body: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), RequestError> {
    let not_snappy = |e: snap::Error| {
        RequestError(format!(
            "the body is not snappy block format (Content-Encoding: snappy): {e}"
        ))
    };
    let len = snap::raw::decompress_len(body).map_err(not_snappy)?;
    if len > limit {
        return Err(RequestError(format!(
            "the decompressed body would be {len} bytes, more than the limit of {limit}; send \
             smaller requests (remote_write queue_config max_samples_per_send)"
        )));
    }
    out.clear();
    out.resize(len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(body, out)
        .map_err(not_snappy)?;
    out.truncate(n);
    Ok(())
}

/// Decodes a decompressed request body of `version`. `cache` holds the series of earlier
/// requests (1.0 only), and learns this one's: pass the same one from request to request, one
/// per concurrent decode.
pub fn decode(
    body: &[u8],
    version: Version,
    limits: &Limits,
    cache: &mut SeriesCache,
) -> Result<Decoded, RequestError> {
    cache.begin(limits);
    let mut d = Decoder {
        out: Decoded::default(),
        limits,
        value: Sym(0),
        labels: Vec::new(),
        refs: Vec::new(),
        pairs: BytesMap::default(),
        cache,
        bad_series: BytesMap::default(),
        symbol_syms: Vec::new(),
    };
    d.value = d.out.batch.symbols.intern(VALUE_FIELD);
    match version {
        Version::V1 => d.request_v1(body),
        Version::V2 => d.request_v2(body),
    }
    .map_err(|e| RequestError(format!("malformed {version:?} remote write request: {e}")))?;
    Ok(d.out)
}

struct Decoder<'l, 'b> {
    out: Decoded,
    limits: &'l Limits,
    value: Sym,
    /// The labels of the series being read, reused from series to series.
    labels: Vec<Label<'b>>,
    /// A 2.0 series' label references, reused likewise.
    refs: Vec<u64>,
    /// 1.0: every distinct label message of the request (its bytes), read and interned once:
    /// series repeat the same label pairs, so most labels are one hash and one compare.
    pairs: BytesMap<'b, Label<'b>>,
    /// 1.0: the series of this and earlier requests that passed the checks, by the bytes of
    /// their labels, with their table and tag range in this batch.
    cache: &'l mut SeriesCache,
    /// 1.0: the series of this request that broke a rule (reported at their first entry), by
    /// the bytes of their labels.
    bad_series: BytesMap<'b, ()>,
    /// 2.0: the symbol each entry of the request's symbols table interns to, once used.
    symbol_syms: Vec<Option<Sym>>,
}

/// A series' table and tag range in the batch; `None` for a series that broke a rule.
type SeriesTags = Option<(Sym, (u32, u32))>;

/// One label of a series, with its name and value interned in the batch.
#[derive(Debug, Clone, Copy)]
struct Label<'b> {
    name: &'b str,
    value: &'b str,
    key: Sym,
    val: Sym,
}

impl<'b> Decoder<'_, 'b> {
    fn request_v1(&mut self, body: &'b [u8]) -> Result<(), WireError> {
        let mut r = Reader::new(body);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, WireType::Len) => {
                    let series = r.bytes()?;
                    self.series_v1(series)?;
                }
                (3, WireType::Len) => {
                    let m = r.bytes()?;
                    self.metadata_v1(m)?;
                }
                _ => r.skip(wire)?,
            }
        }
        Ok(())
    }

    fn series_v1(&mut self, buf: &'b [u8]) -> Result<(), WireError> {
        self.out.series += 1;
        let series = self.out.series as u32;
        // Senders write a series' labels first; those bytes then name the series, and a
        // series seen earlier in the request reuses its table and tags (storage resolves a
        // tag range once per batch).
        let mut prefix_end = 0;
        let mut labels_after_prefix = false;
        let mut other_seen = false;
        let mut first_sample = None;
        let mut r = Reader::new(buf);
        loop {
            let at = r.pos;
            let Some((field, wire)) = r.key()? else {
                break;
            };
            match (field, wire) {
                (2, WireType::Len) => {
                    first_sample.get_or_insert(at);
                    r.bytes()?;
                    other_seen = true;
                }
                (1, WireType::Len) => {
                    r.bytes()?;
                    if other_seen {
                        labels_after_prefix = true;
                    } else {
                        prefix_end = r.pos;
                    }
                }
                (3, WireType::Len) => {
                    r.bytes()?;
                    self.out.exemplars += 1;
                    other_seen = true;
                }
                (4, WireType::Len) => {
                    r.bytes()?;
                    self.out.histograms += 1;
                    other_seen = true;
                }
                _ => {
                    r.skip(wire)?;
                    other_seen = true;
                }
            }
        }
        let key = (!labels_after_prefix && prefix_end > 0).then(|| {
            let k = &buf[..prefix_end];
            (self.cache.hash(k), k)
        });
        if let Some((h, k)) = key {
            if let Some(tags) = self.cache.find(h, k, &mut self.out.batch) {
                return self.samples(buf, first_sample, Some(tags), series);
            }
            if self.bad_series.get(self.bad_series.hash(k), k).is_some() {
                return self.samples(buf, first_sample, None, series);
            }
        }
        self.labels.clear();
        let mut r = Reader::new(buf);
        while let Some((field, wire)) = r.key()? {
            if (field, wire) == (1, WireType::Len) {
                let label = self.label_v1(r.bytes()?)?;
                self.labels.push(label);
            } else {
                r.skip(wire)?;
            }
        }
        let tags = self.series_tags(series);
        if let Some((h, k)) = key {
            match tags {
                Some(resolved) => {
                    let labels = self.labels.iter().map(|l| (l.name, l.value, l.key, l.val));
                    self.cache.insert(h, k, labels, resolved);
                }
                None => self.bad_series.insert(self.bad_series.hash(k), k, ()),
            }
        }
        self.samples(buf, first_sample, tags, series)
    }

    /// The label in the Label message `raw`, from the request's pairs if seen before.
    fn label_v1(&mut self, raw: &'b [u8]) -> Result<Label<'b>, WireError> {
        let hash = self.pairs.hash(raw);
        if let Some(label) = self.pairs.get(hash, raw) {
            return Ok(label);
        }
        let mut l = Reader::new(raw);
        let (mut name, mut value) = ("", "");
        while let Some((f, w)) = l.key()? {
            match (f, w) {
                (1, WireType::Len) => name = l.str()?,
                (2, WireType::Len) => value = l.str()?,
                _ => l.skip(w)?,
            }
        }
        let symbols = &mut self.out.batch.symbols;
        let label = Label {
            name,
            value,
            key: symbols.intern(name),
            val: symbols.intern(value),
        };
        self.pairs.insert(hash, raw, label);
        Ok(label)
    }

    fn metadata_v1(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut r = Reader::new(buf);
        let (mut kind, mut name, mut help, mut unit) = (0, "", "", "");
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, WireType::Varint) => kind = r.varint()?,
                (2, WireType::Len) => name = r.str()?,
                (4, WireType::Len) => help = r.str()?,
                (5, WireType::Len) => unit = r.str()?,
                _ => r.skip(wire)?,
            }
        }
        if !name.is_empty() {
            self.add_metadata(name, kind, help, unit);
        }
        Ok(())
    }

    fn request_v2(&mut self, body: &'b [u8]) -> Result<(), WireError> {
        // the symbols first, wherever they are in the message
        let mut symbols: Vec<&'b str> = Vec::new();
        let mut r = Reader::new(body);
        while let Some((field, wire)) = r.key()? {
            if (field, wire) == (4, WireType::Len) {
                symbols.push(r.str()?);
            } else {
                r.skip(wire)?;
            }
        }
        let mut r = Reader::new(body);
        while let Some((field, wire)) = r.key()? {
            if (field, wire) == (5, WireType::Len) {
                let series = r.bytes()?;
                self.series_v2(series, &symbols)?;
            } else {
                r.skip(wire)?;
            }
        }
        Ok(())
    }

    fn series_v2(&mut self, buf: &'b [u8], symbols: &[&'b str]) -> Result<(), WireError> {
        self.out.series += 1;
        let series = self.out.series as u32;
        let symbol = |i: u64| -> Result<&'b str, WireError> {
            usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i).copied())
                .ok_or_else(|| {
                    WireError::Invalid(format!(
                        "symbol reference {i} is past the end of the {} symbols",
                        symbols.len()
                    ))
                })
        };
        self.labels.clear();
        let mut refs = std::mem::take(&mut self.refs);
        refs.clear();
        let mut metadata = None;
        let mut first_sample = None;
        let mut r = Reader::new(buf);
        loop {
            let at = r.pos;
            let Some((field, wire)) = r.key()? else {
                break;
            };
            match (field, wire) {
                (2, WireType::Len) => {
                    first_sample.get_or_insert(at);
                    r.bytes()?;
                }
                (1, WireType::Len) => {
                    let mut packed = Reader::new(r.bytes()?);
                    while !packed.done() {
                        refs.push(packed.varint()?);
                    }
                }
                (1, WireType::Varint) => refs.push(r.varint()?),
                (3, WireType::Len) => {
                    r.bytes()?;
                    self.out.histograms += 1;
                }
                (4, WireType::Len) => {
                    r.bytes()?;
                    self.out.exemplars += 1;
                }
                (5, WireType::Len) => {
                    let mut m = Reader::new(r.bytes()?);
                    let (mut kind, mut help, mut unit) = (0, 0, 0);
                    while let Some((f, w)) = m.key()? {
                        match (f, w) {
                            (1, WireType::Varint) => kind = m.varint()?,
                            (3, WireType::Varint) => help = m.varint()?,
                            (4, WireType::Varint) => unit = m.varint()?,
                            _ => m.skip(w)?,
                        }
                    }
                    metadata = Some((kind, symbol(help)?, symbol(unit)?));
                }
                _ => r.skip(wire)?,
            }
        }
        if !refs.len().is_multiple_of(2) {
            return Err(WireError::Invalid(format!(
                "series {series} has an odd number of label references"
            )));
        }
        self.symbol_syms.resize(symbols.len(), None);
        for pair in refs.chunks_exact(2) {
            let (name, value) = (symbol(pair[0])?, symbol(pair[1])?);
            let mut sym = |i: u64, s: &str| {
                let slot = &mut self.symbol_syms[i as usize];
                *slot.get_or_insert_with(|| self.out.batch.symbols.intern(s))
            };
            let (key, val) = (sym(pair[0], name), sym(pair[1], value));
            self.labels.push(Label {
                name,
                value,
                key,
                val,
            });
        }
        self.refs = refs;
        if let Some((kind, help, unit)) = metadata
            && (kind != 0 || !help.is_empty() || !unit.is_empty())
            && let Some(name) = self
                .labels
                .iter()
                .find(|l| l.name == NAME_LABEL)
                .map(|l| l.value)
        {
            self.add_metadata(name, kind, help, unit);
        }
        let tags = self.series_tags(series);
        self.samples(buf, first_sample, tags, series)
    }

    /// Adds the samples (field 2, in 1.0 and 2.0 alike) of series number `series`, whose
    /// labels were read and checked first: a second pass, since a sender may put samples
    /// before labels, starting at the first sample's field (`first_sample`, found by the
    /// first pass).
    fn samples(
        &mut self,
        buf: &[u8],
        first_sample: Option<usize>,
        tags: SeriesTags,
        series: u32,
    ) -> Result<(), WireError> {
        let Some(first) = first_sample else {
            return Ok(());
        };
        let mut r = Reader::new(&buf[first..]);
        while let Some((field, wire)) = r.key()? {
            if (field, wire) == (2, WireType::Len) {
                let sample = sample(r.bytes()?)?;
                self.push_sample(tags, sample, series);
            } else {
                r.skip(wire)?;
            }
        }
        Ok(())
    }

    /// Checks the labels of the series just read and interns them as its table and tags;
    /// `None` (with the error recorded) when the series breaks a rule.
    fn series_tags(&mut self, series: u32) -> SeriesTags {
        if let Err(message) = self.check_labels() {
            let mut labels = String::from("{");
            for (i, l) in self.labels.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(labels, "{sep}{}={:?}", l.name, l.value);
            }
            labels.push('}');
            self.out.errors.push(SeriesError {
                series,
                labels,
                message,
            });
            return None;
        }
        let batch = &mut self.out.batch;
        let mut table = None;
        let start = batch.begin_tags();
        for l in &self.labels {
            if l.name == NAME_LABEL {
                table = Some(l.val);
            } else if !l.value.is_empty() {
                // an empty value is the label's absence, in Prometheus
                batch.push_tag(l.key, l.val);
            }
        }
        Some((table?, batch.end_tags(start)))
    }

    fn check_labels(&self) -> Result<(), String> {
        let limits = self.limits;
        if self.labels.len() > limits.max_labels_per_series {
            return Err(format!(
                "{} labels, more than the limit of {} per series \
                 (--max-labels-per-series)",
                self.labels.len(),
                limits.max_labels_per_series
            ));
        }
        let mut name = None;
        for (
            i,
            &Label {
                name: n, value: v, ..
            },
        ) in self.labels.iter().enumerate()
        {
            if n == NAME_LABEL {
                name = Some(v);
            }
            if n.is_empty() {
                return Err("a label has an empty name".to_string());
            }
            if n.len() > limits.max_label_name_bytes {
                return Err(format!(
                    "label name {n:?} is {} bytes, more than the limit of {} \
                     (--max-label-name-bytes)",
                    n.len(),
                    limits.max_label_name_bytes
                ));
            }
            if v.len() > limits.max_label_value_bytes {
                return Err(format!(
                    "the value of label {n:?} is {} bytes, more than the limit of {} \
                     (--max-label-value-bytes)",
                    v.len(),
                    limits.max_label_value_bytes
                ));
            }
            if n != NAME_LABEL && n.starts_with("__") {
                // reserved for Prometheus' own use; its relabelling removes such labels
                // before remote write, so one that arrives is a sender's mistake
                return Err(format!(
                    "label name {n:?} starts with \"__\", which Prometheus reserves"
                ));
            }
            if n == VALUE_FIELD || n == "time" {
                return Err(format!(
                    "label name {n:?} is a column Sluice uses for the sample; rename the \
                     label (relabel_configs)"
                ));
            }
            if self.labels[..i].iter().any(|m| m.key == self.labels[i].key) {
                return Err(format!("label {n:?} appears more than once"));
            }
        }
        match name {
            None => Err(format!("the series has no {NAME_LABEL} label")),
            Some("") => Err(format!("the series' {NAME_LABEL} label is empty")),
            Some(_) => Ok(()),
        }
    }

    fn push_sample(&mut self, tags: SeriesTags, (value, ms): (f64, i64), line: u32) {
        self.out.samples += 1;
        if value.to_bits() == STALE_NAN_BITS {
            self.out.stale_markers += 1;
            return;
        }
        let Some((table, tags)) = tags else {
            return;
        };
        let Some(time) = ms.checked_mul(1_000_000) else {
            self.out.errors.push(SeriesError {
                series: line,
                labels: self.out.batch.str(table).to_string(),
                message: format!("timestamp {ms} ms is outside the range Sluice stores"),
            });
            return;
        };
        let batch = &mut self.out.batch;
        let fields = batch.begin_fields();
        batch.push_field(self.value, FieldValue::F64(value));
        batch.push_point(table, tags, fields, time, line);
    }

    fn add_metadata(&mut self, family: &str, kind: u64, help: &str, unit: &str) {
        let m = MetricMetadata {
            metric_type: MetricType::from_number(kind),
            help: help.to_string(),
            unit: unit.to_string(),
        };
        match self.out.metadata.iter_mut().find(|(f, _)| f == family) {
            Some((_, x)) => *x = m,
            None => self.out.metadata.push((family.to_string(), m)),
        }
    }
}

fn sample(buf: &[u8]) -> Result<(f64, i64), WireError> {
    let mut r = Reader::new(buf);
    let (mut value, mut ms) = (0.0, 0);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WireType::Fixed64) => value = f64::from_bits(r.fixed64()?),
            (2, WireType::Varint) => ms = r.varint()? as i64,
            _ => r.skip(wire)?,
        }
    }
    Ok((value, ms))
}

#[cfg(test)]
mod tests;
