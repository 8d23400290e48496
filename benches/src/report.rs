//! Collecting and printing measurements: every metric keeps all its samples (one per run), the
//! table shows the median and the min–max range, and the last line of a scenario is the
//! `key=value` summary that scripts (and `docs/PERFORMANCE.md`) read.
//!
//! Also the small printing helpers every scenario shares: progress lines on stderr, `nan` for
//! what did not run, the CPU count of the header lines.
//!
//! Neighbours: each scenario module (`delta`, …) records samples here and chooses its summary
//! keys; `peers` supplies the peer tools' figures.

use std::fmt::Write as _;
use std::io::Write as _;

/// Prints a progress line on stderr (`ferry-bench: …`) at once.
pub fn progress(message: &str) {
    eprintln!("ferry-bench: {message}");
    let _ = std::io::stderr().flush();
}

/// `value` with `digits` decimals, or `nan` when it is not finite (a contender that did not run).
pub fn show(value: f64, digits: usize) -> String {
    if value.is_finite() { format!("{value:.digits$}") } else { "nan".to_owned() }
}

/// The CPUs this process may run on (0 when unknown), for a scenario's header line.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

/// How a metric's values are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Rows per second, printed as an integer.
    RowsPerSecond,
    /// Megabytes (10^6 bytes) per second.
    MegabytesPerSecond,
    /// Mebibytes (of memory).
    Mebibytes,
    /// Bytes, printed as an integer.
    Bytes,
    /// A count (rows, files), printed as an integer.
    Count,
    /// Seconds.
    Seconds,
    /// A ratio without unit (fractions, speed-ups).
    Ratio,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Self::RowsPerSecond => "rows/s",
            Self::MegabytesPerSecond => "MB/s",
            Self::Mebibytes => "MiB",
            Self::Bytes => "bytes",
            Self::Count => "",
            Self::Seconds => "s",
            Self::Ratio => "",
        }
    }

    /// The value as printed in the table and the summary line.
    pub fn format(self, value: f64) -> String {
        match self {
            Self::RowsPerSecond | Self::Bytes | Self::Count => format!("{value:.0}"),
            Self::MegabytesPerSecond | Self::Mebibytes => format!("{value:.1}"),
            Self::Seconds => format!("{value:.3}"),
            Self::Ratio => format_ratio(value),
        }
    }
}

/// Four significant digits, without exponent for the usual range.
fn format_ratio(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let digits = (3 - value.abs().log10().floor() as i32).clamp(0, 8) as usize;
    format!("{value:.digits$}")
}

/// All samples of one metric, in the order they were taken.
#[derive(Debug, Clone)]
pub struct Metric {
    pub key: String,
    pub unit: Unit,
    /// What the metric is, shown in the table.
    pub label: String,
    pub samples: Vec<f64>,
}

impl Metric {
    /// The median (mean of the two middle samples for an even count), or `None` without samples.
    pub fn median(&self) -> Option<f64> {
        median(&self.samples)
    }

    fn range(&self) -> Option<(f64, f64)> {
        let min = self.samples.iter().copied().reduce(f64::min)?;
        let max = self.samples.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }
}

/// The median of `values`, or `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] })
}

/// The metrics of one scenario run, in first-recorded order.
#[derive(Debug, Default)]
pub struct Report {
    metrics: Vec<Metric>,
    notes: Vec<String>,
}

impl Report {
    /// Adds one sample of `key` (created on first use with `unit` and `label`).
    pub fn record(&mut self, key: &str, unit: Unit, label: &str, value: f64) {
        match self.metrics.iter_mut().find(|m| m.key == key) {
            Some(metric) => metric.samples.push(value),
            None => self.metrics.push(Metric {
                key: key.to_owned(),
                unit,
                label: label.to_owned(),
                samples: vec![value],
            }),
        }
    }

    /// A line printed under the table (what was measured how, what was skipped).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn metric(&self, key: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.key == key)
    }

    /// The median of metric `key`, or NaN when it has no samples.
    pub fn median_of(&self, key: &str) -> f64 {
        self.metric(key).and_then(Metric::median).unwrap_or(f64::NAN)
    }

    /// The table of medians and min–max ranges, then the notes.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "metric".to_owned(),
            "median".to_owned(),
            "min – max".to_owned(),
            "unit".to_owned(),
            "runs".to_owned(),
            "what".to_owned(),
        ]];
        for metric in &self.metrics {
            let (Some(mid), Some((min, max))) = (metric.median(), metric.range()) else { continue };
            rows.push([
                metric.key.clone(),
                metric.unit.format(mid),
                format!("{} – {}", metric.unit.format(min), metric.unit.format(max)),
                metric.unit.label().to_owned(),
                metric.samples.len().to_string(),
                metric.label.clone(),
            ]);
        }
        let mut widths = [0usize; 6];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let mut line = String::new();
            for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
                let pad = width - cell.chars().count();
                // Numbers right-aligned, text left-aligned; the last column is not padded.
                match column {
                    1 | 2 | 4 => line.push_str(&format!("{}{cell}  ", " ".repeat(pad))),
                    5 => line.push_str(cell),
                    _ => line.push_str(&format!("{cell}{}  ", " ".repeat(pad))),
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
            if i == 0 {
                let _ = writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 10));
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// `key=median …` for the given keys; a metric without samples prints as `key=na`.
    pub fn summary_line(&self, keys: &[&str]) -> String {
        let parts: Vec<String> = keys
            .iter()
            .map(|key| match self.metric(key).and_then(|m| m.median().map(|v| m.unit.format(v))) {
                Some(value) => format!("{key}={value}"),
                None => format!("{key}=na"),
            })
            .collect();
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn summary_prints_medians_and_missing_metrics() {
        let mut report = Report::default();
        report.record("delta_fraction", Unit::Ratio, "delta bytes / snapshot bytes", 0.0123456);
        report.record("delta_fraction", Unit::Ratio, "", 0.0125);
        report.record("diff_rows_per_s", Unit::RowsPerSecond, "diff", 1_234_567.8);
        assert_eq!(
            report.summary_line(&["delta_fraction", "diff_rows_per_s", "vs_rsync"]),
            "delta_fraction=0.01242 diff_rows_per_s=1234568 vs_rsync=na"
        );
        let table = report.table();
        assert!(table.contains("0.01235 – 0.01250"), "{table}");
    }

    #[test]
    fn ratios_keep_four_significant_digits() {
        assert_eq!(format_ratio(0.25), "0.2500");
        assert_eq!(format_ratio(12.3456), "12.35");
        assert_eq!(format_ratio(0.000123456), "0.0001235");
    }
}
