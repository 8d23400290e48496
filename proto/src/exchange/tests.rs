//! Unit tests and proptests of the sequences: valid ones are accepted, each kind of violation
//! is refused with its typed error, and arbitrary frames never make a machine panic.

use super::*;
use crate::arb;
use crate::error::ErrorCode;
use crate::manifest::{
    CHUNKS_PER_PAGE, FileEntry, FileRole, Hash32, MANIFEST_FORMAT, MIN_CHUNK_SIZE, Manifest, PageError,
    PageHasher, TableFile, TableLayout, VersionKind,
};
use crate::message::{ChunkEncoding, Message, PublishMode, SourceFormat};
use crate::{DatasetId, DeptId, RelPath, ShareType, VersionNo};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

fn chunk_hash(index: u64) -> Hash32 {
    Hash32(*blake3::hash(&index.to_le_bytes()).as_bytes())
}

/// A version with one file of `chunks` chunks (the last one 100 bytes short).
fn manifest(chunks: u64) -> Manifest {
    let size = chunks * u64::from(MIN_CHUNK_SIZE) - 100;
    let mut pages = PageHasher::default();
    (0..chunks).for_each(|i| pages.push(&chunk_hash(i)));
    let name = RelPath::parse("part-0.parquet").expect("literal");
    let file = FileEntry {
        role: FileRole::Snapshot,
        name: name.clone(),
        size,
        rows: 1,
        blake3: Hash32([7; 32]),
        chunk_pages: pages.finish(),
    };
    Manifest {
        format: MANIFEST_FORMAT,
        dataset: DatasetId::new("vehicles").expect("literal"),
        version: VersionNo::FIRST,
        kind: VersionKind::Snapshot,
        parent: None,
        publisher: DeptId::new("ministry").expect("literal"),
        created_unix_ms: 0,
        schema_fingerprint: "0".repeat(64),
        definition_version: 1,
        share_type: ShareType::Unconditional,
        catalog_version: None,
        key_columns: vec!["vin".into()],
        layout: TableLayout::default(),
        writer: None,
        row_count: 1,
        chunk_size: MIN_CHUNK_SIZE,
        table: vec![TableFile { name, size, rows: 1, blake3: Hash32([7; 32]), rows_blake3: None }],
        files: vec![file],
        delta: None,
        derived_from: None,
    }
}

/// The frames an honest node sends for `range`, payloads empty.
fn answer(m: &Manifest, range: ChunkRange) -> Vec<Message> {
    range.plan().map(|step| frame(m, step)).collect()
}

fn frame(m: &Manifest, step: AnswerStep) -> Message {
    match step {
        AnswerStep::Page { file, page } => {
            let (first, count) = m.page_span(&m.files[file as usize], page).expect("page in file");
            let hashes: Vec<u8> = (first..first + count).flat_map(|i| chunk_hash(u64::from(i)).0).collect();
            Message::ChunkHashes { file, page, hashes: Bytes::from(hashes) }
        }
        AnswerStep::Chunk { file, index } => {
            let (_, raw_len) = m.chunk_span(&m.files[file as usize], index).expect("chunk in file");
            Message::Chunk { file, index, encoding: ChunkEncoding::Raw, raw_len, data: Bytes::new() }
        }
        AnswerStep::Done { file, sent } => Message::ChunksDone { file, sent },
    }
}

/// Feeds `frames`; the first error, or the events.
fn feed(m: &Manifest, range: ChunkRange, frames: &[Message]) -> Result<Vec<AnswerEvent>, SequenceError> {
    let mut machine = ChunkAnswer::new(m, range).expect("range of this manifest");
    frames.iter().map(|f| machine.handle(f)).collect()
}

#[test]
fn an_answer_across_a_page_boundary_is_accepted() {
    let m = manifest(600);
    let range = ChunkRange::within(&m, 0, 250, 10).unwrap();
    assert_eq!(range.pages(), 0..=1);
    let steps: Vec<_> = range.plan().collect();
    assert_eq!(steps.len(), 2 + 10 + 1);
    assert_eq!(steps[0], AnswerStep::Page { file: 0, page: 0 });
    assert_eq!(steps[2], AnswerStep::Chunk { file: 0, index: 250 });
    assert_eq!(steps[12], AnswerStep::Done { file: 0, sent: 10 });
    let events = feed(&m, range, &answer(&m, range)).unwrap();
    let AnswerEvent::Chunk(first) = &events[2] else { panic!("{events:?}") };
    assert_eq!(first.hash, chunk_hash(250));
    assert_eq!(first.offset, 250 * u64::from(MIN_CHUNK_SIZE));
    assert_eq!(events.last(), Some(&AnswerEvent::Done { sent: 10 }));
}

