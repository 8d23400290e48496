//! `ferry demo`: a ministry and two provinces on loopback exchange a generated vehicle registry
//! under the ministry's catalog.
//!
//! Creates a PKI, starts three `ferryd` processes (the ministry runs the control plane, the
//! provinces follow its signed policy), registers the dataset in the catalog and prints the
//! receipts, publishes a generated export at the ministry, shows a province's publish of the
//! ministry's dataset refused, has both provinces apply for it (granted at once) and pull it
//! node-to-node (verified chunk by chunk), checks every stored file against the signed
//! manifest, pulls it once more as a user would, runs a conditional exchange (an application
//! for some columns and rows, two approvals, a restricted pull, a revocation and the refused
//! next pull: `conditional.rs`), registers a schema change (change control: 3 months ahead for a dataset in use) and
//! shows the provinces' notice, has both provinces subscribe their nodes to the registry and
//! publishes the next day's export, which reaches both by itself as a delta, runs a scheduled
//! download once and looks one vehicle up by its plate with an online query (`services.rs`), and
//! prints a summary with sizes, throughput and where everything is.

mod catalog;
mod cluster;
mod conditional;
mod services;

use anyhow::{Context, bail};
use clap::Args;
use cluster::{DemoNode, Governance};
use ferry_client::conn::Connector;
use ferry_client::publish::{Published, publish_file};
use ferry_client::synth;
use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet};
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Manifest, Message, SignedManifest, SourceFormat, VersionNo};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Rows of the generated vehicle registry.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Working directory (default: a new directory under the system temp dir). It is kept.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 20261130)]
    pub seed: u64,
}

const MINISTRY: &str = "ministry";
const PROVINCES: [&str; 2] = ["guangdong", "zhejiang"];
const DATASET: &str = "vehicle-registry";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&root)?;
    let root = root.canonicalize()?;
    let pki = root.join("pki");
    println!("ferry demo in {}", root.display());
    cluster::make_pki(&pki, &[MINISTRY, PROVINCES[0], PROVINCES[1]])?;
    let ferryd = cluster::ferryd_binary()?;

    let ministry = cluster::start_node(&ferryd, &root, &pki, MINISTRY, &[], Governance::Control)?;
    let mut provinces = Vec::new();
    for name in PROVINCES {
        let peers = [(MINISTRY, ministry.addr)];
        let follow = Governance::Follow { ministry: MINISTRY };
        provinces.push(cluster::start_node(&ferryd, &root, &pki, name, &peers, follow)?);
    }
    println!(
        "nodes: {} on {} (control plane; metrics http://{}/metrics)",
        ministry.name, ministry.addr, ministry.admin
    );
    for p in &provinces {
        println!(
            "       {} on {} (follows the ministry's policy; metrics http://{}/metrics)",
            p.name, p.addr, p.admin
        );
    }
    let result = exchange(&args, &root, &ministry, &provinces).await;
    for node in provinces.into_iter().chain([ministry]) {
        node.stop()?;
    }
    result
}

