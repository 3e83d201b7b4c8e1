//! Helpers the storage crate's tests share: batches from line protocol, buffers over a
//! folder, every row of a table as a query sees it, and an object store that fails on purpose.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_ingest::line_protocol::{ParseOptions, Precision, parse};
use sluice_model::WriteBatch;

use crate::columns::align_to_schema;
use crate::lake::deduplicate::merge_by_primary_key;
use crate::lake::store::{ObjectStorage, ObjectStoreConfig, RetryPolicy};
use crate::time::TimeRange;
use crate::write_buffer::{ReplaySummary, WriteBuffer, WriteBufferConfig, WriteOptions};

/// `lp` (nanosecond timestamps, every line valid) as a write batch.
pub(crate) fn batch(lp: &str) -> WriteBatch {
    let out = parse(
        lp.as_bytes(),
        &ParseOptions {
            precision: Precision::Nanosecond,
            default_time: 0,
            max_line_bytes: 1 << 20,
        },
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.batch
}

/// An hour in nanoseconds.
pub(crate) const HOUR: i64 = 3_600_000_000_000;

pub(crate) fn file_storage(dir: &std::path::Path) -> ObjectStorage {
    ObjectStorage::from_config(&ObjectStoreConfig::file(dir.join("lake"))).unwrap()
}

pub(crate) async fn open(
    dir: &std::path::Path,
    storage: ObjectStorage,
) -> (WriteBuffer, ReplaySummary) {
    WriteBuffer::open(WriteBufferConfig::new(dir.join("wal")), storage)
        .await
        .unwrap()
}

pub(crate) async fn write(wb: &WriteBuffer, lp: &str) {
    let out = wb
        .write("db", batch(lp), WriteOptions::default())
        .await
        .unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
}

/// Every row of `db.cpu` as a query would see it: files (by id) then buffer chunks (by age),
/// merged per primary key.
pub(crate) async fn table_rows(wb: &WriteBuffer) -> String {
    let catalog = wb.catalog();
    let schema = catalog.table("db", "cpu").unwrap();
    let mut chunks = wb
        .table_buffer("db", "cpu")
        .map(|b| b.scan(schema, TimeRange::ALL).chunks)
        .unwrap_or_default();
    chunks.sort_by_key(|c| c.order);
    let mut batches = Vec::new();
    let mut files = wb.lake().table_files("db", "cpu").to_vec();
    files.sort_by_key(|f| (f.order, f.id));
    for f in files.iter() {
        batches.extend(read_file(wb, &f.path).await);
    }
    let batches: Vec<_> = batches
        .iter()
        .map(|b| align_to_schema(b, schema.arrow_schema()))
        .chain(chunks.into_iter().map(|c| c.batch))
        .collect();
    let (merged, _) = merge_by_primary_key(schema.arrow_schema(), batches).unwrap();
    pretty_format_batches(&[merged]).unwrap().to_string()
}

pub(crate) async fn read_file(wb: &WriteBuffer, path: &str) -> Vec<RecordBatch> {
    let bytes = wb
        .storage()
        .get(&Path::from(path))
        .await
        .unwrap()
        .expect("listed file exists");
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// A fault-injecting in-memory store (a few quick retries), and the storage over it.
pub(crate) fn faulty(dir: &std::path::Path) -> (Arc<FaultInjectingStore>, ObjectStorage) {
    let _ = dir;
    let store = Arc::new(FaultInjectingStore::new(Arc::new(InMemory::new())));
    let storage = ObjectStorage::from_store(store.clone(), "faulty").with_retry(RetryPolicy {
        attempts: 3,
        first_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(2),
    });
    (store, storage)
}

/// A store that fails on purpose: for tests and fault drills of everything that writes to the
/// object store. Puts, gets and deletes whose path contains `path_filter` fail with a generic
/// (transient-looking) error while the fault budget lasts; everything else passes through.
#[derive(Debug)]
pub(crate) struct FaultInjectingStore {
    inner: Arc<dyn ObjectStore>,
    /// Calls still to fail; `u64::MAX` fails until changed.
    failures_left: std::sync::atomic::AtomicU64,
    /// Calls that failed so far.
    failed: std::sync::atomic::AtomicU64,
    path_filter: parking_lot::Mutex<String>,
}

impl FaultInjectingStore {
    /// Wraps `inner`; fails nothing until told to.
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultInjectingStore {
            inner,
            failures_left: std::sync::atomic::AtomicU64::new(0),
            failed: std::sync::atomic::AtomicU64::new(0),
            path_filter: parking_lot::Mutex::new(String::new()),
        }
    }

    /// Fails the next `n` calls on paths containing `path_filter` (empty: every path).
    pub(crate) fn fail_next(&self, n: u64, path_filter: &str) {
        *self.path_filter.lock() = path_filter.to_string();
        self.failures_left
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many calls failed on purpose so far.
    pub(crate) fn failed_calls(&self) -> u64 {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn fault(&self, op: &str, path: &Path) -> object_store::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if !path.as_ref().contains(self.path_filter.lock().as_str()) {
            return Ok(());
        }
        let took = self
            .failures_left
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
        if took.is_ok() {
            self.failed.fetch_add(1, SeqCst);
            return Err(object_store::Error::Generic {
                store: "FaultInjectingStore",
                source: format!("injected fault on {op} of {path}").into(),
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for FaultInjectingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultInjectingStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultInjectingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.fault("put", location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.fault("put", location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.fault("get", location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.fault("copy", to)?;
        self.inner.copy_opts(from, to, options).await
    }
}