#[test]
fn the_last_chunk_is_short_and_its_length_is_checked() {
    let m = manifest(3);
    let range = ChunkRange::within(&m, 0, 2, 1).unwrap();
    let mut frames = answer(&m, range);
    let Message::Chunk { raw_len, .. } = &mut frames[1] else { panic!() };
    assert_eq!(*raw_len, MIN_CHUNK_SIZE - 100);
    *raw_len = MIN_CHUNK_SIZE;
    let err = feed(&m, range, &frames).unwrap_err();
    assert_eq!(
        err,
        SequenceError::ChunkLength { index: 2, announced: MIN_CHUNK_SIZE, expected: MIN_CHUNK_SIZE - 100 }
    );
    assert!(err.is_corrupt_data());
}

#[test]
fn ranges_outside_the_version_are_refused() {
    let m = manifest(3);
    assert!(
        matches!(ChunkRange::within(&m, 1, 0, 1), Err(e @ RangeError::NoFile { .. }) if e.code() == ErrorCode::NotFound)
    );
    let out = ChunkRange::within(&m, 0, 2, 2).unwrap_err();
    assert!(matches!(out, RangeError::OutOfRange { end: 4, chunks: 3, .. }), "{out:?}");
    assert_eq!(out.code(), ErrorCode::BadRequest);
    assert!(ChunkRange::within(&m, 0, 0, 0).is_err(), "an empty range");
    assert!(ChunkRange::within(&m, 0, u32::MAX, u32::MAX).is_err(), "no overflow");
}

#[test]
fn each_violation_has_its_error() {
    let m = manifest(600);
    let range = ChunkRange::within(&m, 0, 250, 10).unwrap();
    let good = answer(&m, range);
    let with = |at: usize, msg: Message| {
        let mut frames = good.clone();
        frames[at] = msg;
        feed(&m, range, &frames).unwrap_err()
    };
    let chunk = |index| frame(&m, AnswerStep::Chunk { file: 0, index });
    assert_eq!(with(0, chunk(250)), SequenceError::Unexpected { expected: "ChunkHashes", got: "Chunk" });
    assert_eq!(with(1, good[0].clone()), SequenceError::DuplicatePage { page: 0 });
    assert_eq!(
        with(0, frame(&m, AnswerStep::Page { file: 0, page: 1 })),
        SequenceError::PageOutOfOrder { expected: 0, got: 1 }
    );
    let Message::ChunkHashes { hashes, .. } = &good[0] else { panic!() };
    let mut forged = hashes.to_vec();
    forged[0] ^= 1;
    let forged = Message::ChunkHashes { file: 0, page: 0, hashes: Bytes::from(forged) };
    assert!(matches!(with(0, forged), SequenceError::Page(PageError::Mismatch { page: 0, .. })));
    assert_eq!(
        with(1, Message::ChunkHashes { file: 3, page: 1, hashes: Bytes::new() }),
        SequenceError::WrongFile { expected: 0, got: 3 }
    );
    assert_eq!(with(2, chunk(251)), SequenceError::ChunkOutOfOrder { expected: 250, got: 251 });
    assert_eq!(with(3, chunk(250)), SequenceError::ChunkOutOfOrder { expected: 251, got: 250 });
    assert_eq!(with(2, chunk(249)), SequenceError::ChunkOutOfRange { index: 249, first: 250, last: 259 });
    assert_eq!(with(12, chunk(260)), SequenceError::ChunkOutOfRange { index: 260, first: 250, last: 259 });
    assert_eq!(
        with(5, Message::ChunksDone { file: 0, sent: 10 }),
        SequenceError::EndedEarly { received: 3, count: 10 }
    );
    assert_eq!(
        with(12, Message::ChunksDone { file: 0, sent: 9 }),
        SequenceError::DoneCount { sent: 9, count: 10 }
    );
    assert_eq!(
        with(12, Message::ListDatasets),
        SequenceError::Unexpected { expected: "ChunksDone", got: "ListDatasets" }
    );
    let mut extra = good.clone();
    extra.push(Message::ChunksDone { file: 0, sent: 10 });
    assert_eq!(feed(&m, range, &extra).unwrap_err(), SequenceError::AfterEnd);
}

