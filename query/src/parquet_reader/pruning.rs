//! Which row groups and pages of a file a scan's filters leave to read, worked out when the
//! scan is planned, from footers already at hand, instead of each time the file is opened.
//!
//! DataFusion's Parquet opener prunes a file's row groups by their statistics and its pages
//! by the page index every time it opens the file: it builds pruning predicates for the file
//! and turns each row group's statistics into arrays to evaluate them on. For a one-host,
//! one-hour query that was a fifth of the server's CPU. The answer depends only on the file
//! and the filters, and a kept physical plan (`plan_cache.rs`) runs again and again over the
//! same files. So a scan of plain files (no overlapping sources to merge, so every filter may
//! prune) whose footers are all at hand works it out once, with DataFusion's own pruning
//! ([`RowGroupAccessPlanFilter`], [`PagePruningAccessPlanFilter`]), hands each file the
//! resulting [`ParquetAccessPlan`], and turns the opener's pruning off. The opener still
//! filters the rows it reads by the query's predicate.
//!
//! When that leaves few rows ([`NARROW_ROWS_AT_MOST`] in the scan), the scan goes further
//! ([`FilePruning::narrow`]): it reads the columns the filters need for those rows, evaluates
//! the filters, and hands each file the exact rows they keep. A dashboard's query of one
//! series for one hour keeps 360 rows of the 8,192 of each page it reads; its plan's copies
//! then decode only the 360, read by a scan that needs no predicate (`narrowed_scan.rs`).
//! Where the narrowed files are all the scan reads, the filters they applied
//! ([`ExactFilters`]) are not applied again above it, so the columns only they need (the
//! host's tag) are not read at all; where the buffer or overlapping files are scanned too, a
//! filter above the scan applies them to every row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::config::TableParquetOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::physical_plan::parquet::{
    PagePruningAccessPlanFilter, ParquetAccessPlan, ParquetFileMetrics, RowGroupAccess,
    RowGroupAccessPlanFilter,
};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::simplifier::PhysicalExprSimplifier;
use datafusion::physical_expr::utils::{collect_columns, split_conjunction};
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::ParquetMetaData;
use sluice_storage::catalog::TIME_COLUMN;

/// The pruning of a table's files by a scan's filters.
pub(crate) struct FilePruning {
    schema: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
    row_groups: Option<Arc<PruningPredicate>>,
    pages: PagePruningAccessPlanFilter,
}

/// Rows that pruning leaves to read in a scan's files, at most, for which the filters are
/// evaluated as the scan is planned ([`FilePruning::narrow`]).
pub(crate) const NARROW_ROWS_AT_MOST: usize = 64 << 10;

