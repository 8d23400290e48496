//! The Grafana dashboard (`deploy/grafana/ferry.json`) and the alert rules
//! (`deploy/prometheus/ferry-alerts.yml`) use only metrics a node exports (issue 20 §6): every
//! PromQL expression in them is read from the files, the metric names it selects are extracted,
//! and each must be one the node's registry exports. No name is listed here: a metric added to
//! the files later is checked the same way, and a panel naming a metric that does not exist
//! fails.
//!
//! What the node exports comes from two places. A running ministry node's `/metrics` gives the
//! exact sample names of every family with samples (a counter `x` as `x_total`, a histogram as
//! `x_bucket`, ...). prometheus-client leaves a family without samples out of the text
//! entirely, so the families registered but not used yet are read from the registry of
//! `Metrics::new()` (the one every node builds) through its `Debug` form, which lists each
//! descriptor's name and unit; for those the type is unknown, so a name matches with any sample
//! suffix. The listing is checked to find a family known to be empty, so a change of that form
//! fails here rather than passing silently.

use ferry_net::tls::TlsPaths;
use ferry_proto::Role;
use ferry_testkit::{NodeSpec, TestNode, TestPki};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Names Prometheus gives itself or every target, not the node.
const PROMETHEUS_OWN: [&str; 1] = ["up"];

/// PromQL words that are not metric names when they are not followed by `(`.
const KEYWORDS: [&str; 12] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
];

/// Clauses whose parenthesised list holds label names.
const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The sample names a scrape exposes: each `# TYPE` line's family as PromQL selects it (a
/// counter `x` as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`, …), and each sample
/// line's name.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let mut words = family.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Suffixes a sample of a family takes, whatever its type.
const SAMPLE_SUFFIXES: [&str; 6] = ["", "_total", "_bucket", "_sum", "_count", "_info"];

/// The family names registered in `Metrics::new()`'s registry (name and unit, as the text
/// encoding joins them), read from its `Debug` form: `Descriptor { name: "x", help: "…", unit:
/// Some(Bytes) }`.
fn registered_families() -> BTreeSet<String> {
    let listing = format!("{:?}", ferry_daemon::telemetry::Metrics::new());
    let mut families = BTreeSet::new();
    for descriptor in listing.split("Descriptor { name: \"").skip(1) {
        let Some((name, rest)) = descriptor.split_once('"') else { continue };
        let unit = rest.split_once("unit: ").map_or("None", |(_, u)| u);
        let unit = match unit.strip_prefix("Some(") {
            Some(u) if u.starts_with("Other(\"") => {
                u["Other(\"".len()..].split('"').next().map(str::to_owned)
            }
            Some(u) => u.split(')').next().map(str::to_ascii_lowercase),
            None => None,
        };
        families.insert(match unit {
            Some(unit) => format!("{name}_{unit}"),
            None => name.to_owned(),
        });
    }
    families
}

/// Whether `name` is a sample of a registered family that has no samples in the scrape.
fn of_an_empty_family(name: &str, families: &BTreeSet<String>, scraped: &BTreeSet<String>) -> bool {
    SAMPLE_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|family| {
            families.contains(family)
                && !SAMPLE_SUFFIXES.iter().any(|s| scraped.contains(&format!("{family}{s}")))
        })
    })
}