#[test]
fn an_error_frame_ends_the_answer_and_keeps_what_came_before() {
    let m = manifest(600);
    let range = ChunkRange::within(&m, 0, 250, 10).unwrap();
    let mut machine = ChunkAnswer::new(&m, range).unwrap();
    for f in &answer(&m, range)[..5] {
        machine.handle(f).unwrap();
    }
    assert_eq!(machine.rest(), range.rest_from(253));
    assert_eq!(machine.rest().map(|r| (r.first(), r.count())), Some((253, 7)));
    let refusal = Message::Error { code: ErrorCode::Unavailable, message: "draining".into() };
    let event = machine.handle(&refusal).unwrap();
    assert_eq!(event, AnswerEvent::Refused { code: ErrorCode::Unavailable, message: "draining".into() });
    assert!(machine.is_finished());
    assert_eq!(machine.handle(&refusal).unwrap_err(), SequenceError::AfterEnd);
}

#[test]
fn an_error_poisons_the_machine() {
    let m = manifest(3);
    let range = ChunkRange::within(&m, 0, 0, 3).unwrap();
    let mut machine = ChunkAnswer::new(&m, range).unwrap();
    assert!(machine.handle_chunk(0, 0, MIN_CHUNK_SIZE).is_err());
    assert!(machine.is_finished());
    assert_eq!(machine.handle(&answer(&m, range)[0]).unwrap_err(), SequenceError::AfterEnd);
}

#[test]
fn upload_round_trip_and_violations() {
    let (begin, mut sender) =
        UploadSender::begin("id = 'x'".into(), SourceFormat::Csv, PublishMode::Snapshot, 10);
    assert!(matches!(begin, Message::PublishBegin { size: 10, .. }));
    let mut frames: Vec<Message> = sender.data(Bytes::from_static(b"hello")).unwrap().collect();
    assert_eq!(sender.data(Bytes::from_static(b"too long!")).err(), Some(UploadError::Overrun { size: 10 }));
    frames.extend(sender.data(Bytes::from_static(b"world")).unwrap());
    let end = sender.end().unwrap();
    frames.push(end.clone());
    let mut receiver = UploadReceiver::new(10);
    let events: Vec<_> = frames.iter().cloned().map(|f| receiver.handle(f).unwrap()).collect();
    assert_eq!(events[0], UploadEvent::Data(Bytes::from_static(b"hello")));
    assert_eq!(events[2], UploadEvent::Complete { bytes: 10 });
    receiver.finish().unwrap();
    assert_eq!(receiver.handle(end.clone()).unwrap_err(), UploadError::AfterEnd);

    let refused = |frames: &[Message]| {
        let mut r = UploadReceiver::new(10);
        frames
            .iter()
            .cloned()
            .map(|f| r.handle(f))
            .find_map(Result::err)
            .unwrap_or_else(|| r.finish().unwrap_err())
    };
    let data = |b: &'static [u8]| Message::PublishData { data: Bytes::from_static(b) };
    assert_eq!(refused(&[data(b"hello world")]), UploadError::Overrun { size: 10 });
    assert_eq!(refused(&[data(b"hello"), end.clone()]), UploadError::Short { received: 5, size: 10 });
    assert_eq!(refused(&[data(b"HELLOworld"), end.clone()]), UploadError::HashMismatch);
    assert_eq!(refused(&[data(b"hello")]), UploadError::Truncated { received: 5, size: 10 });
    assert_eq!(
        refused(&[Message::ListDatasets]),
        UploadError::Unexpected { expected: "PublishData or PublishEnd", got: "ListDatasets" }
    );
    assert_eq!(UploadError::Overrun { size: 1 }.code(), ErrorCode::TooLarge);
    assert_eq!(UploadError::HashMismatch.code(), ErrorCode::InvalidData);
    let (_, short) = UploadSender::begin(String::new(), SourceFormat::Csv, PublishMode::Append, 1);
    assert_eq!(short.end().unwrap_err(), UploadError::Short { received: 0, size: 1 });
}

#[test]
fn large_payloads_are_split_to_fit_a_frame() {
    let len = 2 * MAX_PUBLISH_DATA + 3;
    let (_, mut sender) =
        UploadSender::begin(String::new(), SourceFormat::Parquet, PublishMode::Snapshot, len as u64);
    let frames: Vec<Message> = sender.data(Bytes::from(vec![1u8; len])).unwrap().collect();
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(crate::frame::fits));
    let Message::PublishData { data } = &frames[0] else { panic!() };
    assert_eq!(data.len(), MAX_PUBLISH_DATA);
    let one_more = Message::PublishData { data: Bytes::from(vec![0u8; MAX_PUBLISH_DATA + 1]) };
    assert!(!crate::frame::fits(&one_more), "the bound is tight");
    assert_eq!(sender.remaining(), 0);
}

