//! Which upstream PromQL evals Cairn leaves out, and why. Shared by the
//! in-process run (`promqltest.rs`) and the HTTP run (the e2e tests).

use std::collections::HashSet;

use cairn_promql::promqltest::script::EvalCmd;

/// Whether any selector of `expr` could read a metric loaded with native
/// histograms: by its literal name, by a `__name__` regex, or, having no
/// name matcher, possibly any.
pub(super) fn reads_histograms(expr: &str, hist: &HashSet<String>) -> bool {
    use promql_parser::label::MatchOp;
    use promql_parser::parser::{Expr, VectorSelector};
    fn selector(vs: &VectorSelector, hist: &HashSet<String>) -> bool {
        if let Some(n) = &vs.name {
            return hist.contains(n);
        }
        let names: Vec<_> = vs.matchers.matchers.iter().filter(|m| m.name == "__name__").collect();
        if names.is_empty() {
            return true;
        }
        names.iter().all(|m| match &m.op {
            MatchOp::Equal => hist.contains(&m.value),
            MatchOp::Re(_) => regex::Regex::new(&format!("^(?:{})$", m.value))
                .map(|re| hist.iter().any(|h| re.is_match(h)))
                .unwrap_or(true),
            _ => true,
        })
    }
    fn walk(e: &Expr, hist: &HashSet<String>) -> bool {
        match e {
            Expr::VectorSelector(vs) => selector(vs, hist),
            Expr::MatrixSelector(ms) => selector(&ms.vs, hist),
            Expr::Subquery(s) => walk(&s.expr, hist),
            Expr::Aggregate(a) => walk(&a.expr, hist) || a.param.as_ref().is_some_and(|p| walk(p, hist)),
            Expr::Unary(u) => walk(&u.expr, hist),
            Expr::Binary(b) => walk(&b.lhs, hist) || walk(&b.rhs, hist),
            Expr::Paren(p) => walk(&p.expr, hist),
            Expr::Call(c) => c.args.args.iter().any(|a| walk(a, hist)),
            _ => false,
        }
    }
    !hist.is_empty() && promql_parser::parser::parse(expr).is_ok_and(|e| walk(&e, hist))
}

/// Evals left out on purpose, each with its reason. Reviewed: every entry
/// is a feature Cairn does not have yet or a documented parser limitation.
const KNOWN: &[(&str, usize, &str)] = &[];

/// Experimental features Cairn does not support, recognised per eval.
fn unsupported_feature(file: &str, e: &EvalCmd) -> Option<&'static str> {
    let expr = e.expr.as_str();
    if file == "start_timestamps.test" {
        return Some("start timestamps (@st series): not stored by Cairn");
    }
    if expr.contains(" anchored")
        || expr.contains(" smoothed")
        || expr.contains("]anchored")
        || expr.contains("]smoothed")
    {
        return Some(
            "extended range selectors (anchored/smoothed): experimental syntax promql-parser 0.11 does not parse",
        );
    }
    if expr.contains("info(") && !expr.contains("_info(") {
        return Some("info(): experimental function, not implemented");
    }
    if file == "duration_expression.test" && promql_parser::parser::parse(expr).is_err() {
        return Some("duration expressions: experimental syntax promql-parser 0.11 does not parse");
    }
    None
}

/// Evals outside Cairn's float engine: native histograms, unsupported
/// experimental features, and the reviewed list above.
pub(super) fn skip(file: &str, e: &EvalCmd, hist: &HashSet<String>) -> Option<String> {
    if let Some((_, _, why)) = KNOWN.iter().find(|(f, l, _)| *f == file && *l == e.line) {
        return Some((*why).to_owned());
    }
    if let Some(why) = unsupported_feature(file, e) {
        return Some(why.to_owned());
    }
    if e.expects_histograms {
        return Some("native histograms: expects a histogram sample".into());
    }
    if reads_histograms(&e.expr, hist) {
        return Some("native histograms: reads series loaded with histogram samples".into());
    }
    const NATIVE_ONLY: [&str; 5] =
        ["histogram_count(", "histogram_sum(", "histogram_avg(", "histogram_stddev(", "histogram_stdvar("];
    if NATIVE_ONLY.iter().any(|f| e.expr.contains(f)) {
        return Some("native histograms: a function of native histograms only".into());
    }
    None
}

/// Evals that cannot pass over HTTP for reasons of the transport, each
/// with its reason.
pub(super) fn http_only(file: &str, e: &EvalCmd) -> Option<String> {
    const HTTP: &[(&str, usize, &str)] = &[];
    HTTP.iter().find(|(f, l, _)| *f == file && *l == e.line).map(|(_, _, why)| (*why).to_owned())
}
