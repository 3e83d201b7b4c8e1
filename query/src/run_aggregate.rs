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
    Array, ArrayRef, ArrowPrimitiveType, AsArray, Float64Array, Int64Array, PrimitiveArray,
    UInt32Array, UInt64Array,
};
use datafusion::arrow::array::{BooleanBufferBuilder, TimestampNanosecondArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, SchemaRef, TimestampNanosecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
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
    /// for each group key, the `date_bin` it computes, if it is one
    bins: Vec<Option<DateBin>>,
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
            bins: group_by.iter().map(DateBin::of).collect(),
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
        // a key computed as bins of the times is marked so
        let groups: Vec<String> = self
            .group_by
            .iter()
            .zip(&self.bins)
            .map(|(e, bin)| match bin {
                Some(_) => format!("{e} as bins"),
                None => e.to_string(),
            })
            .collect();
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
                bins: self.bins.clone(),
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
        let batch_size = context.session_config().batch_size();
        let input = self.input.execute(partition, context)?.fuse();
        let runs = Arc::new(Runs {
            bins: self.bins.clone(),
            group_by: self.group_by.clone(),
            aggregates: self.aggregates.clone(),
            schema: self.schema.clone(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        });
        // An input batch holds a few dozen runs: their partial rows are gathered into
        // batches of about `batch_size` rows, since every operator above (repartition,
        // merge, final aggregate) pays per batch, most for the dictionaries of tag keys.
        let out = futures::stream::try_unfold(input, move |mut input| {
            let runs = runs.clone();
            async move {
                let mut parts = Vec::new();
                let mut rows = 0;
                while rows < batch_size {
                    let Some(batch) = input.next().await else {
                        break;
                    };
                    let part = runs.aggregate(&batch?)?;
                    rows += part.num_rows();
                    parts.push(part);
                }
                if parts.is_empty() {
                    return Ok(None);
                }
                let _timer = runs.baseline.elapsed_compute().timer();
                let out = concat_batches(&runs.schema, &parts)?;
                runs.baseline.record_output(out.num_rows());
                Ok(Some((out, input)))
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            out,
        )))
    }
}

/// What one partition of a [`RunAggregateExec`] computes with.
struct Runs {
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    /// for each group key, the `date_bin` it computes, if it is one
    bins: Vec<Option<DateBin>>,
    aggregates: Vec<(Kind, Arc<dyn PhysicalExpr>)>,
    schema: SchemaRef,
    baseline: BaselineMetrics,
}