/// `text` without string literals and without what `open`…`close` enclose (nesting counted).
fn without(text: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        if c == open {
            depth += 1;
        } else if c == close && depth > 0 {
            depth -= 1;
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

fn without_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if matches!(c, '"' | '\'' | '`') => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

/// Tokens of `text`: identifiers (`[A-Za-z_:][A-Za-z0-9_:]*`), numbers and durations (a digit
/// and what follows it), `$variables`, and single other characters.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.';
        if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' || c.is_ascii_digit() {
            i += 1;
            while i < chars.len() && word(chars[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
        let token: String = chars[start..i].iter().collect();
        if !token.trim().is_empty() {
            out.push(token);
        }
    }
    out
}

/// The metric names a PromQL expression selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bare = without(&without(&without_strings(expr), '{', '}'), '[', ']');
    let tokens = tokens(&bare);
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let next = tokens.get(i + 1).map(String::as_str);
        if LABEL_LISTS.contains(&token.as_str()) && next == Some("(") {
            // Skip the label list.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else {
            let first = token.chars().next().unwrap_or(' ');
            let identifier = first.is_ascii_alphabetic() || first == '_' || first == ':';
            let keyword = KEYWORDS.contains(&token.to_ascii_lowercase().as_str()) || token == "nan";
            let aggregation = matches!(next, Some("by" | "without"));
            if identifier && !keyword && next != Some("(") && !aggregation {
                names.insert(token.clone());
            }
        }
        i += 1;
    }
    names
}

/// Every PromQL expression of a Grafana dashboard, with where it is: the panels' targets
/// (rows' nested panels included) and the variables' `label_values(<selector>, label)`.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("panel {title:?}"), expr.to_owned()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or("");
        if let Some(arguments) = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
            let selector = arguments.rsplit_once(',').map_or(arguments, |(selector, _)| selector);
            out.push((format!("variable {}", variable["name"]), selector.to_owned()));
        }
    }
    out
}

/// Every `expr:` of a Prometheus rules file (inline, quoted, or a `|`/`>` block), with its rule.
/// Read line by line: the rules file is plain YAML of that shape, and the count of rules is
/// checked against the count of expressions, so a shape this misses fails the test.
fn rule_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut rule = String::from("?");
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(name) = trimmed.strip_prefix("alert:").or(trimmed.strip_prefix("record:")) {
            rule = name.trim().to_owned();
        }
        if let Some(value) = trimmed.strip_prefix("expr:") {
            let value = value.trim();
            let expr = if value.starts_with('|') || value.starts_with('>') {
                let indent = line.len() - line.trim_start().len();
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                block.join(" ")
            } else if let Some(quoted) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                quoted.replace("\\\"", "\"")
            } else if let Some(quoted) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                quoted.replace("''", "'")
            } else {
                value.to_owned()
            };
            out.push((format!("alert rule {rule}"), expr));
        }
        i += 1;
    }
    let rules = lines
        .iter()
        .map(|l| l.trim_start())
        .filter(|l| l.starts_with("- alert:") || l.starts_with("- record:"))
        .count();
    assert_eq!(rules, out.len(), "every rule's expr was read: {out:?}");
    out
}

/// What a node exports: exact sample names scraped, and the families registered.
struct Exported {
    scraped: BTreeSet<String>,
    families: BTreeSet<String>,
}

impl Exported {
    fn contains(&self, name: &str) -> bool {
        self.scraped.contains(name) || of_an_empty_family(name, &self.families, &self.scraped)
    }
}

/// The names `exprs` use that `exported` lacks, each with where it is used.
fn unknown(exprs: &[(String, String)], exported: &Exported) -> Vec<String> {
    let mut missing = Vec::new();
    for (place, expr) in exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr:?}");
        for name in names {
            if !exported.contains(&name) && !PROMETHEUS_OWN.contains(&name.as_str()) {
                missing.push(format!("{place}: {name}"));
            }
        }
    }
    missing
}

