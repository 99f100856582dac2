//! Latency histograms out of a run: HdrHistogram's compressed V2 form in base64 (in `--json`,
//! so that `wsm load merge` adds runs exactly), and its percentile text format (`--hgrm`), which
//! HdrHistogram's plotter and wrk2 users read.

use std::fmt::Write as _;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The whole run's histograms, as `--json` carries them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Histograms {
    /// Message latency from the due time (microseconds).
    pub(crate) latency: String,
    /// Message latency from the send.
    pub(crate) latency_uncorrected: String,
    /// Time to connect, per connection.
    pub(crate) connect: String,
}

/// `hist` in HdrHistogram's V2 compressed encoding, base64 (empty on the impossible failure
/// to encode into memory).
pub(super) fn encode(hist: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2DeflateSerializer::new().serialize(hist, &mut bytes) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Err(e) => {
            tracing::warn!(error = ?e, "histogram encoding");
            String::new()
        }
    }
}

/// A histogram back from [`encode`]'s form; the error in words.
pub(super) fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("a histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("a histogram does not decode: {e:?}"))
}

/// `hist` (microseconds) in HdrHistogram's percentile text format, values in milliseconds, 5
/// steps per halving of the distance to 100 % (as `outputPercentileDistribution` writes it).
pub(super) fn hgrm(hist: &Histogram<u64>) -> String {
    const SCALE: f64 = 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !hist.is_empty() {
        for v in hist.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>2.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        hist.mean() / SCALE,
        hist.stdev() / SCALE
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        hist.max() as f64 / SCALE,
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        hist.buckets(),
        // HdrHistogram's sub-bucket count: 2 x 10^digits, up to a power of two.
        (2u64 * 10u64.pow(u32::from(hist.sigfig()))).next_power_of_two()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base64 V2 form decodes to the same histogram; the text form has HdrHistogram's
    /// header, one line per step ending at 100 %, and the footer.
    #[test]
    fn histograms_round_trip_and_print() {
        let mut h = super::super::drivers::new_histogram();
        for v in [100u64, 200, 300, 5_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        assert!(decode("not base64!").is_err());
        let text = hgrm(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
        assert!(text.contains("1.000000000000          5\n"), "{text}");
        assert!(
            text.contains("#[Max     =     1000.447, Total count    =            5]"),
            "{text}"
        );
    }
}
