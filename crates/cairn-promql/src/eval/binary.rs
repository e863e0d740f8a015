//! Binary operators: arithmetic, comparison (filtering or `bool`), and the
//! set operators, with Prometheus's vector matching.

use std::collections::HashMap;

use cairn_common::{Labels, METRIC_NAME};
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL, T_NEQ, T_POW,
    T_SUB,
};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::{Evaluator, merge_same_labels, remove_name};
use crate::error::{Result, exec};
use crate::value::{Grid, Points, StepSeries, Value};

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Applies `op`; for comparisons, the bool is whether the pair is kept and
/// the value is the left operand.
#[inline]
fn apply(op: u16, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
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

pub(super) fn eval(ev: &mut Evaluator<'_>, b: &BinaryExpr, g: &Grid) -> Result<Value> {
    let op = b.op.id();
    let lhs = ev.eval(&b.lhs, g)?;
    let rhs = ev.eval(&b.rhs, g)?;
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&a, &c)| {
                    let (v, keep) = apply(op, a, c);
                    if is_comparison(op) { if keep { 1.0 } else { 0.0 } } else { v }
                })
                .collect(),
        )),
        (Value::Vector(v), Value::Scalar(s)) => Ok(Value::Vector(vector_scalar(ev, op, v, &s, false, return_bool)?)),
        (Value::Scalar(s), Value::Vector(v)) => Ok(Value::Vector(vector_scalar(ev, op, v, &s, true, return_bool)?)),
        (Value::Vector(l), Value::Vector(r)) => {
            let default = BinModifier {
                card: VectorMatchCardinality::OneToOne,
                matching: None,
                return_bool: false,
                fill_values: Default::default(),
            };
            let m = b.modifier.as_ref().unwrap_or(&default);
            let out = match op {
                T_LAND | T_LOR | T_LUNLESS => set_op(op, l, r, m),
                _ => vector_vector(ev, op, l, r, m, g.len())?,
            };
            Ok(Value::Vector(out))
        }
        (l, r) => exec(format!("binary operator not defined between {} and {}", l.type_name(), r.type_name())),
    }
}

fn vector_scalar(
    ev: &Evaluator<'_>,
    op: u16,
    v: Vec<StepSeries>,
    s: &[f64],
    swap: bool,
    return_bool: bool,
) -> Result<Vec<StepSeries>> {
    let comparison = is_comparison(op);
    let drop_name = !comparison || return_bool;
    let mut out = Vec::with_capacity(v.len());
    for mut series in v {
        let mut points = Points::new(series.points.len());
        for (i, x) in series.points.iter() {
            let (l, r) = if swap { (s[i], x) } else { (x, s[i]) };
            let (mut val, keep) = apply(op, l, r);
            if comparison {
                // The vector's value is the result, whichever side it is on.
                val = x;
            }
            if return_bool {
                points.set(i, if keep { 1.0 } else { 0.0 });
            } else if keep {
                points.set(i, val);
            }
        }
        if points.is_empty() {
            continue;
        }
        series.points = points;
        if drop_name {
            ev.drop_name(&mut series);
        }
        out.push(series);
    }
    if drop_name { ev.settle_names(out) } else { Ok(out) }
}

/// The matching signature: the labels `on` keeps, or all but those
/// `ignoring` (and the metric name) drops.
fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    let mut l = labels.clone();
    match matching {
        Some(LabelModifier::Include(on)) => l.retain(|x| on.labels.contains(&x.name)),
        Some(LabelModifier::Exclude(ign)) => l.retain(|x| x.name != METRIC_NAME && !ign.labels.contains(&x.name)),
        // Type and unit labels still tell series apart.
        None => l.remove(METRIC_NAME),
    }
    l
}

