//! The protocol-neutral write: what every wire format decodes into and storage consumes.
//!
//! A [`WriteBatch`] holds the points of one request for one database. Its strings (table
//! names, tag keys and values, field names, string field values) live once in a per-batch
//! [`Symbols`] table and points refer to them by [`Sym`], so that decoding allocates per
//! batch, not per line, and storage can translate each distinct name once per batch instead
//! of once per point. Points may share one tag range: a decoder that sees the same series
//! twice in a request points both at the same tags.

use std::ops::Range;

use hashbrown::HashTable;

/// A string interned in a batch's [`Symbols`]; only meaningful with the batch it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub u32);

impl Sym {
    /// The symbol's position, usable as an index into per-batch lookup tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Interned strings of one batch, stored back to back in a single buffer.
#[derive(Clone, Default)]
pub struct Symbols {
    data: String,
    ends: Vec<u32>,
    index: HashTable<u32>,
    hasher: foldhash::fast::FixedState,
}

impl std::fmt::Debug for Symbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn span(ends: &[u32], id: u32) -> Range<usize> {
    let start = if id == 0 {
        0
    } else {
        ends[id as usize - 1] as usize
    };
    start..ends[id as usize] as usize
}

impl Symbols {
    /// Returns the symbol for `s`, adding it if this batch has not seen it.
    pub fn intern(&mut self, s: &str) -> Sym {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(s);
        let Self {
            data,
            ends,
            index,
            hasher,
        } = self;
        let entry = index.entry(
            hash,
            |&id| &data[span(ends, id)] == s,
            |&id| hasher.hash_one(&data[span(ends, id)]),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(e) => Sym(*e.get()),
            hashbrown::hash_table::Entry::Vacant(e) => {
                let id = ends.len() as u32;
                data.push_str(s);
                ends.push(data.len() as u32);
                e.insert(id);
                Sym(id)
            }
        }
    }

    /// Adds `s` without looking for an equal string: for values that rarely repeat, such as
    /// string fields, where hashing would cost more than it saves.
    pub fn push_unique(&mut self, s: &str) -> Sym {
        let id = self.ends.len() as u32;
        self.data.push_str(s);
        self.ends.push(self.data.len() as u32);
        Sym(id)
    }

    /// The string behind `sym`.
    pub fn get(&self, sym: Sym) -> &str {
        &self.data[span(&self.ends, sym.0)]
    }

    /// Number of symbols (including unique ones).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when no symbol has been added.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// All symbols in the order they were added; the position is the symbol's index.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len() as u32).map(|id| &self.data[span(&self.ends, id)])
    }

    /// Total bytes of string data held.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The value of one field of one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    /// A string, interned in the batch's symbols.
    Str(Sym),
}

/// The storage type a field value asks for; fixed per column by the column's first write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    Float,
    Integer,
    UInteger,
    Boolean,
    String,
}

impl FieldValue {
    /// The type of column this value belongs in.
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::F64(_) => FieldType::Float,
            FieldValue::I64(_) => FieldType::Integer,
            FieldValue::U64(_) => FieldType::UInteger,
            FieldValue::Bool(_) => FieldType::Boolean,
            FieldValue::Str(_) => FieldType::String,
        }
    }
}

impl FieldType {
    /// The name users see in errors and in `SHOW COLUMNS`-like output, in line-protocol terms.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::UInteger => "unsigned integer",
            FieldType::Boolean => "boolean",
            FieldType::String => "string",
        }
    }

    /// Stable one-byte code, used by the WAL and the catalog.
    pub fn code(self) -> u8 {
        match self {
            FieldType::Float => 0,
            FieldType::Integer => 1,
            FieldType::UInteger => 2,
            FieldType::Boolean => 3,
            FieldType::String => 4,
        }
    }

    /// Inverse of [`FieldType::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => FieldType::Float,
            1 => FieldType::Integer,
            2 => FieldType::UInteger,
            3 => FieldType::Boolean,
            4 => FieldType::String,
            _ => return None,
        })
    }
}

/// A tag of a point: key and value, both interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub key: Sym,
    pub value: Sym,
}

/// A field of a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    pub key: Sym,
    pub value: FieldValue,
}

/// One point: a row of one table at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub table: Sym,
    /// Nanoseconds since the Unix epoch, UTC.
    pub time: i64,
    /// The 1-based line (or series, for formats without lines) it came from, for errors.
    pub line: u32,
    tags: (u32, u32),
    fields: (u32, u32),
}

impl Point {
    /// The position of this point's tags in [`WriteBatch::tags_of`]; points of one series in
    /// one batch usually share it, which lets storage resolve each series once per batch.
    pub fn tag_range(&self) -> Range<usize> {
        self.tags.0 as usize..self.tags.1 as usize
    }
}