async fn exchange(
    args: &DemoArgs,
    root: &Path,
    ministry: &DemoNode,
    provinces: &[DemoNode],
) -> anyhow::Result<()> {
    // 1. The ministry's export: a generated vehicle registry, as a province system would write it.
    let exports = root.join("exports");
    std::fs::create_dir_all(&exports)?;
    let export = exports.join("vehicle-registry.parquet");
    let t = Instant::now();
    let registry: Vec<_> = synth::vehicle_registry(args.seed, args.rows).collect();
    let rows = synth::write_parquet(&export, synth::vehicle_registry_schema(), registry.iter().cloned())?;
    let export_bytes = std::fs::metadata(&export)?.len();
    println!("generated {rows} vehicles ({}) in {:.1} s", mb(export_bytes), t.elapsed().as_secs_f64());

    // 2. The ministry registers the dataset in the catalog, then publishes it with an operator
    //    certificate and reports the publication (data connected: the formal receipt).
    let receipts = root.join("receipts");
    let Published { dataset, version, rows, bytes, .. } =
        register_and_publish(ministry, provinces, &export, &receipts).await?;
    refused_publish(&provinces[0], &export).await?;

    // 3. Both provinces apply for it (granted at once), then pull it from the ministry, node to
    //    node, at the same time.
    catalog::apply_for(ministry, provinces, &dataset).await?;
    let t = Instant::now();
    let lines = province_pulls(provinces, &dataset, version).await?;
    let both_s = t.elapsed().as_secs_f64();
    println!(
        "\n{} pulled {version} from the ministry node to node in {both_s:.2} s (their grants allowed it: \
         unconditional data, granted on application); the dataset is now in use by other departments",
        PROVINCES.join(" and ")
    );

    // 4. A user at Guangdong downloads the version from its province node.
    let downloads = root.join("downloads");
    let user = Credentials::load(&provinces[0].operator)?;
    let connector = Connector::new(&user, provinces[0].node_addr())?;
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new(DATASET)?, version: Some(version) };
    let report = transfer::sync(
        &connector,
        &user,
        &request,
        &downloads,
        &PullOptions::default(),
        Arc::new(Quiet),
        cancel.clone(),
    )
    .await?;

    // 4b. Conditional data: an application, two approvals, a restricted pull, a revocation.
    conditional::exchange(ministry, &provinces[1], &provinces[0], root).await?;

    // 5. The provinces pulled it, so the dataset is in use: a schema change needs 3 months.
    schema_change(ministry, provinces, &receipts).await?;

    // 6. Both provinces subscribe their nodes (Art. 10, 数据订阅): the next day's version
    //    reaches them by itself.
    services::subscribe(provinces, &dataset).await?;
    let received_before =
        provinces.iter().map(services::received_bytes).collect::<anyhow::Result<Vec<_>>>()?;

    // 7. The next day's export: about 1% of the vehicles changed. ferry computes the delta.
    let edited = synth::edit_vehicle_registry(&registry, args.seed + 1, 0.01)?;
    drop(registry);
    let plate = first_plate(&edited.batches)?;
    let export2 = exports.join("vehicle-registry-day2.parquet");
    synth::write_parquet(&export2, synth::vehicle_registry_schema(), edited.batches)?;
    let ops = Credentials::load(&ministry.operator)?;
    let session = Connector::new(&ops, ministry.node_addr())?.connect().await?;
    let definition = synth::vehicle_registry_definition(DATASET, MINISTRY);
    let t = Instant::now();
    let day2 = publish_file(&session, &export2, definition, SourceFormat::Parquet).await?;
    let published_at = Instant::now();
    session.close();
    println!(
        "\npublished {} {} in {:.1} s: {} updated, {} inserted, {} deleted vehicles",
        day2.dataset,
        day2.version,
        t.elapsed().as_secs_f64(),
        edited.updated,
        edited.inserted,
        edited.deleted
    );
    let delta_lines =
        services::await_subscribers(provinces, &dataset, day2.version, published_at, &received_before, bytes)
            .await?;
    for line in &delta_lines {
        println!("{line}");
    }

    // 8. A scheduled download (数据下载) at Guangdong, run once now; an online query (联机查询)
    //    for one vehicle by its plate at Zhejiang's node.
    let schedule_line = services::scheduled_download(&provinces[0], &dataset, root).await?;
    println!("{schedule_line}");
    let query_line = services::lookup_plate(&provinces[1], &dataset, &plate).await?;
    println!("{query_line}");
    let request = PullRequest { dataset: DatasetId::new(DATASET)?, version: Some(day2.version) };
    let update = transfer::sync(
        &connector,
        &user,
        &request,
        &downloads,
        &PullOptions::default(),
        Arc::new(Quiet),
        cancel,
    )
    .await?;

    println!("\nsummary");
    println!(
        "  dataset    {dataset} {version}: {rows} rows, {} Parquet (export was {})",
        mb(bytes),
        mb(export_bytes)
    );
    println!("  ministry   {}", ministry.data_dir.display());
    println!("  provinces  pulled concurrently in {both_s:.2} s, mutual TLS, every chunk BLAKE3-verified:");
    for line in lines {
        println!("{line}");
    }
    println!(
        "  download   {} to {} in {:.2} s = {:.0} MB/s",
        mb(report.fetched_bytes),
        report.path.display(),
        report.seconds,
        report.fetched_bytes as f64 / report.seconds / 1e6
    );
    println!("\nnext day: {} is a delta of {}", day2.version, version);
    for line in delta_lines {
        println!("{line}");
    }
    println!("{schedule_line}");
    println!("{query_line}");
    println!(
        "  download   {} -> {}: fetched {} = {:.2}% of the {} table, applied and checked against the publisher's hashes -> {}",
        version,
        update.version,
        mb(update.fetched_bytes),
        100.0 * update.fetched_bytes as f64 / update.table_bytes.max(1) as f64,
        mb(update.table_bytes),
        update.path.display()
    );
    println!(
        "  receipts   {}/receipts; control store {}/{MINISTRY}/state/control.db",
        root.display(),
        root.display()
    );
    println!("  logs       {}/<node>/ferryd.log; certificates in {}/pki", root.display(), root.display());
    Ok(())
}

