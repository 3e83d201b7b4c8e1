//! Partial aggregation by runs: where rows come grouped (Parquet files sorted by tags then
//! time), `avg`, `sum`, `min`, `max` and `count` per group are computed a run of equal group
//! keys at a time, in plain loops over the run's values, instead of looking up each row's
//! group in a hash table and updating accumulators row by row.
//!
//! [`RunAggregation`] runs after DataFusion's physical optimizer. It replaces an
//! `AggregateExec` in `Partial` mode whose input DataFusion found sorted at least on some of
//! the group keys (so runs are long: a series' rows in one time bucket) and whose aggregates
//! are all of the supported kinds, with a [`RunAggregateExec`] that emits the same partial
//! state (DataFusion's own state columns for each function) per run. A group whose rows are
//! split over runs (two batches, two files) gets a partial row per run; the `Final`
//! aggregate above merges partial rows of one group as it always does. Anything else keeps
//! DataFusion's aggregate.
//!
//! Why it pays: on the TSBS twelve-hour, all-host query (ten `avg`s by host and hour over
//! 432,000 rows) DataFusion's partial aggregate took 30 ms of CPU, most of it the per-row
//! group bookkeeping of its accumulators; the runs are 360 rows long.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{partition, take};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// What one aggregate computes, and the partial state it emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `avg(Float64)`: state `count` (UInt64), `sum` (Float64).
    Avg,
    /// `sum(Float64)`: state `sum` (Float64).
    Sum,
    /// `min(Int64)` / `max(Int64)`: state the value (Int64).
    Min,
    Max,
    /// `count(x)`: state `count` (Int64), the rows where `x` is not null.
    Count,
}

impl Kind {
    /// The kind of `name` over an argument of type `input`, whose partial state has the
    /// types `state` (as DataFusion's `AggregateExec` declares them): only the combinations
    /// computed here.
    fn of(name: &str, input: &DataType, state: &[DataType]) -> Option<Kind> {
        use DataType::{Float64, Int64, UInt64};
        let kind = match (name, input, state) {
            ("avg", Float64, [UInt64, Float64]) => Kind::Avg,
            ("sum", Float64, [Float64]) => Kind::Sum,
            ("min", Int64, [Int64]) => Kind::Min,
            ("max", Int64, [Int64]) => Kind::Max,
            ("count", _, [Int64]) => Kind::Count,
            _ => return None,
        };
        Some(kind)
    }

    fn state_width(self) -> usize {
        if self == Kind::Avg { 2 } else { 1 }
    }
}

/// Replaces partial aggregates over grouped input with [`RunAggregateExec`].
#[derive(Debug, Default)]
pub struct RunAggregation;

