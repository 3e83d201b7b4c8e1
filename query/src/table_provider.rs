//! A DataFusion [`TableProvider`] over one table of the write buffer.
//!
//! The provider turns the query's predicates on `time` into a [`TimeRange`] and scans only the
//! buffer partitions that overlap it. Every predicate is reported as `Inexact`, so DataFusion
//! still applies all of them to the rows returned: pruning here may only drop whole
//! partitions that cannot match, never decide a row.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use sluice_storage::catalog::TIME_COLUMN;
use sluice_storage::{TableBuffer, TableSchema, TimeRange};

/// One table of one database, as DataFusion sees it.
#[derive(Debug)]
pub struct BufferTable {
    schema: Arc<TableSchema>,
    buffer: Option<Arc<TableBuffer>>,
}

impl BufferTable {
    /// A provider over `buffer` (absent if the table has no buffered rows) with `schema`.
    pub fn new(schema: Arc<TableSchema>, buffer: Option<Arc<TableBuffer>>) -> Self {
        BufferTable { schema, buffer }
    }
}

#[async_trait]
impl TableProvider for BufferTable {
    fn schema(&self) -> SchemaRef {
        self.schema.arrow_schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let range = time_range(filters);
        let batches = match &self.buffer {
            Some(b) => b.scan(&self.schema, range).batches,
            None => Vec::new(),
        };
        // Spread the partitions' batches over the session's target partitions so that
        // DataFusion can work on them in parallel.
        let n = state
            .config()
            .target_partitions()
            .max(1)
            .min(batches.len().max(1));
        let mut partitions: Vec<Vec<_>> = vec![Vec::new(); n];
        for (i, b) in batches.into_iter().enumerate() {
            partitions[i % n].push(b);
        }
        let exec =
            MemorySourceConfig::try_new_exec(&partitions, self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

/// The range of `time` that rows must fall in to satisfy every filter (each filter is one
/// conjunct). Filters that do not bound `time` leave the range open.
pub fn time_range(filters: &[Expr]) -> TimeRange {
    let mut range = TimeRange::ALL;
    for f in filters {
        narrow(&mut range, f);
    }
    range
}

fn narrow(range: &mut TimeRange, expr: &Expr) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                narrow(range, left);
                narrow(range, right);
                return;
            }
            let (op, value) = match (is_time(left), is_time(right)) {
                (true, false) => match nanos(right) {
                    Some(v) => (*op, v),
                    None => return,
                },
                (false, true) => match (op.swap(), nanos(left)) {
                    (Some(op), Some(v)) => (op, v),
                    _ => return,
                },
                _ => return,
            };
            match op {
                Operator::Gt => range.min = range.min.max(value.saturating_add(1)),
                Operator::GtEq => range.min = range.min.max(value),
                Operator::Lt => range.max = range.max.min(value.saturating_sub(1)),
                Operator::LtEq => range.max = range.max.min(value),
                Operator::Eq => {
                    range.min = range.min.max(value);
                    range.max = range.max.min(value);
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr) => {
            if let Some(lo) = nanos(low) {
                range.min = range.min.max(lo);
            }
            if let Some(hi) = nanos(high) {
                range.max = range.max.min(hi);
            }
        }
        _ => {}
    }
}

fn is_time(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => c.name == TIME_COLUMN,
        // the planner may wrap the column in a cast to the literal's timestamp type
        Expr::Cast(c) => is_time(&c.expr),
        _ => false,
    }
}

fn nanos(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match v {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(v), None))
    }

    #[test]
    fn time_bounds_come_from_comparisons_and_between() {
        let r = time_range(&[col("time").gt_eq(ts(10)), col("time").lt(ts(20))]);
        assert_eq!(r, TimeRange { min: 10, max: 19 });
        let r = time_range(&[ts(10).lt(col("time")).and(col("host").eq(lit("a")))]);
        assert_eq!(
            r,
            TimeRange {
                min: 11,
                max: i64::MAX
            }
        );
        let r = time_range(&[col("time").between(ts(5), ts(7))]);
        assert_eq!(r, TimeRange { min: 5, max: 7 });
        let r = time_range(&[col("time").eq(ts(5))]);
        assert_eq!(r, TimeRange { min: 5, max: 5 });
        let ms = lit(ScalarValue::TimestampMillisecond(Some(2), None));
        assert_eq!(time_range(&[col("time").lt_eq(ms)]).max, 2_000_000);
    }

    #[test]
    fn other_predicates_leave_the_range_open() {
        assert_eq!(time_range(&[col("usage").gt(lit(5.0))]), TimeRange::ALL);
        // OR cannot narrow: either side may hold
        let either = col("time").gt(ts(10)).or(col("time").lt(ts(5)));
        assert_eq!(time_range(&[either]), TimeRange::ALL);
        assert_eq!(
            time_range(&[col("time").not_between(ts(5), ts(7))]),
            TimeRange::ALL
        );
    }
}
