//! A map keyed by byte strings of one request body, for what repeats within a request: the
//! decoders remember each series key (and remote write each label) they have read, so that a
//! repeat costs one hash and one compare.

use hashbrown::HashTable;

/// Values keyed by slices of a body that outlives the map.
pub(crate) struct BytesMap<'b, V> {
    index: HashTable<u32>,
    entries: Vec<(&'b [u8], V)>,
    hasher: foldhash::fast::FixedState,
}

impl<V> Default for BytesMap<'_, V> {
    fn default() -> Self {
        BytesMap {
            index: HashTable::new(),
            entries: Vec::new(),
            hasher: Default::default(),
        }
    }
}

impl<'b, V: Copy> BytesMap<'b, V> {
    /// The hash [`Self::get`] and [`Self::insert`] take for `key`.
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    /// The value of `key`, whose hash is `hash`.
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<V> {
        let entries = &self.entries;
        self.index
            .find(hash, |&i| entries[i as usize].0 == key)
            .map(|&i| entries[i as usize].1)
    }

    /// Empties the map, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }

    /// Adds `key` (not in the map yet), whose hash is `hash`.
    pub(crate) fn insert(&mut self, hash: u64, key: &'b [u8], value: V) {
        let i = self.entries.len() as u32;
        self.entries.push((key, value));
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hash, i, |&j| {
            std::hash::BuildHasher::hash_one(hasher, entries[j as usize].0)
        });
    }
}
