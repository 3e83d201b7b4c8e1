//! The WAL's record format: how one logged write is laid out in a record's payload.
//!
//! A payload is `[version: u8][database name length: u16 LE][database name][body]`, and the
//! body is the write's [`WriteBatch`]:
//!
//! - version 3 (written now): the version 2 body compressed with Snappy (raw format). Metric
//!   rows (one value each, as OTLP and remote write give) repeat the same few bytes row after
//!   row: Snappy takes their records to about a third, and every byte of the WAL is copied
//!   into the page cache and synced.
//! - version 2: the batch with varints, and each point's numbers as differences from the
//!   previous point's ([`encode_batch`]).
//! - version 1: the fixed-width encoding of the first builds ([`decode_batch_fixed`]).
//!
//! Every version is still read, so a WAL an older build left replays; an older build skips
//! records of a newer version with an error in its log. Decoding checks every count, offset
//! and reference, so a damaged record (one whose checksum happened to match) is an error,
//! never a panic or a huge allocation.

use std::sync::Arc;

use sluice_model::{Field, FieldValue, InvalidBatch, Point, Sym, Symbols, Tag, WriteBatch};

/// The version [`encode_record`] writes.
pub const RECORD_VERSION: u8 = 3;

/// How many times its size a compressed record may expand to: Snappy's densest element (a
/// three-byte copy of 64 bytes) expands about 21 times, so a bigger claim is damage.
const MAX_RECORD_EXPANSION: usize = 32;

