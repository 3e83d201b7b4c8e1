//! The decoder both versions share: the request's batch and counts, the labels of the series
//! being read, the label checks, and the samples.

use std::fmt::Write as _;

use sluice_model::staleness::stale_table;
use sluice_model::{FieldValue, MetricMetadata, MetricType, Sym};

use super::request::{Decoded, Limits, NAME_LABEL, STALE_NAN_BITS, SeriesError, VALUE_FIELD};
use super::series_cache::SeriesCache;
use crate::bytes_map::BytesMap;
use crate::protowire::{Reader, WireError, WireType};

pub(super) struct Decoder<'l, 'b> {
    pub(super) out: Decoded,
    pub(super) limits: &'l Limits,
    pub(super) value: Sym,
    /// The labels of the series being read, reused from series to series.
    pub(super) labels: Vec<Label<'b>>,
    /// A 2.0 series' label references, reused likewise.
    pub(super) refs: Vec<u64>,
    /// 1.0: every distinct label message of the request (its bytes), read and interned once:
    /// series repeat the same label pairs, so most labels are one hash and one compare.
    pub(super) pairs: BytesMap<'b, Label<'b>>,
    /// 1.0: the series of this and earlier requests that passed the checks, by the bytes of
    /// their labels, with their table and tag range in this batch.
    pub(super) cache: &'l mut SeriesCache,
    /// 1.0: the series of this request that broke a rule (reported at their first entry), by
    /// the bytes of their labels.
    pub(super) bad_series: BytesMap<'b, ()>,
    /// 2.0: the symbol each entry of the request's symbols table interns to, once used.
    pub(super) symbol_syms: Vec<Option<Sym>>,
    /// Where each metric family's metadata is in `out.metadata`: a request may describe
    /// thousands of families, and a later description of one replaces the earlier.
    pub(super) metadata_at: hashbrown::HashMap<String, usize, foldhash::fast::FixedState>,
    /// The stale-marker table of each metric table that had a marker in this request.
    pub(super) stale_tables: hashbrown::HashMap<Sym, Sym, foldhash::fast::FixedState>,
}

/// A series' table and tag range in the batch; `None` for a series that broke a rule.
pub(super) type SeriesTags = Option<(Sym, (u32, u32))>;

/// One label of a series, with its name and value interned in the batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Label<'b> {
    pub(super) name: &'b str,
    pub(super) value: &'b str,
    pub(super) key: Sym,
    pub(super) val: Sym,
}

impl<'l, 'b> Decoder<'l, 'b> {
    /// A decoder of one request with `limits`, remembering series in `cache`.
    pub(super) fn new(limits: &'l Limits, cache: &'l mut SeriesCache) -> Self {
        let mut out = Decoded::default();
        let value = out.batch.symbols.intern(VALUE_FIELD);
        Decoder {
            out,
            limits,
            value,
            labels: Vec::new(),
            refs: Vec::new(),
            pairs: BytesMap::default(),
            cache,
            bad_series: BytesMap::default(),
            symbol_syms: Vec::new(),
            metadata_at: Default::default(),
            stale_tables: Default::default(),
        }
    }
}

impl<'b> Decoder<'_, 'b> {
    /// Adds the samples (field 2, in 1.0 and 2.0 alike) of series number `series`, whose
    /// labels were read and checked first: a second pass, since a sender may put samples
    /// before labels, starting at the first sample's field (`first_sample`, found by the
    /// first pass).
    #[inline]
    pub(super) fn samples(
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
    #[inline]
    pub(super) fn series_tags(&mut self, series: u32) -> SeriesTags {
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

    #[inline]
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

    #[inline]
    fn push_sample(&mut self, tags: SeriesTags, (value, ms): (f64, i64), line: u32) {
        self.out.samples += 1;
        let Some((mut table, tags)) = tags else {
            return;
        };
        if value.to_bits() == STALE_NAN_BITS {
            self.out.stale_markers += 1;
            // kept apart from the values, in the metric's stale-marker table
            table = match self.stale_tables.get(&table) {
                Some(&t) => t,
                None => {
                    let name = self.out.batch.str(table);
                    if name.len() > MAX_STALE_METRIC_NAME {
                        return;
                    }
                    let stale = self.out.batch.symbols.intern(&stale_table(name));
                    self.stale_tables.insert(table, stale);
                    stale
                }
            };
        }
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

    pub(super) fn add_metadata(&mut self, family: &str, kind: u64, help: &str, unit: &str) {
        let m = MetricMetadata {
            metric_type: MetricType::from_number(kind),
            help: help.to_string(),
            unit: unit.to_string(),
        };
        match self.metadata_at.get(family) {
            Some(&i) => self.out.metadata[i].1 = m,
            None => {
                self.metadata_at
                    .insert(family.to_string(), self.out.metadata.len());
                self.out.metadata.push((family.to_string(), m));
            }
        }
    }
}

/// Markers of metrics with longer names are not kept: their table's name would pass the
/// default table name limit (256 bytes).
const MAX_STALE_METRIC_NAME: usize = 240;

#[inline]
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
