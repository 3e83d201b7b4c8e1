//! Evaluating a parsed PromQL expression over the steps of a query.
//!
//! Evaluation runs in two passes. [`plan_selections`] walks the expression and works out, for
//! every selector, the window of samples the whole query needs from it (its lookback or range,
//! its offset and `@`, the subqueries around it); those are read from storage first, each once.
//! Then [`Evaluator::eval`] computes each node for all steps at once: an instant vector is a
//! list of series, each with a value (or none) per step, as Prometheus's range evaluation
//! builds it one step at a time.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Call, Expr, Offset, SubqueryExpr, VectorSelector};

use super::error::PromError;
use super::labels::METRIC_NAME;
use super::select::{Budget, Windows};
use super::value::{RangeArg, RawSeries, Series, Steps, Value};
use super::{aggregate, binary, functions};
use sluice_model::staleness::is_stale_marker;

/// Milliseconds of a parsed duration.
pub(crate) fn millis(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The signed milliseconds of an `offset`.
pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
    }
}

/// Milliseconds since the epoch of a time, negative before it.
pub(crate) fn system_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => millis(&d),
        Err(e) => -millis(&e.duration()),
    }
}

/// A selector's identity within one parsed expression (its address: the tree is not
/// changed between planning and evaluation).
pub(crate) fn key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// The matchers of a selector, its metric name among them: one list per `or` alternative.
pub(crate) fn matcher_sets(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let mut base = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name {
        base.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
    }
    if vs.matchers.or_matchers.is_empty() {
        return vec![base];
    }
    vs.matchers
        .or_matchers
        .iter()
        .map(|alt| {
            let mut set = alt.clone();
            if let Some(name) = &vs.name {
                set.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
            }
            set
        })
        .collect()
}

/// A selector to read, and the samples it needs: those in `(after, until]` (ms).
pub(crate) struct Selection<'e> {
    pub selector: &'e VectorSelector,
    pub after: i64,
    pub until: i64,
}

/// Which samples each selector of `expr` needs when it is evaluated at times in
/// `[first, last]`, for a query running from `start` to `end` (what `@ start()` and
/// `@ end()` mean).
pub(crate) fn plan_selections<'e>(
    expr: &'e Expr,
    (first, last): (i64, i64),
    (start, end): (i64, i64),
    lookback: i64,
    default_step: i64,
    out: &mut Vec<Selection<'e>>,
) {
    let at_of = |at: &Option<AtModifier>| -> Option<i64> {
        at.as_ref().map(|a| match a {
            AtModifier::Start => start,
            AtModifier::End => end,
            AtModifier::At(t) => system_ms(t),
        })
    };
    let shifted = |at: &Option<AtModifier>, offset: &Option<Offset>| {
        let o = offset_ms(offset);
        match at_of(at) {
            Some(t) => (t - o, t - o),
            None => (first - o, last - o),
        }
    };
    match expr {
        Expr::VectorSelector(vs) => {
            let (lo, hi) = shifted(&vs.at, &vs.offset);
            out.push(Selection {
                selector: vs,
                after: lo - lookback,
                until: hi,
            });
        }
        Expr::MatrixSelector(ms) => {
            let (lo, hi) = shifted(&ms.vs.at, &ms.vs.offset);
            out.push(Selection {
                selector: &ms.vs,
                after: lo - millis(&ms.range),
                until: hi,
            });
        }
        Expr::Subquery(sq) => {
            let (lo, hi) = shifted(&sq.at, &sq.offset);
            let inner = subquery_steps(sq, lo, hi, default_step);
            plan_selections(
                &sq.expr,
                (inner.start, inner.end()),
                (start, end),
                lookback,
                default_step,
                out,
            );
        }
        _ => {
            for e in operands(expr) {
                plan_selections(e, (first, last), (start, end), lookback, default_step, out);
            }
        }
    }
}

/// The operands of a node that are evaluated at the node's own times: not a subquery's
/// expression (it has times of its own); selectors and literals have none.
fn operands(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Aggregate(a) => a
            .param
            .iter()
            .map(|p| p.as_ref())
            .chain([a.expr.as_ref()])
            .collect(),
        Expr::Unary(u) => vec![&u.expr],
        Expr::Binary(b) => vec![&b.lhs, &b.rhs],
        Expr::Paren(p) => vec![&p.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
        _ => Vec::new(),
    }
}

