//! Thresholds (`--threshold EXPR`, repeatable): pass/fail conditions on the report's figures,
//! so that a CI job fails on "p99 over 50 ms" or "a message missing". A crossed threshold is
//! named on stderr after the report and `wsm load` exits with [`EXIT_CROSSED`] (99, as k6
//! does); any other error keeps its own code.
//!
//! An expression is `METRIC OP VALUE`:
//!
//! | metric | what | value |
//! | --- | --- | --- |
//! | `p50` `p90` `p99` `p999` `max` | message latency (the corrected one, see `--rate`) | a duration: `us`, `ms` or `s` |
//! | `connect_p99` | time from a connection's start to connected (and joined) | a duration |
//! | `recover_p99` | with `--chaos`: time from a connection's loss until it was back | a duration |
//! | `missing` | messages that never came back | a count |
//! | `errors` | errors (send failures, error replies, drivers that did not report) | a count |
//! | `rate` | messages received per second | a number |
//!
//! and `OP` is one of `<` `<=` `>` `>=` `==`. A threshold *passes* when the condition holds.

use serde::Serialize;

use super::report::{Latency, Report};

/// The exit code of a run that crossed a threshold (k6's).
pub const EXIT_CROSSED: u8 = 99;

/// The figure a threshold looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    P50,
    P90,
    P99,
    P999,
    Max,
    ConnectP99,
    Missing,
    Errors,
    Rate,
    RecoverP99,
}

impl Metric {
    /// Every metric with its name in an expression.
    const ALL: [(&'static str, Metric); 10] = [
        ("p50", Metric::P50),
        ("p90", Metric::P90),
        ("p999", Metric::P999),
        ("p99", Metric::P99),
        ("max", Metric::Max),
        ("connect_p99", Metric::ConnectP99),
        ("missing", Metric::Missing),
        ("errors", Metric::Errors),
        ("rate", Metric::Rate),
        ("recover_p99", Metric::RecoverP99),
    ];

    /// Whether the metric is a duration (its value needs a unit).
    fn is_duration(self) -> bool {
        matches!(
            self,
            Metric::P50
                | Metric::P90
                | Metric::P99
                | Metric::P999
                | Metric::Max
                | Metric::ConnectP99
                | Metric::RecoverP99
        )
    }

    /// The metric's figure in `f`: microseconds for durations.
    fn value(self, f: &Figures) -> f64 {
        let l = f.latency;
        match self {
            Metric::P50 => l.p50 as f64,
            Metric::P90 => l.p90 as f64,
            Metric::P99 => l.p99 as f64,
            Metric::P999 => l.p999 as f64,
            Metric::Max => l.max as f64,
            Metric::ConnectP99 => f.connect_p99 as f64,
            Metric::Missing => f.missing as f64,
            Metric::Errors => f.errors as f64,
            Metric::Rate => f.rate,
            Metric::RecoverP99 => f.recover_p99 as f64,
        }
    }
}

/// The figures thresholds look at: a whole run's, or one phase's.
pub(super) struct Figures<'a> {
    pub(super) latency: &'a Latency,
    pub(super) connect_p99: u64,
    pub(super) recover_p99: u64,
    pub(super) missing: u64,
    pub(super) errors: u64,
    /// Messages received per second.
    pub(super) rate: f64,
}

impl Report {
    /// The whole run's figures.
    pub(super) fn figures(&self) -> Figures<'_> {
        Figures {
            latency: &self.latency_us,
            connect_p99: self.connect_us.p99,
            recover_p99: self.recovery.as_ref().map_or(0, |x| x.recover_us.p99),
            missing: self.missing,
            errors: self.errors,
            rate: self.messages_per_second,
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Op {
    /// Longest first, so that `<=` is not read as `<`.
    const ALL: [(&'static str, Op); 5] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Eq => value == limit,
        }
    }
}

/// One `--threshold` expression, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The expression as given (spaces removed).
    expr: String,
    metric: Metric,
    name: &'static str,
    op: Op,
    /// The limit, in microseconds for durations.
    limit: f64,
    /// The duration unit the expression used (`us`, `ms`, `s`) and its microseconds; the
    /// measured value is shown in it.
    unit: Option<(&'static str, f64)>,
}

/// How one threshold fared, as `--json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The expression.
    pub expr: String,
    /// The measured figure, in the expression's unit (milliseconds for `p99<50ms`).
    pub value: f64,
    /// Whether the condition held.
    pub passed: bool,
}

/// Name each crossed threshold on stderr (`who: threshold crossed: ...`), after the report,
/// and answer the exit code: success, or [`EXIT_CROSSED`] when any was crossed.
pub(super) fn exit_code(who: &str, crossed: &[String]) -> std::process::ExitCode {
    for line in crossed {
        eprintln!("{who}: {line}");
    }
    if crossed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(EXIT_CROSSED)
    }
}