impl PhysicalOptimizerRule for RunAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            Ok(match RunAggregateExec::replacing(&node) {
                Some(runs) => Transformed::yes(Arc::new(runs) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "sluice_run_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial aggregate computed a run of equal group keys at a time (see the module
/// documentation). Its output is the replaced `AggregateExec`'s: the group keys, then each
/// aggregate's state columns, a row per run.
#[derive(Debug)]
pub struct RunAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<(Kind, Arc<dyn PhysicalExpr>)>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    /// The replacement of `node`, if it is a partial aggregate over grouped input whose
    /// aggregates are all computed here.
    fn replacing(node: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let agg = node.downcast_ref::<AggregateExec>()?;
        if *agg.mode() != AggregateMode::Partial
            || matches!(agg.input_order_mode(), InputOrderMode::Linear)
            || !agg.group_expr().is_single()
            || agg.group_expr().expr().is_empty()
            || agg.filter_expr().iter().any(Option::is_some)
            || agg.limit_options().is_some()
        {
            return None;
        }
        let input_schema = agg.input_schema();
        let schema = agg.schema();
        let group_by: Vec<Arc<dyn PhysicalExpr>> = agg
            .group_expr()
            .expr()
            .iter()
            .map(|(e, _)| e.clone())
            .collect();
        let mut state_at = group_by.len();
        let mut aggregates = Vec::new();
        for a in agg.aggr_expr() {
            let [arg] = &a.expressions()[..] else {
                return None;
            };
            if a.is_distinct() || !a.order_bys().is_empty() {
                return None;
            }
            let input = arg.data_type(&input_schema).ok()?;
            let state: Vec<DataType> = a
                .state_fields()
                .ok()?
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let kind = Kind::of(a.fun().name(), &input, &state)?;
            // the state columns must be where the aggregate's schema has them
            let declared: Vec<&DataType> = schema
                .fields()
                .iter()
                .skip(state_at)
                .take(state.len())
                .map(|f| f.data_type())
                .collect();
            if declared != state.iter().collect::<Vec<_>>() {
                return None;
            }
            state_at += kind.state_width();
            aggregates.push((kind, arg.clone()));
        }
        if state_at != schema.fields().len() {
            return None;
        }
        Some(RunAggregateExec {
            input: agg.input().clone(),
            group_by,
            aggregates,
            schema,
            properties: agg.properties().clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for RunAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let kinds: Vec<String> = self
            .aggregates
            .iter()
            .map(|(k, e)| format!("{k:?}({e})").to_lowercase())
            .collect();
        let groups: Vec<String> = self.group_by.iter().map(|e| e.to_string()).collect();
        write!(
            f,
            "RunAggregateExec: gby=[{}], aggr=[{}]",
            groups.join(", "),
            kinds.join(", ")
        )
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self
            .group_by
            .iter()
            .chain(self.aggregates.iter().map(|(_, e)| e))
        {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(RunAggregateExec {
                input,
                group_by: self.group_by.clone(),
                aggregates: self.aggregates.clone(),
                schema: self.schema.clone(),
                properties: self.properties.clone(),
                metrics: ExecutionPlanMetricsSet::new(),
            })),
            _ => Err(DataFusionError::Internal(
                "RunAggregateExec takes exactly one child".into(),
            )),
        }
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let group_by = self.group_by.clone();
        let aggregates = self.aggregates.clone();
        let schema = self.schema.clone();
        let out = input.map(move |batch| {
            let batch = batch?;
            let _timer = baseline.elapsed_compute().timer();
            let out = aggregate_runs(&batch, &group_by, &aggregates, &schema)?;
            baseline.record_output(out.num_rows());
            Ok(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            out,
        )))
    }
}

/// The partial state of each run of equal group keys in `batch`: a row per run.
fn aggregate_runs(
    batch: &RecordBatch,
    group_by: &[Arc<dyn PhysicalExpr>],
    aggregates: &[(Kind, Arc<dyn PhysicalExpr>)],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let keys: Vec<ArrayRef> = group_by
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(rows))
        .collect::<Result<_>>()?;
    let runs = partition(&keys)?.ranges();
    let starts = UInt32Array::from_iter_values(runs.iter().map(|r| r.start as u32));
    let mut columns: Vec<ArrayRef> = keys
        .iter()
        .map(|k| take(k.as_ref(), &starts, None))
        .collect::<std::result::Result<_, _>>()?;
    for (kind, arg) in aggregates {
        let values = arg.evaluate(batch)?.into_array(rows)?;
        columns.extend(state_of_runs(*kind, &values, &runs)?);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `kind`'s partial state for each run of `values`.
fn state_of_runs(kind: Kind, values: &ArrayRef, runs: &[Range<usize>]) -> Result<Vec<ArrayRef>> {
    let non_null =
        |r: &Range<usize>| (r.len() - values.slice(r.start, r.len()).null_count()) as u64;
    Ok(match kind {
        Kind::Count => vec![Arc::new(Int64Array::from_iter_values(
            runs.iter().map(|r| non_null(r) as i64),
        ))],
        Kind::Avg | Kind::Sum => {
            let v = values.as_primitive::<Float64Type>();
            let counts: Vec<u64> = runs.iter().map(non_null).collect();
            // a run without values has no sum (as DataFusion's accumulators leave it)
            let sums: Float64Array = runs
                .iter()
                .zip(&counts)
                .map(|(r, &n)| (n > 0).then(|| sum(v, r)))
                .collect();
            let sums = Arc::new(sums) as ArrayRef;
            if kind == Kind::Avg {
                vec![Arc::new(UInt64Array::from(counts)) as ArrayRef, sums]
            } else {
                vec![sums]
            }
        }
        Kind::Min | Kind::Max => {
            let v = values.as_primitive::<Int64Type>();
            let pick = |r: &Range<usize>| {
                let run = v.slice(r.start, r.len());
                if kind == Kind::Min {
                    datafusion::arrow::compute::min(&run)
                } else {
                    datafusion::arrow::compute::max(&run)
                }
            };
            vec![Arc::new(runs.iter().map(pick).collect::<Int64Array>()) as ArrayRef]
        }
    })
}

/// The sum of the non-null values of `v` in `run`.
fn sum(v: &Float64Array, run: &Range<usize>) -> f64 {
    let values = &v.values()[run.clone()];
    match v.nulls() {
        None => sum_lanes(values),
        Some(nulls) => values
            .iter()
            .enumerate()
            .filter(|(i, _)| nulls.is_valid(run.start + i))
            .map(|(_, x)| x)
            .sum(),
    }
}

/// The sum of `values`, added in eight lanes: one running sum cannot be vectorized (each
/// addition waits for the last), eight can. The order of additions differs from a row-by-row
/// sum only in the last bits of a float sum, as it does between DataFusion's partitions.
fn sum_lanes(values: &[f64]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f64>() + rest
}

#[cfg(test)]
mod tests;
