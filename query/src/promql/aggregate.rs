//! Aggregation operators (`sum`, `avg`, `topk`, `quantile`, ... `by`/`without`).

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::error::PromError;
use super::functions::{kahan_add, quantile};
use super::labels::{Labels, METRIC_NAME};
use super::value::{Series, Steps, Value};

/// The labels a series is grouped by.
fn group_labels(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::default(),
        Some(LabelModifier::Include(names)) => labels.keep(&names.labels, true),
        Some(LabelModifier::Exclude(names)) => {
            let mut drop = names.labels.clone();
            drop.push(METRIC_NAME.to_string());
            labels.keep(&drop, false)
        }
    }
}

/// Per-group running state of the simple aggregations.
#[derive(Clone, Copy, Default)]
struct Acc {
    n: f64,
    value: f64,
    c: f64,
    mean: f64,
}

/// The aggregation `a` of `series`, with its parameter's value (`topk`'s k, `quantile`'s
/// q, `count_values`'s label).
pub(crate) fn apply(
    a: &AggregateExpr,
    param: Option<Value>,
    series: Vec<Series>,
    steps: Steps,
) -> Result<Value, PromError> {
    let op = a.op.id();
    let param = match param {
        Some(Value::String(s)) if op == T_COUNT_VALUES => Param::Label(s),
        Some(Value::Scalar(v)) => Param::Number(v),
        _ => Param::None,
    };
    let mut groups: Vec<Labels> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let group_of: Vec<usize> = series
        .iter()
        .map(|s| {
            let g = group_labels(&s.labels, &a.modifier);
            *index.entry(g.clone()).or_insert_with(|| {
                groups.push(g);
                groups.len() - 1
            })
        })
        .collect();

    if op == T_TOPK || op == T_BOTTOMK {
        let Param::Number(k) = param else {
            return Err(PromError::Execution("topk/bottomk need a number".into()));
        };
        return Ok(Value::Vector(top(
            series,
            &group_of,
            groups.len(),
            &k,
            op == T_TOPK,
            steps,
        )?));
    }
    if op == T_COUNT_VALUES {
        let Param::Label(label) = param else {
            return Err(PromError::Execution(
                "count_values needs a label name".into(),
            ));
        };
        return count_values(series, &groups, &group_of, &label, steps);
    }
    if op == T_QUANTILE {
        let Param::Number(q) = param else {
            return Err(PromError::Execution("quantile needs a number".into()));
        };
        let mut out = empty_series(groups, steps);
        let mut values: Vec<Vec<f64>> = vec![Vec::new(); out.len()];
        for (i, &qi) in q.iter().enumerate().take(steps.count) {
            for v in values.iter_mut() {
                v.clear();
            }
            for (s, &g) in series.iter().zip(&group_of) {
                if let Some(x) = s.points[i] {
                    values[g].push(x);
                }
            }
            for (g, v) in values.iter_mut().enumerate() {
                if !v.is_empty() {
                    out[g].points[i] = Some(quantile(qi, v));
                }
            }
        }
        return Ok(Value::Vector(out));
    }

    let mut out = empty_series(groups, steps);
    let mut accs = vec![Acc::default(); out.len()];
    for i in 0..steps.count {
        accs.fill(Acc::default());
        for (s, &g) in series.iter().zip(&group_of) {
            let Some(x) = s.points[i] else { continue };
            let acc = &mut accs[g];
            acc.n += 1.0;
            match op {
                T_SUM | T_AVG => (acc.value, acc.c) = kahan_add(x, acc.value, acc.c),
                T_MAX if acc.n == 1.0 || acc.value < x || acc.value.is_nan() => acc.value = x,
                T_MIN if acc.n == 1.0 || acc.value > x || acc.value.is_nan() => acc.value = x,
                T_STDDEV | T_STDVAR => {
                    let delta = x - acc.mean;
                    acc.mean += delta / acc.n;
                    acc.value += delta * (x - acc.mean);
                }
                _ => {}
            }
        }
        for (g, acc) in accs.iter().enumerate() {
            if acc.n == 0.0 {
                continue;
            }
            out[g].points[i] = Some(match op {
                T_SUM => acc.value + acc.c,
                T_AVG => avg_of(acc),
                T_COUNT => acc.n,
                T_GROUP => 1.0,
                T_MAX | T_MIN => acc.value,
                T_STDVAR => acc.value / acc.n,
                T_STDDEV => (acc.value / acc.n).sqrt(),
                _ => {
                    return Err(PromError::Execution(format!(
                        "aggregation {} is not supported by Sluice",
                        a.op
                    )));
                }
            });
        }
    }
    // `avg` needs its members again when the sum overflowed
    if op == T_AVG {
        for (g, s) in out.iter_mut().enumerate() {
            for i in 0..steps.count {
                if s.points[i].is_some_and(f64::is_infinite) {
                    let members: Vec<f64> = series
                        .iter()
                        .zip(&group_of)
                        .filter(|&(_, &sg)| sg == g)
                        .filter_map(|(m, _)| m.points[i])
                        .collect();
                    s.points[i] = super::functions::avg(&members);
                }
            }
        }
    }
    Ok(Value::Vector(
        out.into_iter().filter(Series::is_present).collect(),
    ))
}