/// The points of one request, in the order they were received.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Strings referred to by the points.
    pub symbols: Symbols,
    points: Vec<Point>,
    tags: Vec<Tag>,
    fields: Vec<Field>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The points, in request order.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when the batch has no point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Total number of field values over all points.
    pub fn field_value_count(&self) -> usize {
        self.points
            .iter()
            .map(|p| (p.fields.1 - p.fields.0) as usize)
            .sum()
    }

    /// The tags of `point`.
    pub fn tags_of(&self, point: &Point) -> &[Tag] {
        &self.tags[point.tags.0 as usize..point.tags.1 as usize]
    }

    /// The fields of `point`.
    pub fn fields_of(&self, point: &Point) -> &[Field] {
        &self.fields[point.fields.0 as usize..point.fields.1 as usize]
    }

    /// The string behind `sym`.
    pub fn str(&self, sym: Sym) -> &str {
        self.symbols.get(sym)
    }

    /// Starts a new tag range; add tags with [`WriteBatch::push_tag`] and close it with
    /// [`WriteBatch::end_tags`].
    pub fn begin_tags(&self) -> u32 {
        self.tags.len() as u32
    }

    /// Appends a tag to the open tag range.
    pub fn push_tag(&mut self, key: Sym, value: Sym) {
        self.tags.push(Tag { key, value });
    }

    /// Closes the tag range opened at `start`, returning it for [`WriteBatch::push_point`].
    pub fn end_tags(&self, start: u32) -> (u32, u32) {
        (start, self.tags.len() as u32)
    }

    /// Drops tags added since `start` (a line that failed to parse).
    pub fn truncate_tags(&mut self, start: u32) {
        self.tags.truncate(start as usize);
    }

    /// Starts the field list of the next point.
    pub fn begin_fields(&self) -> u32 {
        self.fields.len() as u32
    }

    /// Appends a field to the open field list.
    pub fn push_field(&mut self, key: Sym, value: FieldValue) {
        self.fields.push(Field { key, value });
    }

    /// Drops fields added since `start` (a line that failed to parse).
    pub fn truncate_fields(&mut self, start: u32) {
        self.fields.truncate(start as usize);
    }

    /// Adds a point whose tags are `tags` (from [`WriteBatch::end_tags`], possibly shared with
    /// earlier points) and whose fields are those pushed since `fields_start`.
    pub fn push_point(
        &mut self,
        table: Sym,
        tags: (u32, u32),
        fields_start: u32,
        time: i64,
        line: u32,
    ) {
        self.points.push(Point {
            table,
            time,
            line,
            tags,
            fields: (fields_start, self.fields.len() as u32),
        });
    }

    /// Keeps only the points for which `keep` returns true (by position); their tags, fields
    /// and symbols stay where they are.
    pub fn retain_points(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut i = 0;
        self.points.retain(|_| {
            let k = keep(i);
            i += 1;
            k
        });
    }

    /// Appends the batch's binary encoding to `out`: the form in which storage's write-ahead
    /// log keeps it. [`WriteBatch::decode`] reads it back.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.symbols.ends.len() as u32);
        for end in &self.symbols.ends {
            put_u32(out, *end);
        }
        put_u32(out, self.symbols.data.len() as u32);
        out.extend_from_slice(self.symbols.data.as_bytes());
        put_u32(out, self.tags.len() as u32);
        for t in &self.tags {
            put_u32(out, t.key.0);
            put_u32(out, t.value.0);
        }
        put_u32(out, self.fields.len() as u32);
        for f in &self.fields {
            put_u32(out, f.key.0);
            match f.value {
                FieldValue::F64(v) => {
                    out.push(0);
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
                FieldValue::I64(v) => {
                    out.push(1);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                FieldValue::U64(v) => {
                    out.push(2);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                FieldValue::Bool(v) => {
                    out.push(3);
                    out.extend_from_slice(&u64::from(v).to_le_bytes());
                }
                FieldValue::Str(s) => {
                    out.push(4);
                    out.extend_from_slice(&u64::from(s.0).to_le_bytes());
                }
            }
        }
        put_u32(out, self.points.len() as u32);
        for p in &self.points {
            put_u32(out, p.table.0);
            out.extend_from_slice(&p.time.to_le_bytes());
            put_u32(out, p.line);
            put_u32(out, p.tags.0);
            put_u32(out, p.tags.1);
            put_u32(out, p.fields.0);
            put_u32(out, p.fields.1);
        }
    }

    /// Reads a batch written by [`WriteBatch::encode`], checking every reference so that a
    /// damaged record is an error, never a panic later.
    pub fn decode(buf: &[u8]) -> Result<WriteBatch, DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let n_syms = r.u32()? as usize;
        let mut ends = Vec::with_capacity(n_syms.min(buf.len() / 4));
        for _ in 0..n_syms {
            ends.push(r.u32()?);
        }
        let data_len = r.u32()? as usize;
        let data = std::str::from_utf8(r.bytes(data_len)?)
            .map_err(|_| DecodeError("symbol data is not UTF-8"))?
            .to_owned();
        let mut prev = 0;
        for &end in &ends {
            if end < prev || end as usize > data.len() || !data.is_char_boundary(end as usize) {
                return Err(DecodeError("symbol offsets out of order"));
            }
            prev = end;
        }
        let symbols = Symbols {
            data,
            ends,
            ..Symbols::default()
        };
        let n_syms = n_syms as u32;
        let sym = |v: u32| -> Result<Sym, DecodeError> {
            if v < n_syms {
                Ok(Sym(v))
            } else {
                Err(DecodeError("symbol out of range"))
            }
        };
        let n_tags = r.u32()? as usize;
        let mut tags = Vec::with_capacity(n_tags.min(buf.len() / 8));
        for _ in 0..n_tags {
            let key = sym(r.u32()?)?;
            let value = sym(r.u32()?)?;
            tags.push(Tag { key, value });
        }
        let n_fields = r.u32()? as usize;
        let mut fields = Vec::with_capacity(n_fields.min(buf.len() / 13));
        for _ in 0..n_fields {
            let key = sym(r.u32()?)?;
            let kind = r.bytes(1)?[0];
            let raw = r.u64()?;
            let value = match kind {
                0 => FieldValue::F64(f64::from_bits(raw)),
                1 => FieldValue::I64(raw as i64),
                2 => FieldValue::U64(raw),
                3 => FieldValue::Bool(raw != 0),
                4 => FieldValue::Str(sym(
                    u32::try_from(raw).map_err(|_| DecodeError("symbol out of range"))?
                )?),
                _ => return Err(DecodeError("unknown field value kind")),
            };
            fields.push(Field { key, value });
        }
        let n_points = r.u32()? as usize;
        let mut points = Vec::with_capacity(n_points.min(buf.len() / 32));
        for _ in 0..n_points {
            let table = sym(r.u32()?)?;
            let time = r.u64()? as i64;
            let line = r.u32()?;
            let t = (r.u32()?, r.u32()?);
            let f = (r.u32()?, r.u32()?);
            if t.0 > t.1 || t.1 as usize > tags.len() || f.0 > f.1 || f.1 as usize > fields.len() {
                return Err(DecodeError("point refers past its tags or fields"));
            }
            points.push(Point {
                table,
                time,
                line,
                tags: t,
                fields: f,
            });
        }
        if r.pos != buf.len() {
            return Err(DecodeError("trailing bytes after the batch"));
        }
        Ok(WriteBatch {
            symbols,
            points,
            tags,
            fields,
        })
    }
}