/// A call `<agg>_over_time(selector[range])`, outside any subquery, whose windows do not
/// overlap at the query's steps (its range is the step, or there is one step): the scan can
/// aggregate each window itself ([`super::select::select_windows`]) instead of handing over
/// every sample.
pub(crate) struct Windowed<'e> {
    pub selector: &'e VectorSelector,
    pub windows: Windows,
}

/// The calls of `expr` (outside subqueries) whose windows the scan can aggregate.
pub(crate) fn plan_windows<'e>(expr: &'e Expr, steps: Steps, out: &mut Vec<Windowed<'e>>) {
    if let Expr::Call(c) = expr {
        // SQL's aggregate of the same name is the function
        let aggregate = match c.func.name {
            "avg_over_time" => Some("avg"),
            "sum_over_time" => Some("sum"),
            "count_over_time" => Some("count"),
            _ => None,
        };
        if let (Some(aggregate), Some(Expr::MatrixSelector(ms))) =
            (aggregate, c.args.args.first().map(|a| a.as_ref()))
        {
            let range = millis(&ms.range);
            if ms.vs.at.is_none() && range > 0 && (steps.count == 1 || steps.step == range) {
                out.push(Windowed {
                    selector: &ms.vs,
                    windows: Windows {
                        aggregate,
                        first: steps.start - offset_ms(&ms.vs.offset),
                        range,
                        count: steps.count,
                    },
                });
                return;
            }
        }
    }
    for e in operands(expr) {
        plan_windows(e, steps, out);
    }
}

/// The steps a subquery's expression is evaluated at, for outer (shifted) times in
/// `[lo, hi]`: multiples of its step after `lo - range` (left-open, as Prometheus 3),
/// through `hi`.
pub(crate) fn subquery_steps(sq: &SubqueryExpr, lo: i64, hi: i64, default_step: i64) -> Steps {
    let step = sq.step.as_ref().map_or(default_step, millis).max(1);
    let from = lo - millis(&sq.range);
    let mut start = step * (from / step);
    if start <= from {
        start += step;
    }
    let count = if hi < start {
        0
    } else {
        ((hi - start) / step + 1) as usize
    };
    Steps { start, step, count }
}

/// Evaluates expressions over the samples read for them.
pub(crate) struct Evaluator {
    /// Each selector's series, by [`key`].
    pub(crate) data: HashMap<usize, Vec<RawSeries>>,
    /// The answers of the calls whose windows the scan aggregated ([`Windowed`]), by their
    /// selector's [`key`].
    pub(crate) windows: HashMap<usize, Vec<Series>>,
    pub(crate) lookback: i64,
    /// The query's first and last times (for `@ start()` and `@ end()`).
    pub(crate) start: i64,
    pub(crate) end: i64,
    /// Step of subqueries that give none.
    pub(crate) default_step: i64,
    pub(crate) budget: Budget,
    pub(crate) deadline: Option<(Instant, std::time::Duration)>,
}

impl Evaluator {
    fn at_of(&self, at: &Option<AtModifier>) -> Option<i64> {
        at.as_ref().map(|a| match a {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(t) => system_ms(t),
        })
    }

    /// The time each step reads at, after `@` and `offset`.
    fn shifted(&self, steps: Steps, at: &Option<AtModifier>, offset: &Option<Offset>) -> Vec<i64> {
        let o = offset_ms(offset);
        let fixed = self.at_of(at);
        (0..steps.count)
            .map(|i| fixed.unwrap_or(steps.time(i)) - o)
            .collect()
    }

    /// The time of each step; with `@`, every step is the first (Prometheus evaluates an
    /// expression fixed by `@` once, at the first step, and repeats the answer).
    fn step_times(&self, steps: Steps, fixed: bool) -> Vec<i64> {
        (0..steps.count)
            .map(|i| if fixed { steps.start } else { steps.time(i) })
            .collect()
    }

    fn check_deadline(&self) -> Result<(), PromError> {
        if let Some((deadline, timeout)) = self.deadline
            && Instant::now() > deadline
        {
            return Err(PromError::Timeout(timeout));
        }
        Ok(())
    }

