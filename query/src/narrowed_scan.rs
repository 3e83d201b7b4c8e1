//! The scan of files narrowed to the rows a query's filters keep ([`FilePruning::narrow`]):
//! each file's rows are known when the scan is planned, so reading them needs none of what
//! DataFusion's Parquet opener does on each open (pruning, a predicate, schema adaptation,
//! morsel planning, a reader's metadata built anew, some thirty metrics per file). For a
//! dashboard's query of one series for one hour that was a quarter of the server's CPU time,
//! and a copy of its kept plan (`plan_cache.rs`) had to work out the Parquet scan's
//! properties again. [`NarrowedParquetExec`] reads the rows with the `parquet` crate's reader
//! alone, from a reader metadata built once, and its copies share everything but metrics.
//!
//! Where each of its partitions reads one file whose kept rows are in time order (one
//! series, as the narrowing saw when it read them), it declares that order: a dashboard's
//! `GROUP BY` time bucket `ORDER BY` it then aggregates in order and sorts nothing.
//!
//! [`FilePruning::narrow`]: crate::parquet_reader::FilePruning::narrow

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::{Stream, StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};

use crate::parquet_reader::{Narrowed, PageIndexCachingReaderFactory, rows_left};

/// A file's rows a narrowed scan reads.
pub(crate) struct NarrowedFile {
    path: String,
    size: u64,
    /// Built from the footer the file was narrowed with, in the file's schema: the table's,
    /// but for float fields the file stores as whole numbers (`Int64`), which the scan casts.
    metadata: ArrowReaderMetadata,
    row_groups: Vec<usize>,
    /// Within `row_groups`; `None`: all their rows.
    selection: Option<RowSelection>,
    rows: usize,
}

impl NarrowedFile {
    /// The rows `narrowed` leaves of the file at `path` (`size` bytes); `None` if it leaves
    /// none.
    pub(crate) fn new(path: String, size: u64, narrowed: Narrowed) -> Result<Option<Self>> {
        let Some(metadata) = narrowed.metadata else {
            return Ok(None);
        };
        let footer = metadata.metadata();
        let rows = rows_left(&narrowed.plan, footer);
        let row_groups: Vec<usize> = narrowed.plan.row_group_index_iter().collect();
        if rows == 0 || row_groups.is_empty() {
            return Ok(None);
        }
        let selection = narrowed
            .plan
            .into_overall_row_selection(footer.row_groups())?;
        Ok(Some(NarrowedFile {
            path,
            size,
            metadata,
            row_groups,
            selection,
            rows,
        }))
    }
}

/// A scan of narrowed files: one output partition per group of files, each file's rows in
/// its order. Its properties are those DataFusion gave the Parquet scan it replaces.
pub(crate) struct NarrowedParquetExec {
    groups: Arc<[Vec<Arc<NarrowedFile>>]>,
    reader: Arc<PageIndexCachingReaderFactory>,
    table_schema: SchemaRef,
    /// The table's columns the scan returns, in order.
    projection: Arc<[usize]>,
    /// How they are read, and the scan's schema.
    read: Arc<ReadColumns>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl NarrowedParquetExec {
    /// A scan of `groups` in `table_schema`, returning the columns `projection` (all if
    /// `None`), with `properties`.
    pub(crate) fn new(
        groups: impl Into<Arc<[Vec<Arc<NarrowedFile>>]>>,
        reader: Arc<PageIndexCachingReaderFactory>,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        properties: Arc<PlanProperties>,
    ) -> Result<Self> {
        let projection: Arc<[usize]> = match projection {
            Some(p) => p.into(),
            None => (0..table_schema.fields().len()).collect(),
        };
        let schema = Arc::new(table_schema.project(&projection)?);
        let read = Arc::new(ReadColumns::new(&projection, schema));
        Ok(NarrowedParquetExec {
            groups: groups.into(),
            reader,
            table_schema,
            projection,
            read,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn rows(&self) -> usize {
        self.groups.iter().flatten().map(|f| f.rows).sum()
    }
}

impl fmt::Debug for NarrowedParquetExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("NarrowedParquetExec")
            .field("files", &self.groups.iter().flatten().count())
            .field("rows", &self.rows())
            .field("projection", &self.projection)
            .finish()
    }
}

impl DisplayAs for NarrowedParquetExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let files: Vec<&str> = g.iter().map(|f| f.path.as_str()).collect();
                format!("[{}]", files.join(", "))
            })
            .collect();
        let columns: Vec<&str> = self
            .read
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "NarrowedParquetExec: file_groups=[{}], rows={}, projection=[{}]",
            groups.join(", "),
            self.rows(),
            columns.join(", ")
        )
    }
}

