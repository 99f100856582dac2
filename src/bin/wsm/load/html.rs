//! `--report FILE.html`: one self-contained HTML file (no scripts, no fetches: inline CSS and
//! inline SVG drawn with plotters) with the report's table, charts over time (messages/s,
//! connections, latency p50/p99/max, errors) and the latency percentile spectrum on a
//! logarithmic 1/(1-p) axis, as HdrHistogram's plots show it. Series longer than
//! [`MAX_POINTS`] seconds are drawn from groups of seconds (their histograms added), so a
//! 10-minute run stays far under 1 MiB.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::hist;
use super::series::{second_histogram, SecondOut};

/// Most points a chart over time draws.
const MAX_POINTS: usize = 300;

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 280);

/// What a report page shows.
pub(super) struct Page<'a> {
    pub(super) title: &'a str,
    pub(super) rows: Vec<(String, String)>,
    pub(super) notes: Vec<String>,
    pub(super) series: &'a [SecondOut],
    /// The seconds measured: the charts over time end there. (A last second that starts at
    /// or just before the end holds mostly replies that came after it; the totals count them,
    /// the charts do not draw them as a second of their own.)
    pub(super) span_seconds: f64,
    pub(super) corrected: &'a Histogram<u64>,
    pub(super) uncorrected: &'a Histogram<u64>,
}

