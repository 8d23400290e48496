//! The manifest of a dataset version: which files, their sizes, row counts and BLAKE3 hashes
//! (whole file, and one per page of chunk hashes), signed by the publishing node.
//!
//! A file's chunk hashes are not in the manifest: they travel in `ChunkHashes` frames, a page
//! of at most [`CHUNKS_PER_PAGE`] at a time, and each page is checked against the page hash the
//! manifest holds ([`ChunkPage::verify`]). So the manifest, and what a node or a puller keeps of
//! it, is a few kilobytes whatever the version's size (it was 32 bytes per chunk, about 1.6 MB
//! of JSON for 20 GiB at 1 MiB chunks).
//!
//! The manifest body travels and is stored as JSON bytes; the signature covers exactly those
//! bytes, so no canonical form is needed. Verifying the signature needs certificates and crypto,
//! which live in `ferry-client::pki`; this module checks the structure.

use crate::ids::{DatasetId, DeptId, ShareType, VersionNo};
use crate::message::tag;
use crate::path::{NameClash, NameSet, RelPath};
use crate::policy::{Restriction, RestrictionId};
use crate::wire::{Counter, Reader, Sink};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Smallest and largest chunk a manifest may declare.
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Largest manifest body accepted, in bytes.
pub const MAX_MANIFEST_LEN: usize = 8 * 1024 * 1024;
/// Most files a version may hold.
pub const MAX_FILES: usize = 10_000;
/// Manifest format written by this build. Format 2 holds page hashes instead of chunk hashes.
pub const MANIFEST_FORMAT: u32 = 2;
/// Longest writer name a manifest may carry ([`Manifest::writer`]).
pub const MAX_WRITER_LEN: usize = 200;
/// Chunk hashes per page. A page of 1 MiB chunks covers 256 MiB and is 8 KiB of hashes.
pub const CHUNKS_PER_PAGE: u32 = 256;
/// Bytes of one chunk hash in a page.
pub const CHUNK_HASH_LEN: usize = 32;
/// Names a stored file may not take: the files a committed version directory holds beside the
/// data, and the directory where a node keeps the data's chunk hashes.
pub const RESERVED_NAMES: [&str; 3] = ["manifest.signed", "manifest.json", ".ferry"];

/// A BLAKE3 hash; JSON form is 64 lowercase hex digits.
///
/// Read and written without a heap string per hash. (When a manifest held one per chunk,
/// 20,480 for 20 GiB, a `String` each made parsing it churn about 1.6 MB of small allocations.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash32(pub [u8; 32]);

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; 64];
        // Invariant: 64 bytes hold the hex of 32, and hex digits are ASCII.
        hex::encode_to_slice(self.0, &mut text).expect("64 bytes hold 32 in hex");
        serializer.serialize_str(std::str::from_utf8(&text).expect("hex is ASCII"))
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Hash32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a BLAKE3 hash as 64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Hash32, E> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|e| E::custom(format!("bad hash {s:?}: {e}")))?;
                Ok(Hash32(out))
            }
        }
        deserializer.deserialize_str(HexVisitor)
    }
}

impl std::fmt::Display for Hash32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Whether a version stores the whole table or only the change since its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionKind {
    /// The table's files are stored (and, when there is a parent, the delta too).
    Snapshot,
    /// Only the delta is stored; the table is its parent's with the delta applied.
    Delta,
}

impl VersionKind {
    /// The byte that stands for this value on the wire. Never reused.
    pub fn code(self) -> u8 {
        match self {
            Self::Snapshot => 1,
            Self::Delta => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Snapshot),
            2 => Some(Self::Delta),
            _ => None,
        }
    }
}

/// What a stored file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    /// Part of the table at this version (`part-*.parquet`).
    #[default]
    Snapshot,
    /// Rows inserted or updated since the parent, whole rows, key-sorted.
    Upserts,
    /// Keys deleted since the parent, key columns only, key-sorted.
    Deletes,
}

/// One file of the table at a version, stored or not: what materializing must reproduce,
/// byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableFile {
    pub name: RelPath,
    pub size: u64,
    pub rows: u64,
    pub blake3: Hash32,
    /// The file's logical hash: BLAKE3 over a canonical encoding of its rows (ferry-tables'
    /// `rows_hash`), which a consumer whose Parquet writer differs from the publisher's checks
    /// instead of `blake3`. Absent in manifests from before it was recorded, and for a schema
    /// with a column type that encoding does not cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_blake3: Option<Hash32>,
}