/// A payload that is not a record of a write.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record of an unknown version {0} (written by a newer Sluice?)")]
    UnknownVersion(u8),
    #[error("record header is cut short or its database name is not UTF-8")]
    Header,
    #[error("record claims an implausible size of {0} bytes")]
    ImplausibleSize(usize),
    #[error("record compression is damaged: {0}")]
    Compression(#[from] snap::Error),
    #[error("invalid write batch encoding: {0}")]
    Body(&'static str),
    #[error(transparent)]
    Batch(#[from] InvalidBatch),
}

/// The payload of a record logging `batch` as a write to database `db`.
pub fn encode_record(db: &str, batch: &WriteBatch) -> Vec<u8> {
    let mut encoded = Vec::new();
    encode_batch(batch, &mut encoded);
    let mut out = vec![0; 3 + db.len() + snap::raw::max_compress_len(encoded.len())];
    out[0] = RECORD_VERSION;
    out[1..3].copy_from_slice(&(db.len() as u16).to_le_bytes());
    out[3..3 + db.len()].copy_from_slice(db.as_bytes());
    let n = snap::raw::Encoder::new()
        .compress(&encoded, &mut out[3 + db.len()..])
        .expect("the buffer has the room max_compress_len asks for");
    out.truncate(3 + db.len() + n);
    out
}

/// The database and batch a record's payload logs, in any version.
pub fn decode_record(payload: &[u8]) -> Result<(Arc<str>, WriteBatch), RecordError> {
    let (&version, rest) = payload.split_first().ok_or(RecordError::Header)?;
    if !(1..=RECORD_VERSION).contains(&version) {
        return Err(RecordError::UnknownVersion(version));
    }
    let len = match rest {
        [a, b, ..] => u16::from_le_bytes([*a, *b]) as usize,
        _ => return Err(RecordError::Header),
    };
    let db = rest
        .get(2..2 + len)
        .and_then(|name| std::str::from_utf8(name).ok())
        .ok_or(RecordError::Header)?;
    let body = &rest[2 + len..];
    let batch = match version {
        1 => decode_batch_fixed(body)?,
        2 => decode_batch(body)?,
        _ => {
            let n = snap::raw::decompress_len(body)?;
            if n > body
                .len()
                .saturating_mul(MAX_RECORD_EXPANSION)
                .saturating_add(1024)
            {
                return Err(RecordError::ImplausibleSize(n));
            }
            decode_batch(&snap::raw::Decoder::new().decompress_vec(body)?)?
        }
    };
    Ok((db.into(), batch))
}

/// Appends the batch's version 2 encoding to `out`.
///
/// Numbers are varints, and a point's time, line, tag range and field range are written as
/// differences from the previous point's, which are small: the WAL's bytes per point are
/// about half of a fixed-width encoding's, and the WAL thread copies and syncs every byte.
pub fn encode_batch(batch: &WriteBatch, out: &mut Vec<u8>) {
    let (symbols, tags, fields, points) = (
        &batch.symbols,
        batch.all_tags(),
        batch.all_fields(),
        batch.points(),
    );
    // (room for the usual sizes up front, and for `put_varint`'s eight-byte store past the
    // end: one allocation, and no growth checks that fail)
    out.reserve(
        10 + symbols.len() * 2
            + symbols.data_len()
            + tags.len() * 4
            + fields.len() * 10
            + points.len() * 12
            + 8,
    );
    put_varint(out, symbols.len() as u64);
    let mut start = 0;
    for &end in symbols.ends() {
        put_varint(out, u64::from(end - start));
        start = end;
    }
    out.extend_from_slice(symbols.data().as_bytes());
    put_varint(out, tags.len() as u64);
    for t in tags {
        put_varint(out, u64::from(t.key.0));
        put_varint(out, u64::from(t.value.0));
    }
    put_varint(out, fields.len() as u64);
    for f in fields {
        put_varint(out, u64::from(f.key.0));
        match f.value {
            // a whole number (as counters and most gauges are) as a varint: a float's eight
            // bytes are most of a metric row's record otherwise
            FieldValue::F64(v) => match whole(v) {
                Some(i) => {
                    out.push(5);
                    put_varint(out, zigzag(i));
                }
                None => {
                    out.push(0);
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            },
            FieldValue::I64(v) => {
                out.push(1);
                put_varint(out, zigzag(v));
            }
            FieldValue::U64(v) => {
                out.push(2);
                put_varint(out, v);
            }
            FieldValue::Bool(v) => out.extend_from_slice(&[3, u8::from(v)]),
            FieldValue::Str(s) => {
                out.push(4);
                put_varint(out, u64::from(s.0));
            }
        }
    }
    put_varint(out, points.len() as u64);
    let (mut time, mut line, mut tags_start, mut fields_end) = (0i64, 0u32, 0u32, 0u32);
    for p in points {
        let (t, f) = (p.tag_span(), p.field_span());
        put_varint(out, u64::from(p.table.0));
        put_varint(out, zigzag(p.time.wrapping_sub(time)));
        put_varint(out, zigzag(i64::from(p.line) - i64::from(line)));
        put_varint(out, zigzag(i64::from(t.0) - i64::from(tags_start)));
        put_varint(out, u64::from(t.1 - t.0));
        put_varint(out, zigzag(i64::from(f.0) - i64::from(fields_end)));
        put_varint(out, u64::from(f.1 - f.0));
        (time, line, tags_start, fields_end) = (p.time, p.line, t.0, f.1);
    }
}

/// Reads a batch written by [`encode_batch`].
pub fn decode_batch(buf: &[u8]) -> Result<WriteBatch, RecordError> {
    let mut r = Reader { buf, pos: 0 };
    let n_syms = r.len(1)?;
    let mut ends = Vec::with_capacity(n_syms);
    let mut end = 0u32;
    for _ in 0..n_syms {
        end = u32::try_from(r.varint()?)
            .ok()
            .and_then(|n| end.checked_add(n))
            .ok_or(RecordError::Body("symbol offsets out of range"))?;
        ends.push(end);
    }
    let data = std::str::from_utf8(r.bytes(end as usize)?)
        .map_err(|_| RecordError::Body("symbol data is not UTF-8"))?
        .to_owned();
    let symbols = Symbols::from_parts(data, ends)?;
    let sym = |v: u64| Sym(u32::try_from(v).unwrap_or(u32::MAX));
    let n_tags = r.len(2)?;
    let mut tags = Vec::with_capacity(n_tags);
    for _ in 0..n_tags {
        let key = sym(r.varint()?);
        let value = sym(r.varint()?);
        tags.push(Tag { key, value });
    }
    let n_fields = r.len(3)?;
    let mut fields = Vec::with_capacity(n_fields);
    for _ in 0..n_fields {
        let key = sym(r.varint()?);
        let kind = r.bytes(1)?[0];
        let value = match kind {
            0 => FieldValue::F64(f64::from_bits(r.u64()?)),
            1 => FieldValue::I64(unzigzag(r.varint()?)),
            2 => FieldValue::U64(r.varint()?),
            3 => FieldValue::Bool(r.bytes(1)?[0] != 0),
            4 => FieldValue::Str(sym(r.varint()?)),
            5 => FieldValue::F64(unzigzag(r.varint()?) as f64),
            _ => return Err(RecordError::Body("unknown field value kind")),
        };
        fields.push(Field { key, value });
    }
    let n_points = r.len(7)?;
    let mut points = Vec::with_capacity(n_points);
    let (mut time, mut line, mut tags_start, mut fields_end) = (0i64, 0i64, 0i64, 0i64);
    // a range from a start relative to `base` and a length, inside `0..limit`
    let range = |r: &mut Reader, base: i64, limit: usize| -> Result<(u32, u32), RecordError> {
        let start = base.checked_add(unzigzag(r.varint()?));
        let len = i64::try_from(r.varint()?).ok();
        match (start, len) {
            (Some(s), Some(n)) if s >= 0 && n <= limit as i64 && s <= limit as i64 - n => {
                Ok((s as u32, (s + n) as u32))
            }
            _ => Err(RecordError::Body("point refers past its tags or fields")),
        }
    };
    for _ in 0..n_points {
        let table = sym(r.varint()?);
        time = time.wrapping_add(unzigzag(r.varint()?));
        line = line
            .checked_add(unzigzag(r.varint()?))
            .filter(|l| u32::try_from(*l).is_ok())
            .ok_or(RecordError::Body("line number out of range"))?;
        let t = range(&mut r, tags_start, tags.len())?;
        let f = range(&mut r, fields_end, fields.len())?;
        (tags_start, fields_end) = (i64::from(t.0), i64::from(f.1));
        points.push(Point::from_parts(table, time, line as u32, t, f));
    }
    if r.pos != buf.len() {
        return Err(RecordError::Body("trailing bytes after the batch"));
    }
    Ok(WriteBatch::from_parts(symbols, tags, fields, points)?)
}

/// Reads a batch in the fixed-width encoding of the first WAL records: 32-bit counts and
/// references, 64-bit values and times, no deltas.
pub fn decode_batch_fixed(buf: &[u8]) -> Result<WriteBatch, RecordError> {
    let mut r = Reader { buf, pos: 0 };
    let n_syms = r.u32()? as usize;
    let mut ends = Vec::with_capacity(n_syms.min(buf.len() / 4));
    for _ in 0..n_syms {
        ends.push(r.u32()?);
    }
    let data_len = r.u32()? as usize;
    let data = std::str::from_utf8(r.bytes(data_len)?)
        .map_err(|_| RecordError::Body("symbol data is not UTF-8"))?
        .to_owned();
    let symbols = Symbols::from_parts(data, ends)?;
    let n_tags = r.u32()? as usize;
    let mut tags = Vec::with_capacity(n_tags.min(buf.len() / 8));
    for _ in 0..n_tags {
        let key = Sym(r.u32()?);
        let value = Sym(r.u32()?);
        tags.push(Tag { key, value });
    }
    let n_fields = r.u32()? as usize;
    let mut fields = Vec::with_capacity(n_fields.min(buf.len() / 13));
    for _ in 0..n_fields {
        let key = Sym(r.u32()?);
        let kind = r.bytes(1)?[0];
        let raw = r.u64()?;
        let value = match kind {
            0 => FieldValue::F64(f64::from_bits(raw)),
            1 => FieldValue::I64(raw as i64),
            2 => FieldValue::U64(raw),
            3 => FieldValue::Bool(raw != 0),
            4 => FieldValue::Str(Sym(u32::try_from(raw).unwrap_or(u32::MAX))),
            _ => return Err(RecordError::Body("unknown field value kind")),
        };
        fields.push(Field { key, value });
    }
    let n_points = r.u32()? as usize;
    let mut points = Vec::with_capacity(n_points.min(buf.len() / 32));
    for _ in 0..n_points {
        let table = Sym(r.u32()?);
        let time = r.u64()? as i64;
        let line = r.u32()?;
        let t = (r.u32()?, r.u32()?);
        let f = (r.u32()?, r.u32()?);
        points.push(Point::from_parts(table, time, line, t, f));
    }
    if r.pos != buf.len() {
        return Err(RecordError::Body("trailing bytes after the batch"));
    }
    Ok(WriteBatch::from_parts(symbols, tags, fields, points)?)
}

/// Appends `v` as a varint. This runs about ten times per value written to the WAL, so it is
/// built for speed: a value below 128 is one byte; one below 2^56 is assembled in a register
/// and stored as eight bytes, of which the varint's are kept (byte-by-byte stores to a buffer
/// that is then copied stall the processor, and a copy of `&buf[..n]` is a call to `memcpy`).
#[inline(always)]
fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v < 1 << 56 {
        let len = (64 - v.leading_zeros() as usize).div_ceil(7);
        let mut word = 0u64;
        for i in 0..8 {
            word |= ((v >> (7 * i)) & 0x7f) << (8 * i);
        }
        // the continuation bit on every byte but the last
        word |= 0x8080_8080_8080_8080 & ((1u64 << (8 * (len - 1))) - 1);
        let start = out.len();
        out.extend_from_slice(&word.to_le_bytes());
        out.truncate(start + len);
    } else {
        let mut v = v;
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
}

/// `v` as an integer when it is one that converts back to exactly `v` (not -0.0) and whose
/// varint is shorter than the float's eight bytes.
fn whole(v: f64) -> Option<i64> {
    let i = v as i64;
    ((i as f64).to_bits() == v.to_bits() && i.unsigned_abs() < 1 << 48).then_some(i)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Reads a body front to back; every read past its end is an error.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(RecordError::Body("record ends early"))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.bytes(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.bytes(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(RecordError::Body("a varint longer than 10 bytes"))
    }

    /// A count of items each at least `min_bytes` long, refused if the rest of the record
    /// cannot hold them (so that a damaged count cannot ask for a huge allocation).
    fn len(&mut self, min_bytes: usize) -> Result<usize, RecordError> {
        usize::try_from(self.varint()?)
            .ok()
            .filter(|&n| n.saturating_mul(min_bytes) <= self.buf.len() - self.pos)
            .ok_or(RecordError::Body("a count larger than the record"))
    }
}

#[cfg(test)]
mod tests;