async fn start_ministry(pki: &TestPki) -> TestNode {
    let control: TlsPaths = pki.issue("control", "mot", Role::Control);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\n[policy]\n",
        control.cert, control.key
    );
    let spec = NodeSpec { dept: "mot", extra: &extra, ..NodeSpec::new("ministry", Role::Ministry) };
    TestNode::start(pki, spec).await
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/ferry.json")).expect("the dashboard is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_one_the_node_exports() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki).await;
    let scrape = ministry.metrics().await;
    let exported = Exported { scraped: exported(&scrape), families: registered_families() };
    assert!(exported.scraped.contains("ferry_transfer_sent_bytes_total"), "{scrape}");
    // A family without samples yet is found too (no province has reported to this ministry).
    assert!(!scrape.contains("ferry_fleet_versions_behind"), "no fleet series yet: {scrape}");
    assert!(exported.families.contains("ferry_fleet_report_age_seconds"), "{:?}", exported.families);
    assert!(exported.contains("ferry_fleet_versions_behind"));
    // A counter with samples is selected only with its suffix.
    assert!(!exported.contains("ferry_transfer_sent_bytes"));

    let dashboard = dashboard();
    let mut exprs = dashboard_exprs(&dashboard);
    let panel_exprs = exprs.len();
    exprs.extend(rule_exprs(&read("deploy/prometheus/ferry-alerts.yml")));
    assert!(panel_exprs >= 10 && exprs.len() > panel_exprs, "{exprs:?}");
    let missing = unknown(&exprs, &exported);
    assert!(missing.is_empty(), "metrics the node does not export:\n{}", missing.join("\n"));

    // The same check bites: a panel naming a metric that does not exist fails it.
    let mut broken = dashboard.clone();
    let panel = serde_json::json!({
        "title": "Made up",
        "targets": [{"expr": "sum by (reason) (rate(ferry_transfer_made_up_total{reason=\"no_grant\"}[5m]))"}]
    });
    broken["panels"][0]["panels"].as_array_mut().expect("a row's panels").push(panel);
    assert_eq!(
        unknown(&dashboard_exprs(&broken), &exported),
        ["panel \"Made up\": ferry_transfer_made_up_total"]
    );
}

#[test]
fn the_dashboard_has_the_panels_operators_need() {
    let dashboard = dashboard();
    let mut titles = Vec::new();
    fn collect(list: &Value, titles: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            titles.push(panel["title"].as_str().unwrap_or_default().to_lowercase());
            collect(&panel["panels"], titles);
        }
    }
    collect(&dashboard["panels"], &mut titles);
    for wanted in [
        "throughput served",
        "throughput pulled",
        "subscription lag",
        "transfer errors",
        "schedule failures",
        "refusals",
        "reviews due",
        "denials by reason",
        "policy age",
        "fleet: versions behind",
    ] {
        assert!(titles.iter().any(|t| t.contains(wanted)), "no {wanted:?} panel in {titles:?}");
    }
    let ids: BTreeSet<_> = titles.iter().collect();
    assert_eq!(ids.len(), titles.len(), "panel titles are distinct");
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let expr = "histogram_quantile(0.99, sum by (le, instance) (rate(ferry_transfer_duration_seconds_bucket\
                {instance=~\"$instance\", reason=\"ferry_not_a_metric\"}[$__rate_interval] offset 5m))) > 1e3 \
                and on (instance) group_left (dept) ferry_policy_stale == bool 0 unless up{job='ferry'}";
    let names: Vec<_> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["ferry_policy_stale", "ferry_transfer_duration_seconds_bucket", "up"]);
    let text = "# HELP a_bytes x\n# TYPE a_bytes counter\n# TYPE b histogram\nb_bucket{le=\"1\"} 0\n\
                # TYPE c gauge\n";
    let exported: Vec<_> = exported(text).into_iter().collect();
    assert_eq!(exported, ["a_bytes_total", "b_bucket", "b_count", "b_sum", "c"]);
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x_total > 0\n\
                \x20     - alert: B\n        expr: |\n          sum(y)\n            > 1\n        for: 5m\n\
                \x20     - record: c:rate\n        expr: \"rate(z_total[5m])\"\n";
    let rules = rule_exprs(yaml);
    assert_eq!(
        rules,
        [
            ("alert rule A".to_owned(), "x_total > 0".to_owned()),
            ("alert rule B".to_owned(), "sum(y) > 1".to_owned()),
            ("alert rule c:rate".to_owned(), "rate(z_total[5m])".to_owned()),
        ]
    );
}