    /// `expr`'s value at every step of `steps`.
    pub(crate) fn eval(&mut self, expr: &Expr, steps: Steps) -> Result<Value, PromError> {
        self.check_deadline()?;
        let value = match expr {
            Expr::NumberLiteral(n) => Value::Scalar(vec![n.val; steps.count]),
            Expr::StringLiteral(s) => Value::String(s.val.clone()),
            Expr::Paren(p) => self.eval(&p.expr, steps)?,
            Expr::Unary(u) => match self.eval(&u.expr, steps)? {
                Value::Scalar(v) => Value::Scalar(v.into_iter().map(|x| -x).collect()),
                Value::Vector(series) => Value::Vector(
                    series
                        .into_iter()
                        .map(|s| Series {
                            labels: s.labels,
                            points: s.points.into_iter().map(|p| p.map(|x| -x)).collect(),
                            drop_name: true,
                        })
                        .collect(),
                ),
                other => {
                    return Err(PromError::Execution(format!(
                        "unary minus is not defined on a {}",
                        other.type_name()
                    )));
                }
            },
            Expr::VectorSelector(vs) => Value::Vector(self.instant_vector(vs, steps)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let arg = self.range_arg(expr, steps)?;
                let i = steps.count.saturating_sub(1);
                Value::Matrix(
                    arg.series
                        .iter()
                        .filter_map(|s| {
                            let w = arg.window(s, i);
                            (!w.is_empty()).then(|| RawSeries {
                                labels: s.labels.clone(),
                                t: s.t[w.clone()].to_vec(),
                                v: s.v[w].to_vec(),
                                drop_name: s.drop_name,
                            })
                        })
                        .collect(),
                )
            }
            Expr::Aggregate(a) => {
                let param = match &a.param {
                    Some(p) => Some(self.eval(p, steps)?),
                    None => None,
                };
                let series = self.vector_arg(&a.expr, steps)?;
                aggregate::apply(a, param, series, steps)?
            }
            Expr::Binary(b) => {
                let lhs = self.eval(&b.lhs, steps)?;
                let rhs = self.eval(&b.rhs, steps)?;
                binary::apply(b, lhs, rhs, steps)?
            }
            Expr::Call(c) => self.call(c, steps)?,
            Expr::Extension(_) => {
                return Err(PromError::Execution(
                    "extension expressions are not supported".into(),
                ));
            }
        };
        if let Value::Vector(series) = &value {
            let points: usize = series
                .iter()
                .map(|s| s.points.iter().filter(|p| p.is_some()).count())
                .sum();
            if points > self.budget.limit {
                return Err(PromError::TooManySamples(self.budget.limit));
            }
        }
        Ok(value)
    }

    /// A function call: its arguments evaluated as the function declares them (a range
    /// vector with each step's window), then applied.
    fn call(&mut self, call: &Call, steps: Steps) -> Result<Value, PromError> {
        let exprs: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
        if let Some(Expr::MatrixSelector(ms)) = exprs.first()
            && let Some(series) = self.windows.remove(&key(&ms.vs))
        {
            return Ok(Value::Vector(series));
        }
        if call.func.name == "timestamp" {
            // of a selector, the times of the samples it picks (not the evaluation times)
            let mut inner = exprs[0];
            while let Expr::Paren(p) = inner {
                inner = &p.expr;
            }
            if let Expr::VectorSelector(vs) = inner {
                return Ok(Value::Vector(self.sample_times(vs, steps)));
            }
        }
        let types = &call.func.arg_types;
        let mut args = Vec::with_capacity(exprs.len());
        for (i, &e) in exprs.iter().enumerate() {
            let declared = types.get(i).or(types.last());
            args.push(Some(if declared == Some(&ValueType::Matrix) {
                Value::Range(self.range_arg(e, steps)?)
            } else {
                self.eval(e, steps)?
            }));
        }
        functions::call(call.func.name, functions::Args(args), &exprs, steps)
    }

    /// A selector's series, each with the newest sample at or before each step within the
    /// lookback window (left-open, as Prometheus 3).
    fn instant_vector(&self, vs: &VectorSelector, steps: Steps) -> Vec<Series> {
        self.newest_samples(vs, steps, false, |_, v| v)
    }

    /// The sample timestamps (seconds) `instant_vector` would pick: `timestamp(selector)`.
    pub(crate) fn sample_times(&self, vs: &VectorSelector, steps: Steps) -> Vec<Series> {
        self.newest_samples(vs, steps, true, |t, _| t as f64 / 1000.0)
    }

