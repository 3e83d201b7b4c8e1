//! Remote write 2.0 (`io.prometheus.write.v2.Request`): a symbols table, and series whose
//! labels and metadata refer to it by position; each symbol is interned once per request.

use super::decoder::{Decoder, Label};
use super::request::NAME_LABEL;
use crate::protowire::{Reader, WireError, WireType};

pub(super) fn request<'b>(d: &mut Decoder<'_, 'b>, body: &'b [u8]) -> Result<(), WireError> {
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
            read_series(d, series, &symbols)?;
        } else {
            r.skip(wire)?;
        }
    }
    Ok(())
}

fn read_series<'b>(
    d: &mut Decoder<'_, 'b>,
    buf: &'b [u8],
    symbols: &[&'b str],
) -> Result<(), WireError> {
    d.out.series += 1;
    let series = d.out.series as u32;
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
    d.labels.clear();
    let mut refs = std::mem::take(&mut d.refs);
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
                d.out.histograms += 1;
            }
            (4, WireType::Len) => {
                r.bytes()?;
                d.out.exemplars += 1;
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
    d.symbol_syms.resize(symbols.len(), None);
    for pair in refs.chunks_exact(2) {
        let (name, value) = (symbol(pair[0])?, symbol(pair[1])?);
        let mut sym = |i: u64, s: &str| {
            let slot = &mut d.symbol_syms[i as usize];
            *slot.get_or_insert_with(|| d.out.batch.symbols.intern(s))
        };
        let (key, val) = (sym(pair[0], name), sym(pair[1], value));
        d.labels.push(Label {
            name,
            value,
            key,
            val,
        });
    }
    d.refs = refs;
    if let Some((kind, help, unit)) = metadata
        && (kind != 0 || !help.is_empty() || !unit.is_empty())
        && let Some(name) = d
            .labels
            .iter()
            .find(|l| l.name == NAME_LABEL)
            .map(|l| l.value)
    {
        d.add_metadata(name, kind, help, unit);
    }
    let tags = d.series_tags(series);
    d.samples(buf, first_sample, tags, series)
}