/// How the table's Parquet files are cut and compressed. A consumer materializing a version
/// writes with the same layout, so its files come out byte-identical to the publisher's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableLayout {
    pub rows_per_file: u64,
    pub row_group_rows: u64,
    pub batch_rows: u64,
    pub zstd_level: i32,
}

impl TableLayout {
    /// Whether every figure is within the bounds a node accepts from a peer.
    pub fn is_sane(&self) -> bool {
        (1..=1 << 32).contains(&self.rows_per_file)
            && (1..=1 << 24).contains(&self.row_group_rows)
            && (1..=1 << 20).contains(&self.batch_rows)
            && (1..=22).contains(&self.zstd_level)
    }
}

impl Default for TableLayout {
    fn default() -> Self {
        Self { rows_per_file: 262_144, row_group_rows: 65_536, batch_rows: 8_192, zstd_level: 3 }
    }
}

/// Rows changed since the parent version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeltaCounts {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// One stored file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileEntry {
    #[serde(default)]
    pub role: FileRole,
    pub name: RelPath,
    pub size: u64,
    pub rows: u64,
    pub blake3: Hash32,
    /// BLAKE3 of each page of the file's chunk hashes, in order ([`ChunkPage`]). A chunk hash is
    /// the BLAKE3 of one `chunk_size` slice of the file (the last may be shorter).
    pub chunk_pages: Vec<Hash32>,
}

/// The chunk hashes of one page of a file: `CHUNK_HASH_LEN` bytes per chunk, for chunks
/// `page * CHUNKS_PER_PAGE ..` up to [`CHUNKS_PER_PAGE`] of them or the file's last chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPage<'a> {
    pub page: u32,
    pub hashes: &'a [u8],
}

/// Why a page of chunk hashes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("file {file} has no page {page}")]
    NoPage { file: String, page: u32 },
    #[error("page {page} of file {file} holds {len} bytes; {expected} were expected")]
    Length { file: String, page: u32, len: usize, expected: usize },
    #[error("page {page} of file {file} does not match its hash in the manifest")]
    Mismatch { file: String, page: u32 },
}

impl ChunkPage<'_> {
    /// The hash the manifest holds for these hashes.
    pub fn digest(hashes: &[u8]) -> Hash32 {
        Hash32(*blake3::hash(hashes).as_bytes())
    }

    /// Checks the page against `file`'s entry in `manifest`: its length, then its hash.
    pub fn verify(&self, manifest: &Manifest, file: &FileEntry) -> Result<(), PageError> {
        let name = || file.name.to_string();
        let (_, count) = manifest
            .page_span(file, self.page)
            .ok_or_else(|| PageError::NoPage { file: name(), page: self.page })?;
        let expected = count as usize * CHUNK_HASH_LEN;
        if self.hashes.len() != expected {
            return Err(PageError::Length {
                file: name(),
                page: self.page,
                len: self.hashes.len(),
                expected,
            });
        }
        if file.chunk_pages.get(self.page as usize) != Some(&Self::digest(self.hashes)) {
            return Err(PageError::Mismatch { file: name(), page: self.page });
        }
        Ok(())
    }

    /// The hash of chunk `index` of the file, if this page holds it.
    pub fn chunk(&self, index: u32) -> Option<Hash32> {
        let first = self.page.checked_mul(CHUNKS_PER_PAGE)?;
        let at = (index.checked_sub(first)? as usize).checked_mul(CHUNK_HASH_LEN)?;
        let bytes = self.hashes.get(at..at + CHUNK_HASH_LEN)?;
        Some(Hash32(bytes.try_into().ok()?))
    }
}

/// Page hashes of a file, built from its chunk hashes in order, one at a time.
#[derive(Debug, Default)]
pub struct PageHasher {
    page: blake3::Hasher,
    in_page: u32,
    pages: Vec<Hash32>,
}

impl PageHasher {
    /// Adds the next chunk's hash.
    pub fn push(&mut self, chunk: &Hash32) {
        self.page.update(&chunk.0);
        self.in_page += 1;
        if self.in_page == CHUNKS_PER_PAGE {
            self.pages.push(Hash32(*self.page.finalize().as_bytes()));
            self.page.reset();
            self.in_page = 0;
        }
    }

    /// The page hashes, the last page possibly short.
    pub fn finish(mut self) -> Vec<Hash32> {
        if self.in_page > 0 {
            self.pages.push(Hash32(*self.page.finalize().as_bytes()));
        }
        self.pages
    }
}

