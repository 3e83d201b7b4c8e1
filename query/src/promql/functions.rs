//! PromQL's functions over float samples, as Prometheus 3 defines them.

use promql_parser::parser::Expr;

use super::error::PromError;
use super::labels::{Labels, METRIC_NAME};
use super::value::{RangeArg, merge_same_labels};
use super::value::{Series, Steps, Value};

/// Go's `math.Min`: NaN if either is NaN (Rust's `f64::min` ignores a NaN).
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Go's `math.Max`.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Adds `x` to a Kahan sum `(sum, c)`.
pub(crate) fn kahan_add(x: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + x;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= x.abs() {
        c + ((sum - t) + x)
    } else {
        c + ((x - t) + sum)
    };
    (t, c)
}

/// The `q` quantile of `values` (sorted here), Prometheus's way: linear between the two
/// nearest ranks.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go sorts NaN first
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// A function's arguments, evaluated: each taken once by the function.
pub(crate) struct Args(pub Vec<Option<Value>>);

impl Args {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    fn take(&mut self, i: usize) -> Result<Value, PromError> {
        self.0
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| PromError::Execution(format!("missing argument {}", i + 1)))
    }

    fn scalar(&mut self, i: usize) -> Result<Vec<f64>, PromError> {
        match self.take(i)? {
            Value::Scalar(v) => Ok(v),
            other => Err(expected("a scalar", &other)),
        }
    }

    fn vector(&mut self, i: usize) -> Result<Vec<Series>, PromError> {
        match self.take(i)? {
            Value::Vector(v) => Ok(v),
            other => Err(expected("an instant vector", &other)),
        }
    }

    fn string(&mut self, i: usize) -> Result<String, PromError> {
        match self.take(i)? {
            Value::String(s) => Ok(s),
            other => Err(expected("a string", &other)),
        }
    }

    fn range(&mut self, i: usize) -> Result<RangeArg, PromError> {
        match self.take(i)? {
            Value::Range(r) => Ok(r),
            other => Err(expected("a range vector", &other)),
        }
    }
}

fn expected(what: &str, got: &Value) -> PromError {
    PromError::Execution(format!("expected {what}, got a {}", got.type_name()))
}

