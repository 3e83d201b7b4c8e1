//! What remote write decoding remembers from one request to the next.
//!
//! A Prometheus server sends every series it scrapes again in every request, with the same
//! label bytes each time. The cache maps those bytes (a series entry's labels, as they are on
//! the wire) to the series' checked labels, so that a series seen before costs one hash and
//! one compare of its bytes, not a parse, a check and an interning of each label.
//!
//! Label pairs are kept once, with the symbols they were interned to in the current request's
//! batch, stamped with that request's number: the first series of a request that uses a pair
//! interns it, and every later one reuses the symbols without hashing anything.
//!
//! The cache belongs to one decoder at a time (the server keeps one per concurrent decode).
//! It holds series that passed the label checks only, and forgets everything when it grows
//! past its byte budget or the limits it checked against change; it is then relearned from
//! the next requests.

use std::ops::Range;

use hashbrown::HashTable;

use super::request::Limits;
use sluice_model::{Sym, WriteBatch};

/// Default byte budget of one cache: about 100,000 Prometheus-like series.
const DEFAULT_MAX_BYTES: usize = 48 << 20;

/// Checked series of earlier requests, by their label bytes. See the module documentation.
pub struct SeriesCache {
    max_bytes: usize,
    limits: Option<Limits>,
    /// Number of the request being decoded: a pair's symbols are this request's if it carries
    /// this number.
    request: u64,
    /// Label names and values, back to back.
    strings: String,
    pairs: Vec<Pair>,
    pair_index: HashTable<u32>,
    /// Series keys (label bytes), back to back.
    keys: Vec<u8>,
    series: Vec<Series>,
    series_index: HashTable<u32>,
    /// The tag pairs of every series, back to back.
    series_pairs: Vec<u32>,
    hasher: foldhash::fast::FixedState,
}

#[derive(Debug, Clone)]
struct Pair {
    name: Range<u32>,
    value: Range<u32>,
    request: u64,
    key: Sym,
    val: Sym,
}

#[derive(Debug, Clone)]
struct Series {
    key: Range<u32>,
    /// Its `__name__` pair.
    table: u32,
    /// Its tag pairs (labels other than `__name__` with a value), in `series_pairs`.
    tags: Range<u32>,
    request: u64,
    /// The table and tag range it resolved to in request `request`'s batch.
    resolved: (Sym, (u32, u32)),
}

/// Bytes a series or a pair costs besides its strings.
const ENTRY_BYTES: usize = 64;

impl Default for SeriesCache {
    fn default() -> Self {
        SeriesCache::new(DEFAULT_MAX_BYTES)
    }
}

