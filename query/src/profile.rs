//! Where queries spend their time, summed over every query since the server started, for
//! `GET /metrics`: the phases a query goes through ([`Phase`]) and, from DataFusion's
//! operator metrics once a query has finished, the parts of its execution (opening Parquet
//! files, their footers, pruning, decoding, and each operator's own compute time).
//!
//! `sluice-load --tsbs-queries` reads these before and after the runs of each query and
//! prints the difference per query: the breakdown behind `benches/README.md`'s figures.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::physical_plan::{ExecutionPlan, RecordBatchStream, SendableRecordBatchStream};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use sluice_storage::metrics::{Counter, header};

/// A step every query goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Parsing the SQL, resolving names and types into a logical plan, checking it reads
    /// only, binding parameters.
    Plan,
    /// DataFusion's logical optimizer.
    Optimize,
    /// Turning the logical plan into an execution plan: the table scans' choice of files
    /// and buffer chunks, and DataFusion's physical optimizer.
    PhysicalPlan,
    /// Waiting for the result's batches, from the consumer asking for each until it comes:
    /// everything the execution plan does, as the consumer of the result sees it.
    Execute,
    /// Turning the batches into the response's bytes (JSON, CSV, ...).
    Encode,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Plan,
        Phase::Optimize,
        Phase::PhysicalPlan,
        Phase::Execute,
        Phase::Encode,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Optimize => "optimize",
            Phase::PhysicalPlan => "physical_plan",
            Phase::Execute => "execute",
            Phase::Encode => "encode",
        }
    }
}

/// The parts of execution read from the operators' metrics: DataFusion's metric names and
/// the part each is reported as.
const SCAN_PARTS: &[(&str, &str)] = &[
    ("time_elapsed_opening", "open"),
    ("metadata_load_time", "metadata"),
    ("statistics_eval_time", "row_group_pruning"),
    ("page_index_eval_time", "page_pruning"),
    ("time_elapsed_processing", "decode"),
];

/// Time spent by all queries, by phase and by part of execution.
#[derive(Debug, Default)]
pub struct QueryProfile {
    queries: Counter,
    /// Queries that ran a kept plan: optimized, physical ([`crate::plan_cache`]).
    reused: [Counter; 2],
    phases: [Counter; 5],
    /// Nanoseconds per Parquet scan part ([`SCAN_PARTS`]).
    scan: Mutex<BTreeMap<&'static str, u64>>,
    /// Nanoseconds of compute per operator name (`AggregateExec`, `SortExec`, ...).
    operators: Mutex<BTreeMap<String, u64>>,
}

impl QueryProfile {
    /// Adds `took` to `phase`.
    pub fn record(&self, phase: Phase, took: Duration) {
        let i = Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.phases[i].add(took.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    /// Counts a query that reused a kept plan: its optimized plan, and with `physical` its
    /// physical plan as well.
    pub(crate) fn reused(&self, physical: bool) {
        self.reused[usize::from(physical)].add(1);
    }

    /// Adds what `plan`'s operators did since `before` was taken of them: a plan copied
    /// from a kept one shares some operators' metrics with the others copied from it.
    fn record_operators(&self, plan: &Arc<dyn ExecutionPlan>, before: &OperatorTimes) {
        let after = OperatorTimes::of(plan);
        let mut scan = self.scan.lock();
        for (part, v) in after.scan {
            let was = before.scan.get(part).copied().unwrap_or(0);
            *scan.entry(part).or_default() += v.saturating_sub(was);
        }
        let mut operators = self.operators.lock();
        for (name, v) in after.operators {
            let was = before.operators.get(&name).copied().unwrap_or(0);
            *operators.entry(name).or_default() += v.saturating_sub(was);
        }
    }

    /// Appends the profile as Prometheus text.
    pub fn render(&self, out: &mut String) {
        header(
            out,
            "sluice_queries_total",
            "counter",
            "SQL queries planned, whether or not they finished.",
        );
        let _ = writeln!(out, "sluice_queries_total {}", self.queries.get());
        header(
            out,
            "sluice_query_plans_reused_total",
            "counter",
            "Queries that ran a plan kept from an earlier query of the same text (or of the \
             same text but its timestamps): the optimized plan (planned physically anew), or \
             the physical plan as well.",
        );
        for (i, plan) in ["optimized", "physical"].iter().enumerate() {
            let _ = writeln!(
                out,
                "sluice_query_plans_reused_total{{plan=\"{plan}\"}} {}",
                self.reused[i].get()
            );
        }
        header(
            out,
            "sluice_query_phase_seconds_total",
            "counter",
            "Time queries spent in each phase: plan (parse, resolve, check), optimize, \
             physical_plan, execute (waiting for batches), encode (the response's bytes).",
        );
        for (phase, c) in Phase::ALL.iter().zip(&self.phases) {
            let _ = writeln!(
                out,
                "sluice_query_phase_seconds_total{{phase=\"{}\"}} {}",
                phase.name(),
                c.get() as f64 / 1e9
            );
        }
        header(
            out,
            "sluice_query_scan_seconds_total",
            "counter",
            "Time Parquet scans spent opening files (of which reading footers and pruning \
             row groups and pages) and decoding, summed over the scans' partitions.",
        );
        for (_, part) in SCAN_PARTS {
            let nanos = self.scan.lock().get(part).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "sluice_query_scan_seconds_total{{part=\"{part}\"}} {}",
                nanos as f64 / 1e9
            );
        }
        header(
            out,
            "sluice_query_operator_seconds_total",
            "counter",
            "Compute time of each kind of execution plan operator, summed over its partitions.",
        );
        for (operator, nanos) in self.operators.lock().iter() {
            let _ = writeln!(
                out,
                "sluice_query_operator_seconds_total{{operator=\"{operator}\"}} {}",
                *nanos as f64 / 1e9
            );
        }
    }
}

/// The operator metrics of a plan at one moment: nanoseconds per scan part and per operator.
#[derive(Debug, Default)]
struct OperatorTimes {
    scan: BTreeMap<&'static str, u64>,
    operators: BTreeMap<String, u64>,
}

impl OperatorTimes {
    fn of(plan: &Arc<dyn ExecutionPlan>) -> Self {
        let mut times = OperatorTimes::default();
        let mut stack = vec![plan.clone()];
        while let Some(node) = stack.pop() {
            stack.extend(node.children().into_iter().cloned());
            let Some(metrics) = node.metrics() else {
                continue;
            };
            if let Some(compute) = metrics.elapsed_compute() {
                *times.operators.entry(node.name().to_string()).or_default() += compute as u64;
            }
            for (metric, part) in SCAN_PARTS {
                if let Some(v) = metrics.sum_by_name(metric) {
                    *times.scan.entry(part).or_default() += v.as_usize() as u64;
                }
            }
        }
        times
    }
}

/// Times a query's phases as it goes: started when planning starts.
/// (Planning that is not a query, such as a prepared statement's, is not timed.)
pub(crate) struct PhaseTimer<'a> {
    profile: Option<&'a QueryProfile>,
    last: Instant,
}