/// Description of one immutable dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub format: u32,
    pub dataset: DatasetId,
    pub version: VersionNo,
    pub kind: VersionKind,
    pub parent: Option<VersionNo>,
    pub publisher: DeptId,
    /// Publication time, Unix milliseconds (the publisher's clock).
    pub created_unix_ms: i64,
    /// Hex BLAKE3 of the canonical schema text (see ferry-daemon's dataset definitions).
    pub schema_fingerprint: String,
    pub definition_version: u32,
    pub share_type: ShareType,
    /// The catalog version of the dataset's entry this version was published under; absent in
    /// versions published before the node enforced a catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<u64>,
    /// Columns of the key, in sort order.
    pub key_columns: Vec<String>,
    /// How the table's files are written.
    pub layout: TableLayout,
    /// The writer of the table's files, e.g. `ferry-canonical/1 parquet-rs/60.2.0`: a consumer
    /// writing with another one cannot reproduce their bytes and checks their rows instead
    /// ([`TableFile::rows_blake3`]). Absent in manifests from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Rows of the table at this version.
    pub row_count: u64,
    pub chunk_size: u32,
    /// The stored files: the table's (`Snapshot` role) and/or the delta's.
    pub files: Vec<FileEntry>,
    /// The table's files at this version, whether stored here or not.
    pub table: Vec<TableFile>,
    /// Change since the parent; `None` for a first version.
    pub delta: Option<DeltaCounts>,
    /// For a restricted version (what a conditional grant allows of a source version, built and
    /// signed by the serving node): the version it derives from and the restriction. Absent in
    /// every published version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<DerivedFrom>,
}

