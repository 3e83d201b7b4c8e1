//! The live Parquet files of every table, and what the WAL no longer needs to replay.
//!
//! [`LakeState`] is immutable and replaced whole (copy on write) by the persister and the
//! compactor, under the lake lock, right after the catalog that records it is durable. A query
//! holds the `Arc` it started with, so a compaction that replaces files never pulls them out
//! from under it (the replaced files are deleted later, see `compactor.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::{DAY_NANOS, date};

/// The folder of the object store that holds every database's Parquet files.
pub const DBS_PREFIX: &str = "dbs";

/// One Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParquetFile {
    /// Unique for the life of the store; names the file.
    pub id: u64,
    /// Precedence when rows of one primary key are in several files: a larger order holds
    /// newer writes. A persisted file's order is its id; a compacted file's is the largest
    /// order of the files it replaced, so that a file persisted while the compaction ran
    /// (holding newer writes) still wins over it.
    pub order: u64,
    /// Location in the object store: `dbs/<db>/<table>/<YYYY-MM-DD>/<id>.parquet`.
    pub path: String,
    /// Earliest and latest `time` in the file, nanoseconds.
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    pub size_bytes: u64,
    /// The columns the rows are sorted by (tags, then `time`; ascending, nulls last), as
    /// written. Empty for files listed by a catalog from before it was recorded.
    #[serde(default)]
    pub sort_key: Vec<String>,
}

impl ParquetFile {
    /// The UTC day (days since 1970-01-01) the file's rows fall in.
    pub fn day(&self) -> i64 {
        self.min_time.div_euclid(DAY_NANOS)
    }
}

/// A table, by database and name.
pub type TableKey = (Arc<str>, Arc<str>);

/// Files and WAL bookkeeping that the catalog on the object store records.
#[derive(Debug, Clone, Default)]
pub struct LakeState {
    /// Live files per table, ordered by id.
    pub files: BTreeMap<TableKey, Arc<[ParquetFile]>>,
    /// For each (table, buffer partition) persisted since the oldest WAL segment still on disk
    /// was written: the last WAL segment whose rows of that partition are in files. Replay
    /// skips those rows; without this, a crash between writing the catalog and deleting the
    /// segments would bring them back a second time, older than the files.
    pub persisted_through: BTreeMap<(Arc<str>, Arc<str>, i64), u64>,
    /// The id the next file gets.
    pub next_file_id: u64,
    /// Files replaced by compaction, deleted from the store once no query that started
    /// before the replacement can still be reading them.
    pub pending_deletes: Vec<PendingDelete>,
    /// Databases and tables deleted while WAL segments holding writes to them are still on
    /// disk: replay skips those writes. Dropped once the segments are gone.
    pub dropped: Vec<Dropped>,
}

/// A database (`table` is `None`) or a table deleted after the writes to it logged in WAL
/// segments up to `through_segment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub db: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub through_segment: u64,
}

/// A file no longer listed, to be deleted from the object store after a grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelete {
    pub path: String,
    /// Unix time, nanoseconds, after which nothing can be reading it.
    pub delete_after: i64,
}

impl LakeState {
    /// The live files of `db`.`table` (empty if none).
    pub fn table_files(&self, db: &str, table: &str) -> Arc<[ParquetFile]> {
        self.files
            .get(&(Arc::from(db), Arc::from(table)))
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Whether the rows of `db`.`table` in buffer partition `partition`, logged in WAL
    /// segment `segment`, are already in files.
    pub fn is_persisted(&self, db: &str, table: &str, partition: i64, segment: u64) -> bool {
        self.persisted_through
            .get(&(Arc::from(db), Arc::from(table), partition))
            .is_some_and(|&through| segment <= through)
    }

    /// Whether writes to `db` (or to its `table`) logged in WAL segment `segment` were
    /// deleted with the database or table since.
    pub fn is_dropped(&self, db: &str, table: Option<&str>, segment: u64) -> bool {
        self.dropped.iter().any(|d| {
            d.db == db
                && segment <= d.through_segment
                && (d.table.is_none() || d.table.as_deref() == table)
        })
    }

    /// Lists `files` for deletion from the object store after `delete_after`.
    pub fn delete_later(&mut self, files: &[ParquetFile], delete_after: i64) {
        self.pending_deletes
            .extend(files.iter().map(|f| PendingDelete {
                path: f.path.clone(),
                delete_after,
            }));
    }

    /// Every live file with its table.
    pub fn all_files(&self) -> impl Iterator<Item = (&TableKey, &ParquetFile)> {
        self.files
            .iter()
            .flat_map(|(k, files)| files.iter().map(move |f| (k, f)))
    }
}

/// `dbs/<db>/<table>/<YYYY-MM-DD>/<id>.parquet` for a file whose rows start at `min_time`,
/// with the table name made a [`path_segment`].
pub fn file_path(db: &str, table: &str, min_time: i64, id: u64) -> String {
    let day = date(min_time.div_euclid(DAY_NANOS));
    let table = path_segment(table);
    format!("{DBS_PREFIX}/{db}/{table}/{day}/{id:020}.parquet")
}

/// The longest [`path_segment`], in bytes: far under the 255 bytes a file name may have on
/// local disks, and under what every object store allows in a key.
const MAX_SEGMENT: usize = 120;

/// `name` as one segment of an object-store path, the same for every store and unchanged by
/// `object_store::path::Path` (so the path listed is the path written): ASCII letters, digits,
/// `_`, `-` and a `.` that does not start it are kept; every other byte is `=` and two hex
/// digits. A segment that would be longer than [`MAX_SEGMENT`] bytes keeps its start and ends
/// with a hash of the whole name. Files have unique ids, so two names sharing a segment would
/// still not share a file.
pub fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.len() > MAX_SEGMENT {
        // cut at a byte that does not split an escape, then add the hash
        let mut cut = MAX_SEGMENT - 17;
        while out.as_bytes()[cut - 1] == b'=' || out.as_bytes()[cut - 2] == b'=' {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&format!("-{:016x}", fnv1a(name.as_bytes())));
    }
    out
}

/// FNV-1a, 64 bits: a hash that is the same in every build, so that paths are.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_utc_day() {
        assert_eq!(
            file_path("db", "cpu", 1_767_225_600_000_000_000, 7),
            "dbs/db/cpu/2026-01-01/00000000000000000007.parquet"
        );
        assert_eq!(
            file_path("d", "t", -1, 1),
            "dbs/d/t/1969-12-31/00000000000000000001.parquet"
        );
    }

    #[test]
    fn any_name_is_one_segment_that_the_object_store_keeps_as_it_is() {
        let long = "x".repeat(300);
        let wide = "é".repeat(100);
        for name in [
            "cpu", "cpu%x", "disk#1", "a//b", "a/b", "..", ".", ".hidden", "a b", "a=b", "naïve",
            "x{y}", "~", &long, &wide,
        ] {
            let seg = path_segment(name);
            assert!(seg.len() <= MAX_SEGMENT, "{name}: {seg}");
            let path = file_path("db", name, 0, 1);
            let parsed = object_store::path::Path::from(path.as_str());
            assert_eq!(parsed.as_ref(), path, "{name}");
            assert_eq!(parsed.parts().count(), 5, "{name}: {path}");
        }
        assert_eq!(path_segment("cpu%x"), "cpu=25x");
        assert_eq!(path_segment(".."), "=2E.");
        assert_ne!(path_segment("a/b"), path_segment("a=2Fb"));
        // names that share a long start still get their own folder
        let (a, b) = (format!("{long}a"), format!("{long}b"));
        assert_ne!(path_segment(&a), path_segment(&b));
    }
}