/// A series per group, with no values yet.
fn empty_series(groups: Vec<Labels>, steps: Steps) -> Vec<Series> {
    groups
        .into_iter()
        .map(|labels| Series {
            labels,
            points: vec![None; steps.count],
            drop_name: false,
        })
        .collect()
}

fn avg_of(acc: &Acc) -> f64 {
    (acc.value + acc.c) / acc.n
}

enum Param {
    None,
    Number(Vec<f64>),
    Label(String),
}

/// `topk`/`bottomk`: at each step, the `k` largest (smallest) of each group keep their
/// value; the others have none there. Series keep their labels.
fn top(
    series: Vec<Series>,
    group_of: &[usize],
    groups: usize,
    k: &[f64],
    largest: bool,
    steps: Steps,
) -> Result<Vec<Series>, PromError> {
    let mut keep: Vec<Vec<Option<f64>>> = vec![vec![None; steps.count]; series.len()];
    let mut members: Vec<Vec<(f64, usize)>> = vec![Vec::new(); groups];
    for i in 0..steps.count {
        let ki = k[i];
        if ki.is_nan() {
            return Err(PromError::Execution("Parameter value is NaN".into()));
        }
        if ki < 1.0 {
            continue;
        }
        let ki = if ki >= (1u64 << 62) as f64 {
            usize::MAX
        } else {
            ki as usize
        };
        for m in members.iter_mut() {
            m.clear();
        }
        for (si, s) in series.iter().enumerate() {
            if let Some(x) = s.points[i] {
                members[group_of[si]].push((x, si));
            }
        }
        for m in members.iter_mut() {
            // NaN counts as the smallest for topk and the largest for bottomk
            m.sort_by(|a, b| {
                let ord = match (a.0.is_nan(), b.0.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if largest => b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal),
                    _ => a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal),
                };
                ord.then(a.1.cmp(&b.1))
            });
            for &(x, si) in m.iter().take(ki) {
                keep[si][i] = Some(x);
            }
        }
    }
    Ok(series
        .into_iter()
        .zip(keep)
        .map(|(s, points)| Series {
            labels: s.labels,
            points,
            drop_name: s.drop_name,
        })
        .filter(Series::is_present)
        .collect())
}

/// `count_values("label", v)`: per group and step, how many series have each value, the
/// value (as Prometheus prints it) in `label`.
fn count_values(
    series: Vec<Series>,
    groups: &[Labels],
    group_of: &[usize],
    label: &str,
    steps: Steps,
) -> Result<Value, PromError> {
    let mut out: Vec<Series> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for i in 0..steps.count {
        for (s, &g) in series.iter().zip(group_of) {
            let Some(x) = s.points[i] else { continue };
            let labels = groups[g].with(label, &super::response::format_value(x));
            let at = *index.entry(labels.clone()).or_insert_with(|| {
                out.push(Series {
                    labels,
                    points: vec![None; steps.count],
                    drop_name: false,
                });
                out.len() - 1
            });
            let p = &mut out[at].points[i];
            *p = Some(p.unwrap_or(0.0) + 1.0);
        }
    }
    Ok(Value::Vector(out))
}