/// One line of a chart.
struct Line {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// The page as one HTML document.
pub(super) fn render(page: &Page) -> Result<String, String> {
    let mut html = String::with_capacity(256 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;max-width:1000px}}\
         td{{padding:2px 12px;vertical-align:top}}td:first-child{{text-align:right;color:#555}}\
         h2{{margin-top:1.5em}}</style></head><body>\n<h1>{}</h1>\n<table>\n",
        escape(page.title),
        escape(page.title)
    );
    for (k, v) in &page.rows {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(k),
            escape(v)
        );
    }
    html.push_str("</table>\n");
    for note in &page.notes {
        let _ = writeln!(html, "<p>{}</p>", escape(note));
    }
    let groups = charted(page.series, page.span_seconds);
    let charts = [
        (
            "Messages per second",
            time_chart("messages/s", &rate_lines(&groups))?,
        ),
        (
            "Connections",
            time_chart("connections", &connection_lines(&groups))?,
        ),
        (
            "Latency over time (corrected)",
            time_chart("ms", &latency_lines(&groups))?,
        ),
        (
            "Errors per second",
            time_chart("errors/s", &error_lines(&groups))?,
        ),
        (
            "Latency by percentile",
            spectrum(page.corrected, page.uncorrected)?,
        ),
    ];
    for (title, svg) in charts {
        let _ = writeln!(html, "<h2>{title}</h2>\n{svg}");
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

/// Render `page` into `file`; the error names the file.
pub(super) fn write(file: &std::path::Path, page: &Page) -> actix_ws_manager::Result<()> {
    let html = render(page).map_err(super::args::bad)?;
    std::fs::write(file, html)
        .map_err(|e| super::args::bad(format!("cannot write --report {}: {e}", file.display())))
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A group of consecutive seconds, as one chart point.
struct Group {
    /// Seconds from the start to the group's first second.
    t: f64,
    /// Where its seconds end (the span at the latest).
    end: f64,
    messages_per_second: f64,
    connections: f64,
    errors_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// The groups the charts over time draw: the seconds of the span (a second that starts within
/// half a second of the end is that sliver plus replies that came after the end: left out).
fn charted(series: &[SecondOut], span_seconds: f64) -> Vec<Group> {
    let span = span_seconds.max(1.0);
    let measured: Vec<&SecondOut> = series
        .iter()
        .filter(|s| (s.t as f64) + 0.5 <= span)
        .collect();
    downsample(&measured, span)
}

/// The series in at most [`MAX_POINTS`] groups of seconds, their histograms added (a histogram
/// that does not decode counts with its second's own percentiles).
fn downsample(series: &[&SecondOut], span: f64) -> Vec<Group> {
    let size = series.len().div_ceil(MAX_POINTS).max(1);
    series
        .chunks(size)
        .map(|chunk| {
            let n = chunk.len() as f64;
            let mut h = second_histogram();
            let mut fallback = (0u64, 0u64, 0u64);
            for s in chunk {
                match hist::decode(&s.hist) {
                    Ok(one) => {
                        let _ = h.add(&one);
                    }
                    Err(_) => fallback = (fallback.0.max(s.p50), fallback.1.max(s.p99), s.max),
                }
            }
            let q = |p: f64, or: u64| {
                let v = if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(p)
                };
                v.max(or) as f64 / 1e3
            };
            let t = chunk[0].t as f64;
            Group {
                t,
                end: (t + chunk.len() as f64).min(span),
                messages_per_second: chunk.iter().map(|s| s.messages).sum::<u64>() as f64 / n,
                connections: chunk.last().map_or(0, |s| s.connections) as f64,
                errors_per_second: chunk.iter().map(|s| s.errors).sum::<u64>() as f64 / n,
                p50_ms: q(0.5, fallback.0),
                p99_ms: q(0.99, fallback.1),
                max_ms: h.max().max(fallback.2) as f64 / 1e3,
            }
        })
        .collect()
}

fn line(name: &'static str, color: RGBColor, g: &[Group], f: fn(&Group) -> f64) -> Line {
    Line {
        name,
        color,
        // Each group's value holds over its seconds: a step, not a slope between seconds.
        points: g
            .iter()
            .flat_map(|g| [(g.t, f(g)), (g.end, f(g))])
            .collect(),
    }
}

fn rate_lines(g: &[Group]) -> Vec<Line> {
    vec![line("messages/s", BLUE, g, |g| g.messages_per_second)]
}

fn connection_lines(g: &[Group]) -> Vec<Line> {
    vec![line("connections", GREEN, g, |g| g.connections)]
}

fn latency_lines(g: &[Group]) -> Vec<Line> {
    vec![
        line("p50", BLUE, g, |g| g.p50_ms),
        line("p99", RGBColor(230, 120, 0), g, |g| g.p99_ms),
        line("max", RED, g, |g| g.max_ms),
    ]
}

fn error_lines(g: &[Group]) -> Vec<Line> {
    vec![line("errors/s", RED, g, |g| g.errors_per_second)]
}

/// A chart of `lines` over the run's seconds, `y` naming the values.
fn time_chart(y: &str, lines: &[Line]) -> Result<String, String> {
    let points = || lines.iter().flat_map(|l| l.points.iter());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    // Ticks fall between whole seconds on a short run: one decimal there, so that no two
    // ticks read the same.
    let decimals = if x_max < 20.0 { 1 } else { 0 };
    draw(0f64..x_max, 0f64..y_max, "seconds", y, lines, &|x| {
        format!("{x:.decimals$}")
    })
}

/// The percentile spectrum: latency (ms) against 1/(1-p) on a log axis, from 0 % to the
/// highest percentile the count resolves, corrected and uncorrected.
fn spectrum(corrected: &Histogram<u64>, uncorrected: &Histogram<u64>) -> Result<String, String> {
    let points = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        if h.is_empty() {
            return Vec::new();
        }
        h.iter_quantiles(5)
            .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
            .filter(|(q, _)| *q < 1.0)
            .map(|(q, v)| (1.0 / (1.0 - q), v as f64 / 1e3))
            .collect()
    };
    let lines = [
        Line {
            name: "corrected",
            color: RED,
            points: points(corrected),
        },
        Line {
            name: "uncorrected",
            color: BLUE,
            points: points(uncorrected),
        },
    ];
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let x_max = all().map(|p| p.0).fold(10.0, f64::max);
    let y_max = all().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.1;
    let percent = |x: &f64| {
        let p = format!("{:.4}", 100.0 - 100.0 / x);
        format!("{}%", p.trim_end_matches('0').trim_end_matches('.'))
    };
    draw(
        (1f64..x_max).log_scale(),
        0f64..y_max,
        "percentile",
        "ms",
        &lines,
        &percent,
    )
}

/// Draw `lines` on axes `x` and `y` into an SVG string.
fn draw<X>(
    x: X,
    y: std::ops::Range<f64>,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line],
    x_label: &dyn Fn(&f64) -> String,
) -> Result<String, String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: &dyn std::fmt::Display| format!("drawing a chart: {e}");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(x_label)
            .draw()
            .map_err(|x| e(&x))?;
        for l in lines {
            let color = l.color;
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|x| e(&x))?
                .label(l.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        if lines.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::series::second_histogram;

    /// The charts end at the span: a trailing second of late replies is not drawn, and each
    /// second's value holds to the next (the last one to the span).
    #[test]
    fn charts_end_at_the_span() {
        let second = |t: u64, messages: u64| SecondOut {
            t,
            messages,
            ..SecondOut::default()
        };
        let series = [second(0, 10), second(1, 10), second(2, 10), second(3, 2)];
        let groups = charted(&series, 3.0009);
        assert_eq!(groups.len(), 3);
        let last = &groups[2];
        assert_eq!((last.t, last.end), (2.0, 3.0));
        assert_eq!(last.messages_per_second, 10.0);
        let points = line("m", BLUE, &groups, |g| g.messages_per_second).points;
        assert_eq!(points.first(), Some(&(0.0, 10.0)));
        assert_eq!(points.last(), Some(&(3.0, 10.0)));
        // A run cut 0.6 s into its fourth second draws that partial second too.
        assert_eq!(charted(&series, 3.6).last().map(|g| g.end), Some(3.6));
    }

    /// A 10-minute series with busy histograms renders to one page under 1 MiB, with five
    /// inline SVG charts and nothing fetched.
    #[test]
    fn a_ten_minute_report_stays_small_and_self_contained() {
        let series: Vec<SecondOut> = (0..600u64)
            .map(|t| {
                let mut h = second_histogram();
                for v in 1..2000u64 {
                    h.saturating_record(v * (1 + t % 7) * 13);
                }
                SecondOut {
                    t,
                    messages: 2000,
                    missing: 0,
                    connections: 1000,
                    errors: t % 3,
                    p50: 0,
                    p99: 0,
                    max: 0,
                    hist: hist::encode(&h),
                }
            })
            .collect();
        let mut whole = crate::load::drivers::new_histogram();
        for v in 1..100_000u64 {
            whole.saturating_record(v * 7);
        }
        let page = Page {
            title: "wsm load <test> & more",
            rows: vec![("url".into(), "ws://a/?x=<1>".into())],
            notes: vec![],
            series: &series,
            span_seconds: 600.0,
            corrected: &whole,
            uncorrected: &whole,
        };
        let html = render(&page).unwrap();
        assert!(html.len() < 1 << 20, "{} bytes", html.len());
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(html.contains("ws://a/?x=&lt;1&gt;"));
        assert!(!html.contains("src=") && !html.contains("href="));
    }
}