fn vector_vector(
    ev: &Evaluator<'_>,
    op: u16,
    mut lhs: Vec<StepSeries>,
    mut rhs: Vec<StepSeries>,
    m: &BinModifier,
    n: usize,
) -> Result<Vec<StepSeries>> {
    let (fill_lhs, fill_rhs) = (m.fill_values.lhs, m.fill_values.rhs);
    if (lhs.is_empty() || rhs.is_empty()) && fill_lhs.is_none() && fill_rhs.is_none() {
        return Ok(Vec::new());
    }
    let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    let include: Vec<String> = match &m.card {
        VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => l.labels.clone(),
        _ => Vec::new(),
    };
    // The "one" side goes right; values are swapped back for the operator.
    if one_to_many {
        std::mem::swap(&mut lhs, &mut rhs);
    }
    let comparison = is_comparison(op);
    let drop_name = !comparison || m.return_bool;

    let mut rsig: HashMap<Labels, Vec<usize>> = HashMap::new();
    for (ri, r) in rhs.iter().enumerate() {
        rsig.entry(signature(&r.labels, &m.matching)).or_default().push(ri);
    }
    // Duplicates on the "one" side are an error at any step both are present.
    for (sig, rs) in &rsig {
        for (a, &x) in rs.iter().enumerate() {
            for &y in &rs[a + 1..] {
                if rhs[x].points.overlaps(&rhs[y].points) {
                    let side = if one_to_many { "left" } else { "right" };
                    return exec(format!(
                        "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                        rhs[y].labels, rhs[x].labels
                    ));
                }
            }
        }
    }

    let mut out: Vec<StepSeries> = Vec::new();
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    // One-to-one: the steps at which a signature already produced output.
    let mut matched: HashMap<Labels, Points> = HashMap::new();
    for l in &lhs {
        ev.check_deadline()?;
        let sig = signature(&l.labels, &m.matching);
        let Some(cands) = rsig.get(&sig) else { continue };
        for &ri in cands {
            let r = &rhs[ri];
            if !l.points.overlaps(&r.points) {
                continue;
            }
            let delayed = ev.timing.delayed_name_removal;
            let labels = result_labels(&l.labels, &r.labels, m, &include, one_to_one, drop_name && !delayed);
            let flag = delayed && (l.drop_name || drop_name);
            for (i, lv) in l.points.iter() {
                let Some(rv) = r.points.get(i) else { continue };
                let (a, b) = if one_to_many { (rv, lv) } else { (lv, rv) };
                // Two matches of one signature are an error even when the
                // operator would filter them away.
                if one_to_one {
                    let seen = matched.entry(sig.clone()).or_insert_with(|| Points::new(n));
                    if seen.has(i) {
                        return exec(
                            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                        );
                    }
                    seen.set(i, 1.0);
                }
                let (val, keep) = apply(op, a, b);
                let val = if m.return_bool {
                    if keep { 1.0 } else { 0.0 }
                } else if keep {
                    val
                } else {
                    continue;
                };
                let oi = *out_index.entry(labels.clone()).or_insert_with(|| {
                    out.push(StepSeries::new(labels.clone(), Points::new(n)));
                    out.len() - 1
                });
                out[oi].drop_name |= flag;
                if out[oi].points.has(i) {
                    return exec(if one_to_one {
                        "vector cannot contain metrics with the same labelset"
                    } else {
                        "multiple matches for matching labels grouping labels must ensure unique metrics"
                    });
                }
                out[oi].points.set(i, val);
            }
        }
    }

    // Fill modifiers: a side missing at a step is replaced by its fill value
    // (sides as above, the "one" side on the right).
    let mut emit = |labels: Labels, i: usize, val: f64, keep: bool, flag: bool| -> Result<()> {
        let val = if m.return_bool {
            if keep { 1.0 } else { 0.0 }
        } else if keep {
            val
        } else {
            return Ok(());
        };
        let oi = *out_index.entry(labels.clone()).or_insert_with(|| {
            out.push(StepSeries::new(labels, Points::new(n)));
            out.len() - 1
        });
        out[oi].drop_name |= flag;
        if out[oi].points.has(i) {
            return exec("vector cannot contain metrics with the same labelset");
        }
        out[oi].points.set(i, val);
        Ok(())
    };
    let delayed = ev.timing.delayed_name_removal;
    if let Some(fill) = fill_rhs {
        for l in &lhs {
            let sig = signature(&l.labels, &m.matching);
            let cands = rsig.get(&sig).map(Vec::as_slice).unwrap_or(&[]);
            let none = Labels::default();
            let labels = result_labels(&l.labels, &none, m, &include, one_to_one, drop_name && !delayed);
            for (i, lv) in l.points.iter() {
                if cands.iter().any(|&ri| rhs[ri].points.has(i)) {
                    continue;
                }
                let (a, b) = if one_to_many { (fill, lv) } else { (lv, fill) };
                let (val, keep) = apply(op, a, b);
                emit(labels.clone(), i, val, keep, delayed && (l.drop_name || drop_name))?;
            }
        }
    }
    if let Some(fill) = fill_lhs {
        let mut lsig: HashMap<Labels, Points> = HashMap::new();
        for l in &lhs {
            let p = lsig.entry(signature(&l.labels, &m.matching)).or_insert_with(|| Points::new(n));
            for (i, _) in l.points.iter() {
                p.set(i, 1.0);
            }
        }
        for r in &rhs {
            // The result takes the match group's labels.
            let sig = signature(&r.labels, &m.matching);
            let present = lsig.get(&sig);
            for (i, rv) in r.points.iter() {
                if present.is_some_and(|p| p.has(i)) {
                    continue;
                }
                let (a, b) = if one_to_many { (rv, fill) } else { (fill, rv) };
                let (val, keep) = apply(op, a, b);
                emit(sig.clone(), i, val, keep, false)?;
            }
        }
    }
    out.retain(|s| !s.points.is_empty());
    Ok(out)
}

