//! `ferry verify`: has a running node re-hash its stored versions now — its scrub — and prints
//! each damaged file, what was done about it and a summary as the node goes.
//!
//! It talks to the node's admin port (`POST /scrub`, the node's `data::scrub::admin`), on the
//! node's host: the node is what holds the store, the peers to fetch a good copy from and the
//! credentials to fetch it with. The answer is JSON lines, `{"finding": …}` per damaged file and
//! a last `{"summary": …}`; the request is HTTP/1.0, so the node sends them unframed and closes.

use anyhow::{Context, bail};
use clap::Args;
use ferry_proto::DatasetId;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const VERIFY_HELP: &str = "\
Asks the RUNNING node behind the admin port (`admin-listen` in its config; run it on the node's
host) to re-hash every stored file of its versions against their signed manifests, now. A damaged
file is moved aside under `quarantine/` in the node's store (never deleted), then fetched again
from the node's configured peers and checked against the signed manifest; a damaged chunk-hash
file is rebuilt from its part file. While a file is set aside, its version is served without it.
A stopped node: start it first (it serves nothing damaged; the check runs when asked).

Exit status:
  0  nothing damaged, or every damaged file was repaired
  1  damaged files remain set aside (no peer had a good copy: restore them, or re-publish), or the
     node could not be asked (admin port unreachable, a refused request)";

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The node's admin port, HOST:PORT (its `admin-listen`).
    #[arg(long, env = "FERRY_ADMIN")]
    pub admin: String,
    /// Only this dataset.
    pub dataset: Option<DatasetId>,
    /// Only this version of the dataset.
    #[arg(long, requires = "dataset")]
    pub version: Option<u64>,
    /// Read at most this much per second, e.g. `200MiB/s` (default: the node's `[scrub] rate`).
    #[arg(long)]
    pub rate: Option<String>,
    /// Print the node's JSON lines as they come instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The last line of the node's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Summary {
    pub versions: u64,
    pub files_checked: u64,
    pub bytes_hashed: u64,
    pub damaged: u64,
    pub repaired: u64,
    pub unrepairable: u64,
    pub stopped_early: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Line {
    Finding(serde_json::Value),
    Summary(Summary),
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let summary = ask(&args, &mut |line: &str| {
        if args.json {
            println!("{line}");
        }
    })
    .await?;
    if !args.json {
        println!("{}", render_summary(&summary));
    }
    if summary.unrepairable > 0 {
        bail!(
            "{} damaged file(s) could not be repaired and stay set aside under quarantine/ in the node's store",
            summary.unrepairable
        );
    }
    if summary.stopped_early {
        bail!("the node began to shut down before the check was through");
    }
    Ok(())
}

/// Sends the request and hands each line to `each` (findings are also printed as text unless
/// `--json`); returns the summary.
async fn ask(args: &VerifyArgs, each: &mut dyn FnMut(&str)) -> anyhow::Result<Summary> {
    let stream = tokio::net::TcpStream::connect(&args.admin)
        .await
        .with_context(|| format!("cannot reach the node's admin port at {}", args.admin))?;
    let mut reader = BufReader::new(stream);
    let request =
        format!("POST /scrub?{} HTTP/1.0\r\nHost: {}\r\nContent-Length: 0\r\n\r\n", query(args), args.admin);
    reader.get_mut().write_all(request.as_bytes()).await.context("sending the request")?;
    let mut status = String::new();
    reader.read_line(&mut status).await.context("reading the answer")?;
    let mut header = String::new();
    while reader.read_line(&mut header).await? > 2 {
        header.clear();
    }
    if status.split_whitespace().nth(1) != Some("200") {
        let mut body = String::new();
        while reader.read_line(&mut body).await? > 0 {}
        bail!("the node refused: {} {}", status.trim(), body.trim());
    }
    let mut line = String::new();
    let mut summary = None;
    while reader.read_line(&mut line).await.context("reading the answer")? > 0 {
        each(line.trim_end());
        match serde_json::from_str::<Line>(line.trim_end()) {
            Ok(Line::Finding(finding)) if !args.json => println!("{}", render_finding(&finding)),
            Ok(Line::Finding(_)) => {}
            Ok(Line::Summary(s)) => summary = Some(s),
            Err(e) => bail!("the node sent a line this ferry does not understand ({e}): {line}"),
        }
        line.clear();
    }
    summary.context("the node closed the answer before its summary (it stopped, or the check failed)")
}

fn query(args: &VerifyArgs) -> String {
    let mut pairs = Vec::new();
    if let Some(dataset) = &args.dataset {
        pairs.push(format!("dataset={dataset}"));
    }
    if let Some(version) = args.version {
        pairs.push(format!("version={version}"));
    }
    if let Some(rate) = &args.rate {
        pairs.push(format!("rate={}", rate.replace('/', "%2F").replace(' ', "+")));
    }
    pairs.join("&")
}

