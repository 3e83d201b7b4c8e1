//! Remote write 1.0 (`prometheus.WriteRequest`): series with their labels inline. A series'
//! label bytes name it: seen in an earlier request, it comes from the [`SeriesCache`]
//! (checked and interned already); seen earlier in this one, from the request's pairs.
//!
//! [`SeriesCache`]: super::SeriesCache

use super::decoder::{Decoder, Label};
use crate::protowire::{Reader, WireError, WireType};

pub(super) fn request<'b>(d: &mut Decoder<'_, 'b>, body: &'b [u8]) -> Result<(), WireError> {
    let mut r = Reader::new(body);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WireType::Len) => {
                let series = r.bytes()?;
                read_series(d, series)?;
            }
            (3, WireType::Len) => {
                let m = r.bytes()?;
                read_metadata(d, m)?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(())
}

fn read_series<'b>(d: &mut Decoder<'_, 'b>, buf: &'b [u8]) -> Result<(), WireError> {
    d.out.series += 1;
    let series = d.out.series as u32;
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
                d.out.exemplars += 1;
                other_seen = true;
            }
            (4, WireType::Len) => {
                r.bytes()?;
                d.out.histograms += 1;
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
        (d.cache.hash(k), k)
    });
    if let Some((h, k)) = key {
        if let Some(tags) = d.cache.find(h, k, &mut d.out.batch) {
            return d.samples(buf, first_sample, Some(tags), series);
        }
        if d.bad_series.get(d.bad_series.hash(k), k).is_some() {
            return d.samples(buf, first_sample, None, series);
        }
    }
    d.labels.clear();
    let mut r = Reader::new(buf);
    while let Some((field, wire)) = r.key()? {
        if (field, wire) == (1, WireType::Len) {
            let label = read_label(d, r.bytes()?)?;
            d.labels.push(label);
        } else {
            r.skip(wire)?;
        }
    }
    let tags = d.series_tags(series);
    if let Some((h, k)) = key {
        match tags {
            Some(resolved) => {
                let labels = d.labels.iter().map(|l| (l.name, l.value, l.key, l.val));
                d.cache.insert(h, k, labels, resolved);
            }
            None => d.bad_series.insert(d.bad_series.hash(k), k, ()),
        }
    }
    d.samples(buf, first_sample, tags, series)
}

/// The label in the Label message `raw`, from the request's pairs if seen before.
fn read_label<'b>(d: &mut Decoder<'_, 'b>, raw: &'b [u8]) -> Result<Label<'b>, WireError> {
    let hash = d.pairs.hash(raw);
    if let Some(label) = d.pairs.get(hash, raw) {
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
    let symbols = &mut d.out.batch.symbols;
    let label = Label {
        name,
        value,
        key: symbols.intern(name),
        val: symbols.intern(value),
    };
    d.pairs.insert(hash, raw, label);
    Ok(label)
}

fn read_metadata(d: &mut Decoder<'_, '_>, buf: &[u8]) -> Result<(), WireError> {
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
        d.add_metadata(name, kind, help, unit);
    }
    Ok(())
}
