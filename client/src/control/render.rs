//! Readable text for the control-plane answers: what an operator reads at 3 a.m. Every
//! function returns a `String` (tested here); the commands print them. `--json` bypasses this
//! module and prints the answer value itself.
//!
//! Neighbours: [`super::view`] (the answers read), `ferry_control::receipt::render` (receipts,
//! bilingual), `ferry_tables::catalog::ComplianceReport` (violations).

use super::view::{
    AuditLine, Diff, Entry, ItemChange, Listed, Notice, Problem, Registration, Verification, VersionLine,
};
use super::{ExitStatus, code_name};
use ferry_control::api::{ApiCode, ApiError};
use ferry_tables::catalog::ComplianceReport;
use std::fmt::Write;

/// Columns of text, left-aligned, two spaces apart; the last column is not padded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells print empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, width) in widths.iter_mut().enumerate() {
                *width = (*width).max(cell(row, i).chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let text = cell(row, i);
                line.push_str(&text);
                if i + 1 < columns {
                    line.extend(std::iter::repeat_n(' ', width - text.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// An RFC 3339 time as `2026-12-06 07:13:28 UTC` when it is in UTC; as given otherwise.
pub fn when(rfc3339: &str) -> String {
    match rfc3339.strip_suffix('Z') {
        Some(utc) => format!("{} UTC", utc.replacen('T', " ", 1)),
        None => rfc3339.replacen('T', " ", 1),
    }
}

fn field(out: &mut String, label: &str, value: &str) {
    // Invariant: writing to a String cannot fail.
    let _ = writeln!(out, "  {:<22}{value}", format!("{label}:"));
}

fn names(list: &[String]) -> String {
    if list.is_empty() { "none".to_owned() } else { list.join(", ") }
}

/// A successful registration (receipts are printed apart, from their verified files).
pub fn registration(answer: &Registration) -> String {
    let r = &answer.registered;
    let mut out = format!("registered {}, catalog version {}\n", r.dataset, r.catalog_version);
    field(&mut out, "effective from", &when(&r.effective_from));
    let items = if r.items_changed { "changed" } else { "unchanged" };
    field(&mut out, "information items", items);
    field(&mut out, "consumers notified", &names(&r.notified));
    let deadline = r.connection_deadline.as_deref().map_or_else(|| "none (pre-catalog)".to_owned(), when);
    field(&mut out, "connection deadline", &deadline);
    let due = match r.receipt_kind.as_deref() {
        Some(kind) => format!("{kind} receipt"),
        None => "formal receipt once a version is published (data connected)".to_owned(),
    };
    field(&mut out, "receipt", &due);
    field(&mut out, "receipts issued now", &answer.receipts.len().to_string());
    out
}

/// Every violation of a compliance report, one per line, or that it passed.
pub fn violations(report: &ComplianceReport) -> String {
    if report.passed() {
        return "compliance check passed\n".to_owned();
    }
    let mut table = Table::new(&["RULE", "FIELD", "MESSAGE"]);
    for v in &report.violations {
        let field = if v.field.is_empty() { "(document)".to_owned() } else { v.field.clone() };
        table.row(vec![format!("{} {}", v.rule.code(), v.rule.name()), field, v.message.clone()]);
    }
    let n = report.violations.len();
    format!("compliance check FAILED: {n} violation{}\n{}", if n == 1 { "" } else { "s" }, table.render())
}

/// The one-line reason of a refusal, as `error:` prints it.
pub fn refusal_summary(error: &ApiError) -> String {
    match error.code {
        ApiCode::ComplianceFailed => match compliance_detail(error) {
            Some(report) => {
                format!("refused: the compliance check failed ({} violations)", report.violations.len())
            }
            None => "refused: the compliance check failed".to_owned(),
        },
        ApiCode::TooEarly => match earliest(error) {
            Some(date) => {
                format!("refused: the effective date is too early; the earliest allowed is {}", when(date))
            }
            None => format!("refused: the effective date is too early: {}", error.message),
        },
        code => format!("refused ({}): {}", code_name(code), error.message),
    }
}

/// What a refusal says beyond its summary: every violation, or the change-control rule.
pub fn refusal_details(error: &ApiError) -> Option<String> {
    match error.code {
        ApiCode::ComplianceFailed => Some(match compliance_detail(error) {
            Some(report) => violations(&report),
            None => format!("{}\n", error.message),
        }),
        ApiCode::TooEarly => Some(format!(
            "change control (Art. 9): a change of the information items of a dataset in use takes effect \
             at least 3 months after its registration.\n  earliest allowed effective date: {}\n  \
             register again with --effective-from on or after that date.\n",
            earliest(error).map_or_else(|| error.message.clone(), when)
        )),
        _ => None,
    }
}

/// How a refusal exits.
pub fn refusal_status(error: &ApiError) -> ExitStatus {
    super::ControlCallError::Refused(error.clone()).exit_status()
}

fn compliance_detail(error: &ApiError) -> Option<ComplianceReport> {
    serde_json::from_value(error.detail.clone()?).ok()
}

fn earliest(error: &ApiError) -> Option<&str> {
    error.detail.as_ref()?.get("earliest")?.as_str()
}

/// One catalog version: its facts, then its document.
pub fn entry(e: &Entry) -> String {
    let mut out = format!("{}, catalog version {}\n", e.dataset, e.catalog_version);
    field(&mut out, "registered by", &e.registered_by);
    field(&mut out, "registered at", &when(&e.registered_at));
    field(&mut out, "effective from", &when(&e.effective_from));
    let items = if e.items_changed { "changed from the version before" } else { "unchanged" };
    field(&mut out, "information items", items);
    field(
        &mut out,
        "connection deadline",
        &e.connection_deadline.as_deref().map_or_else(|| "-".to_owned(), when),
    );
    let _ = write!(out, "\n--- document ---\n{}", e.document);
    if !e.document.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// An entry's catalog versions, oldest first.
pub fn history(dataset: &str, versions: &[VersionLine]) -> String {
    let mut table = Table::new(&[
        "VERSION",
        "STAGE",
        "SHARE TYPE",
        "EFFECTIVE FROM",
        "REGISTERED",
        "BY",
        "ITEMS",
        "FINGERPRINT",
    ]);
    for v in versions {
        table.row(vec![
            v.catalog_version.to_string(),
            v.stage.clone(),
            v.share_type.clone(),
            when(&v.effective_from),
            when(&v.registered_at),
            v.registered_by.clone(),
            (if v.items_changed { "changed" } else { "same" }).to_owned(),
            v.items_fingerprint.chars().take(12).collect(),
        ]);
    }
    format!("{dataset}: {} catalog version{}\n{}", versions.len(), plural(versions.len()), table.render())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Field and item changes between two catalog versions.
pub fn diff(d: &Diff) -> String {
    let mut out = format!("{}: catalog version {} -> {}\n", d.dataset, d.from, d.to);
    if d.fields.is_empty() && d.items.is_empty() && !d.items_changed {
        out.push_str("no differences\n");
        return out;
    }
    if !d.fields.is_empty() {
        out.push_str("fields:\n");
        for f in &d.fields {
            let side = |v: &Option<String>| {
                v.as_deref().map_or_else(|| "(not set)".to_owned(), |t| format!("{t:?}"))
            };
            let _ = writeln!(out, "  {}: {} -> {}", f.field, side(&f.before), side(&f.after));
        }
    }
    if !d.items.is_empty() {
        out.push_str("information items:\n");
        for item in &d.items {
            let _ = match item {
                ItemChange::Added { name, after } => writeln!(out, "  + {name}: {after}"),
                ItemChange::Removed { name, before } => writeln!(out, "  - {name}: {before}"),
                ItemChange::Changed { name, before, after } => {
                    writeln!(out, "  ~ {name}: {before} -> {after}")
                }
            };
        }
    }
    if d.items_changed {
        out.push_str("the information items changed (schema fingerprint differs): consumers are notified\n");
    }
    out
}

/// The catalog, one line per entry the caller may see.
pub fn list(entries: &[Listed]) -> String {
    if entries.is_empty() {
        return "the catalog holds no entry you may see\n".to_owned();
    }
    let mut table =
        Table::new(&["DATASET", "PROVIDER", "SHARE TYPE", "STAGE", "LATEST", "IN EFFECT", "NAME"]);
    for e in entries {
        table.row(vec![
            e.dataset.clone(),
            e.provider.clone(),
            e.share_type.clone(),
            e.stage.clone(),
            e.latest_version.to_string(),
            e.in_effect_version.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            e.name.clone(),
        ]);
    }
    table.render()
}

/// Change notices addressed to the caller's department.
pub fn notices(notices: &[Notice]) -> String {
    if notices.is_empty() {
        return "no change notices for your department\n".to_owned();
    }
    let mut table = Table::new(&["DATASET", "NEW VERSION", "REPLACES", "EFFECTIVE FROM", "REGISTERED"]);
    for n in notices {
        table.row(vec![
            n.dataset.clone(),
            n.catalog_version.to_string(),
            n.previous_version.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            when(&n.effective_from),
            when(&n.registered_at),
        ]);
    }
    table.render()
}

/// Audit entries as the node returned them (newest first).
pub fn audit_entries(entries: &[AuditLine]) -> String {
    if entries.is_empty() {
        return "no audit entries match\n".to_owned();
    }
    let mut table = Table::new(&["SEQ", "TIME", "KIND", "OUTCOME", "ACTOR", "DATASET", "REASON"]);
    for e in entries {
        table.row(vec![
            e.seq.to_string(),
            ferry_control::receipt::utc(e.time_ms),
            e.kind.clone(),
            e.outcome.clone(),
            format!("{}/{}/{}", e.actor.department, e.actor.role, e.actor.name),
            e.dataset.clone().unwrap_or_else(|| "-".to_owned()),
            e.reason.clone(),
        ]);
    }
    table.render()
}

/// What a problem in an audit log means, in words.
pub fn problem(p: &Problem) -> String {
    let seq = p.seq;
    let n = |key: &str| p.number(key).map_or_else(|| "?".to_owned(), |v| v.to_string());
    match p.problem.as_str() {
        "hash-mismatch" => format!("entry {seq} was modified: its stored hash is not the hash of its fields"),
        "prev-hash-mismatch" => {
            format!("entry {seq} does not follow its predecessor: an entry before it was inserted or removed")
        }
        "missing" => {
            format!("entry {seq} is missing (the next stored entry is {}): entries were deleted", n("found"))
        }
        "unexpected-seq" => {
            format!(
                "entry {seq} repeats or goes back after entry {}: entries were inserted or reordered",
                n("previous")
            )
        }
        "malformed" => format!("entry {seq} cannot be read: {}", p.text("what").unwrap_or("?")),
        "truncated" => format!(
            "the log ends before entry {seq}, but a signed checkpoint covers entry {}: it was truncated",
            n("checkpoint_seq")
        ),
        "checkpoint-mismatch" => format!(
            "entry {seq} differs from its signed checkpoint: an entry from {} to {seq} was changed and the chain recomputed",
            n("since_seq")
        ),
        "checkpoint-signature" => {
            format!(
                "the checkpoint at entry {seq} is not validly signed: {}",
                p.text("reason").unwrap_or("?")
            )
        }
        "checkpoint-body" => format!("the checkpoint at entry {seq} does not say what its signed body says"),
        other => format!("{other} at entry {seq}"),
    }
}

/// A verification: intact, or the first bad entry first and loud.
pub fn verification(v: &Verification) -> String {
    let last = match (v.last_seq, &v.last_hash) {
        (Some(seq), Some(hash)) => {
            format!("last entry {seq}, hash {}…", hash.chars().take(16).collect::<String>())
        }
        _ => "empty log".to_owned(),
    };
    let counts = format!(
        "{} entries ({last}); {} signed checkpoints, {} valid",
        v.entries, v.checkpoints, v.checkpoints_valid
    );
    let Some((first, rest)) = v.problems.split_first() else {
        return format!("audit log intact: {counts}\n");
    };
    let mut out =
        format!("AUDIT LOG NOT INTACT\n  FIRST BAD ENTRY: seq {}\n  {}\n", first.seq, problem(first));
    let _ = writeln!(out, "  read: {counts}");
    if !rest.is_empty() {
        out.push_str("  further problems:\n");
        for p in rest {
            let _ = writeln!(out, "    seq {}: {}", p.seq, problem(p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::view::parse;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["wide-cell".into(), "x".into()]);
        table.row(vec!["b".into()]);
        assert_eq!(table.render(), "A          LONGER\nwide-cell  x\nb\n");
    }

    #[test]
    fn utc_times_read_plainly() {
        assert_eq!(when("2027-03-06T00:00:00Z"), "2027-03-06 00:00:00 UTC");
        assert_eq!(when("2027-03-06T08:00:00+08:00"), "2027-03-06 08:00:00+08:00");
    }

    #[test]
    fn a_compliance_refusal_lists_every_violation_with_rule_and_field() {
        let error: ApiError = serde_json::from_value(json!({
            "code": "compliance-failed", "message": "…",
            "detail": {"violations": [
                {"rule": "C002", "field": "share-type", "message": "base data must be unconditional"},
                {"rule": "C005", "field": "columns", "message": "no key"},
            ]},
        }))
        .expect("api error");
        assert_eq!(refusal_summary(&error), "refused: the compliance check failed (2 violations)");
        let details = refusal_details(&error).expect("details");
        assert!(details.contains("C002 base-data-unconditional  share-type"), "{details}");
        assert!(details.contains("C005 information-items"), "{details}");
        assert!(details.contains("no key"), "{details}");
        assert_eq!(refusal_status(&error), ExitStatus::ComplianceFailed);
    }

    #[test]
    fn a_too_early_refusal_names_the_earliest_date() {
        let error: ApiError = serde_json::from_value(json!({
            "code": "too-early", "message": "too early", "detail": {"earliest": "2027-03-06T07:00:00Z"},
        }))
        .expect("api error");
        assert!(refusal_summary(&error).contains("earliest allowed is 2027-03-06 07:00:00 UTC"));
        assert!(refusal_details(&error).expect("details").contains("2027-03-06 07:00:00 UTC"));
        let forbidden = ApiError::new(ApiCode::Forbidden, "zhejiang may not register for ministry");
        assert_eq!(
            refusal_summary(&forbidden),
            "refused (forbidden): zhejiang may not register for ministry"
        );
        assert_eq!(refusal_details(&forbidden), None);
    }

    #[test]
    fn a_registration_shows_version_date_notices_and_deadline() {
        let answer: Registration = parse(json!({"registered": {
            "dataset": "vehicle-registry", "catalog_version": 2, "effective_from": "2027-03-06T00:00:00Z",
            "compliance": {"violations": []}, "receipt_kind": null, "connection_deadline": "2027-06-06T00:00:00Z",
            "items_changed": true, "notified": ["zhejiang", "jiangsu"]}, "receipts": []}))
        .expect("parses");
        let text = registration(&answer);
        assert!(text.starts_with("registered vehicle-registry, catalog version 2\n"), "{text}");
        assert!(text.contains("effective from:       2027-03-06 00:00:00 UTC"), "{text}");
        assert!(text.contains("consumers notified:   zhejiang, jiangsu"), "{text}");
        assert!(text.contains("connection deadline:  2027-06-06 00:00:00 UTC"), "{text}");
        assert!(text.contains("information items:    changed"), "{text}");
    }

    #[test]
    fn a_broken_log_names_the_first_bad_entry_first() {
        let report: Verification = parse(json!({
            "entries": 9, "last_seq": 9, "last_hash": "00112233445566778899", "checkpoints": 1, "checkpoints_valid": 1,
            "problems": [{"seq": 4, "problem": "hash-mismatch"},
                         {"seq": 8, "problem": "checkpoint-mismatch", "since_seq": 1}],
        }))
        .expect("parses");
        let text = verification(&report);
        assert!(
            text.starts_with("AUDIT LOG NOT INTACT\n  FIRST BAD ENTRY: seq 4\n  entry 4 was modified"),
            "{text}"
        );
        assert!(
            text.contains("seq 8: entry 8 differs from its signed checkpoint: an entry from 1 to 8"),
            "{text}"
        );
        let intact = Verification { problems: Vec::new(), ..report };
        assert!(
            verification(&intact)
                .starts_with("audit log intact: 9 entries (last entry 9, hash 0011223344556677…)")
        );
    }

    #[test]
    fn a_diff_shows_fields_and_items() {
        let d: Diff = parse(json!({"dataset": "v", "from": 1, "to": 2,
            "fields": [{"field": "share-type", "before": "conditional", "after": "unconditional"},
                       {"field": "catalog.legal-basis", "before": null, "after": "Art. 5"}],
            "items": [{"change": "removed", "name": "old", "before": "int32"}], "items_changed": true}))
        .expect("parses");
        let text = diff(&d);
        assert!(text.contains("  share-type: \"conditional\" -> \"unconditional\"\n"), "{text}");
        assert!(text.contains("  catalog.legal-basis: (not set) -> \"Art. 5\"\n"), "{text}");
        assert!(text.contains("  - old: int32\n"), "{text}");
        let same: Diff = parse(json!({"dataset": "v", "from": 1, "to": 1})).expect("parses");
        assert!(diff(&same).ends_with("no differences\n"));
    }

    #[test]
    fn empty_answers_say_so() {
        assert_eq!(notices(&[]), "no change notices for your department\n");
        assert_eq!(audit_entries(&[]), "no audit entries match\n");
        assert_eq!(list(&[]), "the catalog holds no entry you may see\n");
    }
}
