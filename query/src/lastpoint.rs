//! Lastpoint queries, as users write them, answered from the newest row Sluice keeps per
//! series (`TableBuffer::last_rows`) instead of a scan of the whole table.
//!
//! [`NewestRowsRule`] runs after DataFusion's optimizer rules. It looks for a table scan
//! whose rows matter only through the newest row of each series:
//!
//! - an aggregate grouped by tags whose aggregates are `max(time)`, `first_value(x ORDER BY
//!   time DESC)` or `last_value(x ORDER BY time)` (DataFusion plans `SELECT DISTINCT ON
//!   (<tags>) ... ORDER BY <tags>, time DESC` as the first of these);
//! - a sort by `time DESC` that keeps one row (`ORDER BY time DESC LIMIT 1`);
//!
//! with nothing between them and the scan but filters on tags and column projections, and no
//! filter on the scan but on tags. Then every row that can decide the answer is the newest
//! row of its series: a series' tags are the same in all its rows, so a filter on tags keeps
//! or drops a series whole, and within a group the rows at the greatest time are each their
//! series' newest. The scan's source is swapped for the newest rows, which yield the same
//! answer from one row per series; anything else keeps the scan.

use std::sync::Arc;

use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::expr::{AggregateFunction, NullTreatment};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, SortExpr, TableScanBuilder};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sluice_storage::TableSchema;
use sluice_storage::catalog::{ColumnKind, TIME_COLUMN};

use crate::last_cache::NewestRowsTable;
use crate::table_provider::SluiceTable;

/// Swaps a table scan for the table's newest rows where they give the same answer (see the
/// module documentation).
#[derive(Debug, Default)]
pub struct NewestRowsRule;

impl OptimizerRule for NewestRowsRule {
    fn name(&self) -> &str {
        "sluice_newest_rows"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_down(|node| {
            let answered = match &node {
                LogicalPlan::Aggregate(a) => aggregate_needs_newest_rows(a),
                LogicalPlan::Sort(s) => {
                    s.fetch == Some(1) && s.expr.first().is_some_and(|e| is_time(&e.expr) && !e.asc)
                }
                _ => false,
            };
            if !answered {
                return Ok(Transformed::no(node));
            }
            let Some(input) = node.inputs().first().map(|i| (*i).clone()) else {
                return Ok(Transformed::no(node));
            };
            match newest_rows_below(&input, &node)? {
                Some(input) => {
                    let node = with_input(node, input)?;
                    Ok(Transformed::new(node, true, TreeNodeRecursion::Jump))
                }
                None => Ok(Transformed::no(node)),
            }
        })
    }
}

/// `plan` (the input of `answering`) with its table scan reading the newest rows, if between
/// the two there are only projections of bare columns (a renamed column could pass a tag
/// off as `time`), subquery aliases and filters on tags, and the scan is of a Sluice table
/// that filters on nothing but tags.
fn newest_rows_below(plan: &LogicalPlan, answering: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    let swapped = match plan {
        LogicalPlan::TableScan(scan) => {
            let Ok(provider) = source_as_provider(&scan.source) else {
                return Ok(None);
            };
            let Some(table) = provider.downcast_ref::<SluiceTable>() else {
                return Ok(None);
            };
            let schema = table.table_schema();
            if scan.fetch.is_some()
                || !scan.filters.iter().all(|f| only_tags(f, schema))
                || !answering_columns_fit(answering, schema)
            {
                return Ok(None);
            }
            let source = provider_as_source(Arc::new(NewestRowsTable::of(table)));
            let scan = TableScanBuilder::new(scan.table_name.clone(), source)
                .with_projection(scan.projection.clone())
                .with_filters(scan.filters.clone())
                .build()?;
            return Ok(Some(LogicalPlan::TableScan(scan)));
        }
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            &p.input
        }
        LogicalPlan::SubqueryAlias(a) => &a.input,
        LogicalPlan::Filter(f) => {
            // its columns are checked against the table once the scan is reached
            if f.predicate.is_volatile() {
                return Ok(None);
            }
            &f.input
        }
        _ => return Ok(None),
    };
    let Some(input) = newest_rows_below(swapped, answering)? else {
        return Ok(None);
    };
    // filters between here and the scan must be on tags too
    if let LogicalPlan::Filter(f) = plan
        && !only_tags_of_scan(&f.predicate, &input)
    {
        return Ok(None);
    }
    Ok(Some(with_input(plan.clone(), input)?))
}