impl ExecutionPlan for NarrowedParquetExec {
    fn name(&self) -> &str {
        "NarrowedParquetExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal(
                "NarrowedParquetExec has no children".into(),
            ));
        }
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    /// The same scan, with metrics of its own.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(NarrowedParquetExec {
            groups: self.groups.clone(),
            reader: self.reader.clone(),
            table_schema: self.table_schema.clone(),
            projection: self.projection.clone(),
            read: self.read.clone(),
            properties: self.properties.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    /// A projection of its columns (not renamed) is read instead: only those columns.
    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let mut columns = Vec::with_capacity(projection.expr().len());
        for p in projection.expr() {
            match p.expr.downcast_ref::<Column>() {
                Some(c) if c.name() == p.alias && c.index() < self.projection.len() => {
                    columns.push(self.projection[c.index()]);
                }
                _ => return Ok(None),
            }
        }
        // the projection's input has this scan's properties; its own are the projected ones
        Ok(Some(Arc::new(NarrowedParquetExec::new(
            self.groups.clone(),
            self.reader.clone(),
            self.table_schema.clone(),
            Some(columns),
            projection.properties().clone(),
        )?)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let files = self.groups.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("NarrowedParquetExec has no partition {partition}"))
        })?;
        let read = self.read.clone();
        let reader = self.reader.clone();
        let batch_size = context.session_config().batch_size();
        let batches = futures::stream::iter(files)
            .then(move |file| read_file(file, reader.clone(), read.clone(), batch_size))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.read.schema.clone(),
            Timed {
                inner: Box::pin(batches),
                baseline: BaselineMetrics::new(&self.metrics, partition),
            },
        )))
    }
}

/// The columns a scan reads from its files, and how its batches are made of them.
struct ReadColumns {
    /// The table's columns read, in the files' order (as the reader returns them).
    sorted: Vec<usize>,
    /// For each column of the scan's output, its place in `sorted`.
    order: Vec<usize>,
    schema: SchemaRef,
}

impl ReadColumns {
    fn new(projection: &[usize], schema: SchemaRef) -> Self {
        let mut sorted = projection.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let order = projection
            .iter()
            .map(|c| sorted.binary_search(c).unwrap_or_default())
            .collect();
        ReadColumns {
            sorted,
            order,
            schema,
        }
    }

    /// `batch`, read with `sorted`'s columns, as the scan returns it: float fields the file
    /// stores as whole numbers cast back to floats.
    fn output(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .order
            .iter()
            .zip(self.schema.fields())
            .map(|(&i, field)| {
                let column = batch.column(i);
                Ok(match column.data_type() == field.data_type() {
                    true => column.clone(),
                    false => cast(column, field.data_type())?,
                })
            })
            .collect::<Result<_>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

/// The rows of `file` a scan reads, in batches of at most `batch_size`.
async fn read_file(
    file: Arc<NarrowedFile>,
    factory: Arc<PageIndexCachingReaderFactory>,
    read: Arc<ReadColumns>,
    batch_size: usize,
) -> Result<impl Stream<Item = Result<RecordBatch>>> {
    let mut reader = factory.create_reader(
        0,
        PartitionedFile::new(file.path.clone(), file.size),
        None,
        &ExecutionPlanMetricsSet::new(),
    )?;
    // The reader serves the footer it hands out (an unpacked file's): the one the file was
    // narrowed with unless the layouts kept were dropped since.
    let footer = reader.get_metadata(None).await?;
    let metadata = if Arc::ptr_eq(&footer, file.metadata.metadata()) {
        file.metadata.clone()
    } else {
        let schema = file.metadata.schema().clone();
        ArrowReaderMetadata::try_new(footer, ArrowReaderOptions::new().with_schema(schema))?
    };
    let mask = ProjectionMask::roots(metadata.parquet_schema(), read.sorted.iter().copied());
    let reader: Box<dyn AsyncFileReader> = reader;
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_projection(mask)
        .with_row_groups(file.row_groups.clone())
        .with_batch_size(batch_size);
    if let Some(selection) = &file.selection {
        builder = builder.with_row_selection(selection.clone());
    }
    Ok(builder.build()?.map(move |batch| read.output(batch?)))
}

/// A scan's batches, the time taken to make them and their rows counted in its metrics.
struct Timed {
    inner: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
    baseline: BaselineMetrics,
}

impl Stream for Timed {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let timer = this.baseline.elapsed_compute().timer();
        let poll = this.inner.poll_next_unpin(cx);
        timer.done();
        this.baseline.record_poll(poll)
    }
}