/// A file of 1..700 chunks and a range in it.
fn version_and_range() -> impl Strategy<Value = (u64, u32, u32)> {
    (1u64..700)
        .prop_flat_map(|chunks| (Just(chunks), 0..chunks as u32))
        .prop_flat_map(|(chunks, first)| (Just(chunks), Just(first), 1..=(chunks as u32 - first)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_planned_answer_is_accepted((chunks, first, count) in version_and_range()) {
        let m = manifest(chunks);
        let range = ChunkRange::within(&m, 0, first, count).unwrap();
        let events = feed(&m, range, &answer(&m, range)).unwrap();
        let announced: Vec<u32> =
            events.iter().filter_map(|e| if let AnswerEvent::Chunk(c) = e { Some(c.index) } else { None }).collect();
        prop_assert_eq!(announced, (first..first + count).collect::<Vec<_>>());
        prop_assert_eq!(events.last(), Some(&AnswerEvent::Done { sent: count }));
    }

    #[test]
    fn a_dropped_or_repeated_frame_is_refused(
        (chunks, first, count) in version_and_range(),
        at in any::<prop::sample::Index>(),
        repeat in any::<bool>(),
    ) {
        let m = manifest(chunks);
        let range = ChunkRange::within(&m, 0, first, count).unwrap();
        let mut frames = answer(&m, range);
        let at = at.index(frames.len());
        if repeat { frames.insert(at, frames[at].clone()) } else { frames.remove(at); }
        let mut machine = ChunkAnswer::new(&m, range).unwrap();
        let failed = frames.iter().any(|f| machine.handle(f).is_err());
        prop_assert!(failed || !machine.is_finished(), "a broken answer passed");
    }

    #[test]
    fn arbitrary_frames_never_panic_the_answer(
        chunks in 1u64..600,
        first in any::<u32>(),
        count in any::<u32>(),
        frames in vec(arb::message(), 0..12),
    ) {
        let m = manifest(chunks);
        let range = ChunkRange::within(&m, 0, first % chunks as u32, 1).unwrap();
        let range = ChunkRange::within(&m, 0, range.first(), count.max(1)).unwrap_or(range);
        let mut machine = ChunkAnswer::new(&m, range).unwrap();
        for f in &frames {
            let _ = machine.handle(f);
            if let Message::Chunk { file, index, raw_len, .. } = f {
                let _ = machine.handle_chunk(*file, *index, *raw_len);
            }
        }
    }

    #[test]
    fn uploads_in_any_pieces_arrive_whole(pieces in vec(vec(any::<u8>(), 0..64), 0..8)) {
        let size: usize = pieces.iter().map(Vec::len).sum();
        let (_, mut sender) = UploadSender::begin(String::new(), SourceFormat::Csv, PublishMode::Snapshot, size as u64);
        let mut receiver = UploadReceiver::new(size as u64);
        let mut got = Vec::new();
        for piece in pieces {
            for f in sender.data(Bytes::from(piece)).unwrap() {
                let UploadEvent::Data(data) = receiver.handle(f).unwrap() else { panic!("data") };
                got.extend_from_slice(&data);
            }
        }
        let end = sender.end().unwrap();
        prop_assert_eq!(receiver.handle(end).unwrap(), UploadEvent::Complete { bytes: size as u64 });
        prop_assert_eq!(got.len(), size);
        prop_assert!(receiver.finish().is_ok());
    }

    #[test]
    fn arbitrary_frames_never_panic_an_upload(size in any::<u64>(), frames in vec(arb::message(), 0..12)) {
        let mut receiver = UploadReceiver::new(size % 2048);
        for f in frames {
            let _ = receiver.handle(f);
        }
        let _ = receiver.finish();
    }
}

#[test]
fn pages_are_capped_at_chunks_per_page() {
    // A range of more than a page opens with every page it touches, in order.
    let m = manifest(3 * u64::from(CHUNKS_PER_PAGE));
    let range = ChunkRange::within(&m, 0, 10, 2 * CHUNKS_PER_PAGE).unwrap();
    let pages: Vec<_> = range.plan().filter(|s| matches!(s, AnswerStep::Page { .. })).collect();
    assert_eq!(pages.len(), 3);
}
