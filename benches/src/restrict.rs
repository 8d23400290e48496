//! `ferry-bench restrict`: the time a node takes to build the restricted version a conditional
//! grant is served (only some columns and rows of a vehicle registry), beside the time the same
//! node took to publish the full table, on one node over loopback.
//!
//! 1. publish: a generated registry of `--rows` rows (Parquet export) through `ferry publish`'s
//!    client code to a node: upload, sort, canonical write, hashing, signing, commit;
//! 2. restrict: a consumer whose grant allows 5 of the 15 columns and the rows of
//!    `registered_on >= DATE '2015-01-01' AND seats BETWEEN 2 AND 5` asks for the manifest; the
//!    node builds the restricted version on that first request (read the table, filter, canonical
//!    write, hashing, signing, commit) and answers.
//!
//! Last line: `restrict_s=… publish_s=… rows=…`.

use anyhow::{Context, Result, bail};
use ferry_client::publish::publish_file;
use ferry_proto::policy::Restriction;
use ferry_proto::{DatasetId, DeptId, Manifest, Message, Role, ServiceMethod, SourceFormat};
use ferry_testkit::grant::OneConditionalGrant;
use ferry_testkit::{NodeSpec, TestNode, TestPki, vehicle_export};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct RestrictArgs {
    /// Rows of the vehicle registry.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Seed of the generated registry.
    #[arg(long, default_value_t = 20_250_101)]
    pub seed: u64,
}

const CONSUMER: &str = "guangdong";

fn restriction() -> Result<Restriction> {
    let rows = ferry_proto::filter::RowFilter::parse(
        "registered_on >= DATE '2015-01-01' AND seats BETWEEN 2 AND 5",
    )?;
    let columns = ["vin", "plate", "seats", "registered_on", "status"];
    Ok(Restriction {
        columns: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
        rows: Some(rows.to_string()),
    })
}

pub fn run(args: &RestrictArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: &RestrictArgs) -> Result<()> {
    let pki = TestPki::new();
    let mut node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    node.stop().await;
    let grant =
        OneConditionalGrant { grant: 1, consumer: DeptId::new(CONSUMER)?, restriction: restriction()? };
    let running =
        ferry_daemon::node::start_with(node.config.clone(), move |_, _, _, _| Arc::new(grant)).await?;
    node.running = Some(running);

    let scratch = tempfile::tempdir()?;
    let (path, definition) =
        vehicle_export(scratch.path(), "vehicle-registry", &node.dept, args.rows, args.seed);
    let session = node.operator_session().await;
    let started = Instant::now();
    let published = publish_file(&session, &path, definition, SourceFormat::Parquet).await?;
    let publish_s = started.elapsed().as_secs_f64();
    session.close();
    eprintln!("published {} rows in {publish_s:.2} s", published.rows);

    let consumer = pki.issue("gd-analyst", CONSUMER, Role::Operator);
    let session = ferry_testkit::connect(&consumer, node.node_addr()).await;
    let started = Instant::now();
    let dataset = DatasetId::new("vehicle-registry")?;
    let answer = session
        .request(&Message::GetManifest { dataset, version: None, method: ServiceMethod::Download })
        .await
        .context("asking for the restricted manifest")?;
    let restrict_s = started.elapsed().as_secs_f64();
    session.close();
    let Message::ManifestData { signed } = answer else { bail!("unexpected answer {answer:?}") };
    let manifest = Manifest::from_json(&signed.body)?;
    if manifest.derived_from.is_none() {
        bail!("the consumer was not served a restricted version");
    }
    eprintln!(
        "restricted version: {} of {} rows, {} bytes (full table {} bytes), built in {restrict_s:.2} s",
        manifest.row_count,
        published.rows,
        manifest.table_bytes(),
        published.bytes
    );
    node.stop().await;
    println!("restrict_s={restrict_s:.3} publish_s={publish_s:.3} rows={}", args.rows);
    Ok(())
}
