//! The points of one write and their parts.
//!
//! A [`WriteBatch`] holds the points of one request for one database. Its strings (table
//! names, tag keys and values, field names, string field values) live once in a per-batch
//! [`Symbols`] table and points refer to them by [`Sym`], so that decoding allocates per
//! batch, not per line, and storage can translate each distinct name once per batch instead
//! of once per point. Points may share one tag range: a decoder that sees the same series
//! twice in a request points both at the same tags.

use std::ops::Range;

use crate::symbols::{InvalidBatch, Sym, Symbols};

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
    #[inline]
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
    #[inline]
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::UInteger => "unsigned integer",
            FieldType::Boolean => "boolean",
            FieldType::String => "string",
        }
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
    #[inline]
    pub fn tag_range(&self) -> Range<usize> {
        self.tags.0 as usize..self.tags.1 as usize
    }

    /// [`Point::tag_range`] as the (start, end) pair [`Point::from_parts`] takes.
    #[inline]
    pub fn tag_span(&self) -> (u32, u32) {
        self.tags
    }

    /// Where this point's fields are in [`WriteBatch::all_fields`]: the (start, end) pair
    /// [`Point::from_parts`] takes.
    #[inline]
    pub fn field_span(&self) -> (u32, u32) {
        self.fields
    }

    /// A point of `table` at `time` whose tags and fields are the ranges `tags` and `fields`
    /// (start, end) of a batch's [`WriteBatch::all_tags`] and [`WriteBatch::all_fields`]:
    /// for rebuilding a stored batch with [`WriteBatch::from_parts`], which checks them.
    pub fn from_parts(
        table: Sym,
        time: i64,
        line: u32,
        tags: (u32, u32),
        fields: (u32, u32),
    ) -> Self {
        Point {
            table,
            time,
            line,
            tags,
            fields,
        }
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
    #[inline]
    pub fn reserve(&mut self, points: usize) {
        self.points.reserve(points);
        self.fields.reserve(points);
    }

    /// The points, in request order.
    #[inline]
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Number of points.
    #[inline]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when the batch has no point.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Total number of field values over all points.
    #[inline]
    pub fn field_value_count(&self) -> usize {
        self.points
            .iter()
            .map(|p| (p.fields.1 - p.fields.0) as usize)
            .sum()
    }

    /// The tags of `point`.
    #[inline]
    pub fn tags_of(&self, point: &Point) -> &[Tag] {
        &self.tags[point.tags.0 as usize..point.tags.1 as usize]
    }

    /// The fields of `point`.
    #[inline]
    pub fn fields_of(&self, point: &Point) -> &[Field] {
        &self.fields[point.fields.0 as usize..point.fields.1 as usize]
    }

    /// The string behind `sym`.
    #[inline]
    pub fn str(&self, sym: Sym) -> &str {
        self.symbols.get(sym)
    }

    /// Starts a new tag range; add tags with [`WriteBatch::push_tag`] and close it with
    /// [`WriteBatch::end_tags`].
    #[inline]
    pub fn begin_tags(&self) -> u32 {
        self.tags.len() as u32
    }

    /// Appends a tag to the open tag range.
    #[inline]
    pub fn push_tag(&mut self, key: Sym, value: Sym) {
        self.tags.push(Tag { key, value });
    }

    /// Closes the tag range opened at `start`, returning it for [`WriteBatch::push_point`].
    #[inline]
    pub fn end_tags(&self, start: u32) -> (u32, u32) {
        (start, self.tags.len() as u32)
    }

    /// Names the tag range `range` (from [`WriteBatch::end_tags`]) by `id`, whose tags it
    /// must hold. A range keeps its first id; ids are not written to the WAL.
    #[inline]
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
    #[inline]
    pub fn tag_set_id(&self, range: Range<usize>) -> Option<TagSetId> {
        let key = (range.start as u32, range.end as u32);
        let i = self.tag_set_ids.binary_search_by_key(&key, |e| e.0).ok()?;
        Some(self.tag_set_ids[i].1)
    }

    /// Drops tags added since `start` (a line that failed to parse).
    #[inline]
    pub fn truncate_tags(&mut self, start: u32) {
        self.tags.truncate(start as usize);
    }

    /// Starts the field list of the next point.
    #[inline]
    pub fn begin_fields(&self) -> u32 {
        self.fields.len() as u32
    }

    /// Appends a field to the open field list.
    #[inline]
    pub fn push_field(&mut self, key: Sym, value: FieldValue) {
        self.fields.push(Field { key, value });
    }

    /// Drops fields added since `start` (a line that failed to parse).
    #[inline]
    pub fn truncate_fields(&mut self, start: u32) {
        self.fields.truncate(start as usize);
    }

    /// Adds a point whose tags are `tags` (from [`WriteBatch::end_tags`], possibly shared with
    /// earlier points) and whose fields are those pushed since `fields_start`.
    #[inline]
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

    /// Every tag of the batch, in the order the decoder added them; points refer to ranges
    /// of it ([`Point::tag_range`]), and dropped points leave theirs in place.
    #[inline]
    pub fn all_tags(&self) -> &[Tag] {
        &self.tags
    }

    /// Every field of the batch, likewise ([`Point::field_span`]).
    #[inline]
    pub fn all_fields(&self) -> &[Field] {
        &self.fields
    }

    /// The batch of `points` over `symbols`, `tags` and `fields`: how a stored batch is read
    /// back (tag set ids are not stored). Fails unless every symbol a part names exists and
    /// every point's tag and field ranges lie within `tags` and `fields`, so that a damaged
    /// record is an error here and never a panic later.
    pub fn from_parts(
        symbols: Symbols,
        tags: Vec<Tag>,
        fields: Vec<Field>,
        points: Vec<Point>,
    ) -> Result<WriteBatch, InvalidBatch> {
        let n = symbols.len();
        let known = |s: Sym| s.index() < n;
        if !tags.iter().all(|t| known(t.key) && known(t.value)) {
            return Err(InvalidBatch("a tag names a symbol that does not exist"));
        }
        let field_ok = |f: &Field| match f.value {
            FieldValue::Str(v) => known(f.key) && known(v),
            _ => known(f.key),
        };
        if !fields.iter().all(field_ok) {
            return Err(InvalidBatch("a field names a symbol that does not exist"));
        }
        let within = |(start, end): (u32, u32), len: usize| start <= end && end as usize <= len;
        for p in &points {
            if !known(p.table) {
                return Err(InvalidBatch(
                    "a point names a table symbol that does not exist",
                ));
            }
            if !within(p.tags, tags.len()) || !within(p.fields, fields.len()) {
                return Err(InvalidBatch("a point refers past its tags or fields"));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one_point() -> WriteBatch {
        let mut b = WriteBatch::new();
        let (cpu, host, a, v) = (
            b.symbols.intern("cpu"),
            b.symbols.intern("host"),
            b.symbols.intern("a"),
            b.symbols.intern("v"),
        );
        let t = b.begin_tags();
        b.push_tag(host, a);
        let tags = b.end_tags(t);
        let f = b.begin_fields();
        b.push_field(v, FieldValue::F64(1.5));
        b.push_point(cpu, tags, f, 42, 1);
        b
    }

    fn parts(b: &WriteBatch) -> (Symbols, Vec<Tag>, Vec<Field>, Vec<Point>) {
        let symbols = Symbols::from_parts(b.symbols.data().into(), b.symbols.ends().into());
        (
            symbols.unwrap(),
            b.all_tags().to_vec(),
            b.all_fields().to_vec(),
            b.points().to_vec(),
        )
    }

    #[test]
    fn a_batch_rebuilt_from_its_parts_is_the_same() {
        let b = one_point();
        let (symbols, tags, fields, points) = parts(&b);
        let again = WriteBatch::from_parts(symbols, tags, fields, points).unwrap();
        let p = &again.points()[0];
        assert_eq!(again.points(), b.points());
        assert_eq!(again.str(p.table), "cpu");
        assert_eq!(again.str(again.tags_of(p)[0].value), "a");
        assert_eq!(again.fields_of(p)[0].value, FieldValue::F64(1.5));
    }

    #[test]
    fn parts_that_refer_to_nothing_are_refused() {
        let b = one_point();
        let (symbols, tags, fields, _) = parts(&b);
        let past_fields = Point::from_parts(Sym(0), 1, 1, (0, 1), (0, 2));
        let e = WriteBatch::from_parts(
            symbols.clone(),
            tags.clone(),
            fields.clone(),
            vec![past_fields],
        );
        assert!(e.unwrap_err().to_string().contains("refers past"));
        let no_table = Point::from_parts(Sym(9), 1, 1, (0, 1), (0, 1));
        assert!(
            WriteBatch::from_parts(
                symbols.clone(),
                tags.clone(),
                fields.clone(),
                vec![no_table]
            )
            .is_err()
        );
        let bad_tag = vec![Tag {
            key: Sym(0),
            value: Sym(4),
        }];
        assert!(WriteBatch::from_parts(symbols.clone(), bad_tag, fields, vec![]).is_err());
        let bad_string = vec![Field {
            key: Sym(0),
            value: FieldValue::Str(Sym(7)),
        }];
        assert!(WriteBatch::from_parts(symbols, tags, bad_string, vec![]).is_err());
    }
}
