//! [`DeduplicateExec`]: the rows of sources that overlap in time, merged by primary key.
//!
//! The table provider uses it only for sources whose time ranges overlap (a file and the
//! buffer rows written to its hour after it was persisted, two files not yet compacted); every
//! other source is scanned plainly. It reads its sources whole (one hour or day of one table,
//! at most), oldest first, and merges them with the same rule as persistence and compaction
//! (`sluice_storage::lake::deduplicate`), so a query never sees two rows of one primary key.
//!
//! Its file scans are not children of the plan: the optimizer must not split or reorder them,
//! because the merge depends on reading the files in age order. Filters are not pushed into
//! it either: a filter on a field evaluated before the merge could keep an old value that a
//! newer row overwrote. They apply to its output.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, common,
};
use sluice_storage::lake::deduplicate::merge_by_primary_key;

/// Merges overlapping sources of one table by primary key; one output partition.
#[derive(Debug)]
pub struct DeduplicateExec {
    table_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    /// One scan per file, oldest file first; each has one partition in the table's schema.
    files: Vec<Arc<dyn ExecutionPlan>>,
    /// Buffer rows, oldest first, newer than every file.
    chunks: Vec<RecordBatch>,
    properties: Arc<PlanProperties>,
}

impl DeduplicateExec {
    /// Merges `files` then `chunks` (each oldest first) and outputs `projection` of the table.
    pub fn try_new(
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        files: Vec<Arc<dyn ExecutionPlan>>,
        chunks: Vec<RecordBatch>,
    ) -> Result<Self> {
        let output = match &projection {
            Some(p) => Arc::new(table_schema.project(p)?),
            None => table_schema.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(output),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(DeduplicateExec {
            table_schema,
            projection,
            files,
            chunks,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for DeduplicateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DeduplicateExec: files={}, buffer_chunks={}",
            self.files.len(),
            self.chunks.len()
        )
    }
}

impl ExecutionPlan for DeduplicateExec {
    fn name(&self) -> &str {
        "DeduplicateExec"
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
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
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

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DeduplicateExec has one partition, asked for {partition}"
            )));
        }
        let files = self.files.clone();
        let chunks = self.chunks.clone();
        let schema = self.table_schema.clone();
        let projection = self.projection.clone();
        let merged = async move {
            let mut batches = Vec::new();
            for file in files {
                batches.extend(common::collect(file.execute(0, context.clone())?).await?);
            }
            batches.extend(chunks);
            let (merged, _) = merge_by_primary_key(&schema, batches)
                .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
            Ok(match &projection {
                Some(p) => merged.project(p)?,
                None => merged,
            })
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            futures::stream::once(merged),
        )))
    }
}
