//! The write buffer's rows: every table's recent points in memory, queryable at once.
//!
//! [`Buffer`] holds a [`TableBuffer`] per table and the totals the memory limit is checked
//! against. The WAL's apply thread is its only writer: it appends each logged write
//! ([`Buffer::apply`]), and between two writes it freezes partitions for the persister
//! ([`Buffer::freeze`]) or drops what a delete removed ([`Buffer::drop_target`]), so the
//! buffer changes in the WAL's order. Queries, the persister and retention read and release
//! from any thread.

mod last_rows;
mod partition;
pub mod table_buffer;
mod tags;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use sluice_model::{Sym, WriteBatch};

use crate::catalog::CatalogSnapshot;
use crate::time::PARTITION_NANOS;

pub use table_buffer::{BufferChunk, BufferScan, FrozenPartition, LIVE_ORDER, TableBuffer};

/// Database name -> table name -> that table's buffered rows.
type TableBuffers = HashMap<Arc<str>, HashMap<Arc<str>, Arc<TableBuffer>>>;

/// Which live partitions a freeze takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeRule {
    /// Every live partition.
    All,
    /// Partitions whose hour ends at or before this time (nanoseconds).
    EndedBy(i64),
}

impl FreezeRule {
    /// Whether the rule takes the partition with key `partition`.
    pub fn takes(self, partition: i64) -> bool {
        match self {
            FreezeRule::All => true,
            FreezeRule::EndedBy(t) => (partition + 1).saturating_mul(PARTITION_NANOS) <= t,
        }
    }
}

/// The frozen partitions of one table.
#[derive(Debug)]
pub struct FrozenTable {
    pub db: Arc<str>,
    pub table: Arc<str>,
    pub partitions: Vec<Arc<FrozenPartition>>,
}

/// What a freeze produced: every frozen partition not yet persisted (earlier ones included),
/// and the WAL segment that was closed, through which all their rows are logged.
#[derive(Debug)]
pub struct Frozen {
    pub through_segment: u64,
    pub tables: Vec<FrozenTable>,
    /// Buffer bytes of the partitions this freeze took (not of those frozen earlier).
    pub taken_bytes: usize,
}

/// What a delete takes out of the buffer.
#[derive(Debug, Clone)]
pub enum DropTarget {
    Database(Arc<str>),
    Table(Arc<str>, Arc<str>),
}

/// The buffered rows of every table, with their totals.
#[derive(Default)]
pub struct Buffer {
    tables: RwLock<TableBuffers>,
    /// Approximate bytes held, summed over the tables.
    bytes: AtomicUsize,
    /// Rows appended (before merging duplicates), summed over the tables.
    rows: AtomicUsize,
    /// The number the next frozen partition gets ([`FrozenPartition::seq`]).
    next_freeze_seq: AtomicU64,
    /// Woken when a persist round ends: writers waiting for room ([`Buffer::wait_for_room`]).
    room: tokio::sync::Notify,
    /// Woken when a writer waits for room: the persister ([`Buffer::room_wanted`]).
    wanted: tokio::sync::Notify,
}