/// What a restricted version was derived from ([`Manifest::derived_from`]). Its `publisher` is
/// the serving node's department, which signed it; `source_publisher` is the department that
/// signed the source version (the dataset's provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DerivedFrom {
    pub dataset: DatasetId,
    pub version: VersionNo,
    pub source_publisher: DeptId,
    /// BLAKE3 of the source version's stored signed manifest.
    pub source_manifest: Hash32,
    pub restriction_id: RestrictionId,
    pub restriction: Restriction,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("manifest is not valid JSON for this format: {0}")]
    Syntax(String),
    #[error("manifest format {0} is not supported (this build reads {MANIFEST_FORMAT})")]
    UnsupportedFormat(u32),
    #[error("chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize(u32),
    #[error("manifest lists {0} files; the limit is {MAX_FILES}")]
    TooManyFiles(usize),
    #[error("file {name} appears twice")]
    DuplicateFile { name: String },
    #[error("file {name}: {size} bytes need {expected} pages of chunk hashes, manifest has {actual}")]
    PageCount { name: String, size: u64, expected: u64, actual: usize },
    #[error("file name {name} is reserved")]
    ReservedName { name: String },
    #[error(transparent)]
    NameClash(#[from] NameClash),
    #[error("row counts of the files add up to {files}, manifest says {total}")]
    RowCount { files: u64, total: u64 },
    #[error("manifest is for {found}, expected {expected}")]
    WrongVersion { expected: String, found: String },
    #[error("stored table file {name} does not match the table list of the manifest")]
    TableMismatch { name: String },
    #[error("a {kind:?} version {detail}")]
    Shape { kind: VersionKind, detail: &'static str },
    #[error("the manifest names no key column")]
    NoKey,
    #[error("the table layout {0:?} is out of bounds")]
    Layout(TableLayout),
    #[error("the writer name is not up to {MAX_WRITER_LEN} printable ASCII characters")]
    Writer,
    #[error("a restricted version {0}")]
    Derived(&'static str),
}

impl Manifest {
    /// Parses a manifest body and checks its structure ([`Manifest::validate`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge { len: bytes.len(), max: MAX_MANIFEST_LEN });
        }
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The body bytes to sign and store: pretty-printed JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Invariant: every field serializes (string keys, no maps, no non-finite floats), and
        // writing to a Vec cannot fail.
        serde_json::to_vec_pretty(self).expect("a manifest always serializes to JSON")
    }

    /// Checks bounds and internal consistency (chunk counts, unique names, row counts).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnsupportedFormat(self.format));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ManifestError::ChunkSize(self.chunk_size));
        }
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles(self.files.len()));
        }
        if self.key_columns.is_empty() {
            return Err(ManifestError::NoKey);
        }
        if !self.layout.is_sane() {
            return Err(ManifestError::Layout(self.layout));
        }
        let printable =
            |w: &String| w.len() <= MAX_WRITER_LEN && w.bytes().all(|b| (b' '..=b'~').contains(&b));
        if !self.writer.as_ref().is_none_or(printable) {
            return Err(ManifestError::Writer);
        }
        let mut names = HashSet::with_capacity(self.files.len());
        let mut spellings = NameSet::default();
        for file in &self.files {
            if !names.insert(file.name.as_str()) {
                return Err(ManifestError::DuplicateFile { name: file.name.to_string() });
            }
            spellings.insert(&file.name)?;
            let first = file.name.components().next().map(crate::path::fold);
            if first.is_some_and(|first| RESERVED_NAMES.contains(&first.as_str())) {
                return Err(ManifestError::ReservedName { name: file.name.to_string() });
            }
            let expected = self.page_count(file.size);
            if expected != file.chunk_pages.len() as u64 {
                return Err(ManifestError::PageCount {
                    name: file.name.to_string(),
                    size: file.size,
                    expected,
                    actual: file.chunk_pages.len(),
                });
            }
        }
        self.validate_table()?;
        self.validate_derived()?;
        self.validate_shape()
    }

    /// A restricted version names itself as derived from the same dataset and version, under
    /// the restriction its id hashes, and from a source its own publisher signed.
    fn validate_derived(&self) -> Result<(), ManifestError> {
        let Some(d) = &self.derived_from else { return Ok(()) };
        if d.dataset != self.dataset || d.version != self.version {
            return Err(ManifestError::Derived("must derive from the same dataset and version"));
        }
        if d.restriction.id() != d.restriction_id {
            return Err(ManifestError::Derived("names a restriction id that is not its restriction's"));
        }
        // Its signer is its publisher (checked with the signature), so a restricted version is
        // accepted only from a node of the department that signed its source: a node cannot
        // vouch for rows of a version another department signed.
        if d.source_publisher != self.publisher {
            return Err(ManifestError::Derived("must be signed by the department that signed its source"));
        }
        Ok(())
    }

    /// The table list adds up to `row_count`, and stored table files match it exactly.
    fn validate_table(&self) -> Result<(), ManifestError> {
        if self.table.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles(self.table.len()));
        }
        let mut rows: u64 = 0;
        for file in &self.table {
            // An overflowing sum cannot equal any total; it is reported as u64::MAX.
            rows = rows
                .checked_add(file.rows)
                .ok_or(ManifestError::RowCount { files: u64::MAX, total: self.row_count })?;
        }
        if rows != self.row_count {
            return Err(ManifestError::RowCount { files: rows, total: self.row_count });
        }
        let stored: Vec<&FileEntry> = self.files_with(FileRole::Snapshot).collect();
        if !stored.is_empty() {
            if stored.len() != self.table.len() {
                let name = stored.first().map_or(String::new(), |f| f.name.to_string());
                return Err(ManifestError::TableMismatch { name });
            }
            for (file, table) in stored.iter().zip(&self.table) {
                let same = file.name == table.name
                    && file.size == table.size
                    && file.rows == table.rows
                    && file.blake3 == table.blake3;
                if !same {
                    return Err(ManifestError::TableMismatch { name: file.name.to_string() });
                }
            }
        }
        Ok(())
    }

    /// Which files a version of each kind must and must not store.
    fn validate_shape(&self) -> Result<(), ManifestError> {
        let has = |role| self.files.iter().any(|f| f.role == role);
        let has_delta = has(FileRole::Upserts) && has(FileRole::Deletes);
        let shape = |detail| Err(ManifestError::Shape { kind: self.kind, detail });
        if self.parent.is_some() != self.delta.is_some() {
            return shape("has delta counts exactly when it has a parent");
        }
        match self.kind {
            VersionKind::Snapshot if !has(FileRole::Snapshot) && !self.table.is_empty() => {
                shape("must store its table files")
            }
            VersionKind::Snapshot if self.parent.is_some() && !has_delta => {
                shape("with a parent must also store its delta")
            }
            VersionKind::Delta if self.parent.is_none() => shape("must have a parent"),
            VersionKind::Delta if !has_delta || has(FileRole::Snapshot) => {
                shape("stores upserts and deletes and no table files")
            }
            _ => Ok(()),
        }
    }

    /// Stored files of one role, in manifest order, with their index in `files`.
    pub fn files_with(&self, role: FileRole) -> impl Iterator<Item = &FileEntry> {
        self.files.iter().filter(move |f| f.role == role)
    }

    /// Sum of the sizes of stored files of one role.
    pub fn bytes_with(&self, role: FileRole) -> u64 {
        self.files_with(role).fold(0u64, |sum, f| sum.saturating_add(f.size))
    }

    /// Bytes of the delta (upserts and deletes).
    pub fn delta_bytes(&self) -> u64 {
        self.bytes_with(FileRole::Upserts).saturating_add(self.bytes_with(FileRole::Deletes))
    }

    /// Bytes of the table at this version.
    pub fn table_bytes(&self) -> u64 {
        self.table.iter().fold(0u64, |sum, f| sum.saturating_add(f.size))
    }

    /// Checks that this is the manifest of `dataset` version `version` (a node must not accept a
    /// manifest for something other than what it asked for).
    pub fn ensure_is(&self, dataset: &DatasetId, version: VersionNo) -> Result<(), ManifestError> {
        if &self.dataset == dataset && self.version == version {
            Ok(())
        } else {
            Err(ManifestError::WrongVersion {
                expected: format!("{dataset} {version}"),
                found: format!("{} {}", self.dataset, self.version),
            })
        }
    }

    /// Number of chunks of a file of `size` bytes: `ceil(size / chunk_size)`, so 0 for an empty
    /// file. A manifest with a chunk size of 0 (refused by [`Manifest::validate`]) has no chunks.
    pub fn chunk_count(&self, size: u64) -> u64 {
        match self.chunk_size {
            0 => 0,
            chunk_size => size.div_ceil(u64::from(chunk_size)),
        }
    }

    /// Byte offset and length of chunk `index` of `file`, or `None` past the end. Every chunk is
    /// `chunk_size` bytes except the last, which may be shorter.
    pub fn chunk_span(&self, file: &FileEntry, index: u32) -> Option<(u64, u32)> {
        if u64::from(index) >= self.chunk_count(file.size) {
            return None;
        }
        let offset = u64::from(index) * u64::from(self.chunk_size);
        let len = (file.size - offset).min(u64::from(self.chunk_size));
        // `len <= chunk_size`, a u32.
        Some((offset, len as u32))
    }

    /// Number of pages of chunk hashes of a file of `size` bytes.
    pub fn page_count(&self, size: u64) -> u64 {
        self.chunk_count(size).div_ceil(u64::from(CHUNKS_PER_PAGE))
    }

    /// First chunk and number of chunks of page `page` of `file`, or `None` past the end.
    pub fn page_span(&self, file: &FileEntry, page: u32) -> Option<(u32, u32)> {
        let chunks = self.chunk_count(file.size);
        let first = u64::from(page) * u64::from(CHUNKS_PER_PAGE);
        if first >= chunks {
            return None;
        }
        // `count` is at most CHUNKS_PER_PAGE. A page whose first chunk does not fit in a u32
        // (a file past 256 TiB at the smallest chunk size) has no chunk a frame can name: `None`.
        let count = (chunks - first).min(u64::from(CHUNKS_PER_PAGE));
        Some((u32::try_from(first).ok()?, count as u32))
    }

    /// The page that holds chunk `index`.
    pub fn page_of(index: u32) -> u32 {
        index / CHUNKS_PER_PAGE
    }

    /// Sum of file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().fold(0u64, |sum, f| sum.saturating_add(f.size))
    }
}

