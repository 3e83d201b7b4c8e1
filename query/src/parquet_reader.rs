//! How scans open Sluice's Parquet files: through DataFusion's footer cache, with the page
//! index always in the cached footer, and the byte ranges they read kept in memory.
//!
//! DataFusion's opener first asks for the footer without the page index and then, when the
//! predicate can use it, loads the page index from the file: a second read and a parse on
//! every query, since what it loads that way is not cached. Sluice files are small in
//! metadata and never change once written, so the reader here asks for the page index with
//! the footer; the cache then holds both and a query on a warm file reads only data pages.
//!
//! Those data pages come from [`PageCache`]: the ranges of column chunks and pages that scans
//! read, by file and range, the most recently used kept up to `--query-page-cache`. A file's
//! name is never reused and its bytes never change, so a kept range is right as long as the
//! server runs. A dashboard's repeated query then reads no object at all: against a local
//! folder that spares a blocking-pool round trip per read (about a millisecond of a one-host,
//! one-hour query), against S3 a request.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

/// Opens files through [`CachedParquetFileReaderFactory`], asking for the page index with
/// every footer, reading data through `pages`.
#[derive(Debug)]
pub struct PageIndexCachingReaderFactory {
    inner: CachedParquetFileReaderFactory,
    pages: Arc<PageCache>,
}

impl PageIndexCachingReaderFactory {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        cache: Arc<FileMetadataCache>,
        pages: Arc<PageCache>,
    ) -> Self {
        PageIndexCachingReaderFactory {
            inner: CachedParquetFileReaderFactory::new(store, cache),
            pages,
        }
    }
}

impl ParquetFileReaderFactory for PageIndexCachingReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::common::Result<Box<dyn AsyncFileReader + Send>> {
        let path: Arc<str> = file.object_meta.location.as_ref().into();
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(PageIndexReader {
            inner,
            path,
            pages: self.pages.clone(),
        }))
    }
}

struct PageIndexReader {
    inner: Box<dyn AsyncFileReader + Send>,
    path: Arc<str>,
    pages: Arc<PageCache>,
}

impl AsyncFileReader for PageIndexReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let mut bytes = self.get_byte_ranges(vec![range]).await?;
            bytes.pop().ok_or_else(|| {
                parquet::errors::ParquetError::General("a read of one range returned none".into())
            })
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let mut found: Vec<Option<Bytes>> = ranges
                .iter()
                .map(|r| self.pages.get(&self.path, r))
                .collect();
            let missing: Vec<Range<u64>> = ranges
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(r, _)| r.clone())
                .collect();
            if !missing.is_empty() {
                let mut read = self
                    .inner
                    .get_byte_ranges(missing.clone())
                    .await?
                    .into_iter();
                for (slot, range) in found.iter_mut().filter(|f| f.is_none()).zip(missing) {
                    let bytes = read.next().ok_or_else(|| {
                        parquet::errors::ParquetError::General(
                            "the object store returned fewer ranges than asked for".into(),
                        )
                    })?;
                    self.pages.insert(&self.path, range, bytes.clone());
                    *slot = Some(bytes);
                }
            }
            Ok(found.into_iter().flatten().collect())
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.inner.get_metadata(Some(&options)).await }.boxed()
    }
}

/// Byte ranges of Parquet files that scans read, the most recently used up to `capacity`
/// bytes in all.
pub struct PageCache {
    capacity: usize,
    inner: Mutex<PageCacheInner>,
}

#[derive(Default)]
struct PageCacheInner {
    /// Per (file, range): its bytes and when it was last used.
    ranges: HashMap<(Arc<str>, Range<u64>), (Bytes, u64)>,
    used: usize,
    clock: u64,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        write!(
            f,
            "PageCache({} ranges, {} of {} bytes)",
            inner.ranges.len(),
            inner.used,
            self.capacity
        )
    }
}

impl PageCache {
    /// A cache of at most `capacity` bytes (0: keeps nothing).
    pub fn new(capacity: usize) -> Self {
        PageCache {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// The bytes of `range` of file `path`, if kept.
    fn get(&self, path: &Arc<str>, range: &Range<u64>) -> Option<Bytes> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        let (bytes, used) = inner.ranges.get_mut(&(path.clone(), range.clone()))?;
        *used = now;
        Some(bytes.clone())
    }

    /// Keeps `bytes`, `range` of file `path`, dropping the least recently used ranges to
    /// make room. A range over an eighth of the capacity is not kept: one large scan does
    /// not push out everything else.
    fn insert(&self, path: &Arc<str>, range: Range<u64>, bytes: Bytes) {
        if bytes.len() > self.capacity / 8 {
            return;
        }
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        let size = bytes.len();
        if let Some((old, _)) = inner.ranges.insert((path.clone(), range), (bytes, now)) {
            inner.used -= old.len();
        }
        inner.used += size;
        if inner.used > self.capacity {
            // Drop the oldest quarter of what is kept (at least down to the capacity): one
            // pass over the ranges pays for many inserts.
            let mut by_age: Vec<(u64, usize)> =
                inner.ranges.values().map(|(b, t)| (*t, b.len())).collect();
            by_age.sort_unstable();
            let target = (self.capacity / 4 * 3).min(self.capacity - size.min(self.capacity));
            let mut freed = 0;
            let mut cutoff = 0;
            for (t, len) in by_age {
                if inner.used - freed <= target {
                    break;
                }
                freed += len;
                cutoff = t;
            }
            inner.ranges.retain(|_, (_, t)| *t > cutoff);
            inner.used -= freed;
        }
    }

    /// Bytes kept.
    pub fn used(&self) -> usize {
        self.inner.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_cache_keeps_the_most_recently_used_ranges_within_its_capacity() {
        let cache = PageCache::new(800);
        let a: Arc<str> = "a.parquet".into();
        let b: Arc<str> = "b.parquet".into();
        let bytes = |n: usize| Bytes::from(vec![7u8; n]);
        cache.insert(&a, 0..100, bytes(100));
        cache.insert(&b, 0..100, bytes(100));
        assert_eq!(cache.get(&a, &(0..100)), Some(bytes(100)));
        // another file, another range: not the same bytes
        assert_eq!(cache.get(&a, &(0..99)), None);
        assert_eq!(cache.get(&b, &(100..200)), None);
        // over an eighth of the capacity: not kept
        cache.insert(&a, 100..201, bytes(101));
        assert_eq!(cache.get(&a, &(100..201)), None);
        // filling past the capacity drops the least recently used (b's, then the older
        // fills), never past the capacity
        for i in 0..10u64 {
            cache.insert(&b, 1000 + i * 100..1100 + i * 100, bytes(100));
            assert!(cache.used() <= 800, "{}", cache.used());
        }
        assert_eq!(cache.get(&b, &(0..100)), None);
        assert_eq!(cache.get(&b, &(1900..2000)), Some(bytes(100)));
        let none = PageCache::new(0);
        none.insert(&a, 0..1, bytes(1));
        assert_eq!((none.get(&a, &(0..1)), none.used()), (None, 0));
    }
}
