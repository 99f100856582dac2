//! Reading Prometheus text in tests: a strict line parser, a scrape over HTTP, and the metric
//! names the `metrics` module documents.

use std::collections::{BTreeMap, BTreeSet};

/// The samples of a Prometheus text page by series (`name` or `name{labels}`, as written).
pub type Samples = BTreeMap<String, f64>;

/// Parse a page, panicking on any line that is neither a `# HELP`/`# TYPE` comment nor
/// `name{labels} value` with a valid name, well-formed labels and a number. Answers the samples
/// and the `(name, type)` of every `# TYPE` line.
pub fn parse(text: &str) -> (Samples, BTreeMap<String, String>) {
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    assert!(text.ends_with('\n'), "the page ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(rest) = rest.strip_prefix("TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                assert!(valid_name(name), "{line}");
                let known = ["counter", "gauge", "histogram", "summary", "untyped"];
                assert!(known.contains(&kind), "{line}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{line}"
                );
            } else {
                let rest = rest
                    .strip_prefix("HELP ")
                    .expect("only HELP and TYPE comments");
                let (name, _help) = rest.split_once(' ').expect("# HELP name text");
                assert!(valid_name(name), "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], Some(&series[i..])),
            None => (series, None),
        };
        assert!(valid_name(name), "{line}");
        if let Some(labels) = labels {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels in braces: {line}"));
            for pair in inner.split(',') {
                let (key, value) = pair.split_once('=').expect("label=\"value\"");
                assert!(valid_name(key) && !key.contains(':'), "{line}");
                let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
                assert!(quoted, "{line}");
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("a number: {line}")),
        };
        assert!(samples.insert(series.to_owned(), value).is_none(), "{line}");
    }
    (samples, types)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `GET url`: answers the samples and types, after checking the status and the content type.
pub async fn scrape(url: &str) -> (Samples, BTreeMap<String, String>) {
    let mut resp = awc::Client::new()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = resp.body().await.expect("body");
    parse(std::str::from_utf8(&body).expect("UTF-8"))
}

/// The `(name, type)` rows of the metric tables in the rustdoc of `src/metrics.rs` whose names
/// start with `prefix`.
pub fn documented(prefix: &str) -> BTreeSet<(String, String)> {
    let source = include_str!("../../src/metrics.rs");
    source
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let kind = rest.trim_start_matches(" | ").split(' ').next()?;
            name.starts_with(prefix)
                .then(|| (name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// A sample that must be there.
pub fn get(samples: &Samples, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// The histogram `name`: its `le` buckets must rise, and `+Inf` must equal `_count`. Answers the
/// count.
pub fn histogram_count(samples: &Samples, name: &str) -> f64 {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(series, v)| {
            let le = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 1, "buckets of {name}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative buckets of {name}: {buckets:?}"
    );
    let count = get(samples, &format!("{name}_count"));
    assert_eq!(
        buckets.last().map(|b| (b.0, b.1)),
        Some((f64::INFINITY, count))
    );
    count
}