/// `name(args)` at every step; `exprs` are the arguments as written (`absent` takes its
/// answer's labels from a selector's matchers).
pub(crate) fn call(
    name: &str,
    mut args: Args,
    exprs: &[&Expr],
    steps: Steps,
) -> Result<Value, PromError> {
    match name {
        "time" => Ok(Value::Scalar(
            (0..steps.count)
                .map(|i| steps.time(i) as f64 / 1000.0)
                .collect(),
        )),
        "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; steps.count])),
        "vector" => {
            let v = args.scalar(0)?;
            Ok(Value::Vector(vec![Series {
                labels: Labels::default(),
                drop_name: false,
                points: v.into_iter().map(Some).collect(),
            }]))
        }
        "scalar" => {
            let series = args.vector(0)?;
            Ok(Value::Scalar(
                (0..steps.count)
                    .map(|i| {
                        let mut present = series.iter().filter_map(|s| s.points[i]);
                        match (present.next(), present.next()) {
                            (Some(v), None) => v,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let series = args.vector(0)?;
            Ok(Value::Vector(map_series(series, true, |i, _| {
                Some(steps.time(i) as f64 / 1000.0)
            })))
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f = math_fn(name);
            let series = args.vector(0)?;
            Ok(Value::Vector(map_series(series, true, |_, v| Some(f(v)))))
        }
        "round" => {
            let series = args.vector(0)?;
            let to = if args.len() > 1 {
                args.scalar(1)?
            } else {
                vec![1.0; steps.count]
            };
            Ok(Value::Vector(map_series(series, true, |i, v| {
                let inverse = 1.0 / to[i];
                Some((v * inverse + 0.5).floor() / inverse)
            })))
        }
        "clamp" => {
            let series = args.vector(0)?;
            let lo = args.scalar(1)?;
            let hi = args.scalar(2)?;
            Ok(Value::Vector(map_series(series, true, |i, v| {
                (hi[i] >= lo[i]).then(|| go_max(lo[i], go_min(hi[i], v)))
            })))
        }
        "clamp_min" | "clamp_max" => {
            let series = args.vector(0)?;
            let bound = args.scalar(1)?;
            let max = name == "clamp_max";
            Ok(Value::Vector(map_series(series, true, |i, v| {
                Some(if max {
                    go_min(v, bound[i])
                } else {
                    go_max(v, bound[i])
                })
            })))
        }
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "hour" | "minute" => {
            let series = match args.len() {
                0 => vec![Series {
                    labels: Labels::default(),
                    drop_name: false,
                    points: (0..steps.count)
                        .map(|i| Some(steps.time(i) as f64 / 1000.0))
                        .collect(),
                }],
                _ => args.vector(0)?,
            };
            Ok(Value::Vector(map_series(series, true, |_, v| {
                date_part(name, v)
            })))
        }
        "sort" | "sort_desc" => {
            let mut series = args.vector(0)?;
            let desc = name == "sort_desc";
            // an instant query's order; a range query's answer is ordered by labels anyway
            series.sort_by(|a, b| {
                let (x, y) = (
                    a.points[0].unwrap_or(f64::NAN),
                    b.points[0].unwrap_or(f64::NAN),
                );
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                    _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                }
            });
            Ok(Value::Vector(series))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut series = args.vector(0)?;
            let mut names = Vec::new();
            for k in 1..args.len() {
                names.push(args.string(k)?);
            }
            let desc = name == "sort_by_label_desc";
            series.sort_by(|a, b| {
                let mut ord = std::cmp::Ordering::Equal;
                for n in &names {
                    ord = natural_cmp(a.labels.get(n), b.labels.get(n));
                    if ord.is_ne() {
                        break;
                    }
                }
                if ord.is_eq() {
                    ord = a.labels.cmp(&b.labels);
                }
                if desc { ord.reverse() } else { ord }
            });
            Ok(Value::Vector(series))
        }
        "label_replace" => {
            let series = args.vector(0)?;
            let dst = args.string(1)?;
            let replacement = args.string(2)?;
            let src = args.string(3)?;
            let pattern = args.string(4)?;
            let re = regex::Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
                PromError::Execution(format!(
                    "invalid regular expression in label_replace(): {pattern}: {e}"
                ))
            })?;
            if !valid_label_name(&dst) {
                return Err(PromError::Execution(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let out = series
                .into_iter()
                .map(|s| {
                    let value = s.labels.get(&src).to_string();
                    match re.captures(&value) {
                        Some(caps) => {
                            let mut res = String::new();
                            caps.expand(&replacement, &mut res);
                            Series {
                                labels: s.labels.with(&dst, &res),
                                points: s.points,
                                drop_name: s.drop_name,
                            }
                        }
                        None => s,
                    }
                })
                .collect();
            Ok(Value::Vector(merge_same_labels(out)?))
        }
        "label_join" => {
            let series = args.vector(0)?;
            let dst = args.string(1)?;
            let sep = args.string(2)?;
            let mut srcs = Vec::new();
            for k in 3..args.len() {
                srcs.push(args.string(k)?);
            }
            if !valid_label_name(&dst) {
                return Err(PromError::Execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let out = series
                .into_iter()
                .map(|s| {
                    let joined = srcs
                        .iter()
                        .map(|n| s.labels.get(n))
                        .collect::<Vec<_>>()
                        .join(&sep);
                    Series {
                        labels: s.labels.with(&dst, &joined),
                        points: s.points,
                        drop_name: s.drop_name,
                    }
                })
                .collect();
            Ok(Value::Vector(merge_same_labels(out)?))
        }
        "absent" => {
            let series = args.vector(0)?;
            let labels = absent_labels(exprs[0]);
            let points = (0..steps.count)
                .map(|i| series.iter().all(|s| s.points[i].is_none()).then_some(1.0))
                .collect::<Vec<_>>();
            Ok(Value::Vector(present(vec![Series {
                labels,
                points,
                drop_name: false,
            }])))
        }
        "absent_over_time" => {
            let arg = args.range(0)?;
            let labels = absent_labels(exprs[0]);
            let points = (0..steps.count)
                .map(|i| {
                    arg.series
                        .iter()
                        .all(|s| arg.window(s, i).is_empty())
                        .then_some(1.0)
                })
                .collect();
            Ok(Value::Vector(present(vec![Series {
                labels,
                points,
                drop_name: false,
            }])))
        }
        "histogram_quantile" => {
            let q = args.scalar(0)?;
            let series = args.vector(1)?;
            Ok(Value::Vector(histogram_quantile(&q, series, steps)?))
        }
        "rate" => over_range(args.range(0)?, steps, true, |t, v, a, i| {
            extrapolated_rate(t, v, a, i, true, true)
        }),
        "increase" => over_range(args.range(0)?, steps, true, |t, v, a, i| {
            extrapolated_rate(t, v, a, i, true, false)
        }),
        "delta" => over_range(args.range(0)?, steps, true, |t, v, a, i| {
            extrapolated_rate(t, v, a, i, false, false)
        }),
        "irate" => over_range(args.range(0)?, steps, true, |t, v, _, _| {
            instant_delta(t, v, true)
        }),
        "idelta" => over_range(args.range(0)?, steps, true, |t, v, _, _| {
            instant_delta(t, v, false)
        }),
        "deriv" => over_range(args.range(0)?, steps, true, |t, v, _, _| {
            (t.len() >= 2).then(|| linear_regression(t, v, t[0]).0)
        }),
        "predict_linear" => {
            let by = args.scalar(1)?;
            over_range(args.range(0)?, steps, true, move |t, v, a, i| {
                (t.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(t, v, a.at[i]);
                    intercept + slope * by[i]
                })
            })
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let sf = args.scalar(1)?;
            let tf = args.scalar(2)?;
            for i in 0..steps.count {
                if !(sf[i] > 0.0 && sf[i] < 1.0) {
                    return Err(PromError::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        sf[i]
                    )));
                }
                if !(tf[i] > 0.0 && tf[i] < 1.0) {
                    return Err(PromError::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        tf[i]
                    )));
                }
            }
            over_range(args.range(0)?, steps, true, move |_, v, _, i| {
                smoothing(v, sf[i], tf[i])
            })
        }
        "avg_over_time" => over_range(args.range(0)?, steps, true, |_, v, _, _| avg(v)),
        "sum_over_time" => over_range(args.range(0)?, steps, true, |_, v, _, _| {
            (!v.is_empty()).then(|| {
                let (s, c) = v.iter().fold((0.0, 0.0), |(s, c), &x| kahan_add(x, s, c));
                s + c
            })
        }),
        "count_over_time" => over_range(args.range(0)?, steps, true, |_, v, _, _| {
            (!v.is_empty()).then_some(v.len() as f64)
        }),
        "min_over_time" | "max_over_time" => {
            let max = name == "max_over_time";
            over_range(args.range(0)?, steps, true, move |_, v, _, _| {
                let (&first, rest) = v.split_first()?;
                Some(rest.iter().fold(first, |m, &x| {
                    if (if max { x > m } else { x < m }) || m.is_nan() {
                        x
                    } else {
                        m
                    }
                }))
            })
        }
        "stddev_over_time" => over_range(args.range(0)?, steps, true, |_, v, _, _| {
            (!v.is_empty()).then(|| variance(v).sqrt())
        }),
        "stdvar_over_time" => over_range(args.range(0)?, steps, true, |_, v, _, _| {
            (!v.is_empty()).then(|| variance(v))
        }),
        "last_over_time" => {
            over_range(args.range(0)?, steps, false, |_, v, _, _| v.last().copied())
        }
        "first_over_time" => over_range(args.range(0)?, steps, false, |_, v, _, _| {
            v.first().copied()
        }),
        "present_over_time" => over_range(args.range(0)?, steps, true, |_, v, _, _| {
            (!v.is_empty()).then_some(1.0)
        }),
        "quantile_over_time" => {
            let q = args.scalar(0)?;
            over_range(args.range(1)?, steps, true, move |_, v, _, i| {
                (!v.is_empty()).then(|| quantile(q[i], &mut v.to_vec()))
            })
        }
        "changes" => over_range(args.range(0)?, steps, true, |_, v, _, _| {
            (!v.is_empty()).then(|| {
                v.windows(2)
                    .filter(|w| !(w[0] == w[1] || (w[0].is_nan() && w[1].is_nan())))
                    .count() as f64
            })
        }),
        "resets" => over_range(args.range(0)?, steps, true, |_, v, _, _| {
            (!v.is_empty()).then(|| v.windows(2).filter(|w| w[1] < w[0]).count() as f64)
        }),
        other => Err(PromError::Execution(format!(
            "function {other}() is not supported by Sluice"
        ))),
    }
}

/// Each series with `f(step, value)` in place of its values (`None` drops the point), the
/// metric name dropped if `drop_name`; series left with no point are left out.
fn map_series(
    series: Vec<Series>,
    drop_name: bool,
    f: impl Fn(usize, f64) -> Option<f64>,
) -> Vec<Series> {
    present(
        series
            .into_iter()
            .map(|s| Series {
                labels: s.labels,
                drop_name: s.drop_name || drop_name,
                points: s
                    .points
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| p.and_then(|v| f(i, v)))
                    .collect(),
            })
            .collect(),
    )
}

/// The series that have a value at some step.
fn present(series: Vec<Series>) -> Vec<Series> {
    series.into_iter().filter(Series::is_present).collect()
}

/// A range function applied to each series' window at each step.
fn over_range(
    arg: RangeArg,
    steps: Steps,
    drop_name: bool,
    f: impl Fn(&[i64], &[f64], &RangeArg, usize) -> Option<f64>,
) -> Result<Value, PromError> {
    let mut out = Vec::with_capacity(arg.series.len());
    for s in &arg.series {
        let mut any = false;
        let points: Vec<Option<f64>> = (0..steps.count)
            .map(|i| {
                let w = arg.window(s, i);
                if w.is_empty() {
                    return None;
                }
                let p = f(&s.t[w.clone()], &s.v[w], &arg, i);
                any |= p.is_some();
                p
            })
            .collect();
        if any {
            out.push(Series {
                labels: s.labels.clone(),
                points,
                drop_name: s.drop_name || drop_name,
            });
        }
    }
    Ok(Value::Vector(merge_same_labels(out)?))
}

/// `rate`, `increase` and `delta`: the change over the window, corrected for counter resets
/// and extrapolated towards the window's ends (Prometheus 3's `extrapolatedRate`).
fn extrapolated_rate(
    t: &[i64],
    v: &[f64],
    arg: &RangeArg,
    i: usize,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    if t.len() < 2 {
        return None;
    }
    let range_end = arg.times[i];
    let range_start = range_end - arg.range;
    let n = t.len();
    let mut result = v[n - 1] - v[0];
    if counter {
        for w in v.windows(2) {
            if w[1] < w[0] {
                result += w[0];
            }
        }
    }
    let mut to_start = (t[0] - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - t[n - 1]) as f64 / 1000.0;
    let sampled = (t[n - 1] - t[0]) as f64 / 1000.0;
    let average = sampled / (n - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if counter && result > 0.0 && v[0] >= 0.0 {
        let to_zero = sampled * (v[0] / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if per_second {
        factor /= arg.range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` (`rate`) and `idelta`: from the last two samples.
fn instant_delta(t: &[i64], v: &[f64], rate: bool) -> Option<f64> {
    let n = t.len();
    if n < 2 {
        return None;
    }
    let (last, prev) = (v[n - 1], v[n - 2]);
    let mut result = last - prev;
    if rate && last < prev {
        result = last;
    }
    let interval = t[n - 1] - t[n - 2];
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope and intercept (at `intercept_time`) of the samples, time in seconds.
pub(crate) fn linear_regression(t: &[i64], v: &[f64], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = v[0];
    let mut constant = true;
    for (i, (&ti, &y)) in t.iter().zip(v).enumerate() {
        if constant && i > 0 && y != init {
            constant = false;
        }
        n += 1.0;
        let x = (ti - intercept_time) as f64 / 1e3;
        (sx, cx) = kahan_add(x, sx, cx);
        (sy, cy) = kahan_add(y, sy, cy);
        (sxy, cxy) = kahan_add(x * y, sxy, cxy);
        (sx2, cx2) = kahan_add(x * x, sx2, cx2);
    }
    if constant {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Double exponential smoothing (Holt's linear method) of the values.
fn smoothing(v: &[f64], sf: f64, tf: f64) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, v[0]);
    let mut b = v[1] - v[0];
    for (i, &x) in v.iter().enumerate().skip(1) {
        let scaled = sf * x;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = scaled + y;
    }
    Some(s1)
}

/// The mean, by a Kahan sum (by an incremental mean if the sum overflows).
pub(crate) fn avg(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let (mut sum, mut c) = (0.0, 0.0);
    let mut mean = 0.0;
    let mut incremental = false;
    for (i, &x) in v.iter().enumerate() {
        let count = (i + 1) as f64;
        if !incremental {
            let (s, nc) = kahan_add(x, sum, c);
            if !s.is_infinite() || x.is_infinite() {
                sum = s;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_add(x / count, q * mean, q * c);
    }
    if incremental {
        Some(mean + c)
    } else {
        Some((sum + c) / v.len() as f64)
    }
}

/// The population variance (Welford's method).
pub(crate) fn variance(v: &[f64]) -> f64 {
    let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for &x in v {
        count += 1.0;
        let delta = x - mean;
        mean += delta / count;
        m2 += delta * (x - mean);
    }
    m2 / count
}

fn math_fn(name: &str) -> fn(f64) -> f64 {
    match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        _ => |v| v * std::f64::consts::PI / 180.0,
    }
}

/// A part of the UTC date of `secs` seconds since the epoch.
fn date_part(name: &str, secs: f64) -> Option<f64> {
    if !secs.is_finite() {
        return Some(f64::NAN);
    }
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let (y, m, d) = sluice_storage::time::civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    Some(match name {
        "year" => y as f64,
        "month" => m as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (month_days[..(m - 1) as usize].iter().sum::<u32>() + d) as f64,
        "days_in_month" => month_days[(m - 1) as usize] as f64,
        "hour" => (s.rem_euclid(86_400) / 3600) as f64,
        _ => (s.rem_euclid(3600) / 60) as f64,
    })
}

/// The labels `absent()` gives its answer: the selector's equality matchers (but a label
/// matched more than once, and the name).
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let matchers = &vs.matchers.matchers;
    let pairs = matchers.iter().filter(|m| {
        m.name != METRIC_NAME
            && matches!(m.op, promql_parser::label::MatchOp::Equal)
            && matchers.iter().filter(|o| o.name == m.name).count() == 1
    });
    Labels::from_pairs(pairs.map(|m| (m.name.as_str(), m.value.as_str())))
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compares strings as people read numbers in them (`a2` before `a10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (&a[..da], &b[..db]);
                let ta = na.iter().skip_while(|&&c| c == b'0').count();
                let tb = nb.iter().skip_while(|&&c| c == b'0').count();
                let ord = ta.cmp(&tb).then_with(|| na[da - ta..].cmp(&nb[db - tb..]));
                if ord.is_ne() {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// `histogram_quantile` over classic buckets: series grouped by their labels but `le`.
fn histogram_quantile(
    q: &[f64],
    series: Vec<Series>,
    steps: Steps,
) -> Result<Vec<Series>, PromError> {
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    for (si, s) in series.iter().enumerate() {
        let Ok(upper) = parse_le(s.labels.get("le")) else {
            continue;
        };
        let key = s.labels.with("le", "").without_name();
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((upper, si));
    }
    let mut out = Vec::with_capacity(groups.len());
    for (labels, members) in groups {
        let mut points = Vec::with_capacity(steps.count);
        for (i, &qi) in q.iter().enumerate().take(steps.count) {
            let mut buckets: Vec<(f64, f64)> = members
                .iter()
                .filter_map(|&(upper, si)| series[si].points[i].map(|c| (upper, c)))
                .collect();
            points.push((!buckets.is_empty()).then(|| bucket_quantile(qi, &mut buckets)));
        }
        out.push(Series {
            labels,
            points,
            drop_name: false,
        });
    }
    Ok(present(out))
}

fn parse_le(s: &str) -> Result<f64, ()> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => s.trim().parse::<f64>().map_err(|_| ()),
    }
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, interpolated linearly
/// within the bucket it falls in (Prometheus's `BucketQuantile`).
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // buckets of one bound are summed
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(u, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == u => last.1 += c,
            _ => merged.push((u, c)),
        }
    }
    // counts must not fall as bounds rise (a fall is noise or a scrape between buckets)
    let mut max = f64::NEG_INFINITY;
    for b in merged.iter_mut() {
        if b.1 >= max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1].partition_point(|x| x.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}
