//! Readers of the data points whose fields Sluice reads one by one: histogram and summary
//! points, with where their attributes are (a repeat set is then one hash of those bytes).

use crate::protowire::{Reader, WireError, WireType, fixed64s};

/// Where the attributes of a data point are in its bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttributeSpan {
    pub(super) start: usize,
    pub(super) end: usize,
    /// No other field came between the attributes (so the span holds them all, and only them).
    pub(super) contiguous: bool,
}

impl AttributeSpan {
    #[inline]
    pub(super) fn new() -> Self {
        AttributeSpan {
            start: 0,
            end: 0,
            contiguous: true,
        }
    }

    /// Notes a field from `start` to `end`; `attribute` says whether it is one.
    #[inline]
    pub(super) fn field(&mut self, attribute: bool, start: usize, end: usize) {
        if attribute {
            if self.end == 0 {
                self.start = start;
            } else if self.end != start {
                self.contiguous = false;
            }
            self.end = end;
        }
    }
}

/// The fields Sluice stores of a `HistogramDataPoint` or `SummaryDataPoint` besides their
/// buckets or quantiles (which go to the vectors given to the readers).
pub(super) struct AggregatePoint {
    pub(super) attributes: AttributeSpan,
    pub(super) time: u64,
    pub(super) count: u64,
    pub(super) sum: Option<f64>,
    pub(super) flags: u32,
}

impl AggregatePoint {
    fn new() -> Self {
        AggregatePoint {
            attributes: AttributeSpan::new(),
            time: 0,
            count: 0,
            sum: None,
            flags: 0,
        }
    }
}

/// Reads a `HistogramDataPoint`, its bucket counts into `counts` and bounds into `bounds`.
pub(super) fn read_histogram_point(
    buf: &[u8],
    counts: &mut Vec<u64>,
    bounds: &mut Vec<f64>,
) -> Result<AggregatePoint, WireError> {
    let mut r = Reader::new(buf);
    let mut p = AggregatePoint::new();
    loop {
        let start = r.pos;
        let Some((field, wire)) = r.key()? else {
            break;
        };
        match (field, wire) {
            (3, WireType::Fixed64) => p.time = r.fixed64()?,
            (4, WireType::Fixed64) => p.count = r.fixed64()?,
            (5, WireType::Fixed64) => p.sum = Some(f64::from_bits(r.fixed64()?)),
            // repeated fixed64 and double: packed, or (as older writers do) one by one
            (6, WireType::Len) => fixed64s(r.bytes()?, |v| counts.push(v))?,
            (6, WireType::Fixed64) => counts.push(r.fixed64()?),
            (7, WireType::Len) => fixed64s(r.bytes()?, |v| bounds.push(f64::from_bits(v)))?,
            (7, WireType::Fixed64) => bounds.push(f64::from_bits(r.fixed64()?)),
            (10, WireType::Varint) => p.flags = r.varint()? as u32,
            _ => r.skip(wire)?,
        }
        p.attributes.field(field == 9, start, r.pos);
    }
    Ok(p)
}

/// Reads a `SummaryDataPoint`, its (quantile, value) pairs into `quantiles`.
pub(super) fn read_summary_point(
    buf: &[u8],
    quantiles: &mut Vec<(f64, f64)>,
) -> Result<AggregatePoint, WireError> {
    let mut r = Reader::new(buf);
    let mut p = AggregatePoint::new();
    loop {
        let start = r.pos;
        let Some((field, wire)) = r.key()? else {
            break;
        };
        match (field, wire) {
            (3, WireType::Fixed64) => p.time = r.fixed64()?,
            (4, WireType::Fixed64) => p.count = r.fixed64()?,
            (5, WireType::Fixed64) => p.sum = Some(f64::from_bits(r.fixed64()?)),
            (6, WireType::Len) => {
                let mut q = Reader::new(r.bytes()?);
                let (mut quantile, mut value) = (0.0, 0.0);
                while let Some((f, w)) = q.key()? {
                    match (f, w) {
                        (1, WireType::Fixed64) => quantile = f64::from_bits(q.fixed64()?),
                        (2, WireType::Fixed64) => value = f64::from_bits(q.fixed64()?),
                        _ => q.skip(w)?,
                    }
                }
                quantiles.push((quantile, value));
            }
            (8, WireType::Varint) => p.flags = r.varint()? as u32,
            _ => r.skip(wire)?,
        }
        p.attributes.field(field == 7, start, r.pos);
    }
    Ok(p)
}