fn result_labels(
    many: &Labels,
    one: &Labels,
    m: &BinModifier,
    include: &[String],
    one_to_one: bool,
    drop_name: bool,
) -> Labels {
    let mut l = many.clone();
    if drop_name {
        remove_name(&mut l);
    }
    if one_to_one {
        match &m.matching {
            Some(LabelModifier::Include(on)) => l.retain(|x| on.labels.contains(&x.name)),
            Some(LabelModifier::Exclude(ign)) => l.retain(|x| !ign.labels.contains(&x.name)),
            None => {}
        }
    }
    for name in include {
        match one.get(name) {
            Some(v) => l.set(name, v),
            None => l.remove(name),
        }
    }
    l
}

fn set_op(op: u16, lhs: Vec<StepSeries>, rhs: Vec<StepSeries>, m: &BinModifier) -> Vec<StepSeries> {
    let n = lhs.first().or(rhs.first()).map(|s| s.points.len()).unwrap_or(0);
    // Per signature, the steps at which the other side has a series.
    let mut rsteps: HashMap<Labels, Points> = HashMap::new();
    for r in &rhs {
        let p = rsteps.entry(signature(&r.labels, &m.matching)).or_insert_with(|| Points::new(n));
        for (i, _) in r.points.iter() {
            p.set(i, 1.0);
        }
    }
    match op {
        T_LAND | T_LUNLESS => {
            let want = op == T_LAND;
            lhs.into_iter()
                .filter_map(|mut l| {
                    let sig = signature(&l.labels, &m.matching);
                    let other = rsteps.get(&sig);
                    for i in 0..n {
                        if l.points.has(i) && other.is_some_and(|p| p.has(i)) != want {
                            l.points.clear(i);
                        }
                    }
                    (!l.points.is_empty()).then_some(l)
                })
                .collect()
        }
        _ => {
            let mut lsteps: HashMap<Labels, Points> = HashMap::new();
            for l in &lhs {
                let p = lsteps.entry(signature(&l.labels, &m.matching)).or_insert_with(|| Points::new(n));
                for (i, _) in l.points.iter() {
                    p.set(i, 1.0);
                }
            }
            let mut out = lhs;
            for mut r in rhs {
                let sig = signature(&r.labels, &m.matching);
                if let Some(p) = lsteps.get(&sig) {
                    for i in 0..n {
                        if p.has(i) {
                            r.points.clear(i);
                        }
                    }
                }
                if !r.points.is_empty() {
                    out.push(r);
                }
            }
            // Same labels on both sides at disjoint steps make one series.
            merge_same_labels(out).unwrap_or_else(|_| Vec::new())
        }
    }
}
