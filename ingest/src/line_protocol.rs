//! InfluxDB line protocol -> [`WriteBatch`].
//!
//! A line is read as InfluxDB 1.x reads it, which is what clients written for it expect
//! (`tests/e2e/influxdb.rs` sends the same generated and mutated lines to InfluxDB 1.6 and to
//! Sluice and compares what each stores):
//!
//! - In the measurement and the tags, a byte is escaped when a backslash comes right before
//!   it: `east\\ ` is a tag value that goes on past its space.
//! - Unescaping removes the backslash of `\,`, `\ ` and `\=` (and of `\"` in measurements and
//!   field keys) and keeps every other backslash: `\\` stays two backslashes; only string
//!   field values know `\\` and `\"`.
//! - A tag key ends at the first unescaped `=`, a tag value at the first unescaped `,` or
//!   space; an unescaped `=` in a tag value, or `,` or space in a tag key, is an error.
//! - Floats are `-?(digits[.digits] | .digits)` with an optional exponent: `1.`, `.1`, `-0.`
//!   and `.0E4` are floats; values past the range of an f64 are errors.
//!
//! Sluice refuses, with an error, the lines InfluxDB 1.x reads two ways (its check of the field
//! set and its reading of it disagree) or stores where no query finds them, instead of storing
//! what InfluxDB stores: text after a string value's closing quote (`s="a"b`), a field key
//! with an unescaped comma, a field key ending in backslashes before its delimiter
//! (`f\\=1`), and a measurement with two backslashes before `,`, space, `=` or `"`. It also
//! accepts unsigned integers (`12u`) as InfluxDB 2 and 3 do and a `\r` before the line's
//! `\n`, and refuses names with control characters.
//!
//! The parser is a plain loop over bytes. It allocates per batch, never per line: names are
//! interned into the batch's symbols, unescaping goes through one reused scratch buffer, and
//! the tags of a series seen earlier in the same body are reused by looking up the raw bytes
//! of its series key (`measurement,tag=value,...`), which turns the eleven interning lookups
//! of a TSBS line into one.

mod report;

pub use report::{LineError, WriteReport};

use crate::bytes_map::BytesMap;

use sluice_model::{FieldValue, Sym, WriteBatch};

/// How the timestamps of a body are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Guess per timestamp from its magnitude, as InfluxDB 3 does: below 5e9 seconds,
    /// below 5e12 milliseconds, below 5e15 microseconds, otherwise nanoseconds.
    Auto,
    Nanosecond,
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
}

impl Precision {
    /// Parses the names the v3 API accepts (`auto`, `ns`, `us`, `ms`, `s` and the long forms).
    pub fn parse_v3(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Precision::Auto,
            "ns" | "nanosecond" | "nanoseconds" | "n" => Precision::Nanosecond,
            "us" | "microsecond" | "microseconds" | "u" | "µs" => Precision::Microsecond,
            "ms" | "millisecond" | "milliseconds" => Precision::Millisecond,
            "s" | "second" | "seconds" => Precision::Second,
            _ => return None,
        })
    }

    /// Parses the names of the v2 API (`ns`, `us`, `ms`, `s`).
    pub fn parse_v2(s: &str) -> Option<Self> {
        Some(match s {
            "ns" => Precision::Nanosecond,
            "us" => Precision::Microsecond,
            "ms" => Precision::Millisecond,
            "s" => Precision::Second,
            _ => return None,
        })
    }

    /// Parses the names of the v1 API (`n`, `ns`, `u`, `us`, `ms`, `s`, `m`, `h`).
    pub fn parse_v1(s: &str) -> Option<Self> {
        Some(match s {
            "n" | "ns" => Precision::Nanosecond,
            "u" | "us" | "µ" => Precision::Microsecond,
            "ms" => Precision::Millisecond,
            "s" => Precision::Second,
            "m" => Precision::Minute,
            "h" => Precision::Hour,
            _ => return None,
        })
    }

    fn nanos_per_unit(self, ts: i64) -> i64 {
        match self {
            Precision::Auto => {
                let secs = (ts / 1_000_000_000).unsigned_abs();
                if secs < 5 {
                    1_000_000_000
                } else if secs < 5_000 {
                    1_000_000
                } else if secs < 5_000_000 {
                    1_000
                } else {
                    1
                }
            }
            Precision::Nanosecond => 1,
            Precision::Microsecond => 1_000,
            Precision::Millisecond => 1_000_000,
            Precision::Second => 1_000_000_000,
            Precision::Minute => 60_000_000_000,
            Precision::Hour => 3_600_000_000_000,
        }
    }

    /// Converts a timestamp in this precision to nanoseconds, or `None` if it overflows.
    pub fn to_nanos(self, ts: i64) -> Option<i64> {
        ts.checked_mul(self.nanos_per_unit(ts))
    }
}

