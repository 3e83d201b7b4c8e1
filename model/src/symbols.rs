//! Interned strings of one write: every name and string value of a batch, stored once.

use std::ops::Range;

use hashbrown::HashTable;

/// A string interned in a batch's [`Symbols`]; only meaningful with the batch it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub u32);

impl Sym {
    /// The symbol's position, usable as an index into per-batch lookup tables.
    #[inline]
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

#[inline]
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
    #[inline]
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
    #[inline]
    pub fn push_unique(&mut self, s: &str) -> Sym {
        let id = self.ends.len() as u32;
        self.data.push_str(s);
        self.ends.push(self.data.len() as u32);
        Sym(id)
    }

    /// The string behind `sym`.
    #[inline]
    pub fn get(&self, sym: Sym) -> &str {
        &self.data[span(&self.ends, sym.0)]
    }

    /// Number of symbols (including unique ones).
    #[inline]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when no symbol has been added.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// All symbols in the order they were added; the position is the symbol's index.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len() as u32).map(|id| &self.data[span(&self.ends, id)])
    }

    /// Total bytes of string data held.
    #[inline]
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// The string data of every symbol, back to back: what [`Symbols::ends`] indexes.
    #[inline]
    pub fn data(&self) -> &str {
        &self.data
    }

    /// Where each symbol's string ends in [`Symbols::data`] (it starts where the one before
    /// ends), by symbol index.
    #[inline]
    pub fn ends(&self) -> &[u32] {
        &self.ends
    }

    /// The symbols whose strings are `data` cut at `ends` (as [`Symbols::data`] and
    /// [`Symbols::ends`] give them): how a stored batch is read back. Fails unless `ends`
    /// ascend, stay within `data` and fall between characters. Symbols read back this way
    /// are not indexed: [`Symbols::intern`] then adds a string again rather than finding it,
    /// which is harmless (one string may have several symbols, see [`Symbols::push_unique`]).
    pub fn from_parts(data: String, ends: Vec<u32>) -> Result<Self, InvalidBatch> {
        let mut prev = 0;
        for &end in &ends {
            if end < prev || end as usize > data.len() {
                return Err(InvalidBatch("symbol offsets out of order"));
            }
            if !data.is_char_boundary(end as usize) {
                return Err(InvalidBatch("a symbol splits a character"));
            }
            prev = end;
        }
        Ok(Symbols {
            data,
            ends,
            ..Symbols::default()
        })
    }
}

/// Parts that do not make a batch: symbols out of order, or a symbol, tag or field that a
/// point refers to is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid write batch: {0}")]
pub struct InvalidBatch(pub(crate) &'static str);

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
    fn symbols_rebuilt_from_their_parts_read_the_same() {
        let mut s = Symbols::default();
        for word in ["cpu", "", "snö", "host"] {
            s.intern(word);
        }
        let again = Symbols::from_parts(s.data().to_string(), s.ends().to_vec()).unwrap();
        assert_eq!(
            again.iter().collect::<Vec<_>>(),
            s.iter().collect::<Vec<_>>()
        );
        let data = "snö".to_string();
        assert!(
            Symbols::from_parts(data.clone(), vec![3]).is_err(),
            "splits ö"
        );
        assert!(Symbols::from_parts(data.clone(), vec![2, 1]).is_err());
        assert!(Symbols::from_parts(data, vec![5]).is_err());
    }
}
