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

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::config::TableParquetOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::physical_plan::parquet::{
    PagePruningAccessPlanFilter, ParquetAccessPlan, ParquetFileMetrics, RowGroupAccessPlanFilter,
};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::simplifier::PhysicalExprSimplifier;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::ParquetMetaData;

/// The pruning of a table's files by a scan's filters.
pub(crate) struct FilePruning {
    schema: SchemaRef,
    row_groups: Option<Arc<PruningPredicate>>,
    pages: PagePruningAccessPlanFilter,
}

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
            row_groups,
            pages,
        })
    }

    /// The row groups and pages of the file at `path`, with `footer`, that the filters leave
    /// to read; `None` when the file's columns are not the table's (written before a column
    /// was added): DataFusion's opener, which maps such a file's columns, prunes it then.
    /// A file it plans has the table's schema, which its scan is then handed: the opener
    /// need not decode the Arrow schema kept in the footer each time it opens the file.
    pub(crate) fn plan(
        &self,
        path: &str,
        footer: &Arc<ParquetMetaData>,
    ) -> Option<ParquetAccessPlan> {
        let reader =
            ArrowReaderMetadata::try_new(footer.clone(), ArrowReaderOptions::new()).ok()?;
        let file_schema = reader.schema();
        let same_columns = file_schema.fields().len() == self.schema.fields().len()
            && file_schema
                .fields()
                .iter()
                .zip(self.schema.fields())
                .all(|(a, b)| {
                    a.name() == b.name()
                        && a.data_type() == b.data_type()
                        && a.is_nullable() == b.is_nullable()
                });
        if !same_columns {
            return None;
        }
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
            return Some(plan);
        }
        Some(self.pages.prune_plan_with_page_index(
            plan,
            file_schema,
            parquet_schema,
            footer,
            &metrics,
        ))
    }
}

#[cfg(test)]
mod tests;
