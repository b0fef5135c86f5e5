//! Results: metrics per run, medians over runs, the printed table with
//! cometbox/Nchan ratios, the JSON file, and the latency histogram workers
//! send back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::wire::Kind;

/// Which direction is good for a metric (decides the ratio's verdict).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    /// Context only (counts, sizes): no verdict.
    Neither,
}

/// One measured number.
#[derive(Clone, Debug, Serialize)]
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    pub better: Better,
}

/// What one run of one scenario against one server measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    pub metrics: Vec<Metric>,
    /// Anything lost, refused or broken: non-empty fails the run.
    pub problems: Vec<String>,
    /// Scenario-specific detail for the JSON (per-message fan-out stats).
    pub detail: serde_json::Value,
}

impl Outcome {
    /// Adds a metric.
    pub fn push(&mut self, name: &str, unit: &'static str, value: f64, better: Better) {
        self.metrics.push(Metric {
            name: name.to_owned(),
            unit,
            value,
            better,
        });
    }

    /// Adds a problem (and prints it at once, so a long run shows it early).
    pub fn problem(&mut self, what: String) {
        eprintln!("  problem: {what}");
        self.problems.push(what);
    }
}

/// All runs of one scenario against one server.
#[derive(Debug, Serialize)]
pub struct TargetResult {
    pub target: Kind,
    /// Why it did not run (e.g. Nchan has no batch publish).
    pub skipped: Option<String>,
    pub runs: Vec<Outcome>,
    /// Per metric, the median over runs.
    pub median: Vec<Metric>,
}

/// One scenario, every target.
#[derive(Debug, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub targets: Vec<TargetResult>,
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The value at quantile `q` (0..=1) of sorted `values` (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Per metric name (in first-seen order), the median over `runs`.
pub fn median_metrics(runs: &[Outcome]) -> Vec<Metric> {
    let mut order: Vec<Metric> = Vec::new();
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for m in &run.metrics {
            if !values.contains_key(&m.name) {
                order.push(m.clone());
            }
            values.entry(m.name.clone()).or_default().push(m.value);
        }
    }
    for m in &mut order {
        m.value = median(values.get_mut(&m.name).expect("collected above"));
    }
    order
}

impl TargetResult {
    /// Fills `median` from `runs`.
    pub fn finish(&mut self) {
        self.median = median_metrics(&self.runs);
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v == v.trunc() || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The table: one block per scenario, a row per metric, a column per target
/// and, with both, the cometbox/Nchan ratio and which side it favours.
pub fn table(results: &[ScenarioResult], runs: usize) -> String {
    let mut out = String::new();
    for scenario in results {
        let _ = writeln!(
            out,
            "\n== {} (median of {runs} run{}) ==",
            scenario.scenario,
            if runs == 1 { "" } else { "s" }
        );
        let both = scenario.targets.len() == 2;
        let mut header = format!("{:<34}", "metric");
        for t in &scenario.targets {
            let _ = write!(header, " {:>14}", t.target.name());
        }
        if both {
            let _ = write!(header, " {:>16}", "cometbox/nchan");
        }
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.len()));
        for t in &scenario.targets {
            if let Some(why) = &t.skipped {
                let _ = writeln!(out, "({} skipped: {why})", t.target.name());
            }
        }
        let names: Vec<&Metric> = scenario
            .targets
            .iter()
            .find(|t| !t.median.is_empty())
            .map(|t| t.median.iter().collect())
            .unwrap_or_default();
        for metric in names {
            let label = format!("{} [{}]", metric.name, metric.unit);
            let mut line = format!("{label:<34}");
            let mut values = Vec::new();
            for t in &scenario.targets {
                let v = t
                    .median
                    .iter()
                    .find(|m| m.name == metric.name)
                    .map_or(f64::NAN, |m| m.value);
                values.push(v);
                let _ = write!(line, " {:>14}", format_value(v));
            }
            if both {
                let _ = write!(line, " {:>16}", ratio(values[0], values[1], metric.better));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for t in &scenario.targets {
            let problems: Vec<&String> = t.runs.iter().flat_map(|r| &r.problems).collect();
            if !problems.is_empty() {
                let _ = writeln!(out, "{} problems:", t.target.name());
                for p in problems {
                    let _ = writeln!(out, "  - {p}");
                }
            }
        }
    }
    out
}

/// `cometbox / nchan`, marked `+` where cometbox is better and `-` where
/// it is worse.
fn ratio(cometbox: f64, nchan: f64, better: Better) -> String {
    if cometbox.is_nan() || nchan.is_nan() {
        return "n/a".into();
    }
    if nchan == 0.0 {
        return if cometbox == 0.0 {
            "=".into()
        } else {
            "inf".into()
        };
    }
    let r = cometbox / nchan;
    let verdict = match better {
        Better::Neither => "",
        Better::Lower if r < 0.97 => " +",
        Better::Higher if r > 1.03 => " +",
        Better::Lower if r > 1.03 => " -",
        Better::Higher if r < 0.97 => " -",
        _ => " =",
    };
    format!("{r:.2}x{verdict}")
}

/// Everything, for `--json FILE`.
pub fn json(command: &str, runs: usize, results: &[ScenarioResult]) -> serde_json::Value {
    serde_json::json!({
        "command": command,
        "runs": runs,
        "machine": {
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        },
        "scenarios": results,
    })
}

/// A log-linear latency histogram in microseconds: exact below 64 µs,
/// then 32 buckets per power of two (about 3 % resolution). Workers fill
/// one each; the parent merges them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
    pub total: u64,
    pub max: u64,
}

const SUB: u32 = 32;

fn bucket(v: u64) -> usize {
    if v < 64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 6
    let sub = (v >> (exp - 5)) as u32 & (SUB - 1);
    (64 + (exp - 6) * SUB + sub) as usize
}

fn bucket_low(i: usize) -> u64 {
    if i < 64 {
        return i as u64;
    }
    let exp = (i - 64) as u32 / SUB + 6;
    let sub = (i - 64) as u64 % SUB as u64;
    (1u64 << exp) + (sub << (exp - 5))
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        let b = bucket(v);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q`: the low edge of its bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(i).min(self.max);
            }
        }
        self.max
    }
}

/// Self-checks run by `smoke` (a `harness = false` bench has no `#[test]`s).
pub mod checks {
    use super::*;

    pub fn histogram_is_close() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.04, "{p50}");
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.04, "{p99}");
        for i in 0..1500 {
            assert!(bucket(bucket_low(i)) == i);
        }
    }

    pub fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(quantile(&[1, 2, 3, 4], 0.99), 4);
    }
}
