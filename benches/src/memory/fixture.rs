//! The version the `memory` and `reliability` scenarios pull, built as a fixture with the
//! project's own code (see [`super`] for why), and the checks of a pulled copy against its
//! manifest, on disk and in an S3 bucket.
//!
//! Neighbours: [`super`] runs the scenario; `crate::reliability` builds its sites with
//! [`build_version`] and checks them with [`check`].

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use arrow::array::RecordBatch;
use ferry_daemon::config::Config;
use ferry_daemon::data::blob::{BlobStore, ObjectBlobStore};
use ferry_daemon::data::store::{LocalFiles, NewVersion, Store};
use ferry_daemon::data::version::describe_file;
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::Credentials;
use ferry_proto::manifest::MANIFEST_FORMAT;
use ferry_proto::{FileEntry, FileRole, Hash32, Manifest, TableFile, TableLayout, VersionKind};
use ferry_tables::canonical::{CanonicalWriter, WriteOptions};
use ferry_tables::definition::DatasetDefinition;

use crate::fleet::NodeSetup;
use crate::kernel::parquet_files;
use crate::report::progress;
use crate::transfer::{DATASET, definition};

/// Writes `rows` rows of 1 MiB random payload (BLAKE3 XOF of the seed, ascending `id`) through
/// the canonical writer into `stage`, with the layout a publish on this node would use.
fn write_rows(
    def: &DatasetDefinition,
    layout: TableLayout,
    stage: &Path,
    rows: usize,
    seed: u64,
) -> Result<Vec<ferry_tables::canonical::WrittenFile>> {
    let keys: Vec<String> = def.key_columns().iter().map(|c| c.name.clone()).collect();
    let mut writer =
        CanonicalWriter::new(stage, "part", def.arrow_schema(), &keys, &WriteOptions::from(layout))?;
    let schema = writer.schema().clone();
    // Generating the payloads overlaps with compressing and writing them.
    let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
    let producer = std::thread::spawn(move || {
        for batch in crate::transfer::payload_batches(schema, rows, seed) {
            if tx.send(batch).is_err() {
                return;
            }
        }
    });
    let mut failure = None;
    for batch in rx {
        if let Err(e) = writer.write(&batch) {
            failure = Some(e);
            break;
        }
    }
    let _ = producer.join();
    if let Some(e) = failure {
        for path in writer.abandon() {
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    Ok(writer.finish()?)
}

/// Builds version 1 of the dataset in the store of the node `setup` describes (not running),
/// as `net/publish.rs` would: canonical files, described, a signed manifest, committed. Returns
/// the manifest and the seconds spent writing, describing and committing.
pub(crate) fn build_version(setup: &NodeSetup, rows: usize, seed: u64) -> Result<(Manifest, [f64; 3])> {
    let config = Config::load(&setup.config).context("the node's config")?;
    let creds = Credentials::load(&config.tls).context("the node's credentials")?;
    let definition_text = definition();
    let def = DatasetDefinition::parse_toml(&definition_text)?;
    let layout =
        TableLayout { rows_per_file: config.transfer.rows_per_file as u64, ..TableLayout::default() };
    let stage = setup.dir.join("stage");
    std::fs::create_dir_all(&stage)?;

    let started = Instant::now();
    let written = write_rows(&def, layout, &stage, rows, seed)?;
    let write_s = started.elapsed().as_secs_f64();
    progress(&format!("wrote {} canonical files ({rows} rows) in {write_s:.1} s", written.len()));

    let started = Instant::now();
    let chunk_size = config.transfer.chunk_size;
    let entries = written
        .iter()
        .map(|w| {
            describe_file(&w.path, w.name.clone(), w.rows, chunk_size)
                .map(|e| FileEntry { role: FileRole::Snapshot, ..e })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let describe_s = started.elapsed().as_secs_f64();
    progress(&format!("described them in {describe_s:.1} s"));

    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let manifest = runtime.block_on(async {
        let blobs = ObjectBlobStore::from_config(&config.storage)?;
        let store = Store::open(blobs, &creds).await?;
        let table: Vec<TableFile> = entries
            .iter()
            .zip(&written)
            .map(|(f, w)| TableFile {
                name: f.name.clone(),
                size: f.size,
                rows: f.rows,
                blake3: f.blake3,
                rows_blake3: w.rows_blake3.map(|h| Hash32(*h.as_bytes())),
            })
            .collect();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            dataset: def.id.clone(),
            version: store.next_version(&def.id),
            kind: VersionKind::Snapshot,
            parent: None,
            publisher: creds.principal().dept.clone(),
            created_unix_ms: now_unix_ms(),
            schema_fingerprint: def.fingerprint(),
            definition_version: def.definition_version,
            share_type: def.share_type,
            catalog_version: None,
            key_columns: def.key_columns().iter().map(|c| c.name.clone()).collect(),
            layout,
            writer: Some(WriteOptions::from(layout).writer()),
            row_count: table.iter().map(|f| f.rows).sum(),
            chunk_size,
            files: entries,
            table,
            delta: None,
            derived_from: None,
        };
        manifest.validate()?;
        let signer = ManifestSigner::new(&creds)?;
        let signed = signer.sign(manifest.to_json());
        let stored = NewVersion { signed, manifest: manifest.clone(), signer: creds.principal().clone() };
        store.put_definition(&def.id, &def.name, &definition_text).await?;
        store.commit_version(&stage, stored, LocalFiles::Move).await?;
        anyhow::Ok(manifest)
    })?;
    std::fs::remove_dir_all(&stage)?;
    let commit_s = started.elapsed().as_secs_f64();
    progress(&format!("signed and committed {} in {commit_s:.1} s; staging copy removed", manifest.version));
    Ok((manifest, [write_s, describe_s, commit_s]))
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Fails unless `dir` holds exactly the manifest's files (size and BLAKE3), hashing on two
/// threads.
pub(crate) fn check(dir: &Path, manifest: &Manifest) -> Result<()> {
    let found = parquet_files(dir, "")?;
    ensure!(
        found.len() == manifest.files.len(),
        "the pull left {} Parquet files in {}, the manifest lists {}",
        found.len(),
        dir.display(),
        manifest.files.len()
    );
    let half = manifest.files.len().div_ceil(2).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = manifest
            .files
            .chunks(half)
            .map(|entries| {
                scope.spawn(move || -> Result<()> {
                    for entry in entries {
                        let path = dir.join(entry.name.as_str());
                        let size =
                            std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?.len();
                        ensure!(
                            size == entry.size,
                            "{}: {size} bytes, the manifest says {}",
                            entry.name,
                            entry.size
                        );
                        let mut hasher = blake3::Hasher::new();
                        hasher.update_reader(std::fs::File::open(&path)?)?;
                        ensure!(
                            hasher.finalize().as_bytes() == &entry.blake3.0,
                            "{}: BLAKE3 differs from the manifest's",
                            entry.name
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| bail!("a hashing thread panicked")))
    })
}

/// [`check`] for a copy in an S3 bucket: every file of the manifest, read back whole.
pub(crate) fn check_in_s3(s3: &ferry_daemon::config::S3Config, manifest: &Manifest) -> Result<()> {
    let blobs = ObjectBlobStore::s3(s3)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for entry in &manifest.files {
        let key = format!("datasets/{DATASET}/v{}/{}", manifest.version.get(), entry.name);
        let bytes = runtime.block_on(blobs.get(&key)).with_context(|| key.clone())?;
        ensure!(
            bytes.len() as u64 == entry.size,
            "{key}: {} bytes, the manifest says {}",
            bytes.len(),
            entry.size
        );
        ensure!(
            blake3::hash(&bytes).as_bytes() == &entry.blake3.0,
            "{key}: BLAKE3 differs from the manifest's"
        );
    }
    Ok(())
}