impl<'a> PhaseTimer<'a> {
    pub(crate) fn start(profile: &'a QueryProfile) -> Self {
        profile.queries.add(1);
        PhaseTimer {
            profile: Some(profile),
            last: Instant::now(),
        }
    }

    /// A timer that records nothing.
    pub(crate) fn none() -> Self {
        PhaseTimer {
            profile: None,
            last: Instant::now(),
        }
    }

    /// Ends `phase`: the time since the last phase ended goes to it.
    pub(crate) fn finished(&mut self, phase: Phase) {
        let now = Instant::now();
        if let Some(profile) = self.profile {
            profile.record(phase, now - self.last);
        }
        self.last = now;
    }
}

/// A query's result stream that counts the time its consumer waits for batches as
/// [`Phase::Execute`] and, once dropped (read to the end, failed or abandoned), adds its
/// plan's operator metrics to the profile.
pub(crate) struct ProfiledStream {
    inner: SendableRecordBatchStream,
    plan: Arc<dyn ExecutionPlan>,
    /// The plan's operator metrics when it started.
    before: OperatorTimes,
    profile: Arc<QueryProfile>,
    /// When the consumer asked for the batch it is waiting for: its first poll since the
    /// last batch (a parallel plan's partitions work between the polls).
    asked: Option<Instant>,
    waited: Duration,
}

/// A plan about to be executed, its operator metrics taken, waiting for its stream.
pub(crate) struct Unstarted {
    plan: Arc<dyn ExecutionPlan>,
    before: OperatorTimes,
    profile: Arc<QueryProfile>,
}

impl Unstarted {
    /// Profiles `plan`, about to be executed: its operator metrics are taken now.
    pub(crate) fn new(plan: Arc<dyn ExecutionPlan>, profile: Arc<QueryProfile>) -> Self {
        Unstarted {
            before: OperatorTimes::of(&plan),
            plan,
            profile,
        }
    }

    /// `inner`, the plan's stream, profiled.
    pub(crate) fn of(self, inner: SendableRecordBatchStream) -> ProfiledStream {
        ProfiledStream {
            inner,
            plan: self.plan,
            before: self.before,
            profile: self.profile,
            asked: None,
            waited: Duration::ZERO,
        }
    }
}

impl Stream for ProfiledStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let asked = *self.asked.get_or_insert_with(Instant::now);
        let next = self.inner.poll_next_unpin(cx);
        if next.is_ready() {
            self.waited += asked.elapsed();
            self.asked = None;
        }
        next
    }
}

impl RecordBatchStream for ProfiledStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for ProfiledStream {
    fn drop(&mut self) {
        self.profile.record(Phase::Execute, self.waited);
        self.profile.record_operators(&self.plan, &self.before);
    }
}
