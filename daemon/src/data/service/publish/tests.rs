//! Tests of the publish's blocking part (`TableJob`): sort, diff against a head (ready or still
//! being checked), spilling, refusals, and the upload's clean-up.

use super::*;
use std::cell::Cell;

thread_local! {
    /// Test hook: the next upload reader run on this thread panics.
    static PANIC_IN_PARSER: Cell<bool> = const { Cell::new(false) };
}

pub(super) fn maybe_panic_in_parser() {
    if PANIC_IN_PARSER.with(|p| p.replace(false)) {
        panic!("injected panic in the upload reader");
    }
}

fn job(dir: &Path) -> TableJob {
    job_of(dir, 50, SortOptions::default())
}

fn job_of(dir: &Path, rows: usize, sort: SortOptions) -> TableJob {
    let source = dir.join("export.parquet");
    let (schema, batch) =
        (ferry_tables::synth::vehicle_registry_schema(), ferry_tables::synth::vehicle_registry(7, rows));
    ferry_tables::synth::write_parquet(&source, schema, batch).expect("export");
    let text = ferry_tables::synth::vehicle_registry_definition("vehicle-registry", "ministry");
    TableJob {
        node: "ministry".to_owned(),
        sort,
        definition: DatasetDefinition::parse_toml(&text).expect("definition"),
        format: SourceFormat::Parquet,
        mode: PublishMode::Snapshot,
        source,
        scratch: dir.to_owned(),
        stage: dir.join("stage"),
        head: None,
        layout: TableLayout::default(),
        chunk_size: 64 * 1024,
    }
}

/// Each file's name and BLAKE3, read back; the hashes its writer took as it wrote it must be
/// those of the bytes read, chunks included where it took them.
fn hashes(files: &[WrittenFile]) -> Vec<(String, blake3::Hash)> {
    let hash = |f: &WrittenFile| {
        let bytes = std::fs::read(&f.path).expect("read");
        if let Some((size, chunks)) = &f.hashes.chunks {
            let read: Vec<blake3::Hash> = bytes.chunks(*size as usize).map(blake3::hash).collect();
            assert_eq!(chunks, &read, "{}", f.name);
        }
        assert_eq!((f.hashes.size, f.hashes.blake3), (bytes.len() as u64, blake3::hash(&bytes)));
        blake3::hash(&bytes)
    };
    files.iter().map(|f| (f.name.to_string(), hash(f))).collect()
}

/// A head table of 30,000 vehicles in `dir/head`, and the next day's export (2% changed).
fn head_and_next_day(dir: &Path) -> (Vec<PathBuf>, PathBuf, ferry_tables::synth::EditedRegistry) {
    let first = job_of(dir, 30_000, SortOptions::default());
    let head = first.run().expect("published").expect("a table").table;
    let head_dir = dir.join("head");
    std::fs::rename(dir.join("stage"), &head_dir).expect("head");
    let head: Vec<PathBuf> = head.iter().map(|f| head_dir.join(f.name.as_str())).collect();
    let day1: Vec<_> = ferry_tables::synth::vehicle_registry(7, 30_000).collect();
    let edit = ferry_tables::synth::edit_vehicle_registry(&day1, 8, 0.02).expect("edit");
    let day2 = dir.join("export-2.parquet");
    let schema = ferry_tables::synth::vehicle_registry_schema();
    ferry_tables::synth::write_parquet(&day2, schema, edit.batches.clone()).expect("export");
    (head, day2, edit)
}

/// The next day's publish with small files, its head still being checked (`PendingHead`),
/// running on a thread of its own; returns the sender of the head and the stage directory.
#[allow(clippy::type_complexity)]
fn publish_with_pending_head(
    dir: &Path,
    day2: PathBuf,
) -> (
    std::sync::mpsc::SyncSender<Option<DiffBase>>,
    PathBuf,
    std::thread::JoinHandle<Result<Option<Tables>, Refusal>>,
) {
    let (sender, head) = PendingHead::channel();
    let layout = TableLayout { rows_per_file: 1_000, ..TableLayout::default() };
    let job = TableJob { source: day2, head, layout, ..job_of(dir, 10, SortOptions::default()) };
    let stage = job.stage.clone();
    (sender.expect("a sender"), stage, std::thread::spawn(move || job.run()))
}

