//! What one run records (MB/s, link fraction, the link's losses and drops, CPU per GB) and the
//! scenario's summary line.
//!
//! Neighbours: [`super::runs`] measures the outcomes; [`crate::report`] prints the table.

use super::CONTENDERS;
use super::runs::Outcome;
use crate::netem::LinkProfile;
use crate::report::{Report, Unit, show};

/// The profiles the summary line always names (`nan` when not run).
const SUMMARY_PROFILES: [&str; 2] = ["wan30", "wan80"];

fn label(key: &str) -> &'static str {
    CONTENDERS.iter().find(|(k, _)| *k == key).map_or("?", |(_, label)| label)
}

/// Records one run of `key` on `profile`.
pub(super) fn record(report: &mut Report, profile: &LinkProfile, key: &str, outcome: &Outcome) {
    let p = &profile.name;
    let seconds = outcome.seconds.max(1e-9);
    let mb_s = outcome.bytes as f64 / 1e6 / seconds;
    let capped = if outcome.capped { " (capped runs: bytes so far / cap)" } else { "" };
    report.record(
        &format!("{p}_{key}_mb_s"),
        Unit::MegabytesPerSecond,
        &format!("{p}: {}: MB/s{capped}", label(key)),
        mb_s,
    );
    let fraction = outcome.bytes as f64 * 8.0 / seconds / profile.rate_bps.max(1) as f64;
    let what = format!("{p}: {key}: goodput / link rate ({} Mbit/s)", profile.rate_bps as f64 / 1e6);
    report.record(&format!("{p}_{key}_link_fraction"), Unit::Ratio, &what, fraction);
    let stats = &outcome.link;
    let lost = (stats.a_to_b.lost + stats.b_to_a.lost) as f64;
    let what = format!("{p}: {key}: packets lost at random on the link (A→B + B→A)");
    report.record(&format!("{p}_{key}_lost_pkts"), Unit::Count, &what, lost);
    let drops = (stats.a_to_b.queue_dropped + stats.b_to_a.queue_dropped) as f64;
    let what = format!("{p}: {key}: packets dropped by the full bottleneck queue (A→B + B→A)");
    report.record(&format!("{p}_{key}_queue_drops"), Unit::Count, &what, drops);
    let offered = stats.a_to_b.packets_in as f64 / stats.a_to_b.forwarded.max(1) as f64;
    let what = format!("{p}: {key}: packets sent A→B per packet delivered (losses, queue drops)");
    report.record(&format!("{p}_{key}_sent_per_delivered"), Unit::Ratio, &what, offered);
    let wire = stats.a_to_b.bytes_forwarded as f64 / outcome.bytes.max(1) as f64;
    let what = format!("{p}: {key}: IP bytes delivered A→B per payload byte (headers, duplicates)");
    report.record(&format!("{p}_{key}_wire_per_byte"), Unit::Ratio, &what, wire);
    let cpu = (outcome.client_cpu + outcome.server_cpu) / (outcome.bytes.max(1) as f64 / 1e9);
    let what = format!("{p}: {key}: CPU seconds per GB, both ends (client + server)");
    report.record(&format!("{p}_{key}_cpu_s_per_gb"), Unit::Ratio, &what, cpu);
    if key == "ferry" {
        let what = format!("{p}: ferry: UDP datagrams dropped on full socket receive buffers (A + B)");
        report.record(
            &format!("{p}_ferry_udp_rcvbuf_errors"),
            Unit::Count,
            &what,
            outcome.udp_rcvbuf_errors as f64,
        );
    }
}

/// The summary line: per profile (`nan` where not run) ferry's link fraction, ferry ÷ rsync and
/// ferry ÷ curl (medians of MB/s), and each contender's median MB/s.
pub(super) fn summary_line(report: &Report, capped: usize) -> String {
    let mut parts = Vec::new();
    for p in SUMMARY_PROFILES {
        let ferry = report.median_of(&format!("{p}_ferry_mb_s"));
        parts.push(format!(
            "{p}_link_fraction={}",
            show(report.median_of(&format!("{p}_ferry_link_fraction")), 3)
        ));
        for peer in ["rsync", "curl"] {
            let ratio = ferry / report.median_of(&format!("{p}_{peer}_mb_s"));
            parts.push(format!("{p}_vs_{peer}={}", show(ratio, 3)));
        }
        for (key, _) in CONTENDERS {
            parts.push(format!("{p}_{key}_mb_s={}", show(report.median_of(&format!("{p}_{key}_mb_s")), 1)));
        }
    }
    parts.push(format!("capped_runs={capped}"));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netem::LinkStats;

    #[test]
    fn summary_names_both_profiles() {
        let mut report = Report::default();
        let outcome = Outcome {
            seconds: 2.0,
            bytes: 250_000_000,
            capped: false,
            client_cpu: 1.0,
            server_cpu: 1.0,
            link: LinkStats::default(),
            udp_rcvbuf_errors: 0,
            remarks: Vec::new(),
        };
        record(&mut report, &LinkProfile::wan30(), "ferry", &outcome);
        record(&mut report, &LinkProfile::wan30(), "rsync", &Outcome { seconds: 8.0, ..outcome.clone() });
        let line = summary_line(&report, 0);
        assert!(
            line.starts_with("wan30_link_fraction=1.000 wan30_vs_rsync=4.000 wan30_vs_curl=nan "),
            "{line}"
        );
        assert!(line.contains("wan80_link_fraction=nan"), "{line}");
        assert!(line.ends_with("capped_runs=0"), "{line}");
    }
}