/// Registers the catalog entry, publishes the export at the ministry and reports it published,
/// printing the receipts as they are issued.
async fn register_and_publish(
    ministry: &DemoNode,
    provinces: &[DemoNode],
    export: &Path,
    receipts: &Path,
) -> anyhow::Result<Published> {
    let ops = Credentials::load(&ministry.operator)?;
    let session = Connector::new(&ops, ministry.node_addr())?.connect().await?;
    println!(
        "\ncatalog: the ministry registers {DATASET} (deploy/catalog/vehicle-registry.toml) at its control plane"
    );
    let nodes: Vec<&DemoNode> = std::iter::once(ministry).chain(provinces).collect();
    let before = nodes.iter().map(|n| cluster::policy_serial(n)).collect::<anyhow::Result<Vec<_>>>()?;
    catalog::register(&session, catalog::ENTRY, &ministry.operator, receipts).await?;
    cluster::await_policy(&nodes, &before).await?;
    println!("  every node enforces the new catalog state (signed policy snapshot)");
    let definition = synth::vehicle_registry_definition(DATASET, MINISTRY);
    let t = Instant::now();
    let published = publish_file(&session, export, definition, SourceFormat::Parquet).await?;
    println!(
        "\npublished {} {}: {} rows, {} key-sorted zstd Parquet in {:.1} s",
        published.dataset,
        published.version,
        published.rows,
        mb(published.bytes),
        t.elapsed().as_secs_f64()
    );
    println!(
        "catalog: the node reported {} published to the control plane (data connected)",
        published.version
    );
    catalog::report_publication(
        &session,
        &published.dataset,
        published.version,
        &ministry.operator,
        receipts,
    )
    .await?;
    session.close();
    Ok(published)
}

/// Every province node pulls `version` from the ministry at the same time; one summary line
/// each, after re-hashing the stored files against the manifest.
async fn province_pulls(
    provinces: &[DemoNode],
    dataset: &DatasetId,
    version: VersionNo,
) -> anyhow::Result<Vec<String>> {
    let mut pulls = Vec::new();
    for p in provinces {
        let creds = Credentials::load(&p.operator)?;
        let node = p.node_addr();
        let dataset = dataset.clone();
        pulls.push(tokio::spawn(async move {
            let session = Connector::new(&creds, node)?.connect().await?;
            let started = Instant::now();
            let answer = session
                .request(&Message::Replicate { peer: MINISTRY.into(), dataset, version: Some(version) })
                .await?;
            session.close();
            Ok::<_, anyhow::Error>((answer, started.elapsed().as_secs_f64()))
        }));
    }
    let mut lines = Vec::new();
    for (p, pull) in provinces.iter().zip(pulls) {
        let (answer, secs) = pull.await??;
        let Message::Replicated { bytes_fetched, files, .. } = answer else {
            bail!("{} answered oddly", p.name)
        };
        let stored = p.data_dir.join("datasets").join(DATASET).join(format!("v{}", version.get()));
        let verified = verify_stored(&stored)?;
        lines.push(format!(
            "  {:<10} {files} files, {} in {secs:.2} s = {:.0} MB/s; {verified} files re-hashed OK at {}",
            p.name,
            mb(bytes_fetched),
            bytes_fetched as f64 / secs / 1e6,
            stored.display()
        ));
    }
    Ok(lines)
}

