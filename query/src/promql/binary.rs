//! Binary operators: arithmetic, comparison (with `bool`) and set operators, with vector
//! matching (`on`, `ignoring`, `group_left`, `group_right`).

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::error::PromError;
use super::labels::{Labels, METRIC_NAME};
use super::value::{Series, Steps, Value};

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// `l op r`: the value, and whether a comparison holds (always true for arithmetic).
fn operate(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

/// `lhs op rhs`, both sides evaluated.
pub(crate) fn apply(
    b: &BinaryExpr,
    lhs: Value,
    rhs: Value,
    steps: Steps,
) -> Result<Value, PromError> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&l, &r)| {
                    let (v, keep) = operate(op, l, r);
                    if is_comparison(op) {
                        if keep { 1.0 } else { 0.0 }
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Value::Vector(v), Value::Scalar(s)) => {
            Ok(Value::Vector(vector_scalar(op, v, &s, false, return_bool)))
        }
        (Value::Scalar(s), Value::Vector(v)) => {
            Ok(Value::Vector(vector_scalar(op, v, &s, true, return_bool)))
        }
        (Value::Vector(l), Value::Vector(r)) => {
            let default = BinModifier::default();
            let modifier = b.modifier.as_ref().unwrap_or(&default);
            match op {
                T_LAND | T_LOR | T_LUNLESS => {
                    Ok(Value::Vector(set_op(op, l, r, &modifier.matching, steps)))
                }
                _ => Ok(Value::Vector(vector_vector(op, l, r, modifier, steps)?)),
            }
        }
        (l, r) => Err(PromError::Execution(format!(
            "binary operator {} is not defined between a {} and a {}",
            b.op,
            l.type_name(),
            r.type_name()
        ))),
    }
}

/// A vector and a scalar (`swapped`: the scalar on the left). A comparison keeps the
/// vector's value; arithmetic (and `bool`) drops the metric name.
fn vector_scalar(
    op: TokenId,
    series: Vec<Series>,
    scalar: &[f64],
    swapped: bool,
    return_bool: bool,
) -> Vec<Series> {
    let comparison = is_comparison(op);
    series
        .into_iter()
        .filter_map(|s| {
            let points: Vec<Option<f64>> = s
                .points
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let x = (*p)?;
                    let (l, r) = if swapped {
                        (scalar[i], x)
                    } else {
                        (x, scalar[i])
                    };
                    let (mut v, keep) = operate(op, l, r);
                    if comparison && swapped {
                        v = x;
                    }
                    if return_bool {
                        Some(if keep { 1.0 } else { 0.0 })
                    } else {
                        keep.then_some(v)
                    }
                })
                .collect();
            if points.iter().all(Option::is_none) {
                return None;
            }
            Some(Series {
                labels: s.labels,
                points,
                drop_name: s.drop_name || !comparison || return_bool,
            })
        })
        .collect()
}

/// The labels two series are matched on.
fn match_labels(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(names)) => labels.keep(&names.labels, true),
        Some(LabelModifier::Exclude(names)) => {
            let mut drop = names.labels.clone();
            drop.push(METRIC_NAME.to_string());
            labels.keep(&drop, false)
        }
        None => labels.without_name(),
    }
}

/// Numbers each series' matching labels: equal labels, equal number.
fn signatures(
    l: &[Series],
    r: &[Series],
    matching: &Option<LabelModifier>,
) -> (Vec<usize>, Vec<usize>, Vec<Labels>) {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut sigs: Vec<Labels> = Vec::new();
    let mut number = |s: &Series| {
        let m = match_labels(&s.labels, matching);
        *index.entry(m.clone()).or_insert_with(|| {
            sigs.push(m);
            sigs.len() - 1
        })
    };
    let ls = l.iter().map(&mut number).collect();
    let rs = r.iter().map(&mut number).collect();
    (ls, rs, sigs)
}

/// `and`, `or`, `unless`: per step, by matching labels. Series by series: which matching
/// label sets the filtering side has at each step, then each series of the other side
/// keeps or drops its points by it.
fn set_op(
    op: TokenId,
    l: Vec<Series>,
    r: Vec<Series>,
    matching: &Option<LabelModifier>,
    steps: Steps,
) -> Vec<Series> {
    let (lsig, rsig, sigs) = signatures(&l, &r, matching);
    // for each matching label set, whether `side` has a value at each step (empty: never)
    let presence = |side: &[Series], sig: &[usize]| {
        let mut present: Vec<Vec<bool>> = vec![Vec::new(); sigs.len()];
        for (s, &g) in side.iter().zip(sig) {
            let row = &mut present[g];
            if row.is_empty() {
                *row = vec![false; steps.count];
            }
            for (x, p) in row.iter_mut().zip(&s.points) {
                *x |= p.is_some();
            }
        }
        present
    };
    // `series` without the points where the other side's presence is not `keep_where`
    let filter = |series: Vec<Series>, sig: &[usize], other: &[Vec<bool>], keep_where: bool| {
        series
            .into_iter()
            .zip(sig)
            .filter_map(|(mut s, &g)| {
                for (i, p) in s.points.iter_mut().enumerate() {
                    if other[g].get(i).copied().unwrap_or(false) != keep_where {
                        *p = None;
                    }
                }
                s.is_present().then_some(s)
            })
            .collect::<Vec<Series>>()
    };
    match op {
        T_LAND => filter(l, &lsig, &presence(&r, &rsig), true),
        T_LUNLESS => filter(l, &lsig, &presence(&r, &rsig), false),
        _ => {
            let in_l = presence(&l, &lsig);
            let mut out: Vec<Series> = l.into_iter().filter(Series::is_present).collect();
            out.extend(filter(r, &rsig, &in_l, false));
            out
        }
    }
}