    /// Each series of selector `vs` with, at each step, `pick(time, value)` of its newest
    /// sample at or before the step within the lookback window; a stale marker ends the
    /// series at once. Series with no such sample at any step are left out.
    fn newest_samples(
        &self,
        vs: &VectorSelector,
        steps: Steps,
        drop_name: bool,
        pick: impl Fn(i64, f64) -> f64,
    ) -> Vec<Series> {
        let times = self.shifted(steps, &vs.at, &vs.offset);
        let Some(data) = self.data.get(&key(vs)) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(data.len());
        for s in data {
            let mut points = Vec::with_capacity(times.len());
            let mut any = false;
            // samples at or before the step's time: a walk forward while steps go forward
            let mut n = 0;
            let mut before = i64::MIN;
            for &t in &times {
                if t < before {
                    n = s.t.partition_point(|&x| x <= t);
                } else {
                    n += s.t[n..].iter().take_while(|&&x| x <= t).count();
                }
                before = t;
                let p = (n > 0 && s.t[n - 1] > t - self.lookback && !is_stale_marker(s.v[n - 1]))
                    .then(|| pick(s.t[n - 1], s.v[n - 1]));
                any |= p.is_some();
                points.push(p);
            }
            if any {
                out.push(Series {
                    labels: s.labels.clone(),
                    points,
                    drop_name,
                });
            }
        }
        out
    }

    /// A range vector argument: a matrix selector's samples, or a subquery's values at its
    /// own steps, with the end of each step's window.
    pub(crate) fn range_arg(&mut self, expr: &Expr, steps: Steps) -> Result<RangeArg, PromError> {
        match expr {
            Expr::MatrixSelector(ms) => Ok(RangeArg {
                // each selector is evaluated once: its samples move into the argument
                series: self
                    .data
                    .remove(&key(&ms.vs))
                    .map(|d| d.into_iter().map(without_markers).collect())
                    .unwrap_or_default(),
                range: millis(&ms.range),
                times: self.shifted(steps, &ms.vs.at, &ms.vs.offset),
                at: self.step_times(steps, ms.vs.at.is_some()),
            }),
            Expr::Subquery(sq) => {
                let times = self.shifted(steps, &sq.at, &sq.offset);
                let lo = times.iter().copied().min().unwrap_or(0);
                let hi = times.iter().copied().max().unwrap_or(0);
                let inner = subquery_steps(sq, lo, hi, self.default_step);
                let series = match self.eval(&sq.expr, inner)? {
                    Value::Vector(v) => v
                        .into_iter()
                        .map(|s| {
                            let mut r = RawSeries {
                                labels: s.labels,
                                drop_name: s.drop_name,
                                ..RawSeries::default()
                            };
                            for (i, p) in s.points.into_iter().enumerate() {
                                if let Some(v) = p {
                                    r.t.push(inner.time(i));
                                    r.v.push(v);
                                }
                            }
                            r
                        })
                        .collect(),
                    Value::Scalar(v) => vec![RawSeries {
                        t: (0..inner.count).map(|i| inner.time(i)).collect(),
                        v,
                        ..RawSeries::default()
                    }],
                    other => {
                        return Err(PromError::Execution(format!(
                            "a subquery needs an instant vector or scalar, not a {}",
                            other.type_name()
                        )));
                    }
                };
                Ok(RangeArg {
                    series,
                    range: millis(&sq.range),
                    times,
                    at: self.step_times(steps, sq.at.is_some()),
                })
            }
            Expr::Paren(p) => self.range_arg(&p.expr, steps),
            other => Err(PromError::Execution(format!(
                "expected a range vector, got {other}"
            ))),
        }
    }

    /// An instant vector argument.
    pub(crate) fn vector_arg(
        &mut self,
        expr: &Expr,
        steps: Steps,
    ) -> Result<Vec<Series>, PromError> {
        match self.eval(expr, steps)? {
            Value::Vector(v) => Ok(v),
            other => Err(PromError::Execution(format!(
                "expected an instant vector, got a {}",
                other.type_name()
            ))),
        }
    }
}

/// A series' samples without its stale markers (range vectors hold none).
fn without_markers(mut s: RawSeries) -> RawSeries {
    if !s.v.iter().copied().any(is_stale_marker) {
        return s;
    }
    let (t, v) =
        s.t.iter()
            .zip(&s.v)
            .filter(|(_, v)| !is_stale_marker(**v))
            .unzip();
    s.t = t;
    s.v = v;
    s
}