/// Whether `dir` holds a finished table file.
fn has_table_file(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".parquet")))
}

/// The sort does not wait for the node's check of the head: it writes table files while the
/// head is still being checked, and the diff takes the head when it comes.
#[test]
fn a_publish_sorts_while_its_head_is_still_being_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (head, day2, edit) = head_and_next_day(dir.path());
    let (sender, stage, running) = publish_with_pending_head(dir.path(), day2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !has_table_file(&stage) {
        assert!(std::time::Instant::now() < deadline, "the sort waited for the head's check");
        assert!(!running.is_finished(), "the publish ended without its head");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    sender.send(Some(DiffBase { files: head, prints: None })).expect("the diff waits for the head");
    let tables = running.join().expect("no panic").expect("published").expect("changed");
    let counts = tables.counts.expect("a delta");
    assert_eq!(
        (counts.inserted, counts.updated, counts.deleted),
        (edit.inserted as u64, edit.updated as u64, edit.deleted as u64)
    );
}

/// A head whose check failed stops the sort: the publish fails, with no delta.
#[test]
fn a_publish_whose_head_check_failed_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, day2, _) = head_and_next_day(dir.path());
    let (sender, _, running) = publish_with_pending_head(dir.path(), day2);
    sender.send(None).expect("the diff waits for the head");
    match running.join().expect("no panic") {
        Err(refusal) => assert_eq!(refusal.code, ErrorCode::Internal, "{}", refusal.message),
        Ok(_) => panic!("a publish went on without its head"),
    }
}

/// A publish with a head diffs the sorted stream as it is written: its delta is the one the
/// diff of the written table's files gives, byte for byte, and the table is the same.
#[test]
fn a_publish_diffs_its_table_as_it_writes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (head, day2, edit) = head_and_next_day(dir.path());
    let sort = SortOptions { memory_budget: 1 << 20, spill_dir: Some(dir.path().join("spill")) };
    let job = TableJob {
        source: day2,
        head: Some(PendingHead::ready(head.clone())),
        ..job_of(dir.path(), 10, sort)
    };
    let tables = job.run().expect("published").expect("changed");
    // The new table's files come with their chunk hashes, at the node's chunk size.
    assert!(
        tables.table.iter().all(|f| f.hashes.chunks.as_ref().is_some_and(|(size, _)| *size == 64 * 1024))
    );
    hashes(&tables.table);
    let counts = tables.counts.expect("a delta");
    assert_eq!(
        (counts.inserted, counts.updated, counts.deleted),
        (edit.inserted as u64, edit.updated as u64, edit.deleted as u64)
    );
    let files_dir = dir.path().join("files");
    std::fs::create_dir(&files_dir).expect("dir");
    let new: Vec<PathBuf> = tables.table.iter().map(|f| f.path.clone()).collect();
    let keys = vec!["vin".to_owned()];
    let opts = WriteOptions::from(TableLayout::default());
    let expected = ferry_tables::delta::diff(&head, &new, &keys, &files_dir, &opts).expect("diff");
    let streamed: Vec<WrittenFile> = tables.delta.iter().map(|(f, _)| f.clone()).collect();
    let roles: Vec<FileRole> = tables.delta.iter().map(|(_, role)| *role).collect();
    let expected_files: Vec<WrittenFile> =
        expected.upserts.iter().chain(&expected.deletes).cloned().collect();
    assert_eq!(
        hashes(&streamed),
        hashes(&expected_files),
        "the delta of the stream is the delta of the files"
    );
    assert_eq!(roles.iter().filter(|r| **r == FileRole::Upserts).count(), expected.upserts.len());
}