impl Buffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the points of `batch`, a write to `db` logged in WAL segment `segment`, to
    /// their tables' buffers. Every table and column they use is in `catalog` already.
    pub fn apply(&self, catalog: &CatalogSnapshot, db: &str, batch: &WriteBatch, segment: u64) {
        let Some(db_schema) = catalog.database(db) else {
            tracing::error!(db, "write applied to a database missing from the catalog");
            return;
        };
        // group point positions by table, keeping their order
        let mut by_table: Vec<(Sym, Vec<u32>)> = Vec::new();
        let mut slot_of_sym = vec![u32::MAX; batch.symbols.len()];
        for (i, p) in batch.points().iter().enumerate() {
            let slot = &mut slot_of_sym[p.table.index()];
            if *slot == u32::MAX {
                *slot = by_table.len() as u32;
                by_table.push((p.table, Vec::new()));
            }
            by_table[*slot as usize].1.push(i as u32);
        }
        let points = batch.points();
        for (table, idx) in by_table {
            let name = batch.str(table);
            let Some(schema) = db_schema.tables.get(name) else {
                tracing::error!(
                    db,
                    table = name,
                    "write applied to a table missing from the catalog"
                );
                continue;
            };
            let buffer = self.table_buffer_or_create(db, name);
            let bytes = buffer.apply(
                schema,
                batch,
                idx.iter().map(|&i| &points[i as usize]),
                segment,
            );
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.rows.fetch_add(idx.len(), Ordering::Relaxed);
        }
    }

    /// Freezes the live partitions `rule` picks in every table (see
    /// [`TableBuffer::freeze`]), oldest hour first within a table, until they hold `budget`
    /// bytes (at least one partition is taken); `through_segment` is the WAL segment just
    /// closed, through which every write applied so far is logged. Runs on the apply thread,
    /// between writes.
    pub fn freeze(
        &self,
        catalog: &CatalogSnapshot,
        rule: FreezeRule,
        through_segment: u64,
        budget: usize,
    ) -> Frozen {
        let mut out = Frozen {
            through_segment,
            tables: Vec::new(),
            taken_bytes: 0,
        };
        let mut next_seq = self.next_freeze_seq.load(Ordering::Relaxed);
        let taken = &mut out.taken_bytes;
        let mut any = false;
        for (db, table, buffer) in self.all() {
            let Some(schema) = catalog.table(&db, &table) else {
                continue;
            };
            let take = |p: i64, bytes: usize| {
                if !rule.takes(p) || (any && *taken >= budget) {
                    return false;
                }
                any = true;
                *taken += bytes;
                true
            };
            let partitions = buffer.freeze(schema, take, &mut next_seq);
            if !partitions.is_empty() {
                out.tables.push(FrozenTable {
                    db,
                    table,
                    partitions,
                });
            }
        }
        self.next_freeze_seq.store(next_seq, Ordering::Relaxed);
        out
    }

    /// Drops the frozen partitions numbered `seqs` of `db`.`table`: their rows are in files
    /// the catalog lists now.
    pub fn remove_frozen(&self, db: &str, table: &str, seqs: &[u64]) {
        if let Some(buffer) = self.table_buffer(db, table) {
            let (rows, bytes) = buffer.remove_frozen(seqs);
            self.release(rows, bytes);
        }
    }

    /// Forgets the buffered rows (live and frozen) of a deleted database or table.
    pub fn drop_target(&self, target: &DropTarget) {
        let removed: Vec<Arc<TableBuffer>> = {
            let mut tables = self.tables.write();
            match target {
                DropTarget::Database(db) => tables
                    .remove(db)
                    .map(|t| t.into_values().collect())
                    .unwrap_or_default(),
                DropTarget::Table(db, table) => tables
                    .get_mut(db)
                    .and_then(|t| t.remove(table))
                    .into_iter()
                    .collect(),
            }
        };
        for buffer in removed {
            self.release(buffer.rows(), buffer.bytes());
        }
    }

    /// Drops the live partitions of `db`'s tables whose hour ended at or before `cutoff`:
    /// rows its retention period no longer keeps. Returns how many partitions went.
    pub fn drop_expired(&self, db: &str, cutoff: i64) -> usize {
        let buffers: Vec<Arc<TableBuffer>> = self
            .tables
            .read()
            .get(db)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        let mut dropped = 0;
        for buffer in buffers {
            let (partitions, rows, bytes) = buffer.drop_partitions_before(cutoff);
            dropped += partitions;
            self.release(rows, bytes);
        }
        dropped
    }

    /// Whether some table has a live partition `rule` would freeze.
    pub fn has_due(&self, rule: FreezeRule) -> bool {
        let tables = self.tables.read();
        tables
            .values()
            .flat_map(|t| t.values())
            .any(|b| b.live_partitions().iter().any(|&(key, _)| rule.takes(key)))
    }

    /// The oldest WAL segment holding rows that are only in the buffer (live or frozen).
    pub fn min_segment(&self) -> Option<u64> {
        self.tables
            .read()
            .values()
            .flat_map(|t| t.values())
            .filter_map(|b| b.min_segment())
            .min()
    }

    /// The buffered rows of `db`.`table`, if any were written since start-up.
    pub fn table_buffer(&self, db: &str, table: &str) -> Option<Arc<TableBuffer>> {
        self.tables.read().get(db)?.get(table).cloned()
    }

    /// The buffer of `db`.`table`, created empty if nothing was written to it since
    /// start-up (it then holds the table's newest rows only, see
    /// [`TableBuffer::last_rows`]).
    pub fn table_buffer_or_create(&self, db: &str, table: &str) -> Arc<TableBuffer> {
        if let Some(b) = self.tables.read().get(db).and_then(|t| t.get(table)) {
            return b.clone();
        }
        self.tables
            .write()
            .entry(db.into())
            .or_default()
            .entry(table.into())
            .or_insert_with(|| Arc::new(TableBuffer::new()))
            .clone()
    }

    /// Rows appended (before merging duplicates) and not yet released.
    pub fn rows(&self) -> usize {
        self.rows.load(Ordering::Relaxed)
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits until the buffer holds less than `below` bytes or a persist round ends
    /// ([`Buffer::persisted_a_round`]), up to `within`, waking the persister
    /// ([`Buffer::room_wanted`]).
    ///
    /// One round is all it waits for, whatever that round released: a buffer held over
    /// `below` by what no persist can release (its series index) does not hold writes up
    /// for longer than persisting what there is.
    pub async fn wait_for_room(&self, below: usize, within: std::time::Duration) {
        // registered before the check, so that a round ending between the check and the
        // wait still wakes it
        let persisted = self.room.notified();
        let mut persisted = std::pin::pin!(persisted);
        persisted.as_mut().enable();
        if self.bytes() < below {
            return;
        }
        self.wanted.notify_one();
        let _ = tokio::time::timeout(within, persisted).await;
    }

    /// Wakes the writers waiting for room ([`Buffer::wait_for_room`]): a persist round
    /// ended (whether or not it released rows).
    pub fn persisted_a_round(&self) {
        self.room.notify_waiters();
    }

    /// Resolves once a writer waits for room in the buffer (at once if one did since the
    /// last call).
    pub async fn room_wanted(&self) {
        self.wanted.notified().await
    }

    /// Every table's buffer, with its database and name.
    fn all(&self) -> Vec<(Arc<str>, Arc<str>, Arc<TableBuffer>)> {
        self.tables
            .read()
            .iter()
            .flat_map(|(db, t)| {
                t.iter()
                    .map(move |(name, b)| (db.clone(), name.clone(), b.clone()))
            })
            .collect()
    }

    /// Takes `rows` and `bytes` that left the buffer (persisted, expired or deleted) off its
    /// totals.
    fn release(&self, rows: usize, bytes: usize) {
        self.rows.fetch_sub(rows, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("rows", &self.rows())
            .field("bytes", &self.bytes())
            .finish()
    }
}