/// One damaged file as an operator reads it.
fn render_finding(f: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let problem = &f["problem"];
    let what = match problem["kind"].as_str() {
        Some("missing") => "missing".to_owned(),
        Some("size") => format!("{} bytes, the manifest says {}", problem["found"], problem["expected"]),
        Some("content") => text(&problem["detail"]),
        Some("unreadable") => format!("unreadable: {}", text(&problem["error"])),
        _ => problem.to_string(),
    };
    let aside = match f["quarantined"].as_str() {
        Some(key) => format!("set aside as {key}; "),
        None => String::new(),
    };
    let outcome = &f["outcome"];
    let done = match outcome["kind"].as_str() {
        Some("repaired") => format!("REPAIRED ({})", text(&outcome["from"])),
        _ => format!("UNREPAIRABLE: {}", text(&outcome["reason"])),
    };
    format!("DAMAGED {} v{} {}: {what}; {aside}{done}", text(&f["dataset"]), f["version"], text(&f["file"]))
}

fn render_summary(s: &Summary) -> String {
    let state = match (s.damaged, s.unrepairable) {
        (0, _) => "all good",
        (_, 0) => "every damaged file repaired",
        _ => "DAMAGE REMAINS",
    };
    format!(
        "verified {} version(s), {} file(s), {} bytes hashed: {} damaged, {} repaired, {} unrepairable — {state}{}",
        s.versions,
        s.files_checked,
        s.bytes_hashed,
        s.damaged,
        s.repaired,
        s.unrepairable,
        if s.stopped_early { " (stopped early: the node is shutting down)" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const FINDING: &str = r#"{"finding":{"dataset":"vehicle-registry","version":1,"file":"part-00000.parquet","problem":{"kind":"content","detail":"its BLAKE3 differs from the manifest's"},"quarantined":"quarantine/1/datasets/vehicle-registry/v1/part-00000.parquet","outcome":{"kind":"unrepairable","reason":"no peer is configured to fetch a good copy from"}}}"#;

    /// A node's admin port that answers one request with `body`; returns its address and the
    /// request it received.
    async fn fake_node(status: &'static str, body: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let n = socket.read(&mut request).await.unwrap();
            let answer = format!("HTTP/1.0 {status}\r\ncontent-type: application/x-ndjson\r\n\r\n{body}");
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (addr, task)
    }

    fn args(admin: String) -> VerifyArgs {
        VerifyArgs {
            admin,
            dataset: Some(DatasetId::new("vehicle-registry").unwrap()),
            version: Some(1),
            rate: Some("200MiB/s".into()),
            json: false,
        }
    }

    fn summary_line(damaged: u64, repaired: u64, unrepairable: u64) -> String {
        format!(
            "{{\"summary\":{{\"versions\":1,\"files_checked\":3,\"bytes_hashed\":100,\"damaged\":{damaged},\
             \"repaired\":{repaired},\"unrepairable\":{unrepairable},\"stopped_early\":false}}}}\n"
        )
    }

    #[tokio::test]
    async fn unrepairable_damage_fails_the_command_and_names_the_file() {
        let (admin, request) = fake_node("200 OK", format!("{FINDING}\n{}", summary_line(1, 0, 1))).await;
        let mut lines = Vec::new();
        let summary = ask(&args(admin.clone()), &mut |l| lines.push(l.to_owned())).await.unwrap();
        assert_eq!(summary.unrepairable, 1);
        assert_eq!(lines.len(), 2);
        let sent = request.await.unwrap();
        assert!(
            sent.starts_with("POST /scrub?dataset=vehicle-registry&version=1&rate=200MiB%2Fs HTTP/1.0\r\n"),
            "{sent}"
        );
        let finding: serde_json::Value = serde_json::from_str(FINDING).unwrap();
        let text = render_finding(&finding["finding"]);
        assert_eq!(
            text,
            "DAMAGED vehicle-registry v1 part-00000.parquet: its BLAKE3 differs from the manifest's; set aside as \
             quarantine/1/datasets/vehicle-registry/v1/part-00000.parquet; UNREPAIRABLE: no peer is configured to \
             fetch a good copy from"
        );
        let (admin, _) = fake_node("200 OK", format!("{FINDING}\n{}", summary_line(1, 0, 1))).await;
        let err = run(args(admin)).await.unwrap_err().to_string();
        assert!(err.contains("1 damaged file(s) could not be repaired"), "{err}");
    }

    #[tokio::test]
    async fn repaired_damage_passes_and_a_refusal_or_a_cut_answer_fails() {
        let (admin, _) = fake_node("200 OK", summary_line(1, 1, 0)).await;
        run(args(admin)).await.unwrap();
        assert!(
            render_summary(&Summary { damaged: 1, repaired: 1, ..Summary::default() })
                .ends_with("every damaged file repaired")
        );
        let (admin, _) = fake_node("400 Bad Request", "a version needs its dataset\n".into()).await;
        let err = run(args(admin)).await.unwrap_err().to_string();
        assert!(err.contains("refused") && err.contains("needs its dataset"), "{err}");
        let (admin, _) = fake_node("200 OK", format!("{FINDING}\n")).await;
        let err = run(args(admin)).await.unwrap_err().to_string();
        assert!(err.contains("before its summary"), "{err}");
    }
}