/// A manifest body with the publishing node's signature and certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// JSON bytes of a [`Manifest`].
    pub body: Vec<u8>,
    /// Signature over `body` by the key of `signer_chain[0]` (ECDSA P-256 SHA-256, ASN.1 DER).
    pub signature: Vec<u8>,
    /// DER certificates, leaf first, up to but excluding the root CA.
    pub signer_chain: Vec<Vec<u8>>,
}

impl SignedManifest {
    /// The stored form (`manifest.signed`): same encoding as the body of a `ManifestData` frame,
    /// `body:bytes signature:bytes signer_chain:list<bytes>`.
    pub fn encode(&self) -> Vec<u8> {
        let mut counter = Counter::default();
        self.write(&mut counter);
        let mut out = Vec::with_capacity(counter.0);
        self.write(&mut out);
        out
    }

    /// Parses the stored form. Errors report the tag of `ManifestData` (0x21), whose body this is.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::DecodeError> {
        let mut reader = Reader::new(bytes, tag::MANIFEST_DATA);
        let signed = Self::read(&mut reader)?;
        reader.finish()?;
        Ok(signed)
    }

    pub(crate) fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        crate::signed::write_parts(&self.body, &self.signature, &self.signer_chain, out);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, crate::DecodeError> {
        let crate::SignedDocument { body, signature, signer_chain } = crate::signed::read_parts(r)?;
        Ok(Self { body, signature, signer_chain })
    }
}

#[cfg(test)]
mod tests;