/// A WAL record that is not a valid batch encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid write batch encoding: {0}")]
pub struct DecodeError(&'static str);

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError("record ends early"))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_returns_the_same_symbol_for_equal_strings() {
        let mut s = Symbols::default();
        let a = s.intern("host");
        let b = s.intern("region");
        assert_eq!(s.intern("host"), a);
        assert_ne!(a, b);
        assert_eq!(s.get(b), "region");
        let u = s.push_unique("host");
        assert_ne!(u, a);
        assert_eq!(s.get(u), "host");
        assert_eq!(s.intern(""), s.intern(""));
    }

    #[test]
    fn encode_then_decode_gives_the_same_batch() {
        let mut b = WriteBatch::new();
        let cpu = b.symbols.intern("cpu");
        let host = b.symbols.intern("host");
        let a = b.symbols.intern("a");
        let t = b.begin_tags();
        b.push_tag(host, a);
        let tags = b.end_tags(t);
        let f = b.begin_fields();
        let k = b.symbols.intern("v");
        let s = b.symbols.push_unique("hello");
        b.push_field(k, FieldValue::F64(1.5));
        b.push_field(k, FieldValue::Str(s));
        b.push_field(k, FieldValue::I64(-3));
        b.push_field(k, FieldValue::U64(u64::MAX));
        b.push_field(k, FieldValue::Bool(true));
        b.push_point(cpu, tags, f, 42, 1);
        let mut out = Vec::new();
        b.encode(&mut out);
        let d = WriteBatch::decode(&out).unwrap();
        assert_eq!(d.points(), b.points());
        let p = &d.points()[0];
        assert_eq!(d.str(p.table), "cpu");
        assert_eq!(d.fields_of(p), b.fields_of(&b.points()[0]));
        assert_eq!(d.str(d.tags_of(p)[0].value), "a");
        for cut in 0..out.len() {
            assert!(WriteBatch::decode(&out[..cut]).is_err(), "cut at {cut}");
        }
    }
}