impl std::fmt::Debug for SeriesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesCache")
            .field("series", &self.series.len())
            .field("pairs", &self.pairs.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl SeriesCache {
    /// An empty cache that forgets everything once it holds more than `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        SeriesCache {
            max_bytes,
            limits: None,
            request: 0,
            strings: String::new(),
            pairs: Vec::new(),
            pair_index: HashTable::new(),
            keys: Vec::new(),
            series: Vec::new(),
            series_index: HashTable::new(),
            series_pairs: Vec::new(),
            hasher: Default::default(),
        }
    }

    /// Number of series held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.strings.len()
            + self.keys.len()
            + self.series_pairs.len() * 4
            + (self.pairs.len() + self.series.len()) * ENTRY_BYTES
    }

    /// Starts a request checked against `limits`: symbols from earlier requests stop
    /// counting, and the cache is emptied if it is over budget or was checked against other
    /// limits.
    pub(super) fn begin(&mut self, limits: &Limits) {
        if self.limits.as_ref() != Some(limits) || self.bytes() > self.max_bytes {
            *self = SeriesCache::new(self.max_bytes);
            self.limits = Some(*limits);
        }
        self.request += 1;
    }

    /// The hash [`Self::find`] and [`Self::insert`] take for a series key.
    pub(super) fn hash(&self, key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    /// The table and tag range in `batch` of the series whose label bytes are `key` (hash
    /// `hash`), if it is known; its tags are added to the batch the first time in a request.
    pub(super) fn find(
        &mut self,
        hash: u64,
        key: &[u8],
        batch: &mut WriteBatch,
    ) -> Option<(Sym, (u32, u32))> {
        let Self {
            keys,
            series,
            series_index,
            ..
        } = self;
        let &i = series_index.find(hash, |&i| {
            let r = &series[i as usize].key;
            &keys[r.start as usize..r.end as usize] == key
        })?;
        let Self {
            series,
            series_pairs,
            pairs,
            strings,
            request,
            ..
        } = self;
        let s = &mut series[i as usize];
        if s.request == *request {
            return Some(s.resolved);
        }
        let table = resolve(&mut pairs[s.table as usize], *request, strings, batch).1;
        let start = batch.begin_tags();
        for &p in &series_pairs[s.tags.start as usize..s.tags.end as usize] {
            let (k, v) = resolve(&mut pairs[p as usize], *request, strings, batch);
            batch.push_tag(k, v);
        }
        s.request = *request;
        s.resolved = (table, batch.end_tags(start));
        Some(s.resolved)
    }

    /// Adds the series with label bytes `key` (not in the cache; hash `hash`), which resolved
    /// to `resolved` in this request and whose labels are `labels` (`(name, value, key,
    /// value symbols)`, checked, `__name__` among them).
    pub(super) fn insert<'a>(
        &mut self,
        hash: u64,
        key: &[u8],
        labels: impl Iterator<Item = (&'a str, &'a str, Sym, Sym)>,
        resolved: (Sym, (u32, u32)),
    ) {
        let tags_start = self.series_pairs.len() as u32;
        let mut table = None;
        for (name, value, k, v) in labels {
            let p = self.pair(name, value, k, v);
            if name == super::NAME_LABEL {
                table = Some(p);
            } else if !value.is_empty() {
                self.series_pairs.push(p);
            }
        }
        let Some(table) = table else {
            self.series_pairs.truncate(tags_start as usize);
            return;
        };
        let start = self.keys.len() as u32;
        self.keys.extend_from_slice(key);
        let id = self.series.len() as u32;
        self.series.push(Series {
            key: start..self.keys.len() as u32,
            table,
            tags: tags_start..self.series_pairs.len() as u32,
            request: self.request,
            resolved,
        });
        let Self {
            keys,
            series,
            series_index,
            hasher,
            ..
        } = self;
        series_index.insert_unique(hash, id, |&j| {
            let r = &series[j as usize].key;
            std::hash::BuildHasher::hash_one(&*hasher, &keys[r.start as usize..r.end as usize])
        });
    }

    /// The pair `name=value`, added if new, whose symbols in this request are `key`, `val`.
    fn pair(&mut self, name: &str, value: &str, key: Sym, val: Sym) -> u32 {
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, (name, value));
        let Self {
            strings,
            pairs,
            pair_index,
            hasher,
            request,
            ..
        } = self;
        let str_of = |r: &Range<u32>| &strings[r.start as usize..r.end as usize];
        if let Some(&p) = pair_index.find(hash, |&p| {
            let pair = &pairs[p as usize];
            str_of(&pair.name) == name && str_of(&pair.value) == value
        }) {
            let pair = &mut pairs[p as usize];
            (pair.request, pair.key, pair.val) = (*request, key, val);
            return p;
        }
        let mut push = |s: &str| {
            let start = strings.len() as u32;
            strings.push_str(s);
            start..strings.len() as u32
        };
        let (name_range, value_range) = (push(name), push(value));
        let id = pairs.len() as u32;
        pairs.push(Pair {
            name: name_range,
            value: value_range,
            request: *request,
            key,
            val,
        });
        pair_index.insert_unique(hash, id, |&p| {
            let pair = &pairs[p as usize];
            let str_of = |r: &Range<u32>| &strings[r.start as usize..r.end as usize];
            std::hash::BuildHasher::hash_one(&*hasher, (str_of(&pair.name), str_of(&pair.value)))
        });
        id
    }
}

/// The symbols of `pair` in request `request`'s batch, interning it there the first time.
#[inline]
fn resolve(pair: &mut Pair, request: u64, strings: &str, batch: &mut WriteBatch) -> (Sym, Sym) {
    if pair.request != request {
        let symbols = &mut batch.symbols;
        pair.key = symbols.intern(&strings[pair.name.start as usize..pair.name.end as usize]);
        pair.val = symbols.intern(&strings[pair.value.start as usize..pair.value.end as usize]);
        pair.request = request;
    }
    (pair.key, pair.val)
}
