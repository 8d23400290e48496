//! The peer tools a ministry engineer would use instead of ferry, run on the same files in the
//! same run so their figures compare with ferry's. The benchmark installs nothing: a missing tool
//! is reported and its comparison skipped.
//!
//! rsync: `rsync -r -I --delete --no-whole-file --stats SRC/ DEST/` between two local directories. For a
//! local copy rsync would send whole files; `--no-whole-file` makes it run its delta algorithm
//! (rolling checksums of the destination's blocks, literal data for the rest) as it would over a
//! network, and `-I` makes it process every file even if size and time happen to match. Its
//! `--stats` report how many bytes the sending side sent ("Total bytes sent": literal data plus
//! block-match tokens and the file list) and received (the receiver's block checksums).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// What one rsync run reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsyncStats {
    /// Bytes the sender sent to the receiver (the direction of the update).
    pub total_bytes_sent: u64,
    /// Bytes the sender received (the receiver's block checksums).
    pub total_bytes_received: u64,
    /// File data that was not found in the destination's copy and was sent as is.
    pub literal_data: u64,
    /// File data rebuilt from blocks the destination already had.
    pub matched_data: u64,
}

/// The first line of `rsync --version`, or `None` when rsync is not installed.
pub fn rsync_version() -> Option<String> {
    let out = Command::new("rsync").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned)
}

/// Brings `dest` (a directory holding the old files) to the contents of `src` with rsync's delta
/// transfer; returns its statistics and the wall time.
pub fn rsync_delta(src: &Path, dest: &Path) -> Result<(RsyncStats, f64)> {
    let started = Instant::now();
    let out = Command::new("rsync")
        .args(["-r", "-I", "--delete", "--no-whole-file", "--stats"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dest.display()))
        .output()
        .context("running rsync")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("rsync failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let stats = parse_rsync_stats(&String::from_utf8_lossy(&out.stdout))?;
    Ok((stats, seconds))
}

/// The number after `label` on its line of rsync's `--stats` (thousands separators removed).
fn stat(text: &str, label: &str) -> Result<u64> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .with_context(|| format!("rsync --stats printed no `{label}` line:\n{text}"))?;
    let digits: String = line
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, ',' | '.' | '\''))
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().with_context(|| format!("rsync --stats `{label}` is not a number: {line}"))
}

/// Parses the figures of rsync's `--stats` output.
pub fn parse_rsync_stats(text: &str) -> Result<RsyncStats> {
    Ok(RsyncStats {
        total_bytes_sent: stat(text, "Total bytes sent")?,
        total_bytes_received: stat(text, "Total bytes received")?,
        literal_data: stat(text, "Literal data")?,
        matched_data: stat(text, "Matched data")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "
Number of files: 3 (reg: 2, dir: 1)
Number of created files: 0
Number of regular files transferred: 2
Total file size: 24,510,143 bytes
Total transferred file size: 24,510,143 bytes
Literal data: 23,001,377 bytes
Matched data: 1,508,766 bytes
File list size: 0
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 23,013,962
Total bytes received: 48,215

sent 23,013,962 bytes  received 48,215 bytes  15,374,784.67 bytes/sec
total size is 24,510,143  speedup is 1.06
";

    #[test]
    fn parses_rsync_stats_with_thousands_separators() {
        let stats = parse_rsync_stats(STATS).expect("parses");
        assert_eq!(
            stats,
            RsyncStats {
                total_bytes_sent: 23_013_962,
                total_bytes_received: 48_215,
                literal_data: 23_001_377,
                matched_data: 1_508_766,
            }
        );
    }

    #[test]
    fn missing_line_is_an_error_naming_it() {
        let err = parse_rsync_stats("Literal data: 5 bytes").expect_err("incomplete");
        assert!(err.to_string().contains("Total bytes sent"), "{err}");
    }
}