/// `plan`, a node with one input, reading `input` instead: the same schema, so nothing
/// else of the node changes.
fn with_input(plan: LogicalPlan, input: LogicalPlan) -> Result<LogicalPlan> {
    let mut input = Some(input);
    Ok(plan
        .map_children(|_| match input.take() {
            Some(i) => Ok(Transformed::yes(i)),
            None => internal_err!("a lastpoint rewrite found a second input"),
        })?
        .data)
}

/// Whether an aggregate's answer depends only on each group's rows at its greatest time:
/// it groups by expressions of tags, and each aggregate is `max(time)`, `first_value(...
/// ORDER BY <group columns>, time DESC, ...)` or `last_value(... ORDER BY <group columns>,
/// time [ASC], ...)`, respecting nulls, without `FILTER` or `DISTINCT`. (Which columns are
/// tags is checked once the scan is reached, by [`answering_columns_fit`].)
fn aggregate_needs_newest_rows(a: &Aggregate) -> bool {
    let group_columns: Vec<&str> = a
        .group_expr
        .iter()
        .filter_map(|e| match e {
            Expr::Column(c) => Some(c.name.as_str()),
            _ => None,
        })
        .collect();
    let volatile = a.group_expr.iter().any(|e| e.is_volatile());
    !volatile
        && a.aggr_expr.iter().all(|e| {
            let e = match e {
                Expr::Alias(alias) => alias.expr.as_ref(),
                e => e,
            };
            let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
                return false;
            };
            if params.filter.is_some()
                || matches!(params.null_treatment, Some(NullTreatment::IgnoreNulls))
            {
                return false;
            }
            match func.name() {
                "max" => params.args.len() == 1 && is_time(&params.args[0]),
                "first_value" => newest_first(&params.order_by, &group_columns, false),
                "last_value" => newest_first(&params.order_by, &group_columns, true),
                _ => false,
            }
        })
}

/// Whether `order` sorts a group's rows by time (ascending if `ascending`), after only
/// columns that are constant in the group.
fn newest_first(order: &[SortExpr], group_columns: &[&str], ascending: bool) -> bool {
    for e in order {
        if is_time(&e.expr) {
            return e.asc == ascending;
        }
        match &e.expr {
            Expr::Column(c) if group_columns.contains(&c.name.as_str()) => {}
            _ => return false,
        }
    }
    false
}

/// Whether the columns `answering` groups by (for an aggregate) are all tags of `schema`:
/// groups must hold whole series.
fn answering_columns_fit(answering: &LogicalPlan, schema: &TableSchema) -> bool {
    match answering {
        LogicalPlan::Aggregate(a) => a.group_expr.iter().all(|e| only_tags(e, schema)),
        _ => true,
    }
}

/// Whether `e` reads no column but tags of `schema`, and calls nothing volatile.
fn only_tags(e: &Expr, schema: &TableSchema) -> bool {
    !e.is_volatile()
        && e.column_refs().iter().all(|c| {
            schema
                .column_id(&c.name)
                .is_some_and(|id| schema.columns()[id].kind == ColumnKind::Tag)
        })
}

/// [`only_tags`] against the table scanned at the bottom of `plan`.
fn only_tags_of_scan(e: &Expr, plan: &LogicalPlan) -> bool {
    let mut schema = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.downcast_ref::<NewestRowsTable>()
        {
            schema = Some(table.table_schema().clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    schema.is_some_and(|s| only_tags(e, &s))
}

fn is_time(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == TIME_COLUMN)
}

#[cfg(test)]
mod tests;
