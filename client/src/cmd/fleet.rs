//! `ferry status --fleet [--json]` at the ministry: every province x dataset with the version
//! it holds, the latest publication, how far behind it is (versions, seconds) and how old its
//! node's last report is, from the control plane's `fleet` call (`ferry_control::fleet`). A
//! province that stopped reporting is marked STALE.
//!
//! Neighbours: [`super::status`] parses the flags and calls [`run`].

use super::catalog::{ask, print_json};
use super::node::NodeFlags;
use anyhow::Context;
use ferry_control::api::ControlRequest;
use ferry_control::fleet::FleetView;
use std::fmt::Write as _;

pub async fn run(node: &NodeFlags, json: bool) -> anyhow::Result<()> {
    let value = ask(node, &ControlRequest::Fleet {}, json).await?;
    if json {
        return print_json(&value);
    }
    let view: FleetView = serde_json::from_value(value).context("reading the fleet view")?;
    print!("{}", render(&view));
    Ok(())
}

const HEADER: [&str; 8] =
    ["PROVINCE", "NODE", "DATASET", "HELD", "LATEST", "BEHIND", "SECONDS-BEHIND", "LAST-REPORT"];

fn version(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |v| format!("v{v}"))
}

/// The fleet view as an operator reads it: one line per province node and dataset.
pub fn render(view: &FleetView) -> String {
    let mut lines: Vec<[String; 8]> = vec![HEADER.map(str::to_owned)];
    for row in &view.rows {
        let reported = match row.report_age_s {
            Some(age) => format!("{age} s ago"),
            None => "never".to_owned(),
        };
        lines.push([
            row.dept.to_string(),
            row.node.clone().unwrap_or_else(|| "-".to_owned()),
            row.dataset.to_string(),
            version(row.held),
            version(row.latest),
            row.versions_behind.to_string(),
            row.seconds_behind.to_string(),
            if row.stale { format!("{reported}  STALE") } else { reported },
        ]);
    }
    let mut widths = [0usize; 8];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let behind = view.rows.iter().filter(|r| r.versions_behind > 0).count();
    let stale = view.nodes.iter().filter(|n| n.stale).count();
    let _ = writeln!(
        out,
        "fleet: {} node(s) reporting, {behind} of {} holding(s) behind, {stale} node(s) stale",
        view.nodes.len(),
        view.rows.len()
    );
    if view.rows.is_empty() {
        out.push_str("no province has reported holdings or holds a download grant\n");
        return out;
    }
    for line in &lines {
        let mut text = String::new();
        for (cell, width) in line.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
    let empty: Vec<_> = view
        .nodes
        .iter()
        .filter(|n| !view.rows.iter().any(|r| r.dept == n.dept && r.node.as_deref() == Some(&n.node)))
        .map(|n| format!("{} ({}, {} s ago)", n.node, n.dept, n.report_age_s))
        .collect();
    if !empty.is_empty() {
        let _ = writeln!(out, "holding no catalog dataset: {}", empty.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_control::fleet::{FleetNode, FleetRow};
    use ferry_proto::{DatasetId, DeptId};

    #[test]
    fn a_behind_province_and_a_silent_one_are_visible() {
        let dept = |d: &str| DeptId::new(d).unwrap();
        let dataset = DatasetId::new("vehicle-registry").unwrap();
        let row =
            |d: &str, node: Option<&str>, held: Option<u64>, behind, age: Option<u64>, stale| FleetRow {
                dept: dept(d),
                node: node.map(str::to_owned),
                dataset: dataset.clone(),
                held,
                latest: Some(3),
                versions_behind: behind,
                seconds_behind: behind * 3600,
                report_age_s: age,
                stale,
            };
        let view = FleetView {
            at: 0,
            rows: vec![
                row("guangdong", Some("gd-node"), Some(1), 2, Some(600), true),
                row("sichuan", None, None, 3, None, true),
                row("zhejiang", Some("zj-node"), Some(3), 0, Some(4), false),
            ],
            nodes: vec![
                FleetNode { dept: dept("guangdong"), node: "gd-node".into(), report_age_s: 600, stale: true },
                FleetNode { dept: dept("hunan"), node: "hn-node".into(), report_age_s: 9, stale: false },
                FleetNode { dept: dept("zhejiang"), node: "zj-node".into(), report_age_s: 4, stale: false },
            ],
        };
        let text = render(&view);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "fleet: 3 node(s) reporting, 2 of 3 holding(s) behind, 1 node(s) stale");
        assert!(lines[1].starts_with("PROVINCE   NODE     DATASET           HELD  LATEST"), "{text}");
        assert!(
            lines[2].contains("guangdong  gd-node  vehicle-registry  v1    v3      2       7200"),
            "{text}"
        );
        assert!(lines[2].ends_with("600 s ago  STALE"), "{text}");
        assert!(
            lines[3].contains("sichuan    -        vehicle-registry  -     v3      3")
                && lines[3].ends_with("never  STALE")
        );
        assert!(lines[4].ends_with("4 s ago"), "{text}");
        assert_eq!(lines[5], "holding no catalog dataset: hn-node (hunan, 9 s ago)");
    }
}
