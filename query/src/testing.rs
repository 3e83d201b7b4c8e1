//! Storage for the query crate's tests: a write buffer over a file object store in a
//! temporary folder, its clock set by hand, that can be opened again as after a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use sluice_ingest::line_protocol::{ParseOptions, Precision, parse};
use sluice_storage::{
    Clock, ObjectStorage, ObjectStoreConfig, WriteBuffer, WriteBufferConfig, WriteOptions,
};

use crate::{Format, QueryConfig, QueryExecutor};

/// Nanoseconds in a second.
pub(crate) const S: i64 = 1_000_000_000;

pub(crate) struct TestStorage {
    dir: tempfile::TempDir,
    /// What the storage's clock reads, in nanoseconds.
    pub(crate) now: Arc<AtomicI64>,
    pub(crate) buffer: Arc<WriteBuffer>,
}

impl TestStorage {
    /// Empty storage; the clock reads 100,000 s after the epoch.
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open(dir, Arc::new(AtomicI64::new(100_000 * S))).await
    }

    async fn open(dir: tempfile::TempDir, now: Arc<AtomicI64>) -> Self {
        let mut config = WriteBufferConfig::new(dir.path().join("wal"));
        config.clock = Clock::manual(now.clone());
        let storage =
            ObjectStorage::from_config(&ObjectStoreConfig::file(dir.path().join("lake"))).unwrap();
        let buffer = Arc::new(WriteBuffer::open(config, storage).await.unwrap().0);
        TestStorage { dir, now, buffer }
    }

    /// The same storage, opened again: the buffer holds what the WAL replays, and the
    /// newest rows start empty.
    pub(crate) async fn restart(self) -> Self {
        let TestStorage { dir, now, buffer } = self;
        drop(buffer);
        Self::open(dir, now).await
    }

    /// An executor over the storage.
    pub(crate) fn executor(&self, config: QueryConfig) -> QueryExecutor {
        QueryExecutor::new(self.buffer.read_view(), config).unwrap()
    }

    /// Writes line protocol (seconds) to database `db`.
    pub(crate) async fn write(&self, lp: &str) {
        let out = parse(
            lp.as_bytes(),
            &ParseOptions {
                precision: Precision::Second,
                default_time: 0,
                max_line_bytes: 1 << 20,
            },
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        self.buffer
            .write("db", out.batch, WriteOptions::default())
            .await
            .unwrap();
    }
}

/// `sql`'s answer in database `db`, as CSV.
pub(crate) async fn answer(exec: &QueryExecutor, sql: &str) -> String {
    let out = exec.query("db", sql, HashMap::new()).await.unwrap();
    String::from_utf8(Format::Csv.encode(&out.schema, &out.batches).unwrap()).unwrap()
}