impl Runs {
    /// The partial state of each run of equal group keys in `batch`: a row per run.
    fn aggregate(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let _timer = self.baseline.elapsed_compute().timer();
        let rows = batch.num_rows();
        let keys: Vec<Key> = self
            .group_by
            .iter()
            .zip(&self.bins)
            .map(|(e, bin)| match bin {
                Some(bin) => Ok(Key::Bins(bin.time.evaluate(batch)?.into_array(rows)?, bin)),
                None => Ok(Key::Values(e.evaluate(batch)?.into_array(rows)?)),
            })
            .collect::<Result<_>>()?;
        let runs = runs(&keys, rows)?;
        let starts = UInt32Array::from_iter_values(runs.iter().map(|r| r.start as u32));
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (key, field) in keys.iter().zip(self.schema.fields()) {
            columns.push(match key {
                Key::Values(k) => take(k.as_ref(), &starts, None)?,
                Key::Bins(time, bin) => {
                    let time = time.as_primitive::<TimestampNanosecondType>();
                    let bins: TimestampNanosecondArray = runs
                        .iter()
                        .map(|r| {
                            time.is_valid(r.start)
                                .then(|| bin.of_time(time.value(r.start)))
                        })
                        .collect();
                    cast(&bins, field.data_type())?
                }
            });
        }
        for (kind, arg) in &self.aggregates {
            let values = argument(*kind, arg, batch)?;
            columns.extend(state_of_runs(*kind, &values, &runs)?);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// A group key's values in a batch.
enum Key<'a> {
    Values(ArrayRef),
    /// the times a `date_bin` bins, and the bins: compared as bins without computing every
    /// row's bin
    Bins(ArrayRef, &'a DateBin),
}

/// `date_bin(INTERVAL, time, TIMESTAMP)` of nanosecond times with a fixed stride: bins of
/// `stride` nanoseconds from `origin`, each time in the one that starts at or before it
/// (as DataFusion computes it, with the stride in nanoseconds).
#[derive(Debug, Clone)]
struct DateBin {
    stride: i64,
    origin: i64,
    time: Arc<dyn PhysicalExpr>,
}

impl DateBin {
    /// `expr` as a `date_bin` over nanosecond times by a stride of days and nanoseconds
    /// (no months) and a literal origin (the epoch if none), if it is one.
    fn of(expr: &Arc<dyn PhysicalExpr>) -> Option<DateBin> {
        let f = expr.downcast_ref::<ScalarFunctionExpr>()?;
        if f.name() != "date_bin" {
            return None;
        }
        fn literal(e: &Arc<dyn PhysicalExpr>) -> Option<&ScalarValue> {
            e.downcast_ref::<Literal>().map(|l| l.value())
        }
        let (stride, time, origin) = match f.args() {
            [stride, time] => (literal(stride)?, time, 0),
            [stride, time, origin] => match literal(origin)? {
                ScalarValue::TimestampNanosecond(Some(o), _) => (literal(stride)?, time, *o),
                _ => return None,
            },
            _ => return None,
        };
        let ScalarValue::IntervalMonthDayNano(Some(i)) = stride else {
            return None;
        };
        let stride = (i64::from(i.days))
            .checked_mul(86_400_000_000_000)?
            .checked_add(i.nanoseconds)?;
        if i.months != 0 || stride <= 0 {
            return None;
        }
        time.downcast_ref::<Column>()?;
        Some(DateBin {
            stride,
            origin,
            time: time.clone(),
        })
    }

    /// The start of the bin of `t` (with DataFusion's wrapping arithmetic).
    fn of_time(&self, t: i64) -> i64 {
        let from_origin = t.wrapping_sub(self.origin);
        self.origin.wrapping_add(
            from_origin
                .div_euclid(self.stride)
                .wrapping_mul(self.stride),
        )
    }
}

/// The values `kind` runs over in `batch`. An `avg` or `sum` of `CAST(x AS DOUBLE)` over
/// integers is given the integers, each converted as it is added (as the cast converts
/// it), rather than a new array of doubles first.
fn argument(kind: Kind, arg: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    let rows = batch.num_rows();
    if matches!(kind, Kind::Avg | Kind::Sum)
        && let Some(cast) = arg.downcast_ref::<CastExpr>()
        && *cast.cast_type() == DataType::Float64
        && cast.expr().data_type(&batch.schema())? == DataType::Int64
    {
        return cast.expr().evaluate(batch)?.into_array(rows);
    }
    arg.evaluate(batch)?.into_array(rows)
}

/// The runs of equal group keys among `rows` rows: a run ends where any key column changes.
/// A dictionary column is compared by its keys, not its strings (arrow's `partition`
/// compares the strings, most of this operator's time over ten tag columns). Two keys of one
/// string (a dictionary with a repeated value) only split a run; the final aggregate merges
/// the partial rows of one group as it does a group split over batches.
fn runs(keys: &[Key<'_>], rows: usize) -> Result<Vec<Range<usize>>> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    // bit i set: row i + 1 starts a run
    let mut ends = BooleanBuffer::new_unset(rows - 1);
    for k in keys {
        let changed = match k {
            Key::Values(k) => {
                let k: &dyn Array = match k.as_any_dictionary_opt() {
                    Some(d) => d.keys(),
                    None => k.as_ref(),
                };
                distinct(&k.slice(0, rows - 1), &k.slice(1, rows - 1))?
                    .values()
                    .clone()
            }
            Key::Bins(time, bin) => {
                bin_changes(time.as_primitive::<TimestampNanosecondType>(), bin)
            }
        };
        ends = &ends | &changed;
    }
    let mut out = Vec::new();
    let mut start = 0;
    for i in ends.set_indices() {
        out.push(start..i + 1);
        start = i + 1;
    }
    out.push(start..rows);
    Ok(out)
}

/// Bit `i` set where row `i + 1`'s bin is not row `i`'s. Times come mostly in order within
/// a series, so a row is tested against the bounds of the last bin computed and divided
/// only when it leaves them.
fn bin_changes(time: &TimestampNanosecondArray, bin: &DateBin) -> BooleanBuffer {
    let rows = time.len();
    let mut changes = BooleanBufferBuilder::new(rows.saturating_sub(1));
    // [start, end) of the last row's bin; none for a null time
    let mut last: Option<(i64, i64)> = None;
    for row in 0..rows {
        let this = if time.is_null(row) {
            None
        } else {
            let t = time.value(row);
            match last {
                Some((start, end)) if t >= start && t < end => last,
                _ => {
                    let start = bin.of_time(t);
                    Some((start, start.saturating_add(bin.stride)))
                }
            }
        };
        if row > 0 {
            changes.append(this != last);
        }
        last = this;
    }
    changes.finish()
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
            let counts: Vec<u64> = runs.iter().map(non_null).collect();
            let ints = values.as_primitive_opt::<Int64Type>();
            let run_sum = |r: &Range<usize>| match ints {
                Some(ints) => sum(ints, r, |x| x as f64),
                None => sum(values.as_primitive::<Float64Type>(), r, |x| x),
            };
            // a run without values has no sum (as DataFusion's accumulators leave it)
            let sums: Float64Array = runs
                .iter()
                .zip(&counts)
                .map(|(r, &n)| (n > 0).then(|| run_sum(r)))
                .collect();
            let sums = Arc::new(sums) as ArrayRef;
            if kind == Kind::Avg {
                // a run without values has no count either, as DataFusion's partial `avg`
                // leaves it: the final `avg` reads a count as values seen (0 / 0 is NaN)
                let counts: UInt64Array = counts.iter().map(|&n| (n > 0).then_some(n)).collect();
                vec![Arc::new(counts) as ArrayRef, sums]
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

/// The sum of the non-null values of `v` in `run`, each as `f64` by `to_f64`.
fn sum<T: ArrowPrimitiveType>(
    v: &PrimitiveArray<T>,
    run: &Range<usize>,
    to_f64: impl Fn(T::Native) -> f64,
) -> f64 {
    let values = &v.values()[run.clone()];
    match v.nulls() {
        None => sum_lanes(values, to_f64),
        Some(nulls) => values
            .iter()
            .enumerate()
            .filter(|(i, _)| nulls.is_valid(run.start + i))
            .map(|(_, &x)| to_f64(x))
            .sum(),
    }
}

/// The sum of `values`, added in eight lanes: one running sum cannot be vectorized (each
/// addition waits for the last), eight can. The order of additions differs from a row-by-row
/// sum only in the last bits of a float sum, as it does between DataFusion's partitions.
fn sum_lanes<N: Copy>(values: &[N], to_f64: impl Fn(N) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&x| to_f64(x)).sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += to_f64(x);
        }
    }
    lanes.iter().sum::<f64>() + rest
}

#[cfg(test)]
mod tests;
