//! The demo's service methods (issue 20): both provinces subscribe their nodes to the registry,
//! so the next day's version reaches them by itself; a scheduled download runs once at
//! Guangdong into a directory; a Zhejiang operator looks one vehicle up by its plate with an
//! online query. Everything goes through the nodes' node calls and the query protocol, under the
//! grants the provinces applied for.

use super::cluster::DemoNode;
use super::{MINISTRY, mb};
use anyhow::{Context, bail};
use ferry_client::conn::{Connector, Session};
use ferry_client::control::node_call;
use ferry_client::query;
use ferry_net::tls::Credentials;
use ferry_proto::node_api::{
    NodeRequest, RunOutcome, ScheduleDefinition, ScheduleView, SubscriptionDefinition, SubscriptionView,
};
use ferry_proto::query::{QueryFormat, QuerySpec};
use ferry_proto::{DatasetId, VersionNo};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the demo waits for a subscriber or a scheduled run.
const WAIT: Duration = Duration::from_secs(60);

async fn operator_session(node: &DemoNode, at: &DemoNode) -> anyhow::Result<Session> {
    let creds = Credentials::load(&node.operator)?;
    Ok(Connector::new(&creds, at.node_addr())?.connect().await?)
}

async fn ask(node: &DemoNode, request: &NodeRequest) -> anyhow::Result<serde_json::Value> {
    let session = operator_session(node, node).await?;
    let answer = node_call(&session, request).await;
    session.close();
    answer.with_context(|| format!("asking {} ({})", node.name, request.to_json()))
}

/// Each province subscribes its node to `dataset` at the ministry (`ferry subscription add`).
pub async fn subscribe(provinces: &[DemoNode], dataset: &DatasetId) -> anyhow::Result<()> {
    println!("\nsubscriptions: each province subscribes its node to {dataset} at the ministry");
    for p in provinces {
        let subscription = SubscriptionDefinition {
            dataset: dataset.clone(),
            from: MINISTRY.into(),
            into: None,
            priority: None,
        };
        ask(p, &NodeRequest::NodeSubscriptionAdd { subscription }).await?;
        println!("  {:<10} ferry subscription add {dataset} --from {MINISTRY}", p.name);
    }
    Ok(())
}

/// Bytes a node has received from peers (`ferry_transfer_received_bytes_total`).
pub fn received_bytes(node: &DemoNode) -> anyhow::Result<u64> {
    let value = super::cluster::metric(node, "ferry_transfer_received_bytes_total")?;
    Ok(value as u64)
}

/// Waits until every province's subscription holds `version`; one line each with the time from
/// `published` and the bytes its node fetched since `before` (its received-bytes counter).
pub async fn await_subscribers(
    provinces: &[DemoNode],
    dataset: &DatasetId,
    version: VersionNo,
    published: Instant,
    before: &[u64],
    table_bytes: u64,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for (p, before) in provinces.iter().zip(before) {
        let held_at = loop {
            let list = ask(p, &NodeRequest::NodeSubscriptionList {}).await?;
            let views: Vec<SubscriptionView> = serde_json::from_value(list)?;
            let view = views.iter().find(|v| &v.dataset == dataset).context("the subscription is gone")?;
            if view.held.is_some_and(|held| held >= version) {
                break published.elapsed();
            }
            if published.elapsed() > WAIT {
                bail!("{} does not hold {version} after {WAIT:?}: {view:?}; see its ferryd.log", p.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let fetched = received_bytes(p)?.saturating_sub(*before);
        lines.push(format!(
            "  {:<10} held {version} {:.2} s after the publish (subscription), fetched {} = {:.2}% of the {} table",
            p.name,
            held_at.as_secs_f64(),
            mb(fetched),
            100.0 * fetched as f64 / table_bytes.max(1) as f64,
            mb(table_bytes)
        ));
    }
    Ok(lines)
}

/// A download job at `province` (`ferry schedule add`, daily at 02:00 Beijing time), run once
/// now (`ferry schedule run-now`) into `root/scheduled`.
pub async fn scheduled_download(
    province: &DemoNode,
    dataset: &DatasetId,
    root: &Path,
) -> anyhow::Result<String> {
    let into = root.join("scheduled");
    let name = "nightly-registry".to_owned();
    let schedule = ScheduleDefinition {
        name: name.clone(),
        dataset: dataset.to_string(),
        from: MINISTRY.into(),
        into: into.display().to_string(),
        cron: "0 2 * * *".into(),
        time_zone: Some("Asia/Shanghai".into()),
        jitter: None,
        deadline: None,
        retries: None,
        backoff: None,
        catch_up: None,
        enabled: None,
        priority: None,
    };
    println!(
        "\nschedule: {} adds a download job (cron \"0 2 * * *\", Asia/Shanghai) and runs it now",
        province.name
    );
    ask(province, &NodeRequest::NodeScheduleAdd { schedule: Box::new(schedule) }).await?;
    ask(province, &NodeRequest::NodeScheduleRunNow { name: name.clone() }).await?;
    let started = Instant::now();
    loop {
        let list = ask(province, &NodeRequest::NodeScheduleList {}).await?;
        let views: Vec<ScheduleView> = serde_json::from_value(list)?;
        let job = views.iter().find(|j| j.name == name).context("the job is gone")?;
        if let Some(run) = job.last_run.as_ref().filter(|r| r.outcome.is_some()) {
            if run.outcome != Some(RunOutcome::Succeeded) {
                bail!("the scheduled run ended {:?}: {}", run.outcome, run.error.clone().unwrap_or_default());
            }
            let secs = run.ended_ms.unwrap_or(run.started_ms).saturating_sub(run.started_ms) as f64 / 1e3;
            let version = run.version.map_or("-".to_owned(), |v| v.to_string());
            let next = job.next_run_ms.map_or("-".to_owned(), crate::cmd::schedule::timestamp);
            return Ok(format!(
                "  schedule   {name} at {}: {version} into {} ({} fetched in {secs:.2} s); next run {next}",
                province.name,
                into.display(),
                mb(run.bytes_fetched)
            ));
        }
        if started.elapsed() > WAIT {
            bail!("the scheduled run did not finish within {WAIT:?}; see {}'s ferryd.log", province.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `province` operator looks one vehicle up by `plate` at its own node (online query).
pub async fn lookup_plate(province: &DemoNode, dataset: &DatasetId, plate: &str) -> anyhow::Result<String> {
    let predicate = format!("plate = '{}'", plate.replace('\'', "''"));
    let columns = ["vin", "plate", "brand", "vehicle_type", "fuel", "status"].map(str::to_owned).to_vec();
    let spec = QuerySpec::new(Some(&predicate), Some(columns), Some(10), QueryFormat::Json)?;
    println!(
        "\nquery: a {} operator asks its node: ferry query {dataset} --where \"{predicate}\"",
        province.name
    );
    let session = operator_session(province, province).await?;
    let started = Instant::now();
    let answer = query::query(&session, dataset, None, &spec).await;
    let secs = started.elapsed().as_secs_f64();
    session.close();
    let answer = answer.context("the online query")?;
    let rows = String::from_utf8_lossy(&answer.data).trim_end().to_owned();
    println!("  {rows}");
    Ok(format!("  query      {} row(s) for plate {plate} in {:.1} ms", answer.done.rows, secs * 1e3))
}
