use super::*;
use crate::arb;
use proptest::prelude::*;

const KIB: u64 = 1024;

fn file(name: &str, size: u64, rows: u64, chunk_size: u32) -> FileEntry {
    role_file(FileRole::Snapshot, name, size, rows, chunk_size)
}

fn role_file(role: FileRole, name: &str, size: u64, rows: u64, chunk_size: u32) -> FileEntry {
    let count = size.div_ceil(u64::from(chunk_size));
    FileEntry {
        role,
        name: RelPath::parse(name).unwrap(),
        size,
        rows,
        blake3: Hash32([7; 32]),
        chunk_pages: pages_of(&chunk_hashes(count)),
    }
}

/// Made-up chunk hashes, different for every chunk.
fn chunk_hashes(count: u64) -> Vec<Hash32> {
    (0..count).map(|i| Hash32(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect()
}

fn pages_of(chunks: &[Hash32]) -> Vec<Hash32> {
    let mut pages = PageHasher::default();
    chunks.iter().for_each(|c| pages.push(c));
    pages.finish()
}

fn table_of(f: &FileEntry) -> TableFile {
    TableFile { name: f.name.clone(), size: f.size, rows: f.rows, blake3: f.blake3, rows_blake3: None }
}

/// A valid manifest: a snapshot with a parent, so one table file and an (empty) delta,
/// 64 KiB chunks.
fn sample() -> Manifest {
    let chunk_size = MIN_CHUNK_SIZE;
    let part = file("part-00000.parquet", 150 * KIB, 1000, chunk_size);
    Manifest {
        format: MANIFEST_FORMAT,
        dataset: DatasetId::new("vehicle-registry").unwrap(),
        version: VersionNo::new(3).unwrap(),
        kind: VersionKind::Snapshot,
        parent: Some(VersionNo::new(2).unwrap()),
        publisher: DeptId::new("interior").unwrap(),
        created_unix_ms: 1_700_000_000_000,
        schema_fingerprint: "ab".repeat(32),
        definition_version: 1,
        share_type: ShareType::Conditional,
        catalog_version: None,
        key_columns: vec!["vin".into()],
        layout: TableLayout::default(),
        writer: None,
        row_count: 1000,
        chunk_size,
        table: vec![table_of(&part)],
        files: vec![
            part,
            role_file(FileRole::Upserts, "upserts-00000.parquet", 0, 0, chunk_size),
            role_file(FileRole::Deletes, "deletes-00000.parquet", 0, 0, chunk_size),
        ],
        delta: Some(DeltaCounts { inserted: 0, updated: 0, deleted: 0 }),
        derived_from: None,
    }
}

#[test]
fn sample_is_valid_and_round_trips_through_json() {
    let m = sample();
    m.validate().unwrap();
    let json = m.to_json();
    assert_eq!(Manifest::from_json(&json), Ok(m));
}

#[test]
fn json_uses_kebab_case_keys() {
    let json = String::from_utf8(sample().to_json()).unwrap();
    for key in ["\"created-unix-ms\"", "\"schema-fingerprint\"", "\"share-type\"", "\"row-count\""] {
        assert!(json.contains(key), "{key} missing from {json}");
    }
    assert!(json.contains("\"kind\": \"snapshot\""), "{json}");
    assert!(json.contains("\"role\": \"upserts\""), "{json}");
    assert!(json.contains('\n'), "pretty-printed");
    assert!(json.contains(&format!("\"{}\"", "07".repeat(32))), "hashes are hex");
}

#[test]
fn chunk_arithmetic() {
    let m = sample();
    let cs = u64::from(MIN_CHUNK_SIZE);
    assert_eq!(m.chunk_count(0), 0);
    assert_eq!(m.chunk_count(1), 1);
    assert_eq!(m.chunk_count(cs), 1);
    assert_eq!(m.chunk_count(cs + 1), 2);
    let f = &m.files[0];
    assert_eq!(m.chunk_span(f, 0), Some((0, MIN_CHUNK_SIZE)));
    assert_eq!(m.chunk_span(f, 1), Some((cs, MIN_CHUNK_SIZE)));
    assert_eq!(m.chunk_span(f, 2), Some((2 * cs, (150 * KIB - 2 * cs) as u32)));
    assert_eq!(m.chunk_span(f, 3), None);
    assert_eq!(m.chunk_span(f, u32::MAX), None);
    assert_eq!(m.chunk_span(&m.files[1], 0), None);
    assert_eq!(m.total_bytes(), 150 * KIB);

    let exact = file("e", 2 * cs, 0, MIN_CHUNK_SIZE);
    assert_eq!(m.chunk_span(&exact, 1), Some((cs, MIN_CHUNK_SIZE)));
    assert_eq!(m.chunk_span(&exact, 2), None);

    let zero = Manifest { chunk_size: 0, ..sample() };
    assert_eq!(zero.chunk_count(100), 0);
    assert_eq!(zero.chunk_span(f, 0), None);
}

#[test]
fn validate_refuses_each_inconsistency() {
    let check = |edit: &dyn Fn(&mut Manifest), expected: ManifestError| {
        let mut m = sample();
        edit(&mut m);
        assert_eq!(m.validate(), Err(expected.clone()));
        assert_eq!(Manifest::from_json(&m.to_json()), Err(expected));
    };
    check(&|m| m.format = 1, ManifestError::UnsupportedFormat(1));
    check(&|m| m.chunk_size = MIN_CHUNK_SIZE - 1, ManifestError::ChunkSize(MIN_CHUNK_SIZE - 1));
    check(&|m| m.chunk_size = MAX_CHUNK_SIZE + 1, ManifestError::ChunkSize(MAX_CHUNK_SIZE + 1));
    check(&|m| m.chunk_size = 0, ManifestError::ChunkSize(0));
    check(
        &|m| {
            m.files = (0..=MAX_FILES).map(|i| file(&format!("f{i}"), 0, 0, MIN_CHUNK_SIZE)).collect();
            m.row_count = 0;
        },
        ManifestError::TooManyFiles(MAX_FILES + 1),
    );
    check(
        &|m| m.files[1].name = m.files[0].name.clone(),
        ManifestError::DuplicateFile { name: "part-00000.parquet".into() },
    );
    check(
        &|m| {
            m.files[0].chunk_pages.pop();
        },
        ManifestError::PageCount {
            name: "part-00000.parquet".into(),
            size: 150 * KIB,
            expected: 1,
            actual: 0,
        },
    );
    check(
        &|m| m.files[1].chunk_pages.push(Hash32([0; 32])),
        ManifestError::PageCount { name: "upserts-00000.parquet".into(), size: 0, expected: 0, actual: 1 },
    );
    for reserved in ["manifest.signed", "manifest.json", ".ferry/chunk-hashes/0"] {
        check(
            &|m| m.files[1].name = RelPath::parse(reserved).unwrap(),
            ManifestError::ReservedName { name: reserved.into() },
        );
    }
    check(&|m| m.row_count = 999, ManifestError::RowCount { files: 1000, total: 999 });
    check(
        &|m| {
            let mut extra = m.table[0].clone();
            extra.rows = u64::MAX;
            m.table.push(extra);
            m.row_count = u64::MAX;
        },
        ManifestError::RowCount { files: u64::MAX, total: u64::MAX },
    );
    check(
        &|m| m.table[0].blake3 = Hash32([9; 32]),
        ManifestError::TableMismatch { name: "part-00000.parquet".into() },
    );
    check(&|m| m.key_columns.clear(), ManifestError::NoKey);
    check(
        &|m| m.layout.zstd_level = 99,
        ManifestError::Layout(TableLayout { zstd_level: 99, ..TableLayout::default() }),
    );
    check(
        &|m| m.kind = VersionKind::Delta,
        ManifestError::Shape {
            kind: VersionKind::Delta,
            detail: "stores upserts and deletes and no table files",
        },
    );
    check(
        &|m| m.delta = None,
        ManifestError::Shape {
            kind: VersionKind::Snapshot,
            detail: "has delta counts exactly when it has a parent",
        },
    );
    check(
        &|m| m.files.retain(|f| f.role != FileRole::Deletes),
        ManifestError::Shape {
            kind: VersionKind::Snapshot,
            detail: "with a parent must also store its delta",
        },
    );
}

#[test]
fn from_json_refuses_oversize_and_malformed_bodies() {
    let big = vec![b' '; MAX_MANIFEST_LEN + 1];
    assert_eq!(
        Manifest::from_json(&big),
        Err(ManifestError::TooLarge { len: MAX_MANIFEST_LEN + 1, max: MAX_MANIFEST_LEN })
    );
    let syntax = |json: &[u8]| matches!(Manifest::from_json(json), Err(ManifestError::Syntax(_)));
    assert!(syntax(b""));
    assert!(syntax(b"{"));
    assert!(syntax(b"[]"));
    let json = String::from_utf8(sample().to_json()).unwrap();
    let cases = [
        json.replacen("\"format\"", "\"extra\": 1,\n  \"format\"", 1),
        json.replace("part-00000.parquet", "../escape.parquet"),
        json.replace("vehicle-registry", "Vehicle Registry"),
        json.replacen("\"version\": 3", "\"version\": 0", 1),
        json.replace(&"07".repeat(32), "zz"),
        json.replace("\"delta\"", "\"sideways\""),
    ];
    for bad in cases {
        assert_ne!(bad, json);
        assert!(syntax(bad.as_bytes()), "{bad}");
    }
}

#[test]
fn ensure_is_compares_dataset_and_version() {
    let m = sample();
    let other = DatasetId::new("other").unwrap();
    m.ensure_is(&m.dataset, m.version).unwrap();
    assert_eq!(
        m.ensure_is(&other, m.version),
        Err(ManifestError::WrongVersion { expected: "other v3".into(), found: "vehicle-registry v3".into() })
    );
    assert!(m.ensure_is(&m.dataset, VersionNo::FIRST).is_err());
}

#[test]
fn signed_manifest_golden_bytes() {
    let signed = SignedManifest {
        body: b"{}".to_vec(),
        signature: vec![0xaa, 0xbb],
        signer_chain: vec![vec![1, 2, 3], vec![]],
    };
    let bytes = signed.encode();
    assert_eq!(hex::encode(&bytes), "000000027b7d00000002aabb000000020000000301020300000000");
    assert_eq!(SignedManifest::decode(&bytes), Ok(signed));
}

#[test]
fn signed_manifest_decoding_is_strict() {
    let bytes = SignedManifest { body: vec![1], signature: vec![2], signer_chain: vec![] }.encode();
    for cut in 0..bytes.len() {
        let result = SignedManifest::decode(&bytes[..cut]);
        assert!(matches!(result, Err(crate::DecodeError::Truncated { tag: 0x21, .. })), "{result:?}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(SignedManifest::decode(&long), Err(crate::DecodeError::TrailingBytes { tag: 0x21, extra: 1 }));
    // A certificate count the input cannot hold fails before allocating.
    let mut huge = bytes[..bytes.len() - 4].to_vec();
    huge.extend_from_slice(&[0xff; 4]);
    assert!(matches!(
        SignedManifest::decode(&huge),
        Err(crate::DecodeError::Truncated { field: "signed.signer_chain", .. })
    ));
}

proptest! {
    #[test]
    fn signed_manifest_round_trips(signed in arb::signed_manifest()) {
        let bytes = signed.encode();
        prop_assert_eq!(SignedManifest::decode(&bytes), Ok(signed));
    }

    #[test]
    fn manifest_json_round_trips(m in arb::manifest()) {
        prop_assert_eq!(m.validate(), Ok(()));
        prop_assert_eq!(Manifest::from_json(&m.to_json()), Ok(m));
    }

    #[test]
    fn chunk_spans_tile_the_file(m in arb::manifest()) {
        for f in &m.files {
            let mut next = 0u64;
            let chunks = m.chunk_count(f.size) as u32;
            for i in 0..chunks {
                let (offset, len) = m.chunk_span(f, i).unwrap();
                prop_assert_eq!(offset, next);
                prop_assert!(len > 0 && len <= m.chunk_size);
                next += u64::from(len);
            }
            prop_assert_eq!(next, f.size);
            prop_assert_eq!(m.chunk_span(f, chunks), None);
        }
    }

    #[test]
    fn page_spans_tile_the_chunks(m in arb::manifest()) {
        for f in &m.files {
            let mut next = 0u32;
            for page in 0..f.chunk_pages.len() as u32 {
                let (first, count) = m.page_span(f, page).unwrap();
                prop_assert_eq!(first, next);
                prop_assert!(count > 0 && count <= CHUNKS_PER_PAGE);
                prop_assert!((first..first + count).all(|c| Manifest::page_of(c) == page));
                next += count;
            }
            prop_assert_eq!(u64::from(next), m.chunk_count(f.size));
            prop_assert_eq!(m.page_span(f, f.chunk_pages.len() as u32), None);
        }
    }

    /// A page verifies exactly when it is the right length and every hash in it is the
    /// one the page hash was made from.
    #[test]
    fn pages_verify_only_as_built(
        chunks in 1u64..700,
        flip in any::<prop::sample::Index>(),
    ) {
        let mut m = sample();
        let hashes = chunk_hashes(chunks);
        m.files[0].size = chunks * u64::from(m.chunk_size) - 1;
        m.files[0].chunk_pages = pages_of(&hashes);
        let f = &m.files[0];
        let pages = f.chunk_pages.len() as u32;
        prop_assert_eq!(u64::from(pages), chunks.div_ceil(u64::from(CHUNKS_PER_PAGE)));
        for page in 0..pages {
            let (first, count) = m.page_span(f, page).unwrap();
            let bytes: Vec<u8> =
                hashes[first as usize..(first + count) as usize].iter().flat_map(|h| h.0).collect();
            let good = ChunkPage { page, hashes: &bytes };
            prop_assert_eq!(good.verify(&m, f), Ok(()));
            for c in first..first + count {
                prop_assert_eq!(good.chunk(c), Some(hashes[c as usize]));
            }
            prop_assert_eq!(good.chunk(first + count), None);
            let mut bad = bytes.clone();
            let at = flip.index(bad.len());
            bad[at] ^= 1;
            let err = ChunkPage { page, hashes: &bad }.verify(&m, f).unwrap_err();
            prop_assert!(matches!(err, PageError::Mismatch { .. }), "{err}");
            let short = ChunkPage { page, hashes: &bytes[CHUNK_HASH_LEN..] }.verify(&m, f).unwrap_err();
            prop_assert!(matches!(short, PageError::Length { .. }), "{short}");
        }
        let past = ChunkPage { page: pages, hashes: &[] }.verify(&m, f).unwrap_err();
        prop_assert!(matches!(past, PageError::NoPage { .. }), "{past}");
    }
}

#[test]
fn writer_and_rows_hashes_are_optional_and_checked() {
    let old = sample();
    let json = String::from_utf8(old.to_json()).unwrap();
    assert!(
        !json.contains("writer") && !json.contains("rows-blake3"),
        "an older manifest's JSON is unchanged"
    );
    let new = Manifest {
        writer: Some("ferry-canonical/1 parquet-rs/60.2.0".into()),
        table: old
            .table
            .iter()
            .map(|t| TableFile { rows_blake3: Some(Hash32([9; 32])), ..t.clone() })
            .collect(),
        ..old.clone()
    };
    let json = String::from_utf8(new.to_json()).unwrap();
    assert!(json.contains("\"writer\": \"ferry-canonical/1") && json.contains("\"rows-blake3\""), "{json}");
    assert_eq!(Manifest::from_json(&new.to_json()).unwrap(), new);
    let control = Manifest { writer: Some("a\nb".into()), ..old.clone() };
    assert_eq!(control.validate(), Err(ManifestError::Writer));
    let long = Manifest { writer: Some("x".repeat(MAX_WRITER_LEN + 1)), ..old };
    assert_eq!(long.validate(), Err(ManifestError::Writer));
}

#[test]
fn a_restricted_version_names_its_source_and_is_signed_by_the_source_publisher() {
    use crate::policy::Restriction;
    let restriction = Restriction { columns: Some(vec!["vin".into()]), rows: Some("seats > 4".into()) };
    let mut m = sample();
    let derived = DerivedFrom {
        dataset: m.dataset.clone(),
        version: m.version,
        source_publisher: m.publisher.clone(),
        source_manifest: Hash32([1; 32]),
        restriction_id: restriction.id(),
        restriction: restriction.clone(),
    };
    m.derived_from = Some(derived.clone());
    m.validate().unwrap();
    assert_eq!(Manifest::from_json(&m.to_json()), Ok(m.clone()));
    let bad = |d: DerivedFrom| Manifest { derived_from: Some(d), ..m.clone() }.validate().unwrap_err();
    let other = DerivedFrom { version: VersionNo::new(2).unwrap(), ..derived.clone() };
    assert!(matches!(bad(other), ManifestError::Derived(_)));
    let other = DerivedFrom { source_publisher: DeptId::new("guangdong").unwrap(), ..derived.clone() };
    assert!(matches!(bad(other), ManifestError::Derived(_)), "a node vouching for another's source");
    let other = DerivedFrom { restriction: Restriction { rows: None, ..restriction }, ..derived };
    assert!(matches!(bad(other), ManifestError::Derived(_)));
    // Manifests from before the field parse as published versions.
    assert!(!String::from_utf8(sample().to_json()).unwrap().contains("derived-from"));
}