#[test]
fn a_panic_in_the_upload_reader_is_a_bad_request_not_a_node_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    PANIC_IN_PARSER.with(|p| p.set(true));
    let refusal = match job(dir.path()).run() {
        Err(refusal) => refusal,
        Ok(_) => panic!("the injected panic was not reached"),
    };
    assert_eq!(refusal.code, ErrorCode::BadRequest);
    assert!(refusal.message.starts_with("the upload could not be parsed (incident "), "{}", refusal.message);
    assert!(!refusal.message.contains("injected"), "the panic's words stay in the log");
    let tables = job(dir.path()).run().expect("the next upload parses").expect("a table");
    assert!(!tables.table.is_empty());
}

/// An export bigger than the budget is sorted in runs spilled under the upload's scratch
/// directory, and nothing of them is left once the table is written.
#[test]
fn a_publish_over_its_budget_spills_into_its_scratch_and_cleans_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spill = dir.path().join("spill");
    let sort = SortOptions { memory_budget: 1 << 20, spill_dir: Some(spill.clone()) };
    let tables = job_of(dir.path(), 20_000, sort).run().expect("published").expect("a table");
    assert_eq!(tables.table.iter().map(|f| f.rows).sum::<u64>(), 20_000);
    assert!(spill.is_dir(), "the sort spilled");
    assert_eq!(std::fs::read_dir(&spill).expect("list").count(), 0, "its runs are gone");
}

/// A full disk while sorting (spilling runs or writing the table) answers `OutOfSpace`;
/// other disk failures are the node's, the export's faults the uploader's.
#[test]
fn a_full_disk_while_sorting_is_out_of_space() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = job(dir.path());
    let full = || std::io::Error::from(std::io::ErrorKind::StorageFull);
    let spilling = PublishError::Io { context: "writing spill file run-00000.arrows".into(), source: full() };
    let writing = PublishError::Parquet(parquet::errors::ParquetError::External(Box::new(full())));
    for e in [spilling, writing] {
        let refusal = job.refusal(e);
        assert_eq!(refusal.code, ErrorCode::OutOfSpace, "{}", refusal.message);
        assert!(refusal.message.starts_with("node ministry has no room left"), "{}", refusal.message);
    }
    let broken = PublishError::Io { context: "reading".into(), source: std::io::Error::other("EIO") };
    assert_eq!(job.refusal(broken).code, ErrorCode::Internal);
    let duplicate = PublishError::DuplicateKey { key: "(vin=X)".into() };
    assert_eq!(job.refusal(duplicate).code, ErrorCode::InvalidData);
}

#[test]
fn stale_uploads_and_spilled_runs_are_removed_at_start() {
    let state = tempfile::tempdir().expect("temp dir");
    assert_eq!(Upload::remove_stale(state.path()), 0, "no uploads directory yet");
    let uploads = state.path().join("uploads");
    let spill = uploads.join("vehicle-registry-7-1f").join("spill").join("publish-7-0");
    std::fs::create_dir_all(&spill).expect("dirs");
    std::fs::write(spill.join("run-00000.arrows"), b"run").expect("run");
    std::fs::write(uploads.join("stray"), b"x").expect("file");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    std::fs::write(elsewhere.path().join("keep"), b"k").expect("file");
    std::os::unix::fs::symlink(elsewhere.path(), uploads.join("link")).expect("link");
    assert_eq!(Upload::remove_stale(state.path()), 3);
    assert_eq!(std::fs::read_dir(&uploads).expect("list").count(), 0);
    assert!(elsewhere.path().join("keep").exists(), "a link is removed, not followed");
}

#[test]
fn parse_upload_passes_a_result_through() {
    assert_eq!(parse_upload(|| 7).expect("no panic"), 7);
    let caught = parse_upload(|| -> u8 { panic!("{}", String::from("owned message")) });
    assert_eq!(caught.expect_err("caught").code, ErrorCode::BadRequest);
}
