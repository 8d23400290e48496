//! The demo's governance steps, as a provider and its consumers meet them: the ministry
//! registers its vehicle registry in the catalog (receipts printed, verified against the CA),
//! reports the first published version (formal receipt), a province's attempt to publish the
//! ministry's dataset at its own node is refused, and a schema change of the dataset in use is
//! refused when dated too early, then registered at the earliest allowed date, and the
//! provinces read the notice.
//!
//! Neighbours: [`super`] (the order of the steps), `ferry_client::control` (the control calls,
//! answer views and text), `deploy/catalog/vehicle-registry.toml` (the entry, compiled in so
//! the demo needs no file).

use super::cluster::DemoNode;
use anyhow::{Context, bail};
use ferry_client::conn::{Connector, Session};
use ferry_client::control::view::{self, Notice, ReceiptFile, Registration};
use ferry_client::control::{ControlCallError, ControlRequest, call, receipt_verifier, render, save_receipt};
use ferry_control::api::ApiCode;
use ferry_control::receipt::render_verified_text;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::{DatasetId, VersionNo};
use std::path::Path;
use time::format_description::well_known::Rfc3339;

/// The catalog entry of the demo's dataset (provider `ministry`), as shipped in `deploy/`.
pub const ENTRY: &str = include_str!("../../../../deploy/catalog/vehicle-registry.toml");

/// The information item the schema change adds.
const NEW_ITEM: &str = "\n[[columns]]\nname = \"body_colour\"\ntype = \"utf8\"\nkey = false\n\
    nullable = true\ndescription = \"车身颜色 Body colour\"\n";

/// Registers `document` at once and prints the registration and the receipts it issued.
pub async fn register(
    session: &Session,
    document: &str,
    operator: &TlsPaths,
    receipts: &Path,
) -> anyhow::Result<u64> {
    let request = ControlRequest::CatalogRegister { document: document.to_owned(), effective_from: None };
    let registration: Registration = view::parse(call(session, &request).await?)?;
    print!("{}", indent(&render::registration(&registration)));
    deliver(&registration.receipts, operator, receipts)?;
    Ok(registration.registered.catalog_version)
}

/// The publishing node told the control plane that `version` is published (data connected,
/// Art. 20); prints the formal receipt that issued (asking for the dataset's receipts also
/// issues any that are due, so this does not race the node's report).
pub async fn report_publication(
    session: &Session,
    dataset: &DatasetId,
    version: VersionNo,
    operator: &TlsPaths,
    receipts: &Path,
) -> anyhow::Result<()> {
    let request = ControlRequest::Receipts { dataset: dataset.clone() };
    let all: Vec<ReceiptFile> = view::parse(call(session, &request).await?)?;
    let formal: Vec<ReceiptFile> =
        all.into_iter().filter(|r| r.receipt.kind == ferry_control::receipt::ReceiptKind::Formal).collect();
    if formal.is_empty() {
        println!("  (no formal receipt yet for {dataset} {version})");
    }
    deliver(&formal, operator, receipts)
}

/// Verifies each receipt against the CA (a control-plane key), writes it and prints it.
fn deliver(issued: &[ReceiptFile], operator: &TlsPaths, dir: &Path) -> anyhow::Result<()> {
    let verifier = receipt_verifier(&operator.ca, operator.crl.as_deref())?;
    std::fs::create_dir_all(dir)?;
    for receipt in issued {
        let verified = ferry_client::control::verify_receipt(receipt.file.as_bytes(), &verifier)
            .with_context(|| format!("receipt {} does not verify", receipt.receipt.id.as_str()))?;
        let path = save_receipt(dir, receipt.receipt.id.as_str(), &receipt.file)?;
        println!("  receipt {} (verified against the CA):", path.display());
        print!("{}", indent(&render_verified_text(&verified)));
    }
    Ok(())
}

/// A new catalog version of the entry with one more information item, first dated a month
/// ahead (refused: the dataset is in use), then from the first whole day the refusal allows
/// (the earliest instant moves on with the clock, so a retry at that very instant is late).
pub async fn change_schema(session: &Session, operator: &TlsPaths, receipts: &Path) -> anyhow::Result<()> {
    let document = with_new_item(ENTRY)?;
    let too_soon = (time::OffsetDateTime::now_utc() + time::Duration::days(30)).format(&Rfc3339)?;
    let request = ControlRequest::CatalogRegister {
        document: document.clone(),
        effective_from: Some(too_soon.clone()),
    };
    let earliest = match call(session, &request).await {
        Err(ControlCallError::Refused(api)) if api.code == ApiCode::TooEarly => {
            println!("  dated {}: {}", render::when(&too_soon), render::refusal_summary(&api));
            api.detail
                .as_ref()
                .and_then(|d| d.get("earliest"))
                .and_then(|e| e.as_str())
                .map(str::to_owned)
                .context("the refusal names no earliest date")?
        }
        Err(e) => return Err(e.into()),
        Ok(_) => bail!("a change of the items of a dataset in use was accepted a month ahead"),
    };
    let day = first_day_from(&earliest)?;
    println!(
        "  registered again, effective from {day} (00:00 China Standard Time), the first whole day allowed:"
    );
    let request = ControlRequest::CatalogRegister { document, effective_from: Some(day) };
    let registration: Registration = view::parse(call(session, &request).await?)?;
    print!("{}", indent(&render::registration(&registration)));
    deliver(&registration.receipts, operator, receipts)
}