impl FilePruning {
    /// The pruning of files in the table's `schema` by `filters` (conjuncts over its
    /// columns), if they can prune anything and can be evaluated on their own (no
    /// subqueries, no parameters).
    pub(crate) fn new(state: &dyn Session, schema: &SchemaRef, filters: &[Expr]) -> Option<Self> {
        // the filters name the table's columns as the query did (`cpu.time`); the schema
        // here is the table's own
        let filters = filters
            .iter()
            .cloned()
            .map(|f| {
                f.transform(|e| {
                    Ok(match e {
                        Expr::Column(c) => {
                            Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                        }
                        e => Transformed::no(e),
                    })
                })
                .map(|t| t.data)
            })
            .collect::<datafusion::common::Result<Vec<_>>>()
            .ok()?;
        let predicate = conjunction(filters)?;
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).ok()?;
        let predicate = state.create_physical_expr(predicate, &df_schema).ok()?;
        let predicate = PhysicalExprSimplifier::new(schema)
            .simplify(predicate)
            .ok()?;
        // as DataFusion's opener builds it, with the same bound on `IN` lists
        let row_groups = PruningPredicateBuilder::new()
            .with_file_schema(schema.clone())
            .with_max_in_list_size(TableParquetOptions::default().global.max_in_list_size)
            .build(predicate.clone());
        let pages = PagePruningAccessPlanFilter::new(&predicate, schema.clone());
        (row_groups.is_some() || pages.filter_number() > 0).then(|| FilePruning {
            schema: schema.clone(),
            predicate,
            row_groups,
            pages,
        })
    }

    /// The row groups and pages of the file at `path`, with `footer`, that the filters leave
    /// to read, and the file's schema; `None` when the file's columns are not the table's
    /// (written before a column was added), or a filter reads a float field the file stores
    /// as whole numbers: DataFusion's opener, which maps such a file's columns, prunes it
    /// then. The schema is the table's (the same `Arc`) unless the file stores float fields
    /// as whole numbers (`sluice_storage::lake::parquet`), whose columns it has as `Int64`;
    /// the scan is handed it, so the opener need not decode the Arrow schema kept in the
    /// footer each time it opens the file.
    pub(crate) fn plan(
        &self,
        path: &str,
        footer: &Arc<ParquetMetaData>,
    ) -> Option<(ParquetAccessPlan, SchemaRef)> {
        let reader =
            ArrowReaderMetadata::try_new(footer.clone(), ArrowReaderOptions::new()).ok()?;
        let file_schema = reader.schema();
        if file_schema.fields().len() != self.schema.fields().len() {
            return None;
        }
        // the table's float fields this file stores as whole numbers (`Int64`)
        let mut whole_floats = Vec::new();
        for (file, table) in file_schema.fields().iter().zip(self.schema.fields()) {
            if file.name() != table.name() || file.is_nullable() != table.is_nullable() {
                return None;
            }
            if file.data_type() != table.data_type() {
                if (file.data_type(), table.data_type()) != (&DataType::Int64, &DataType::Float64) {
                    return None;
                }
                whole_floats.push(table.name().as_str());
            }
        }
        if collect_columns(&self.predicate)
            .iter()
            .any(|c| whole_floats.contains(&c.name()))
        {
            return None;
        }
        let stored = match whole_floats.is_empty() {
            true => self.schema.clone(),
            false => file_schema.clone(),
        };
        // DataFusion's pruning counts into metrics of the file; nobody reads these
        let metrics = ParquetFileMetrics::new(0, path, &ExecutionPlanMetricsSet::new());
        let parquet_schema = footer.file_metadata().schema_descr();
        let mut row_groups =
            RowGroupAccessPlanFilter::new(ParquetAccessPlan::new_all(footer.num_row_groups()));
        if let Some(p) = &self.row_groups {
            row_groups.prune_by_statistics(
                file_schema,
                parquet_schema,
                footer.row_groups(),
                p,
                &metrics,
            );
        }
        let plan = row_groups.build();
        if plan.row_group_index_iter().next().is_none() || self.pages.filter_number() == 0 {
            return Some((plan, stored));
        }
        let plan = self.pages.prune_plan_with_page_index(
            plan,
            file_schema,
            parquet_schema,
            footer,
            &metrics,
        );
        Some((plan, stored))
    }

    /// The filters, as applied exactly by [`FilePruning::narrow`] to the files it narrowed.
    pub(crate) fn exact(&self) -> ExactFilters {
        ExactFilters {
            schema: self.schema.clone(),
            conjuncts: split_conjunction(&self.predicate)
                .into_iter()
                .cloned()
                .collect(),
        }
    }

    /// `plan`, for the file with `footer` and `schema` (as [`FilePruning::plan`] gave them)
    /// read through `reader`, narrowed to the rows the filters keep: the columns they read
    /// are read for the rows `plan` leaves, and the filters evaluated on them. The pages a
    /// scan reads hold thousands of rows where a dashboard's query keeps hundreds (one
    /// series for one hour): its copies then decode and filter only those. `None` if that
    /// cannot be done (the filters fail to evaluate, a read fails): the plan stays as it was.
    pub(crate) async fn narrow(
        &self,
        mut plan: ParquetAccessPlan,
        footer: &Arc<ParquetMetaData>,
        schema: &SchemaRef,
        mut reader: Box<dyn AsyncFileReader + Send>,
    ) -> Option<Narrowed> {
        let scanned: Vec<usize> = plan.row_group_index_iter().collect();
        if scanned.is_empty() {
            return Some(Narrowed {
                plan,
                metadata: None,
                in_time_order: true,
            });
        }
        // the columns the filters read, in the table's (and the file's) order
        let mut columns: Vec<usize> = collect_columns(&self.predicate)
            .iter()
            .filter_map(|c| self.schema.index_of(c.name()).ok())
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let read = Arc::new(self.schema.project(&columns).ok()?);
        let predicate = self
            .predicate
            .clone()
            .transform(|e| {
                Ok(match e.downcast_ref::<ColumnExpr>() {
                    Some(c) => Transformed::yes(Arc::new(ColumnExpr::new(
                        c.name(),
                        read.index_of(c.name())?,
                    )) as Arc<dyn PhysicalExpr>),
                    None => Transformed::no(e),
                })
            })
            .ok()?
            .data;
        // the reader serves the footer it was opened with (an unpacked file's) first
        reader.get_metadata(None).await.ok()?;
        let metadata = ArrowReaderMetadata::try_new(
            footer.clone(),
            ArrowReaderOptions::new().with_schema(schema.clone()),
        )
        .ok()?;
        let row_groups = footer.row_groups();
        let selection = plan.clone().into_overall_row_selection(row_groups).ok()?;
        let reader: Box<dyn AsyncFileReader> = reader;
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata.clone())
                .with_projection(ProjectionMask::roots(
                    footer.file_metadata().schema_descr(),
                    columns,
                ))
                .with_row_groups(scanned.clone());
        if let Some(selection) = &selection {
            builder = builder.with_row_selection(selection.clone());
        }
        let mut batches = builder.build().ok()?;
        let mut kept = Vec::new();
        // whether the kept rows' times never go back (only known if the filters read `time`)
        let time = read.index_of(TIME_COLUMN).ok();
        let mut in_time_order = time.is_some();
        let mut last = i64::MIN;
        while let Some(batch) = batches.next().await {
            let batch = batch.ok()?;
            let value = predicate.evaluate(&batch).ok()?;
            let value = value.into_array(batch.num_rows()).ok()?;
            let value = value.as_any().downcast_ref::<BooleanArray>()?;
            let value = match value.null_count() {
                0 => value.clone(),
                _ => prep_null_mask_filter(value),
            };
            if let Some(t) = time.filter(|_| in_time_order) {
                let times = batch
                    .column(t)
                    .as_primitive_opt::<TimestampNanosecondType>()?;
                for (keep, t) in value.values().iter().zip(times.iter()) {
                    match (keep, t) {
                        (false, _) => {}
                        (true, Some(t)) if t >= last => last = t,
                        (true, _) => in_time_order = false,
                    }
                }
            }
            kept.push(value);
        }
        let kept = RowSelection::from_filters(&kept);
        let mut kept = match &selection {
            Some(selection) => selection.and_then(&kept),
            None => kept,
        };
        for idx in scanned {
            let rows = kept.split_off(row_groups[idx].num_rows() as usize);
            if rows.selects_any() {
                plan.set(idx, RowGroupAccess::Selection(rows));
            } else {
                plan.skip(idx);
            }
        }
        Some(Narrowed {
            plan,
            metadata: Some(metadata),
            in_time_order,
        })
    }
}