/// The plate of the first vehicle of a generated table, for the demo's online query.
fn first_plate(batches: &[arrow::record_batch::RecordBatch]) -> anyhow::Result<String> {
    use arrow::array::{Array, AsArray};
    let batch = batches.iter().find(|b| b.num_rows() > 0).context("an empty table")?;
    let column = batch.column_by_name("plate").context("the table has no plate column")?;
    let plates = column.as_string_opt::<i32>().context("plate is not a string column")?;
    if plates.is_null(0) {
        bail!("the first vehicle has no plate");
    }
    Ok(plates.value(0).to_owned())
}

/// A Guangdong operator publishes the ministry's dataset at the Guangdong node: the node's
/// policy replica says the ministry provides it, so the node refuses.
async fn refused_publish(province: &DemoNode, export: &Path) -> anyhow::Result<()> {
    println!(
        "\nA {} operator publishes {DATASET} (provided by {MINISTRY}) at the {} node:",
        province.name, province.name
    );
    let creds = Credentials::load(&province.operator)?;
    let session = Connector::new(&creds, province.node_addr())?.connect().await?;
    let definition = synth::vehicle_registry_definition(DATASET, MINISTRY);
    let outcome = publish_file(&session, export, definition, SourceFormat::Parquet).await;
    session.close();
    match outcome {
        Ok(published) => {
            bail!("{} accepted {} {}; it must refuse", province.name, published.dataset, published.version)
        }
        Err(e) => println!("  refused: {e:#}"),
    }
    Ok(())
}

/// Registers a new catalog version with one more information item, dated too early and then
/// at the earliest allowed date, and prints the notice each province reads at the ministry.
async fn schema_change(ministry: &DemoNode, provinces: &[DemoNode], receipts: &Path) -> anyhow::Result<()> {
    println!(
        "\ncatalog: the ministry adds an information item (body_colour) to {DATASET}, which the provinces use"
    );
    let ops = Credentials::load(&ministry.operator)?;
    let session = Connector::new(&ops, ministry.node_addr())?.connect().await?;
    let changed = catalog::change_schema(&session, &ministry.operator, receipts).await;
    session.close();
    changed?;
    for p in provinces {
        let creds = Credentials::load(&p.operator)?;
        let session = Connector::new(&creds, ministry.node_addr())?.connect().await?;
        let notices = catalog::notices(&session).await;
        session.close();
        println!("  `ferry notices` as a {} operator:", p.name);
        print!("{}", catalog::indent(&notices?));
    }
    Ok(())
}

/// Re-hashes every file of a stored version against its manifest.
fn verify_stored(dir: &Path) -> anyhow::Result<usize> {
    let signed = SignedManifest::decode(&std::fs::read(dir.join("manifest.signed"))?)?;
    let manifest = Manifest::from_json(&signed.body)?;
    for f in &manifest.files {
        let path = dir.join(f.name.as_str());
        let hash = blake3::hash(&std::fs::read(&path).with_context(|| path.display().to_string())?);
        if hash.as_bytes() != &f.blake3.0 {
            bail!("{} does not match its manifest", path.display());
        }
    }
    Ok(manifest.files.len())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
