//! What PromQL expressions evaluate to, over the steps of a query.

use std::collections::HashMap;

use super::error::PromError;
use super::labels::Labels;

/// The times an expression is evaluated at: `count` steps of `step` ms from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub start: i64,
    pub step: i64,
    pub count: usize,
}

impl Steps {
    /// One evaluation, at `t`.
    pub fn instant(t: i64) -> Self {
        Steps {
            start: t,
            step: 1,
            count: 1,
        }
    }

    /// The time of step `i`.
    pub fn time(&self, i: usize) -> i64 {
        self.start + self.step * i as i64
    }

    /// The last time.
    pub fn end(&self) -> i64 {
        self.time(self.count.saturating_sub(1))
    }
}

/// The samples of one series, in time order (milliseconds), one per millisecond.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSeries {
    pub labels: Labels,
    pub t: Vec<i64>,
    pub v: Vec<f64>,
    /// As [`super::value::Series::drop_name`], for a subquery's values.
    pub drop_name: bool,
}

/// One series of an instant vector, with its value at each step where it has one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<Option<f64>>,
    /// The metric name goes when the query's answer is written (Prometheus 3's delayed name
    /// removal): until then `by (__name__)` and `on (__name__)` still see it, so
    /// `max(max_over_time(m[1m])) by (__name__)` keeps each metric apart.
    pub drop_name: bool,
}

impl Series {
    /// Whether the series has a value at some step.
    pub fn is_present(&self) -> bool {
        self.points.iter().any(Option::is_some)
    }
}

/// An expression's value at every step.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number per step.
    Scalar(Vec<f64>),
    /// An instant vector: series with a value at some of the steps.
    Vector(Vec<Series>),
    /// A range vector (only as an instant query's answer): each series' samples.
    Matrix(Vec<RawSeries>),
    String(String),
    /// A range vector argument of a function, with each step's window.
    Range(RangeArg),
}

impl Value {
    /// The name of its type, as Prometheus's errors give it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
            Value::String(_) => "string",
            Value::Range(_) => "range vector",
        }
    }
}

/// A query's answer: its value and the time(s) it is for.
#[derive(Debug)]
pub struct Answer {
    pub value: Value,
    pub steps: Steps,
}

/// A range vector argument, ready for a function to read a window of it per step.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeArg {
    pub series: Vec<RawSeries>,
    /// Window length (ms): each step reads the samples in `(time - range, time]`.
    pub range: i64,
    /// The time each step's window ends at (after `@` and `offset`).
    pub times: Vec<i64>,
    /// The time of each step itself (`predict_linear` predicts from there).
    pub at: Vec<i64>,
}

impl RangeArg {
    /// Indexes of the samples of series `s` in step `i`'s window.
    pub fn window(&self, s: &RawSeries, i: usize) -> std::ops::Range<usize> {
        let end = self.times[i];
        let lo = s.t.partition_point(|&t| t <= end - self.range);
        let hi = s.t.partition_point(|&t| t <= end);
        lo..hi.max(lo)
    }
}

/// Series whose label sets repeat at one step are an error (Prometheus's "vector cannot
/// contain metrics with the same labelset"); otherwise series of equal labels (present at
/// different steps) are merged into one.
pub fn merge_same_labels(series: Vec<Series>) -> Result<Vec<Series>, PromError> {
    let mut index: HashMap<super::labels::Labels, usize> = HashMap::with_capacity(series.len());
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    for s in series {
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&i) => {
                let kept = &mut out[i];
                for (a, b) in kept.points.iter_mut().zip(s.points) {
                    if b.is_some() {
                        if a.is_some() {
                            return Err(PromError::Execution(
                                "vector cannot contain metrics with the same labelset".into(),
                            ));
                        }
                        *a = b;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The answer with the metric names its series were to lose removed
/// ([`Series::drop_name`]); series that then have the same labels at one step are an error,
/// as Prometheus answers.
pub fn drop_names(value: Value) -> Result<Value, PromError> {
    match value {
        Value::Vector(series) => {
            let series = series
                .into_iter()
                .map(|mut s| {
                    if s.drop_name {
                        s.labels = s.labels.without_name();
                        s.drop_name = false;
                    }
                    s
                })
                .collect();
            Ok(Value::Vector(merge_same_labels(series)?))
        }
        Value::Matrix(mut series) => {
            for s in series.iter_mut().filter(|s| s.drop_name) {
                s.labels = s.labels.without_name();
                s.drop_name = false;
            }
            let mut seen = std::collections::HashSet::new();
            if !series.iter().all(|s| seen.insert(&s.labels)) {
                return Err(PromError::Execution(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
            Ok(Value::Matrix(series))
        }
        other => Ok(other),
    }
}