/// Arithmetic and comparison between two vectors, one to one or with a `group_` side.
fn vector_vector(
    op: TokenId,
    l: Vec<Series>,
    r: Vec<Series>,
    modifier: &BinModifier,
    steps: Steps,
) -> Result<Vec<Series>, PromError> {
    let comparison = is_comparison(op);
    let return_bool = modifier.return_bool;
    let (card, include) = match &modifier.card {
        VectorMatchCardinality::ManyToOne(ls) => (Card::ManyToOne, ls.labels.clone()),
        VectorMatchCardinality::OneToMany(ls) => (Card::OneToMany, ls.labels.clone()),
        _ => (Card::OneToOne, Vec::new()),
    };
    // the "many" side is `many`; `one` must be unique per signature at each step
    let (many, one) = if card == Card::OneToMany {
        (r, l)
    } else {
        (l, r)
    };
    let (msig, osig, sigs) = signatures(&many, &one, &modifier.matching);
    let mut one_at: Vec<Option<usize>> = vec![None; sigs.len()];
    // for one-to-one: which signature has already matched at this step
    let mut matched: Vec<bool> = vec![false; sigs.len()];
    let mut result_index: HashMap<(usize, usize), usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    let mut label_index: HashMap<Labels, usize> = HashMap::new();
    for i in 0..steps.count {
        one_at.fill(None);
        matched.fill(false);
        for (oi, s) in one.iter().enumerate() {
            if s.points[i].is_none() {
                continue;
            }
            let g = osig[oi];
            if let Some(other) = one_at[g] {
                let side = if card == Card::OneToMany {
                    "left"
                } else {
                    "right"
                };
                return Err(PromError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    sigs[g], one[other].labels, s.labels
                )));
            }
            one_at[g] = Some(oi);
        }
        for (mi, s) in many.iter().enumerate() {
            let Some(mv) = s.points[i] else { continue };
            let g = msig[mi];
            let Some(oi) = one_at[g] else { continue };
            let ov = one[oi].points[i].expect("present at this step");
            let (lv, rv) = if card == Card::OneToMany {
                (ov, mv)
            } else {
                (mv, ov)
            };
            let (mut v, keep) = operate(op, lv, rv);
            if return_bool {
                v = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            if card == Card::OneToOne {
                if matched[g] {
                    return Err(PromError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
                matched[g] = true;
            }
            let at = match result_index.get(&(mi, oi)) {
                Some(&at) => at,
                None => {
                    let labels = result_labels(
                        &s.labels,
                        &one[oi].labels,
                        card,
                        &modifier.matching,
                        &include,
                    );
                    let drop_name = s.drop_name || !comparison || return_bool;
                    let at = *label_index.entry(labels.clone()).or_insert_with(|| {
                        out.push(Series {
                            labels,
                            points: vec![None; steps.count],
                            drop_name,
                        });
                        out.len() - 1
                    });
                    result_index.insert((mi, oi), at);
                    at
                }
            };
            if out[at].points[i].is_some() {
                return Err(PromError::Execution(if card == Card::OneToOne {
                    "vector cannot contain metrics with the same labelset".into()
                } else {
                    "multiple matches for labels: grouping labels must ensure unique matches".into()
                }));
            }
            out[at].points[i] = Some(v);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
}

/// The labels of a result sample (Prometheus's `resultMetric`): the "many" side's labels
/// (arithmetic's result loses the name at the end: [`Series::drop_name`]); one-to-one keeps
/// only the `on` labels (or drops the `ignoring` ones); a `group_` list copies those labels
/// from the "one" side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    card: Card,
    matching: &Option<LabelModifier>,
    include: &[String],
) -> Labels {
    let mut labels = many.clone();
    if card == Card::OneToOne {
        labels = match matching {
            Some(LabelModifier::Include(names)) => labels.keep(&names.labels, true),
            Some(LabelModifier::Exclude(names)) => labels.keep(&names.labels, false),
            None => labels,
        };
    }
    for name in include {
        labels = labels.with(name, one.get(name));
    }
    labels
}