/// The change notices addressed to the department of `session`'s certificate.
pub async fn notices(session: &Session) -> anyhow::Result<String> {
    let notices: Vec<Notice> = view::parse(call(session, &ControlRequest::Notices {}).await?)?;
    Ok(render::notices(&notices))
}

/// The first calendar day (`YYYY-MM-DD`, China Standard Time, as `--effective-from` reads it)
/// that starts at or after the RFC 3339 instant `earliest`.
fn first_day_from(earliest: &str) -> anyhow::Result<String> {
    let cst = time::UtcOffset::from_hms(8, 0, 0)?;
    let at = time::OffsetDateTime::parse(earliest, &Rfc3339)
        .with_context(|| format!("the earliest date {earliest:?} is not RFC 3339"))?
        .to_offset(cst);
    let day = if at.time() == time::Time::MIDNIGHT {
        at.date()
    } else {
        at.date().next_day().context("date out of range")?
    };
    Ok(format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day()))
}

/// `document` with [`NEW_ITEM`] as its last information item and its definition version
/// raised by one.
fn with_new_item(document: &str) -> anyhow::Result<String> {
    let catalog = document.find("\n[catalog]").context("the entry has no [catalog] table")?;
    let (items, rest) = document.split_at(catalog);
    let bumped = items.replacen("definition-version = 1\n", "definition-version = 2\n", 1);
    if bumped == items {
        bail!("the entry's definition-version is not 1");
    }
    Ok(format!("{bumped}{NEW_ITEM}{rest}"))
}

/// Indents every line by two spaces, under the step that printed it.
pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Each province applies for `dataset` at the ministry (unconditional: granted at once, Art. 12)
/// and waits until every node enforces the grants; one line per province.
pub async fn apply_for(
    ministry: &DemoNode,
    provinces: &[DemoNode],
    dataset: &DatasetId,
) -> anyhow::Result<()> {
    let nodes: Vec<&DemoNode> = std::iter::once(ministry).chain(provinces).collect();
    // Each grant is one new policy serial; every node must reach the last one.
    let before = super::cluster::policy_serial(ministry)?;
    for p in provinces {
        let creds = Credentials::load(&p.operator)?;
        let session = Connector::new(&creds, ministry.node_addr())?.connect().await?;
        let request = ControlRequest::Apply {
            dataset: dataset.clone(),
            purpose: "road safety statistics".into(),
            methods: vec![
                ferry_proto::ServiceMethod::Download,
                ferry_proto::ServiceMethod::Subscription,
                ferry_proto::ServiceMethod::OnlineQuery,
            ],
            columns: None,
            rows: None,
            key: format!("demo-{}-{dataset}", p.name),
        };
        let answer = call(&session, &request).await;
        session.close();
        let answer = answer?;
        let grant = answer["application"]["grant"].as_u64().context("the application was not granted")?;
        println!("{} applied for {dataset} (unconditional): granted at once, grant {grant}", p.name);
    }
    let last = before + provinces.len() as u64;
    super::cluster::await_policy(&nodes, &vec![last - 1; nodes.len()]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_tables::catalog::{CatalogEntry, CheckContext, check};

    #[test]
    fn the_schema_change_adds_one_item_and_still_passes_the_check() {
        let old = CatalogEntry::parse_toml(ENTRY).expect("the shipped entry parses");
        let new = CatalogEntry::parse_toml(&with_new_item(ENTRY).expect("rewritten")).expect("parses");
        assert_eq!(new.definition.columns.len(), old.definition.columns.len() + 1);
        assert_ne!(new.items_fingerprint(), old.items_fingerprint());
        let ministry = ferry_proto::DeptId::new("ministry").expect("dept");
        assert!(check(&new, &CheckContext { registrant: Some(ministry) }).passed());
    }

    #[test]
    fn the_first_allowed_day_starts_at_or_after_the_earliest_instant() {
        assert_eq!(first_day_from("2027-03-06T07:47:50.5268Z").expect("day"), "2027-03-07");
        assert_eq!(first_day_from("2027-03-06T17:00:00Z").expect("day"), "2027-03-08");
        assert_eq!(first_day_from("2027-03-06T16:00:00Z").expect("day"), "2027-03-07");
        assert!(first_day_from("next spring").is_err());
    }

    #[test]
    fn the_entry_matches_the_generated_vehicles() {
        let entry = CatalogEntry::parse_toml(ENTRY).expect("parses");
        assert_eq!(entry.provider().as_str(), super::super::MINISTRY);
        assert_eq!(entry.dataset().as_str(), super::super::DATASET);
        let generated = ferry_client::synth::vehicle_registry_schema();
        let items: Vec<_> = entry.definition.columns.iter().map(|c| c.name.as_str()).collect();
        let fields: Vec<_> = generated.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(items, fields);
    }
}