/// How to parse one request body.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions {
    pub precision: Precision,
    /// Nanosecond time given to lines without a timestamp: the request's arrival time, the same
    /// for every line of the request.
    pub default_time: i64,
    /// Lines longer than this are rejected.
    pub max_line_bytes: usize,
}

/// What parsing a body produced.
#[derive(Debug, Default)]
pub struct ParseOutcome {
    /// Lines that parsed; comments and blank lines are neither points nor errors.
    pub batch: WriteBatch,
    /// Lines that did not, in body order.
    pub errors: Vec<LineError>,
    /// Lines that held a point or an error (not comments or blank lines).
    pub lines: usize,
}

/// Parses a whole line-protocol body.
pub fn parse(body: &[u8], opts: &ParseOptions) -> ParseOutcome {
    let mut p = Parser::new(body, *opts);
    p.run();
    ParseOutcome {
        batch: p.batch,
        errors: p.errors,
        lines: p.lines,
    }
}

const ORIGINAL_LINE_LIMIT: usize = 1024;

/// The texts of lines `numbers` (1-based, ascending, as in [`LineError::line_number`] and
/// [`sluice_model::Point::line`]) of `body`, each cut to 1 KiB: for error reports about points
/// that parsed but were rejected later. One pass over the body, however many lines are asked
/// for; a number past the last line gets an empty text.
pub fn line_texts(body: &[u8], numbers: &[u32]) -> Vec<String> {
    let mut out = Vec::with_capacity(numbers.len());
    let mut wanted = numbers.iter().copied().peekable();
    let (mut start, mut n) = (0, 0u32);
    while start < body.len() && wanted.peek().is_some() {
        n += 1;
        let end = line_end(body, start);
        while wanted.next_if_eq(&n).is_some() {
            let line = body[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&body[start..end]);
            out.push(shorten(String::from_utf8_lossy(line).into_owned()));
        }
        start = end + 1;
    }
    out.resize(numbers.len(), String::new());
    out
}

/// Splits `body` into pieces of at most `max_bytes` that end at line ends (never inside a
/// line, nor inside a quoted string that spans lines), for clients that must send a large
/// file as several requests. Each piece comes with the number of lines before it, so that a
/// line number the server reports for a piece can be turned back into one of the whole body.
/// A single line longer than `max_bytes` is a piece of its own.
pub fn split_lines(body: &[u8], max_bytes: usize) -> Vec<(u32, &[u8])> {
    let mut pieces = Vec::new();
    let (mut piece_start, mut piece_lines) = (0, 0u32);
    let (mut start, mut lines) = (0, 0u32);
    while start < body.len() {
        let end = line_end(body, start);
        let next = (end + 1).min(body.len());
        if next - piece_start > max_bytes && start > piece_start {
            pieces.push((piece_lines, &body[piece_start..start]));
            piece_start = start;
            piece_lines = lines;
        }
        lines += 1;
        start = next;
    }
    if piece_start < body.len() {
        pieces.push((piece_lines, &body[piece_start..]));
    }
    pieces
}

