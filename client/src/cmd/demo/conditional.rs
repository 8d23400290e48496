//! The demo's conditional exchange (issue 19): Zhejiang shares its vehicle owners' registry
//! conditionally; Guangdong applies for some columns and rows, technical support (the
//! ministry) and the provider approve, Guangdong pulls only what was granted from Zhejiang's
//! node, the ministry revokes the grant, and Guangdong's next pull is refused with the reason.

use super::cluster::DemoNode;
use anyhow::Context;
use ferry_client::conn::{ClientError, Connector};
use ferry_client::control::{ControlRequest, call};
use ferry_client::publish::publish_file;
use ferry_client::synth;
use ferry_client::transfer::{self, PullError, PullOptions, PullRequest, Quiet};
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::{DatasetId, ServiceMethod, SourceFormat};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DATASET: &str = "vehicle-owners";
const COLUMNS: [&str; 4] = ["vin", "plate", "seats", "status"];
const ROWS: &str = "seats BETWEEN 2 AND 5";

/// Runs the exchange between `ministry`, `provider` (Zhejiang) and `consumer` (Guangdong).
pub async fn exchange(
    ministry: &DemoNode,
    provider: &DemoNode,
    consumer: &DemoNode,
    root: &Path,
) -> anyhow::Result<()> {
    println!("\nconditional data: {} shares {DATASET} on conditions", provider.name);
    let dataset = DatasetId::new(DATASET)?;
    let definition = synth::vehicle_registry_definition(DATASET, &provider.name)
        .replace("share-type = \"unconditional\"", "share-type = \"conditional\"");
    let entry = format!(
        "{definition}\n[catalog]\nclassification = \"operations/vehicle-owners\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"provincial transport departments\"\nshare-conditions = \"road safety supervision only\"\n\
         methods = [\"download\"]\n"
    );
    ask(
        &provider.operator,
        ministry,
        ControlRequest::CatalogRegister { document: entry, effective_from: None },
    )
    .await?;
    let export = root.join("exports").join("vehicle-owners.parquet");
    synth::write_parquet(&export, synth::vehicle_registry_schema(), synth::vehicle_registry(7, 20_000))?;
    let session = connect(&provider.operator, provider).await?;
    let published = wait_for(|| async {
        let definition = synth::vehicle_registry_definition(DATASET, &provider.name);
        publish_file(&session, &export, definition, SourceFormat::Parquet).await.ok()
    })
    .await?;
    session.close();
    println!("  {} published {DATASET} {}: {} rows", provider.name, published.version, published.rows);

    let apply = ControlRequest::Apply {
        dataset: dataset.clone(),
        purpose: "road safety supervision".into(),
        methods: vec![ServiceMethod::Download],
        columns: Some(COLUMNS.iter().map(|c| (*c).to_owned()).collect()),
        rows: Some(ROWS.into()),
        key: "demo-owners".into(),
    };
    let submitted = ask(&consumer.operator, ministry, apply).await?;
    let application = submitted["application"]["id"].as_u64().context("no application id")?;
    println!(
        "  {} applied for columns {} and rows {ROWS}: application {application}",
        consumer.name,
        COLUMNS.join(", ")
    );
    let approve = ControlRequest::ReviewApprove { application, note: None };
    ask(&ministry.operator, ministry, approve.clone()).await?;
    let decided = ask(&provider.operator, ministry, approve).await?;
    let grant = decided["grant"].as_u64().context("no grant")?;
    println!("  technical support passed the first review, {} approved: grant {grant}", provider.name);

    let creds = Credentials::load(&consumer.operator)?;
    let dest = root.join("downloads-conditional");
    let report = wait_for(|| async { pull(&creds, provider, &dataset, &dest).await.ok() }).await?;
    let columns = held_columns(&report.path)?;
    println!(
        "  {} pulled {} rows x {} columns ({}) from {}'s node: only what grant {grant} allows",
        consumer.name,
        report.rows,
        columns.len(),
        columns.join(", "),
        provider.name
    );

    ask(
        &ministry.operator,
        ministry,
        ControlRequest::GrantRevoke { grant, reason: "demo: purpose fulfilled".into() },
    )
    .await?;
    let revoked = Instant::now();
    let refusal = loop {
        match pull(&creds, provider, &dataset, &root.join("downloads-after-revocation")).await {
            Err(PullError::Client(ClientError::Remote { message, .. })) => break message,
            _ if revoked.elapsed() > Duration::from_secs(10) => {
                anyhow::bail!("the revocation did not take effect")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    println!(
        "  the ministry revoked grant {grant}; {:.0} ms later {}'s node refused the next pull:\n    {refusal}",
        revoked.elapsed().as_secs_f64() * 1e3,
        provider.name
    );
    Ok(())
}

async fn connect(who: &TlsPaths, node: &DemoNode) -> anyhow::Result<ferry_client::conn::Session> {
    let creds = Credentials::load(who)?;
    Ok(Connector::new(&creds, node.node_addr())?.connect().await?)
}

async fn ask(
    who: &TlsPaths,
    ministry: &DemoNode,
    request: ControlRequest,
) -> anyhow::Result<serde_json::Value> {
    let session = connect(who, ministry).await?;
    let answer = call(&session, &request).await;
    session.close();
    answer.with_context(|| format!("{} at the ministry", request.op()))
}

async fn pull(
    creds: &Credentials,
    node: &DemoNode,
    dataset: &DatasetId,
    dest: &Path,
) -> Result<transfer::SyncReport, PullError> {
    let connector = Connector::new(creds, node.node_addr())?;
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: dataset.clone(), version: None };
    let result =
        transfer::sync(&connector, creds, &request, dest, &PullOptions::default(), Arc::new(Quiet), cancel)
            .await;
    connector.shutdown().await;
    result
}

/// Retries `attempt` for up to 10 s while the nodes take up the new policy.
async fn wait_for<T, F: Future<Output = Option<T>>>(mut attempt: impl FnMut() -> F) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = attempt().await {
            return Ok(value);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the nodes did not take up the policy within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The column names of the Parquet files the consumer holds.
fn held_columns(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let batches = ferry_tables::source::read_parquet_files(&files[..1.min(files.len())])?;
    let batch = batches.first().context("no rows")?;
    Ok(batch.schema().fields().iter().map(|f| f.name().clone()).collect())
}