/// Parse `text` as a threshold of `wsm load merge`: as [`parse`], but `recover_p99` is
/// refused (a merged report holds no recovery figures; each copy judges its own).
pub fn parse_merged(text: &str) -> Result<Threshold, String> {
    let t = parse(text)?;
    if t.metric == Metric::RecoverP99 {
        return Err(format!(
            "{text:?}: recover_p99 is not in a merged report (give it to each copy's --chaos run)"
        ));
    }
    Ok(t)
}

/// Parse `text` as a threshold: clap's value parser for `--threshold`, so a bad expression is
/// clap's one-line error naming the flag and the expression.
pub fn parse(text: &str) -> Result<Threshold, String> {
    let expr: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let (pos, op_text, op) = Op::ALL
        .iter()
        .filter_map(|(s, op)| expr.find(s).map(|p| (p, *s, *op)))
        .min_by_key(|(p, s, _)| (*p, std::cmp::Reverse(s.len())))
        .ok_or_else(|| format!("{text:?} has no comparison (< <= > >= ==)"))?;
    let (name_text, value_text) = (&expr[..pos], &expr[pos + op_text.len()..]);
    let (name, metric) = Metric::ALL
        .iter()
        .find(|(n, _)| *n == name_text)
        .copied()
        .ok_or_else(|| {
            format!(
                "{text:?}: unknown metric {name_text:?} (p50, p90, p99, p999, max, connect_p99, \
                 recover_p99, missing, errors, rate)"
            )
        })?;
    let (number, unit) = split_unit(value_text);
    let unit = match (metric.is_duration(), unit) {
        (true, "") => return Err(format!("{text:?}: {name} needs a unit (us, ms or s)")),
        (true, u) => Some(
            duration_unit(u)
                .ok_or_else(|| format!("{text:?}: unknown unit {u:?} (us, ms or s)"))?,
        ),
        (false, "") => None,
        (false, u) => return Err(format!("{text:?}: {name} takes a plain number, not {u:?}")),
    };
    let number: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{text:?}: {number:?} is not a number of 0 or more"))?;
    Ok(Threshold {
        expr,
        metric,
        name,
        op,
        limit: number * unit.map_or(1.0, |(_, us)| us),
        unit,
    })
}

/// `50ms` as (`50`, `ms`).
fn split_unit(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    text.split_at(at)
}

/// A duration unit and its microseconds.
fn duration_unit(unit: &str) -> Option<(&'static str, f64)> {
    match unit {
        "us" | "µs" => Some(("us", 1.0)),
        "ms" => Some(("ms", 1e3)),
        "s" => Some(("s", 1e6)),
        _ => None,
    }
}

impl Threshold {
    /// Judge `figures` against this threshold.
    pub(super) fn judge(&self, figures: &Figures) -> Outcome {
        let raw = self.metric.value(figures);
        let value = raw / self.unit.map_or(1.0, |(_, us)| us);
        Outcome {
            expr: self.expr.clone(),
            value: (value * 1000.0).round() / 1000.0,
            passed: self.op.holds(raw, self.limit),
        }
    }

    /// The stderr line for a crossed threshold: `threshold crossed: p99<50ms (p99 was 73.2ms)`.
    pub fn crossed_line(&self, outcome: &Outcome) -> String {
        let (unit, digits) = match self.unit {
            Some(("us", _)) => ("us", 0),
            Some((u, _)) => (u, 1),
            None if self.metric == Metric::Rate => ("", 1),
            None => ("", 0),
        };
        format!(
            "threshold crossed: {} ({} was {:.*}{unit})",
            self.expr, self.name, digits, outcome.value
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each metric, operator and unit parses; the limit is in microseconds for durations.
    #[test]
    fn expressions_parse() {
        let t = parse("p99<50ms").unwrap();
        assert_eq!((t.metric, t.op, t.limit), (Metric::P99, Op::Lt, 50_000.0));
        let t = parse("p999 <= 1.5s").unwrap();
        assert_eq!(
            (t.metric, t.op, t.limit),
            (Metric::P999, Op::Le, 1_500_000.0)
        );
        assert_eq!(parse("missing==0").unwrap().op, Op::Eq);
        assert_eq!(parse("rate>=10000").unwrap().limit, 10_000.0);
        assert_eq!(parse("connect_p99<1s").unwrap().metric, Metric::ConnectP99);
        assert_eq!(parse("errors>3").unwrap().op, Op::Gt);
        assert_eq!(parse("max<800us").unwrap().limit, 800.0);
    }

    /// Bad expressions are refused, naming the expression and what is wrong.
    #[test]
    fn bad_expressions_are_refused() {
        for (bad, says) in [
            ("p99", "no comparison"),
            ("p98<5ms", "unknown metric"),
            ("p99<5", "needs a unit"),
            ("p99<5min", "unknown unit"),
            ("missing==0ms", "plain number"),
            ("rate>=x", "plain number"),
            ("rate>=-5", "not a number"),
            ("p99<-1ms", "not a number"),
            ("p99<<5ms", "not a number"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains(says), "{bad}: {e}");
        }
    }
}
