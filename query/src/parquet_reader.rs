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
//!
//! A file of at most 64 MiB is served unpacked (`unpacked.rs`): on its first open its page
//! headers are read, and scans get a footer whose ZSTD column chunks say they are not
//! compressed, and pages decompressed once and kept so in the page cache. A hot page then
//! costs neither a ZSTD context per column chunk nor its decompression per query.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, CachedParquetMetaData, ParquetFileReaderFactory,
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

mod pruning;
mod unpacked;
pub(crate) use pruning::{ExactFilters, FilePruning, NARROW_ROWS_AT_MOST, Narrowed, rows_left};
use unpacked::Unpacked;

fn general(message: &str) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::General(message.into())
}

/// Opens files through [`CachedParquetFileReaderFactory`], asking for the page index with
/// every footer, reading data through `pages`.
#[derive(Debug)]
pub struct PageIndexCachingReaderFactory {
    inner: CachedParquetFileReaderFactory,
    /// The footer cache `inner` reads through.
    footers: Arc<FileMetadataCache>,
    pages: Arc<PageCache>,
    layouts: Arc<Layouts>,
}

impl PageIndexCachingReaderFactory {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        cache: Arc<FileMetadataCache>,
        pages: Arc<PageCache>,
    ) -> Self {
        let layouts = pages.layouts.clone();
        PageIndexCachingReaderFactory {
            inner: CachedParquetFileReaderFactory::new(store, cache.clone()),
            footers: cache,
            pages,
            layouts,
        }
    }

    /// The footer, page index included, that a scan of the file at `path` (`size` bytes)
    /// would be handed now, if that takes no read: the file was opened before and its
    /// footer, or its unpacked layout, is still kept.
    pub(crate) fn footer_at_hand(&self, path: &str, size: u64) -> Option<Arc<ParquetMetaData>> {
        if size <= unpacked::MAX_FILE_BYTES && self.pages.capacity > 0 {
            // unpacked when it can be; read as written when the layout says so
            if let Some(u) = self.layouts.get(&Arc::from(path))? {
                return Some(u.metadata.clone());
            }
        }
        let entry = self.footers.get(&object_store::path::Path::from(path))?;
        if entry.meta.size != size {
            return None;
        }
        let footer = entry
            .file_metadata
            .as_any()
            .downcast_ref::<CachedParquetMetaData>()?
            .parquet_metadata()
            .clone();
        footer.offset_index().is_some().then_some(footer)
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
        let size = file.object_meta.size;
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(PageIndexReader {
            unpacked_key: format!("{path}#unpacked").into(),
            inner,
            path,
            size,
            pages: self.pages.clone(),
            layouts: self.layouts.clone(),
            unpacked: None,
        }))
    }
}

struct PageIndexReader {
    inner: Box<dyn AsyncFileReader + Send>,
    path: Arc<str>,
    /// The page cache's key for the file's unpacked pages.
    unpacked_key: Arc<str>,
    size: u64,
    pages: Arc<PageCache>,
    layouts: Arc<Layouts>,
    /// Set when this reader handed out the unpacked file's footer: the ranges it is then
    /// asked for are of the unpacked file.
    unpacked: Option<Arc<Unpacked>>,
}

