//! How scans open Sluice's Parquet files: through DataFusion's footer cache, with the page
//! index always in the cached footer.
//!
//! DataFusion's opener first asks for the footer without the page index and then, when the
//! predicate can use it, loads the page index from the file: a second read and a parse on
//! every query, since what it loads that way is not cached. Sluice files are small in
//! metadata and never change once written, so the reader here asks for the page index with
//! the footer; the cache then holds both and a query on a warm file reads only data pages.

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
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

/// Opens files through [`CachedParquetFileReaderFactory`], asking for the page index with
/// every footer.
#[derive(Debug)]
pub struct PageIndexCachingReaderFactory {
    inner: CachedParquetFileReaderFactory,
}

impl PageIndexCachingReaderFactory {
    pub fn new(store: Arc<dyn ObjectStore>, cache: Arc<FileMetadataCache>) -> Self {
        PageIndexCachingReaderFactory {
            inner: CachedParquetFileReaderFactory::new(store, cache),
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
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(PageIndexReader { inner }))
    }
}

struct PageIndexReader {
    inner: Box<dyn AsyncFileReader + Send>,
}

impl AsyncFileReader for PageIndexReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
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
