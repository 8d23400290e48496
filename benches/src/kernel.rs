//! Row kernels measured in a child process, so that the peak memory reported is the kernel's own
//! and not the benchmark's: the parent re-executes its own binary with the hidden `kernel`
//! subcommand ([`spawn`]), the child runs one kernel ([`run`]) and prints one
//! `ferry-bench-kernel rows=… bytes=… seconds=… peak_rss_kib=…` line, which the parent parses.
//!
//! Peak memory is the child's `VmHWM` (high-water mark of its resident set) from
//! `/proc/self/status`, read after the kernel finished; it includes the binary and the
//! allocator's retained pages. Seconds are measured inside the child around the kernel call only
//! (no process start-up).
//!
//! Neighbours: `delta` decides what to run; the kernels are `ferry_tables`'s publish path
//! (`source::write_sorted_parquet`) and `delta::{diff, apply}`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ferry_proto::SourceFormat;
use ferry_tables::canonical::WriteOptions;
use ferry_tables::definition::DatasetDefinition;
use ferry_tables::source::{PublishOptions, write_sorted_parquet};

/// Marks the result line among whatever else the child prints.
const RESULT_TAG: &str = "ferry-bench-kernel";

/// `ferry-bench kernel …` (hidden): runs one kernel and prints its result line.
#[derive(Debug, Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    pub kernel: Kernel,
}

/// One kernel with its inputs. Every directory holds `*.parquet` files read in name order.
#[derive(Debug, Clone, Subcommand)]
pub enum Kernel {
    /// Publish an export: check, sort by key, write zstd Parquet (ferry's publish path).
    Publish {
        #[arg(long)]
        definition: PathBuf,
        #[arg(long)]
        source: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Row-level diff of two snapshots into `upserts-*` and `deletes-*` files.
    Diff {
        #[arg(long)]
        old: PathBuf,
        #[arg(long)]
        new: PathBuf,
        #[arg(long)]
        key: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Rebuild a snapshot from a base snapshot and a delta directory.
    Apply {
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        delta: PathBuf,
        #[arg(long)]
        key: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

impl Kernel {
    fn name(&self) -> &'static str {
        match self {
            Self::Publish { .. } => "publish",
            Self::Diff { .. } => "diff",
            Self::Apply { .. } => "apply",
        }
    }

    fn to_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        let keys = |k: &[String]| k.iter().flat_map(|k| ["--key".to_owned(), k.clone()]).collect::<Vec<_>>();
        let mut args = vec!["kernel".to_owned(), self.name().to_owned()];
        match self {
            Self::Publish { definition, source, out } => args.extend([
                "--definition".to_owned(),
                path(definition),
                "--source".to_owned(),
                path(source),
                "--out".to_owned(),
                path(out),
            ]),
            Self::Diff { old, new, key, out } => {
                args.extend(["--old".to_owned(), path(old), "--new".to_owned(), path(new)]);
                args.extend(keys(key));
                args.extend(["--out".to_owned(), path(out)]);
            }
            Self::Apply { base, delta, key, out } => {
                args.extend(["--base".to_owned(), path(base), "--delta".to_owned(), path(delta)]);
                args.extend(keys(key));
                args.extend(["--out".to_owned(), path(out)]);
            }
        }
        args
    }
}

/// What a kernel did, as the child reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Rows of the table the kernel produced or compared (publish: the table; diff: the new
    /// snapshot; apply: the rebuilt snapshot).
    pub rows: u64,
    /// Bytes of Parquet the kernel wrote.
    pub bytes: u64,
    pub seconds: f64,
    /// Peak resident set of the child, KiB; `None` where `/proc` is unavailable.
    pub peak_rss_kib: Option<u64>,
}

impl Outcome {
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }

    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.peak_rss_kib.map(|kib| kib as f64 / 1024.0)
    }

    fn line(&self) -> String {
        let rss = self.peak_rss_kib.map_or_else(|| "na".to_owned(), |k| k.to_string());
        format!(
            "{RESULT_TAG} rows={} bytes={} seconds={:.6} peak_rss_kib={rss}",
            self.rows, self.bytes, self.seconds
        )
    }

    fn parse(line: &str) -> Result<Self> {
        let fields = line.strip_prefix(RESULT_TAG).context("not a kernel result line")?;
        let value = |key: &str| {
            fields
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
                .with_context(|| format!("kernel result line lacks {key}: {line}"))
        };
        Ok(Self {
            rows: value("rows")?.parse()?,
            bytes: value("bytes")?.parse()?,
            seconds: value("seconds")?.parse()?,
            peak_rss_kib: value("peak_rss_kib")?.parse().ok(),
        })
    }
}