fn shorten(mut s: String) -> String {
    if s.len() > ORIGINAL_LINE_LIMIT {
        let mut cut = ORIGINAL_LINE_LIMIT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

struct Parser<'a> {
    body: &'a [u8],
    utf8_ok: bool,
    opts: ParseOptions,
    batch: WriteBatch,
    errors: Vec<LineError>,
    lines: usize,
    scratch: String,
    /// Raw series-key bytes -> (table, tag range) of the first line that had them.
    series: BytesMap<'a, (Sym, (u32, u32))>,
}

/// Why a line failed, before it is attached to its line number.
type LineResult<T> = Result<T, String>;

impl<'a> Parser<'a> {
    fn new(body: &'a [u8], opts: ParseOptions) -> Self {
        Parser {
            body,
            utf8_ok: std::str::from_utf8(body).is_ok(),
            opts,
            batch: WriteBatch::new(),
            errors: Vec::new(),
            lines: 0,
            scratch: String::new(),
            series: BytesMap::default(),
        }
    }

    fn run(&mut self) {
        let body = self.body;
        let mut start = 0;
        let mut line_number: u32 = 0;
        while start < body.len() {
            line_number += 1;
            let end = line_end(body, start);
            let mut line_end = end;
            if line_end > start && body[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            self.line(start, line_end, line_number);
            start = end + 1;
        }
    }

    fn line(&mut self, start: usize, end: usize, line_number: u32) {
        let body = self.body;
        let mut s = start;
        while s < end && matches!(body[s], b' ' | b'\t') {
            s += 1;
        }
        if s == end || body[s] == b'#' {
            return;
        }
        self.lines += 1;
        let tags_mark = self.batch.begin_tags();
        let fields_mark = self.batch.begin_fields();
        let result = if end - start > self.opts.max_line_bytes {
            Err(format!(
                "line is {} bytes, over the limit of {} (--max-line-bytes)",
                end - start,
                self.opts.max_line_bytes
            ))
        } else if !self.utf8_ok && std::str::from_utf8(&body[start..end]).is_err() {
            Err("line is not valid UTF-8".to_string())
        } else {
            self.parse_line(s, end, line_number)
        };
        if let Err(message) = result {
            self.batch.truncate_tags(tags_mark);
            self.batch.truncate_fields(fields_mark);
            let original = shorten(String::from_utf8_lossy(&body[start..end]).into_owned());
            self.errors.push(LineError {
                line_number,
                original_line: original,
                message,
            });
        }
    }

    fn parse_line(&mut self, start: usize, end: usize, line_number: u32) -> LineResult<()> {
        let body = self.body;
        // Series key: measurement and tags, up to the first unescaped space.
        let key_end = scan_escaped_until(body, start + 1, end, |c| c == b' ');
        let key = &body[start..key_end];
        let hash = self.series.hash(key);
        let cached = self.series.get(hash, key);
        let (table, tags) = match cached {
            Some(hit) => hit,
            None => self.parse_series(start, key_end)?,
        };
        if key_end == end {
            return Err(
                "missing fields: expected a space and then field=value after the tags".into(),
            );
        }
        let mut pos = key_end;
        while pos < end && matches!(body[pos], b' ' | b'\t') {
            pos += 1;
        }
        let fields_start = self.batch.begin_fields();
        pos = self.parse_fields(pos, end)?;
        let time = self.parse_timestamp(pos, end)?;
        self.batch
            .push_point(table, tags, fields_start, time, line_number);
        // Only a line that parsed whole may be remembered: a failed line's tags are truncated.
        if cached.is_none() {
            self.series.insert(hash, key, (table, tags));
        }
        Ok(())
    }

    /// Parses `measurement[,key=value...]` spanning exactly `start..end` (which ends at an
    /// unescaped space or the end of the line).
    fn parse_series(&mut self, start: usize, end: usize) -> LineResult<(Sym, (u32, u32))> {
        let body = self.body;
        if body[start] == b',' {
            return Err("missing measurement name at the start of the line".into());
        }
        let m_end = scan_escaped_until(body, start + 1, end, |c| c == b',');
        if let Some(at) = body[start..m_end].windows(3).position(|w| {
            w[0] == b'\\' && w[1] == b'\\' && matches!(w[2], b',' | b' ' | b'=' | b'"')
        }) {
            // InfluxDB 1.x acknowledges such a point and then cannot find it in any query.
            return Err(format!(
                "measurement '{}' has two backslashes before a '{}', which InfluxDB 1.x stores \
                 under a name no query finds; remove a backslash",
                lossy(&body[start..m_end]),
                body[start + at + 2] as char
            ));
        }
        let table = self.name(start, m_end, Token::Measurement)?;
        let tags = self.batch.begin_tags();
        let mut pos = m_end;
        while pos < end {
            // body[pos] == ','
            pos += 1;
            let k_end = scan_escaped_until(body, pos, end, |c| matches!(c, b'=' | b','));
            if k_end == pos {
                return Err("empty tag key after ','".into());
            }
            if k_end == end || body[k_end] == b',' {
                return Err(format!(
                    "tag '{}' has no '=value'; tags are written key=value (escape a comma, \
                     space or '=' in a tag key with a backslash)",
                    lossy(&body[pos..k_end])
                ));
            }
            let key = self.name(pos, k_end, Token::TagKey)?;
            let v_start = k_end + 1;
            if v_start == end || body[v_start] == b',' {
                return Err(format!(
                    "tag '{}' has an empty value; omit the tag instead",
                    self.batch.str(key)
                ));
            }
            // The first byte of a value may be '=' (InfluxDB 1.x reads `t==x` as "=x").
            let v_end = scan_escaped_until(body, v_start + 1, end, |c| matches!(c, b',' | b'='));
            if v_end < end && body[v_end] == b'=' {
                return Err(format!(
                    "tag '{}' has an unescaped '=' in its value '{}'; escape it as \\=",
                    self.batch.str(key),
                    lossy(&body[v_start..end])
                        .split(',')
                        .next()
                        .unwrap_or_default()
                ));
            }
            let value = self.name(v_start, v_end, Token::TagValue)?;
            self.batch.push_tag(key, value);
            pos = v_end;
        }
        Ok((table, self.batch.end_tags(tags)))
    }

    /// Parses `key=value[,key=value...]` from `pos`; returns where the field set ends.
    fn parse_fields(&mut self, mut pos: usize, end: usize) -> LineResult<usize> {
        let body = self.body;
        loop {
            let k_end = scan_until(body, pos, end, |c| matches!(c, b'=' | b' ' | b','));
            // InfluxDB 1.x checks a field set taking `\\` as one escape, then reads keys
            // taking a byte after any backslash as escaped; the two disagree on a delimiter
            // after an even run of backslashes, so such a key is refused.
            let backslashes = body[pos..k_end]
                .iter()
                .rev()
                .take_while(|&&c| c == b'\\')
                .count();
            if backslashes > 0 && k_end < end {
                return Err(format!(
                    "field key '{}' ends in backslashes right before a '{}', which InfluxDB 1.x \
                     reads two ways; remove a backslash or put another character after them",
                    lossy(&body[pos..k_end]),
                    body[k_end] as char
                ));
            }
            if k_end < end && body[k_end] == b',' {
                return Err(format!(
                    "field key '{}' is followed by an unescaped ','; fields are written \
                     key=value, and a comma in a field key is escaped as \\,",
                    lossy(&body[pos..k_end])
                ));
            }
            if k_end == end || body[k_end] != b'=' {
                return Err(format!(
                    "field '{}' has no '=value'; fields are written key=value (escape a \
                     space or '=' in a field key with a backslash)",
                    lossy(&body[pos..k_end])
                ));
            }
            if k_end == pos {
                return Err("empty field key before '='".into());
            }
            let key = self.name(pos, k_end, Token::FieldKey)?;
            let v_start = k_end + 1;
            let (value, v_end) = self.field_value(key, v_start, end)?;
            self.batch.push_field(key, value);
            if v_end == end {
                return Ok(end);
            }
            match body[v_end] {
                b',' => pos = v_end + 1,
                b' ' => return Ok(v_end),
                _ => {
                    return Err(format!(
                        "unexpected '{}' after the value of field '{}'",
                        lossy(&body[v_end..v_end + 1]),
                        self.batch.str(key)
                    ));
                }
            }
        }
    }

    fn field_value(
        &mut self,
        key: Sym,
        start: usize,
        end: usize,
    ) -> LineResult<(FieldValue, usize)> {
        let body = self.body;
        if start < end && body[start] == b'"' {
            return self.string_value(key, start, end);
        }
        let mut v_end = start;
        while v_end < end && !matches!(body[v_end], b',' | b' ') {
            v_end += 1;
        }
        let raw = &body[start..v_end];
        let value = parse_scalar(raw).ok_or_else(|| {
            if raw.is_empty() {
                format!("field '{}' has no value after '='", self.batch.str(key))
            } else {
                format!(
                    "invalid value '{}' for field '{}': expected a float (1.5, -2e3), an \
                     integer (12i), an unsigned integer (12u), a boolean (t, true, F, false…) \
                     or a double-quoted string",
                    lossy(raw),
                    self.batch.str(key)
                )
            }
        })?;
        let value = value.map_err(|what| {
            format!(
                "{what} '{}' for field '{}' is out of range",
                lossy(raw),
                self.batch.str(key)
            )
        })?;
        Ok((value, v_end))
    }

    fn string_value(
        &mut self,
        key: Sym,
        start: usize,
        end: usize,
    ) -> LineResult<(FieldValue, usize)> {
        let body = self.body;
        let mut i = start + 1;
        let mut escaped = false;
        while i < end {
            match body[i] {
                b'\\' if i + 1 < end && matches!(body[i + 1], b'"' | b'\\') => {
                    escaped = true;
                    i += 2;
                }
                b'"' => break,
                _ => i += 1,
            }
        }
        if i >= end {
            return Err(format!(
                "string value of field '{}' has no closing double quote",
                self.batch.str(key)
            ));
        }
        let raw = &body[start + 1..i];
        let sym = if escaped {
            self.scratch.clear();
            let mut j = 0;
            while j < raw.len() {
                if raw[j] == b'\\' && j + 1 < raw.len() && matches!(raw[j + 1], b'"' | b'\\') {
                    self.scratch.push(raw[j + 1] as char);
                    j += 2;
                } else {
                    let next =
                        memchr::memchr(b'\\', &raw[j + 1..]).map_or(raw.len(), |k| j + 1 + k);
                    self.scratch.push_str(as_str(&raw[j..next]));
                    j = next;
                }
            }
            self.batch.symbols.push_unique(&self.scratch)
        } else {
            self.batch.symbols.push_unique(as_str(raw))
        };
        Ok((FieldValue::Str(sym), i + 1))
    }

    fn parse_timestamp(&self, mut pos: usize, end: usize) -> LineResult<i64> {
        let body = self.body;
        while pos < end && matches!(body[pos], b' ' | b'\t') {
            pos += 1;
        }
        if pos == end {
            return Ok(self.opts.default_time);
        }
        let mut ts_end = pos;
        while ts_end < end && body[ts_end] != b' ' {
            ts_end += 1;
        }
        let raw = &body[pos..ts_end];
        let ts = parse_i64(raw).ok_or_else(|| {
            format!(
                "invalid timestamp '{}': expected an integer number of {}",
                lossy(raw),
                match self.opts.precision {
                    Precision::Auto => "seconds, milliseconds, microseconds or nanoseconds",
                    Precision::Nanosecond => "nanoseconds",
                    Precision::Microsecond => "microseconds",
                    Precision::Millisecond => "milliseconds",
                    Precision::Second => "seconds",
                    Precision::Minute => "minutes",
                    Precision::Hour => "hours",
                }
            )
        })?;
        if body[ts_end..end].iter().any(|&c| c != b' ') {
            return Err(format!(
                "unexpected text after the timestamp: '{}'",
                lossy(&body[ts_end..end]).trim()
            ));
        }
        self.opts.precision.to_nanos(ts).ok_or_else(|| {
            format!(
                "timestamp {ts} is out of range for nanoseconds since 1970 (precision too fine?)"
            )
        })
    }

    /// Interns the name or tag value at `start..end`, unescaping it if needed.
    fn name(&mut self, start: usize, end: usize, token: Token) -> LineResult<Sym> {
        let raw = &self.body[start..end];
        if let Some(bad) = raw.iter().find(|&&c| c == b'\t' || c == 0) {
            return Err(format!(
                "{} '{}' contains a {}; escape or remove it",
                token.what(),
                lossy(raw),
                if *bad == 0 { "NUL byte" } else { "tab" }
            ));
        }
        if memchr::memchr(b'\\', raw).is_none() {
            return Ok(self.batch.symbols.intern(as_str(raw)));
        }
        self.scratch.clear();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && i + 1 < raw.len() {
                let c = raw[i + 1];
                if token.escapable(c) {
                    self.scratch.push(c as char);
                    i += 2;
                    continue;
                }
                self.scratch.push('\\');
                i += 1;
                continue;
            }
            let next = memchr::memchr(b'\\', &raw[i + 1..]).map_or(raw.len(), |k| i + 1 + k);
            self.scratch.push_str(as_str(&raw[i..next]));
            i = next;
        }
        Ok(self.batch.symbols.intern(&self.scratch))
    }
}

#[derive(Clone, Copy)]
enum Token {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Token {
    fn what(self) -> &'static str {
        match self {
            Token::Measurement => "measurement",
            Token::TagKey => "tag key",
            Token::TagValue => "tag value",
            Token::FieldKey => "field key",
        }
    }

    /// The bytes whose escaping backslash InfluxDB 1.x removes; every other backslash stays.
    fn escapable(self, c: u8) -> bool {
        match self {
            Token::Measurement | Token::FieldKey => matches!(c, b',' | b' ' | b'=' | b'"'),
            Token::TagKey | Token::TagValue => matches!(c, b',' | b' ' | b'='),
        }
    }
}

/// The end of the line starting at `start`: the next `\n` outside a quoted string field (or
/// the end of the body) that no backslash escapes. Lines without a double quote or a trailing
/// backslash, the common case, take the fast path.
fn line_end(body: &[u8], start: usize) -> usize {
    let nl = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
    let escaped_newline = nl > start && nl < body.len() && body[nl - 1] == b'\\';
    if !escaped_newline && memchr::memchr(b'"', &body[start..nl]).is_none() {
        return nl;
    }
    // The Go scanner's rule (points.go scanLine): after the first unescaped space, a double
    // quote toggles quoting when more '=' than ',' have been seen, and newlines inside quotes
    // belong to the line.
    let (mut quoted, mut fields, mut escape) = (false, false, false);
    let (mut equals, mut commas) = (0usize, 0usize);
    let mut i = start;
    while i < body.len() {
        let c = body[i];
        if escape {
            escape = false;
        } else if c == b'\\' {
            escape = true;
        } else if c == b' ' {
            fields = true;
        } else if fields && !quoted && c == b'=' {
            equals += 1;
        } else if fields && !quoted && c == b',' {
            commas += 1;
        } else if fields && c == b'"' && equals > commas {
            quoted = !quoted;
        } else if c == b'\n' && !quoted {
            return i;
        }
        i += 1;
    }
    body.len()
}

/// The first position in `start..end` holding a byte that `stop` accepts and that no
/// backslash escapes, where a backslash escapes the byte after it and a `\\` pair is one
/// escape (the rule of the field set); `end` if there is none.
#[inline]
fn scan_until(body: &[u8], start: usize, end: usize, stop: impl Fn(u8) -> bool) -> usize {
    let mut i = start;
    while i < end {
        let c = body[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if stop(c) {
            return i;
        }
        i += 1;
    }
    end
}

/// The first position in `start..end` holding a byte that `stop` accepts and that does not
/// come right after a backslash (the rule InfluxDB 1.x reads measurements and tags by, so
/// `a\\,b` is one name); `end` if there is none. `start` must not be the line's first byte.
#[inline]
fn scan_escaped_until(body: &[u8], start: usize, end: usize, stop: impl Fn(u8) -> bool) -> usize {
    (start..end)
        .find(|&i| stop(body[i]) && body[i - 1] != b'\\')
        .unwrap_or(end)
}

/// Parses an unquoted field value. `None`: not a value of any type; `Some(Err)`: the right
/// shape but out of range (the error names the type).
fn parse_scalar(raw: &[u8]) -> Option<Result<FieldValue, &'static str>> {
    let (&last, digits) = raw.split_last()?;
    match last {
        b'i' => {
            if !is_signed_integer(digits) {
                return None;
            }
            return Some(parse_i64(digits).map(FieldValue::I64).ok_or("integer"));
        }
        b'u' => {
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            return Some(
                as_str(digits)
                    .parse::<u64>()
                    .map(FieldValue::U64)
                    .map_err(|_| "unsigned integer"),
            );
        }
        _ => {}
    }
    match raw {
        b"t" | b"T" | b"true" | b"True" | b"TRUE" => return Some(Ok(FieldValue::Bool(true))),
        b"f" | b"F" | b"false" | b"False" | b"FALSE" => {
            return Some(Ok(FieldValue::Bool(false)));
        }
        _ => {}
    }
    if !is_float(raw) {
        return None;
    }
    // Plain integers written as floats are common (`usage=0`): parse them exactly and fast
    // (`-0` is the float -0).
    if raw.len() <= 15 && is_signed_integer(raw) && raw != b"-0" {
        return parse_i64(raw).map(|v| Ok(FieldValue::F64(v as f64)));
    }
    let v = as_str(raw).parse::<f64>().ok()?;
    Some(if v.is_finite() {
        Ok(FieldValue::F64(v))
    } else {
        Err("float")
    })
}

fn is_signed_integer(raw: &[u8]) -> bool {
    let digits = raw.strip_prefix(b"-").unwrap_or(raw);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// `-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?`, the floats of InfluxDB 1.x: `1.`, `.5` and `-0.`
/// are floats, a lone `.` is not.
fn is_float(raw: &[u8]) -> bool {
    let mut i = usize::from(raw.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < raw.len() && raw[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    let whole = digits(&mut i);
    let mut fraction = false;
    if i < raw.len() && raw[i] == b'.' {
        i += 1;
        fraction = digits(&mut i);
    }
    if !whole && !fraction {
        return false;
    }
    if i < raw.len() && matches!(raw[i], b'e' | b'E') {
        i += 1;
        if i < raw.len() && matches!(raw[i], b'+' | b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == raw.len()
}

/// Parses `-?\d+` into an i64, `None` on any other byte or on overflow.
fn parse_i64(raw: &[u8]) -> Option<i64> {
    let (neg, digits) = match raw.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, raw),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulate negatively so that i64::MIN parses.
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    if neg { Some(v) } else { v.checked_neg() }
}

/// The body was checked to be UTF-8 (whole, or this line) before any token is read, and tokens
/// are cut at ASCII delimiters, so they are UTF-8 as well.
fn as_str(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("\u{fffd}")
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

#[cfg(test)]
mod tests;
