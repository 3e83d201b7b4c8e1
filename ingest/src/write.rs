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
    /// Tag ranges a decoder knows by a [`TagSetId`], by range (ascending).
    tag_set_ids: Vec<((u32, u32), TagSetId)>,
}

/// A name for a tag set (its keys and values) that holds across requests: two ranges with
/// one id have the same tags, in any batch of the server's life. Decoders that keep tag sets
/// between requests (OTLP's mapping cache) give them one, so that storage can find the
/// series of a repeat set without reading its tags. Ids come from [`TagSetId::next`] and are
/// never reused; a set may have several (one per cache that resolved it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TagSetId(pub u64);

impl TagSetId {
    /// A new id, distinct from every other one this process made.
    pub fn next() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        TagSetId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `points` more points with one field each, so that a decoder that can
    /// tell roughly how many a request holds does not grow the batch step by step.
    pub fn reserve(&mut self, points: usize) {
        self.points.reserve(points);
        self.fields.reserve(points);
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

    /// Names the tag range `range` (from [`WriteBatch::end_tags`]) by `id`, whose tags it
    /// must hold. A range keeps its first id; ids are not written to the WAL.
    pub fn set_tag_set_id(&mut self, range: (u32, u32), id: TagSetId) {
        match self.tag_set_ids.last() {
            Some(&(last, _)) if last >= range => {
                if let Err(at) = self.tag_set_ids.binary_search_by_key(&range, |e| e.0) {
                    self.tag_set_ids.insert(at, (range, id));
                }
            }
            _ => self.tag_set_ids.push((range, id)),
        }
    }

    /// The id the decoder gave the tag range `range`, if any.
    pub fn tag_set_id(&self, range: Range<usize>) -> Option<TagSetId> {
        let key = (range.start as u32, range.end as u32);
        let i = self.tag_set_ids.binary_search_by_key(&key, |e| e.0).ok()?;
        Some(self.tag_set_ids[i].1)
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
    ///
    /// Numbers are varints, and a point's time, line, tag range and field range are written
    /// as differences from the previous point's, which are small: the WAL's bytes per point
    /// are about half of a fixed-width encoding's, and the WAL thread copies and syncs every
    /// byte.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // (room for the usual sizes up front, and for `put_varint`'s eight-byte store past
        // the end: one allocation, and no growth checks that fail)
        out.reserve(
            10 + self.symbols.ends.len() * 2
                + self.symbols.data.len()
                + self.tags.len() * 4
                + self.fields.len() * 10
                + self.points.len() * 12
                + 8,
        );
        put_varint(out, self.symbols.ends.len() as u64);
        let mut start = 0;
        for &end in &self.symbols.ends {
            put_varint(out, u64::from(end - start));
            start = end;
        }
        out.extend_from_slice(self.symbols.data.as_bytes());
        put_varint(out, self.tags.len() as u64);
        for t in &self.tags {
            put_varint(out, u64::from(t.key.0));
            put_varint(out, u64::from(t.value.0));
        }
        put_varint(out, self.fields.len() as u64);
        for f in &self.fields {
            put_varint(out, u64::from(f.key.0));
            match f.value {
                // a whole number (as counters and most gauges are) as a varint: a float's
                // eight bytes are most of a metric row's record otherwise
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
        put_varint(out, self.points.len() as u64);
        let (mut time, mut line, mut tags, mut fields) = (0i64, 0u32, 0u32, 0u32);
        for p in &self.points {
            put_varint(out, u64::from(p.table.0));
            put_varint(out, zigzag(p.time.wrapping_sub(time)));
            put_varint(out, zigzag(i64::from(p.line) - i64::from(line)));
            put_varint(out, zigzag(i64::from(p.tags.0) - i64::from(tags)));
            put_varint(out, u64::from(p.tags.1 - p.tags.0));
            put_varint(out, zigzag(i64::from(p.fields.0) - i64::from(fields)));
            put_varint(out, u64::from(p.fields.1 - p.fields.0));
            (time, line, tags, fields) = (p.time, p.line, p.tags.0, p.fields.1);
        }
    }

    /// Reads a batch written by [`WriteBatch::encode`], checking every reference so that a
    /// damaged record is an error, never a panic later.
    pub fn decode(buf: &[u8]) -> Result<WriteBatch, DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let n_syms = r.len(1)?;
        let mut ends = Vec::with_capacity(n_syms);
        let mut end = 0u32;
        for _ in 0..n_syms {
            end = u32::try_from(r.varint()?)
                .ok()
                .and_then(|n| end.checked_add(n))
                .ok_or(DecodeError("symbol offsets out of range"))?;
            ends.push(end);
        }
        let data = std::str::from_utf8(r.bytes(end as usize)?)
            .map_err(|_| DecodeError("symbol data is not UTF-8"))?
            .to_owned();
        if ends.iter().any(|&e| !data.is_char_boundary(e as usize)) {
            return Err(DecodeError("a symbol splits a character"));
        }
        let symbols = Symbols {
            data,
            ends,
            ..Symbols::default()
        };
        let sym = |v: u64| -> Result<Sym, DecodeError> {
            if v < n_syms as u64 {
                Ok(Sym(v as u32))
            } else {
                Err(DecodeError("symbol out of range"))
            }
        };
        let n_tags = r.len(2)?;
        let mut tags = Vec::with_capacity(n_tags);
        for _ in 0..n_tags {
            let key = sym(r.varint()?)?;
            let value = sym(r.varint()?)?;
            tags.push(Tag { key, value });
        }
        let n_fields = r.len(3)?;
        let mut fields = Vec::with_capacity(n_fields);
        for _ in 0..n_fields {
            let key = sym(r.varint()?)?;
            let kind = r.bytes(1)?[0];
            let value = match kind {
                0 => FieldValue::F64(f64::from_bits(r.u64()?)),
                1 => FieldValue::I64(unzigzag(r.varint()?)),
                2 => FieldValue::U64(r.varint()?),
                3 => FieldValue::Bool(r.bytes(1)?[0] != 0),
                4 => FieldValue::Str(sym(r.varint()?)?),
                5 => FieldValue::F64(unzigzag(r.varint()?) as f64),
                _ => return Err(DecodeError("unknown field value kind")),
            };
            fields.push(Field { key, value });
        }
        let n_points = r.len(7)?;
        let mut points = Vec::with_capacity(n_points);
        let (mut time, mut line, mut tags_start, mut fields_end) = (0i64, 0i64, 0i64, 0i64);
        // a range from a start relative to `base` and a length, inside `0..limit`
        let range = |r: &mut Reader, base: i64, limit: usize| -> Result<(u32, u32), DecodeError> {
            let start = base.checked_add(unzigzag(r.varint()?));
            let len = i64::try_from(r.varint()?).ok();
            match (start, len) {
                (Some(s), Some(n)) if s >= 0 && n <= limit as i64 && s <= limit as i64 - n => {
                    Ok((s as u32, (s + n) as u32))
                }
                _ => Err(DecodeError("point refers past its tags or fields")),
            }
        };
        for _ in 0..n_points {
            let table = sym(r.varint()?)?;
            time = time.wrapping_add(unzigzag(r.varint()?));
            line = line
                .checked_add(unzigzag(r.varint()?))
                .filter(|l| u32::try_from(*l).is_ok())
                .ok_or(DecodeError("line number out of range"))?;
            let t = range(&mut r, tags_start, tags.len())?;
            let f = range(&mut r, fields_end, fields.len())?;
            (tags_start, fields_end) = (i64::from(t.0), i64::from(f.1));
            points.push(Point {
                table,
                time,
                line: line as u32,
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
            tag_set_ids: Vec::new(),
        })
    }

    /// The fixed-width encoding of the first WAL records, which [`WriteBatch::decode_fixed`]
    /// still reads.
    #[cfg(test)]
    fn encode_fixed(&self, out: &mut Vec<u8>) {
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

    /// Reads a batch in the fixed-width encoding of the first WAL records (32-bit numbers, no
    /// deltas), checking every reference like [`WriteBatch::decode`].
    pub fn decode_fixed(buf: &[u8]) -> Result<WriteBatch, DecodeError> {
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
            tag_set_ids: Vec::new(),
        })
    }
}

/// A WAL record that is not a valid batch encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid write batch encoding: {0}")]
pub struct DecodeError(&'static str);

#[cfg(test)]
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
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

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.bytes(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError("a varint longer than 10 bytes"))
    }

    /// A count of items each at least `min_bytes` long, refused if the rest of the record
    /// cannot hold them (so that a damaged count cannot ask for a huge allocation).
    fn len(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.varint()?)
            .ok()
            .filter(|&n| n.saturating_mul(min_bytes) <= self.buf.len() - self.pos)
            .ok_or(DecodeError("a count larger than the record"))
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

    /// A batch with what the encoding has to carry: every field kind, a tag range shared by
    /// points, times going back and to the extremes, and gaps left by dropped points.
    fn awkward_batch() -> WriteBatch {
        let mut b = WriteBatch::new();
        let cpu = b.symbols.intern("cpu");
        let host = b.symbols.intern("host");
        let a = b.symbols.intern("a");
        let snow = b.symbols.intern("snö");
        let t = b.begin_tags();
        b.push_tag(host, a);
        let tags = b.end_tags(t);
        let t = b.begin_tags();
        b.push_tag(host, snow);
        let other_tags = b.end_tags(t);
        let k = b.symbols.intern("v");
        let s = b.symbols.push_unique("hello");
        let f = b.begin_fields();
        b.push_field(k, FieldValue::F64(1.5));
        for v in [
            0.0,
            -0.0,
            42.0,
            -7.0,
            1e300,
            f64::NAN,
            -f64::INFINITY,
            2f64.powi(60),
        ] {
            b.push_field(k, FieldValue::F64(v));
        }
        b.push_field(k, FieldValue::Str(s));
        b.push_field(k, FieldValue::I64(-3));
        b.push_field(k, FieldValue::U64(u64::MAX));
        b.push_field(k, FieldValue::Bool(true));
        b.push_point(cpu, tags, f, 42, 1);
        for (i, time) in [i64::MIN, i64::MAX, -5, 0, 1_700_000_000_000_000_000]
            .into_iter()
            .enumerate()
        {
            let f = b.begin_fields();
            b.push_field(k, FieldValue::I64(i64::MIN + i as i64));
            let tags = if i % 2 == 0 { other_tags } else { tags };
            b.push_point(cpu, tags, f, time, 10 - i as u32);
        }
        b.retain_points(|i| i != 2);
        b
    }

    fn assert_same(d: &WriteBatch, b: &WriteBatch) {
        assert_eq!(d.points(), b.points());
        assert_eq!(
            d.symbols.iter().collect::<Vec<_>>(),
            b.symbols.iter().collect::<Vec<_>>()
        );
        for (p, q) in d.points().iter().zip(b.points()) {
            assert_eq!(d.tags_of(p), b.tags_of(q));
            // bit for bit: NaN is not equal to itself, and -0.0 is equal to 0.0
            let bits = |fields: &[Field]| -> Vec<(Sym, String)> {
                fields
                    .iter()
                    .map(|f| match f.value {
                        FieldValue::F64(v) => (f.key, format!("f{:x}", v.to_bits())),
                        other => (f.key, format!("{other:?}")),
                    })
                    .collect()
            };
            assert_eq!(bits(d.fields_of(p)), bits(b.fields_of(q)));
        }
    }

    #[test]
    fn encode_then_decode_gives_the_same_batch() {
        let b = awkward_batch();
        let mut out = Vec::new();
        b.encode(&mut out);
        let d = WriteBatch::decode(&out).unwrap();
        assert_same(&d, &b);
        assert_eq!(d.str(d.tags_of(&d.points()[1])[0].value), "snö");
        for cut in 0..out.len() {
            assert!(WriteBatch::decode(&out[..cut]).is_err(), "cut at {cut}");
        }
        // damage anywhere is an error or a batch whose references hold, never a panic
        for at in 0..out.len() {
            let mut bad = out.clone();
            bad[at] ^= 0x55;
            if let Ok(d) = WriteBatch::decode(&bad) {
                for p in d.points() {
                    let _ = (d.tags_of(p), d.fields_of(p), d.str(p.table));
                }
            }
        }
    }

    #[test]
    fn whole_floats_take_their_varint_not_eight_bytes() {
        let mut b = WriteBatch::new();
        let (m, v) = (b.symbols.intern("m"), b.symbols.intern("value"));
        let tags = b.end_tags(b.begin_tags());
        for i in 0..1000 {
            let f = b.begin_fields();
            b.push_field(v, FieldValue::F64(f64::from(i % 100)));
            b.push_point(m, tags, f, 1_000 + i64::from(i), 1);
        }
        let mut out = Vec::new();
        b.encode(&mut out);
        // a point's own numbers are about seven bytes; a float would add nine more
        assert!(out.len() < 1000 * 11, "{} bytes", out.len());
        assert_same(&WriteBatch::decode(&out).unwrap(), &b);
    }

    #[test]
    fn records_of_the_fixed_width_encoding_still_decode() {
        let b = awkward_batch();
        let mut fixed = Vec::new();
        b.encode_fixed(&mut fixed);
        assert_same(&WriteBatch::decode_fixed(&fixed).unwrap(), &b);
        let mut compact = Vec::new();
        b.encode(&mut compact);
        assert!(
            compact.len() < fixed.len(),
            "{} {}",
            compact.len(),
            fixed.len()
        );
    }

    /// The plain varint encoding, byte by byte: what `put_varint` must write.
    fn write_varint(buf: &mut [u8], mut v: u64) -> usize {
        let mut n = 0;
        while v >= 0x80 {
            buf[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        buf[n] = v as u8;
        n + 1
    }

    #[test]
    fn varints_of_every_length_read_back() {
        let mut values = vec![0, 1, 127, 128, 300, u64::MAX, i64::MAX as u64];
        for bits in 1..64 {
            values.extend([(1u64 << bits) - 1, 1 << bits, (1 << bits) + 1]);
        }
        let mut out = Vec::new();
        for &v in &values {
            put_varint(&mut out, v);
        }
        let mut r = Reader { buf: &out, pos: 0 };
        for &v in &values {
            let mut one = Vec::new();
            put_varint(&mut one, v);
            let mut expected = [0u8; 10];
            let n = write_varint(&mut expected, v);
            assert_eq!(one, &expected[..n], "{v}");
            assert_eq!(r.varint().unwrap(), v);
        }
        assert_eq!(r.pos, out.len());
    }
}