/// How the benchmark publishes (ferry's defaults).
fn publish_options() -> PublishOptions {
    PublishOptions::default()
}

/// The layout of published snapshots, which diff and apply must use too: apply's output is then
/// byte-identical to the published N+1.
pub fn write_options() -> WriteOptions {
    publish_options().write_options()
}

/// The `*.parquet` files of `dir` whose names start with `prefix`, in name order.
pub fn parquet_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(prefix) && name.ends_with(".parquet") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs the kernel in this process and prints the result line (the child's side).
pub fn run(args: &KernelArgs) -> Result<()> {
    std::fs::create_dir_all(kernel_out(&args.kernel))?;
    let started = Instant::now();
    let (rows, bytes) = match &args.kernel {
        Kernel::Publish { definition, source, out } => {
            let text = std::fs::read_to_string(definition)?;
            let def = DatasetDefinition::parse_toml(&text)?;
            let files = write_sorted_parquet(&def, SourceFormat::Parquet, source, out, &publish_options())?;
            (files.iter().map(|f| f.rows).sum(), files.iter().map(|f| f.size).sum())
        }
        Kernel::Diff { old, new, key, out } => {
            let (old, new) = (parquet_files(old, "part-")?, parquet_files(new, "part-")?);
            let delta = ferry_tables::delta::diff(&old, &new, key, out, &write_options())?;
            let files = delta.upserts.iter().chain(&delta.deletes);
            (delta.stats.new_rows, files.map(|f| f.size).sum())
        }
        Kernel::Apply { base, delta, key, out } => {
            let base = parquet_files(base, "part-")?;
            let (upserts, deletes) = (parquet_files(delta, "upserts-")?, parquet_files(delta, "deletes-")?);
            let files = ferry_tables::delta::apply(&base, &upserts, &deletes, key, out, &write_options())?;
            (files.iter().map(|f| f.rows).sum(), files.iter().map(|f| f.size).sum())
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let outcome = Outcome { rows, bytes, seconds, peak_rss_kib: peak_rss_kib() };
    println!("{}", outcome.line());
    Ok(())
}

fn kernel_out(kernel: &Kernel) -> &Path {
    match kernel {
        Kernel::Publish { out, .. } | Kernel::Diff { out, .. } | Kernel::Apply { out, .. } => out,
    }
}

/// `VmHWM` of this process in KiB, from `/proc/self/status`.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Runs `kernel` in a child process of this binary and returns what it reported.
pub fn spawn(kernel: &Kernel) -> Result<Outcome> {
    let exe = std::env::current_exe().context("locating the ferry-bench binary")?;
    let out = Command::new(exe)
        .args(kernel.to_args())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting the {} kernel", kernel.name()))?;
    if !out.status.success() {
        bail!("the {} kernel failed ({})", kernel.name(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with(RESULT_TAG))
        .with_context(|| format!("the {} kernel printed no result line", kernel.name()))?;
    Outcome::parse(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_round_trips() {
        let outcome = Outcome { rows: 10, bytes: 2048, seconds: 0.5, peak_rss_kib: Some(123) };
        assert_eq!(Outcome::parse(&outcome.line()).expect("parses"), outcome);
        let without = Outcome { peak_rss_kib: None, ..outcome };
        assert_eq!(Outcome::parse(&without.line()).expect("parses"), without);
    }

    #[test]
    fn own_peak_rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib().is_some_and(|kib| kib > 0));
        }
    }
}
