//! `wsm load` runs on many machines (issue 24): the histograms and per-second series in
//! `--json`, the `--hgrm` percentile file, and `wsm load merge`.

mod common;

use base64::Engine as _;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use common::load::{report, wsm};
use common::TempFiles;

/// A histogram of a report, decoded from its base64 V2 form.
fn decode(text: &serde_json::Value) -> Histogram<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("a base64 string"))
        .expect("base64");
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .expect("a V2 histogram")
}

/// Figure `k` of report `r`.
fn figure(r: &serde_json::Value, k: &str) -> u64 {
    r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"))
}

/// The percentiles the reports give, from `h`.
fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// Merge (issue 24, test 4): two runs (one open loop, one closed) merged give the percentiles
/// of one histogram holding both runs' histograms, corrected, uncorrected and connect alike;
/// counts add up; the series holds each second's messages. Each run's own histogram gives
/// its own report's percentiles, and `--hgrm` writes HdrHistogram's text format with the total
/// count.
#[test]
fn two_runs_merged_give_the_percentiles_of_one_histogram() {
    let dir = TempFiles::new("wsm_load_merge");
    let hgrm = dir.0.join("a.hgrm");
    let a = report(&wsm(&[
        "load",
        "--connections",
        "20",
        "--rate",
        "400",
        "--duration",
        "2s",
        "--json",
        "--hgrm",
        hgrm.to_str().expect("utf-8 path"),
    ]));
    let b = report(&wsm(&[
        "load",
        "--connections",
        "10",
        "--duration",
        "1s",
        "--json",
    ]));
    for r in [&a, &b] {
        assert_eq!(
            percentiles(&decode(&r["histograms"]["latency"])),
            r["latency_us"],
            "{r}"
        );
        let in_series: u64 = r["series"]
            .as_array()
            .expect("series")
            .iter()
            .map(|s| s["messages"].as_u64().expect("messages"))
            .sum();
        assert_eq!(Some(in_series), r["received"].as_u64(), "{r}");
    }
    let text = std::fs::read_to_string(&hgrm).expect("--hgrm file");
    assert!(
        text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Total count    = {:>12}]", figure(&a, "received"))),
        "{text}"
    );

    let fa = dir.write("a.json", &a.to_string());
    let fb = dir.write("b.json", &b.to_string());
    let m = report(&wsm(&["load", "merge", &fa, &fb, "--json"]));
    for (key, hist) in [
        ("latency_us", "latency"),
        ("latency_uncorrected_us", "latency_uncorrected"),
        ("connect_us", "connect"),
    ] {
        let mut both = decode(&a["histograms"][hist]);
        both.add(decode(&b["histograms"][hist]))
            .expect("same bounds");
        assert_eq!(m[key], percentiles(&both), "{key}: {m}");
    }
    let sum = |k: &str| a[k].as_u64().unwrap_or(0) + b[k].as_u64().unwrap_or(0);
    for k in [
        "sent",
        "received",
        "missing",
        "errors",
        "connections_connected",
    ] {
        assert_eq!(m[k].as_u64(), Some(sum(k)), "{k}: {m}");
    }
    let merged_series: u64 = m["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["messages"].as_u64().expect("messages"))
        .sum();
    assert_eq!(merged_series, sum("received"), "{m}");
    assert_eq!(m["runs"], 2, "{m}");
    merged_thresholds(&fa, &fb, &m);
}

/// `wsm load merge --threshold`: judged on the merged figures (exit 0 when they hold, 99 naming
/// the crossed one), listed under `thresholds`; `recover_p99` (not in a merged report) refused.
fn merged_thresholds(fa: &str, fb: &str, m: &serde_json::Value) {
    let ok = wsm(&[
        "load",
        "merge",
        fa,
        fb,
        "--json",
        "--threshold",
        "missing==0",
        "--threshold",
        "p99<60s",
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r = report(&ok);
    assert_eq!(r["thresholds"][1]["passed"], true, "{r}");
    let received = m["received"].as_u64().expect("received");
    let over = format!(
        "rate>={}",
        m["messages_per_second"].as_f64().unwrap_or(0.0) * 2.0 + 1.0
    );
    let crossed = wsm(&["load", "merge", fa, fb, "--threshold", &over]);
    assert_eq!(crossed.status.code(), Some(99), "{received}: {crossed:?}");
    let stderr = String::from_utf8_lossy(&crossed.stderr);
    assert!(
        stderr.contains(&format!(
            "wsm load merge: threshold crossed: {over} (rate was "
        )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&crossed.stdout).contains("0 passed, 1 crossed"));
    let refused = wsm(&["load", "merge", fa, fb, "--threshold", "recover_p99<5s"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("recover_p99 is not in a merged report"),
        "{stderr}"
    );
}

/// The HTML report (issue 24, test 3): `--report` writes one self-contained file (no scripts,
/// nothing fetched: no `src=` or `href=` at all, so none with http) under 1 MiB, holding the
/// table and the five inline SVG charts: messages/s, connections, latency p50/p99/max and
/// errors over time, and the latency percentile spectrum. The picture itself was checked by
/// eye: `chromium --headless --no-sandbox --screenshot=/tmp/r.png --window-size=1000,3100
/// file:///tmp/r.html` (Debian's `chromium`) shows the table, the flat 1000 messages/s and 50
/// connections of `wsm load --connections 50 --rate 1000 --duration 8s --report /tmp/r.html`,
/// the latency lines with their legend, and the spectrum with its 0 %, 90 %, 99 %, 99.9 %
/// axis, corrected above uncorrected. (`html.rs` has the 10-minute size check.)
#[test]
fn html_report_is_self_contained_with_the_charts() {
    let dir = TempFiles::new("wsm_load_report");
    let file = dir.0.join("run.html");
    let out = wsm(&[
        "load",
        "--connections",
        "20",
        "--rate",
        "200",
        "--duration",
        "2s",
        "--report",
        file.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&file).expect("the report file");
    assert!(html.len() < 1 << 20, "{} bytes", html.len());
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert_eq!(html.matches("<svg").count(), 5, "{html}");
    for heading in [
        "Messages per second",
        "Connections",
        "Latency over time",
        "Errors per second",
        "Latency by percentile",
    ] {
        assert!(html.contains(&format!("<h2>{heading}")), "{heading}");
    }
    let lower = html.to_lowercase();
    for fetch in ["src=", "href=", "<script", "url(", "@import"] {
        assert!(!lower.contains(fetch), "{fetch} in the report");
    }
    assert!(
        html.contains("messages/s") && html.contains("uncorrected µs"),
        "the table"
    );

    // A merge writes the same kind of page.
    let r = report(&wsm(&[
        "load",
        "--connections",
        "10",
        "--duration",
        "1s",
        "--json",
    ]));
    let a = dir.write("a.json", &r.to_string());
    let merged = dir.0.join("merged.html");
    let out = wsm(&[
        "load",
        "merge",
        &a,
        &a,
        "--report",
        merged.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&merged).expect("the merged report");
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(html.contains("wsm load merge: 2 runs"));
}