impl PageIndexReader {
    /// `ranges` of the file as written, through the page cache.
    async fn read_written(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> parquet::errors::Result<Vec<Bytes>> {
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
                    general("the object store returned fewer ranges than asked for")
                })?;
                self.pages.insert(&self.path, range, bytes.clone());
                *slot = Some(bytes);
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// `ranges` of the unpacked file `u`: its pages from the page cache, or read as written
    /// and decompressed.
    async fn read_unpacked(
        &mut self,
        u: &Unpacked,
        ranges: Vec<Range<u64>>,
    ) -> parquet::errors::Result<Vec<Bytes>> {
        let mut wanted: Vec<usize> = ranges.iter().flat_map(|r| u.pages_in(r)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut served: std::collections::HashMap<usize, Bytes> = wanted
            .iter()
            .filter_map(|&i| Some((i, self.pages.get(&self.unpacked_key, &u.pages[i].new)?)))
            .collect();
        let missing: Vec<usize> = wanted
            .into_iter()
            .filter(|i| !served.contains_key(i))
            .collect();
        if !missing.is_empty() {
            let old = missing.iter().map(|&i| u.pages[i].old.clone()).collect();
            let read = self.inner.get_byte_ranges(old).await?;
            if read.len() != missing.len() {
                return Err(general(
                    "the object store returned fewer ranges than asked for",
                ));
            }
            for (i, bytes) in missing.into_iter().zip(read) {
                let page = &u.pages[i];
                let bytes = Unpacked::serve(page, &bytes).ok_or_else(|| {
                    general("a page of a Parquet file did not read whole or decompress")
                })?;
                self.pages
                    .insert(&self.unpacked_key, page.new.clone(), bytes.clone());
                served.insert(i, bytes);
            }
        }
        ranges
            .iter()
            .map(|r| {
                let pages = u.pages_in(r);
                let whole = pages.clone().map(|i| u.pages[i].new.clone());
                if pages.len() == 1 && u.pages[pages.start].new == *r {
                    return Ok(served[&pages.start].clone());
                }
                // pieces of the pages it covers, which must cover it
                let mut out = Vec::with_capacity((r.end - r.start) as usize);
                let mut at = r.start;
                for (i, span) in pages.zip(whole) {
                    if span.start > at {
                        break;
                    }
                    let from = (at - span.start) as usize;
                    let to = (r.end.min(span.end) - span.start) as usize;
                    out.extend_from_slice(&served[&i][from..to]);
                    at = span.start + to as u64;
                }
                if at != r.end {
                    return Err(general("a read past the pages of an unpacked Parquet file"));
                }
                Ok(Bytes::from(out))
            })
            .collect()
    }
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
            match self.unpacked.clone() {
                Some(u) => self.read_unpacked(&u, ranges).await,
                None => self.read_written(ranges).await,
            }
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
        async move {
            let written = self.inner.get_metadata(Some(&options)).await?;
            if self.size > unpacked::MAX_FILE_BYTES || self.pages.capacity == 0 {
                return Ok(written);
            }
            let layout = match self.layouts.get(&self.path) {
                Some(layout) => layout,
                None => {
                    let chunks = written
                        .row_groups()
                        .iter()
                        .flat_map(|rg| rg.columns())
                        .map(|c| {
                            let (start, len) = c.byte_range();
                            start..start + len
                        })
                        .collect();
                    let chunks = self.inner.get_byte_ranges(chunks).await?;
                    let layout = Unpacked::of(&written, &chunks).map(Arc::new);
                    self.layouts
                        .insert(self.path.clone(), layout.clone(), self.pages.capacity);
                    layout
                }
            };
            Ok(match layout {
                Some(u) => {
                    let metadata = u.metadata.clone();
                    self.unpacked = Some(u);
                    metadata
                }
                None => written,
            })
        }
        .boxed()
    }
}

/// Byte ranges of Parquet files that scans read, the most recently used up to `capacity`
/// bytes in all.
pub struct PageCache {
    capacity: usize,
    inner: Mutex<PageCacheInner>,
    /// The unpacked layouts of the files read (`unpacked.rs`).
    layouts: Arc<Layouts>,
}

/// The unpacked layout of each file read (`None`: read as written), footers and page
/// lists of at most a quarter of the page cache's capacity in all: past that they are all
/// dropped, and made again as files are read.
#[derive(Debug, Default)]
struct Layouts {
    /// The layouts by file, and about the bytes they hold.
    files: Mutex<(LayoutMap, usize)>,
}

type LayoutMap = HashMap<Arc<str>, Option<Arc<Unpacked>>>;

impl Layouts {
    fn get(&self, path: &Arc<str>) -> Option<Option<Arc<Unpacked>>> {
        self.files.lock().0.get(path).cloned()
    }

    fn insert(&self, path: Arc<str>, layout: Option<Arc<Unpacked>>, capacity: usize) {
        let size = layout.as_ref().map_or(0, |u| u.memory_size()) + path.len() + 64;
        let mut files = self.files.lock();
        let (map, used) = &mut *files;
        if *used + size > capacity / 4 {
            map.clear();
            *used = 0;
        }
        if size <= capacity / 4 {
            *used += size;
            map.insert(path, layout);
        }
    }
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
            layouts: Arc::default(),
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