/// A file's access plan narrowed to the rows the filters keep ([`FilePruning::narrow`]).
pub(crate) struct Narrowed {
    pub(crate) plan: ParquetAccessPlan,
    /// The reader metadata the rows were read with (the footer's, in the file's schema as
    /// [`FilePruning::plan`] gave it); `None` if the plan left no row group to read.
    pub(crate) metadata: Option<ArrowReaderMetadata>,
    /// The rows kept are in time order (as they are in a file of one series, or any file
    /// when one series is kept); known only when the filters read `time`, else `false`.
    pub(crate) in_time_order: bool,
}

/// The filters a narrowed scan ([`FilePruning::narrow`]) applied exactly: every row its files
/// return satisfies each of them, and no row they keep is left out. A filter above such a scan
/// that is one of these (or a conjunction of them) need not be applied again.
#[derive(Debug)]
pub(crate) struct ExactFilters {
    schema: SchemaRef,
    conjuncts: Vec<Arc<dyn PhysicalExpr>>,
}

impl ExactFilters {
    /// Whether every conjunct of `filter` (over columns of the table, by name) is one the scan
    /// applied: the same expression once its columns are the table's and it is simplified as
    /// the scan's filters were.
    pub(crate) fn cover(&self, filter: &Arc<dyn PhysicalExpr>) -> bool {
        let simplifier = PhysicalExprSimplifier::new(&self.schema);
        split_conjunction(filter).into_iter().all(|c| {
            let in_table = c.clone().transform(|e| {
                Ok(match e.downcast_ref::<ColumnExpr>() {
                    Some(col) => Transformed::yes(Arc::new(ColumnExpr::new(
                        col.name(),
                        self.schema.index_of(col.name())?,
                    )) as Arc<dyn PhysicalExpr>),
                    None => Transformed::no(e),
                })
            });
            let Ok(in_table) = in_table.and_then(|t| simplifier.simplify(t.data)) else {
                return false;
            };
            self.conjuncts
                .iter()
                .any(|e| e.as_ref() == in_table.as_ref())
        })
    }
}

/// Rows `plan` leaves to read in the file with `footer`.
pub(crate) fn rows_left(plan: &ParquetAccessPlan, footer: &ParquetMetaData) -> usize {
    plan.inner()
        .iter()
        .zip(footer.row_groups())
        .map(|(access, rg)| match access {
            RowGroupAccess::Skip => 0,
            RowGroupAccess::Scan => rg.num_rows() as usize,
            RowGroupAccess::Selection(s) => s.row_count(),
        })
        .sum()
}

#[cfg(test)]
mod tests;
