//! A replication into an object store (S3) uploads each file while the pull that brings it
//! still runs: [`StreamedImport`] is told of every chunk the pull has verified and written
//! (`PullEvent::Chunk`), and as soon as a file's first `PART_SIZE` bytes, then its next, are
//! all written, it reads that part back from the pull's staging file (around the page cache,
//! as the pull wrote it) and sends it as the next part of a multipart upload to the file's key.
//! [`Store::commit_pulled`](super::Store::commit_pulled) then only completes each upload
//! ([`Streamed::complete`]) instead of uploading the file after the pull: the replication
//! takes about as long as the slower of the two, not their sum.
//!
//! Nothing is visible before the commit: an upload in parts shows no object until it is
//! completed, which the commit does in its usual order (files, chunk hashes, then the
//! manifest). The commit completes a file's upload only when the pull verified that file's
//! every chunk in this run (the hashes it hands over, `VerifiedHashes`), this module sent all
//! its bytes, every part was acknowledged, and the manifest the parts were cut by is the one
//! the commit verified (same BLAKE3 of its body); any other file is uploaded after the pull as
//! before, and its upload in parts is aborted. A failed pull drops the import, which aborts
//! its uploads; a node killed part-way leaves incomplete uploads, invisible to readers (an S3
//! lifecycle rule removes them). Parts of all files share [`PARTS_IN_FLIGHT`] buffers, which
//! bound the memory this takes.
//!
//! Neighbours: `data::service::replicate` feeds it from the pull's observer;
//! [`crate::data::blob::PartsUpload`] sends the parts.

use super::{file_path, last_segment};
use crate::data::blob::{BlobError, BlobStore, PART_SIZE, PartsUpload};
use bytes::Bytes;
use ferry_net::aligned::ALIGN;
use ferry_proto::{DatasetId, Manifest, SignedManifest, VersionNo};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Parts of one import's files in flight at once, each a buffer of [`PART_SIZE`] bytes.
pub const PARTS_IN_FLIGHT: usize = 8;
/// Files of one version streamed at most (each keeps its staging file open while the pull
/// runs); the others are uploaded after the pull.
const MAX_FILES: usize = 256;

/// What the pull tells the import.
#[derive(Debug)]
enum Note {
    /// The pull's staging directory holds the signed manifest and the files; `resumed`: an
    /// earlier run wrote some chunks, which this run will not announce.
    Started {
        resumed: bool,
    },
    Chunk {
        file: u32,
        chunk: u32,
    },
    /// The pull finished: every chunk it wrote was announced.
    Done,
    /// The pull failed or the import was dropped: nothing will be completed.
    Abandoned,
}

/// Uploads in progress while a pull runs; see the module's documentation.
#[derive(Debug)]
pub struct StreamedImport {
    notes: mpsc::UnboundedSender<Note>,
    task: JoinHandle<Option<Streamed>>,
}

impl StreamedImport {
    /// Starts an import of `dataset` `version` pulled into `staging` (the pull's staging
    /// directory) into `blobs`. It waits for [`started`](Self::started).
    pub fn start(
        blobs: Arc<dyn BlobStore>,
        staging: PathBuf,
        dataset: DatasetId,
        version: VersionNo,
    ) -> Self {
        let (notes, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(received, blobs, staging, (dataset, version)));
        Self { notes, task }
    }

    /// What the pull's observer tells the import through.
    pub fn feed(&self) -> ImportFeed {
        ImportFeed(self.notes.clone())
    }

    /// The pull finished: sends what is left and returns the uploads for the commit to
    /// complete; `None` when nothing was streamed.
    pub async fn finish(mut self) -> Option<Streamed> {
        let _ = self.notes.send(Note::Done);
        (&mut self.task).await.ok().flatten()
    }
}

impl Drop for StreamedImport {
    /// Dropped before [`finish`](Self::finish) (a failed pull): every upload is aborted.
    /// After it, the task has stopped reading notes.
    fn drop(&mut self) {
        let _ = self.notes.send(Note::Abandoned);
    }
}

/// The pull's side of a [`StreamedImport`] (for its observer); cheap, never blocks.
#[derive(Debug, Clone)]
pub struct ImportFeed(mpsc::UnboundedSender<Note>);

impl ImportFeed {
    /// The pull opened its staging directory; `resumed_bytes` were written by an earlier run.
    pub fn started(&self, resumed_bytes: u64) {
        let _ = self.0.send(Note::Started { resumed: resumed_bytes > 0 });
    }

    /// The pull verified chunk `chunk` of file number `file` and wrote it to its staging file.
    pub fn chunk_written(&self, file: u32, chunk: u32) {
        let _ = self.0.send(Note::Chunk { file, chunk });
    }
}

/// The uploads a [`StreamedImport`] made, by manifest file; those the commit does not
/// complete are aborted when this is dropped.
#[derive(Debug)]
pub struct Streamed {
    /// BLAKE3 of the signed manifest's body the parts were cut by.
    body: [u8; 32],
    files: Mutex<Vec<Option<FileUpload>>>,
}

/// One file's upload in parts.
#[derive(Debug)]
pub struct FileUpload {
    upload: PartsUpload,
    parts: Vec<JoinHandle<Result<(), BlobError>>>,
    sent: u64,
    size: u64,
}

impl Streamed {
    /// The upload of file number `index`, for a commit of the manifest signed as `signed`
    /// (`None` when the parts were cut by another manifest).
    pub(super) fn take(&self, index: usize, signed: &SignedManifest) -> Option<FileUpload> {
        if *blake3::hash(&signed.body).as_bytes() != self.body {
            return None;
        }
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.get_mut(index).and_then(Option::take)
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let files = std::mem::take(self.files.get_mut().unwrap_or_else(PoisonError::into_inner));
        let left: Vec<FileUpload> = files.into_iter().flatten().collect();
        if left.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for file in left {
                    file.abort().await;
                }
            });
        }
    }
}

/// Why a streamed upload was not completed (the file is then uploaded after the pull).
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    #[error("{sent} of {size} bytes were sent")]
    Short { sent: u64, size: u64 },
    #[error("a part failed: {0}")]
    Part(#[from] BlobError),
    #[error("a part's task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl FileUpload {
    /// Waits for every part and completes the upload: the object is visible from then on.
    /// Anything missing or failed aborts the upload instead.
    pub async fn complete(mut self) -> Result<(), Incomplete> {
        if self.sent != self.size {
            let (sent, size) = (self.sent, self.size);
            self.abort().await;
            return Err(Incomplete::Short { sent, size });
        }
        for part in std::mem::take(&mut self.parts) {
            let failed = match part.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => Incomplete::Part(e),
                Err(e) => Incomplete::Task(e),
            };
            self.abort().await;
            return Err(failed);
        }
        self.upload.complete().await.map_err(Incomplete::Part)
    }

    pub(super) async fn abort(self) {
        for part in &self.parts {
            part.abort();
        }
        self.upload.abort().await;
    }
}

/// The import's task: waits for the pull to start, then sends parts as they are written.
async fn run(
    mut notes: mpsc::UnboundedReceiver<Note>,
    blobs: Arc<dyn BlobStore>,
    staging: PathBuf,
    expected: (DatasetId, VersionNo),
) -> Option<Streamed> {
    let resumed = match notes.recv().await? {
        Note::Started { resumed } => resumed,
        Note::Chunk { .. } | Note::Done | Note::Abandoned => return None,
    };
    let opened = {
        let staging = staging.clone();
        tokio::task::spawn_blocking(move || open_staging(&staging, &expected)).await
    };
    let (body, manifest, mut files) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(why)) => {
            tracing::debug!(staging = %staging.display(), %why, "not uploading while pulling");
            return None;
        }
        Err(_) => return None,
    };
    if resumed {
        tracing::debug!(
            "a resumed pull: only files all of whose chunks it fetches are uploaded while pulling"
        );
    }
    let mut streamer = Streamer {
        blobs,
        manifest,
        permits: Arc::new(Semaphore::new(PARTS_IN_FLIGHT)),
        buffers: PartBuffers::new(),
        unsupported: false,
    };
    let mut state = Pulling::Running;
    while state == Pulling::Running && !streamer.unsupported {
        let Some(note) = notes.recv().await else { break };
        state = streamer.note(&mut files, note);
        while state == Pulling::Running
            && let Ok(note) = notes.try_recv()
        {
            state = streamer.note(&mut files, note);
        }
        if state != Pulling::Abandoned {
            streamer.send_ready(&mut files).await;
        }
    }
    if state != Pulling::Done || streamer.unsupported {
        abort_all(&mut files).await;
        return None;
    }
    let uploads = files.into_iter().map(|file| file.and_then(Staged::into_upload)).collect();
    Some(Streamed { body, files: Mutex::new(uploads) })
}

/// A staging file being uploaded.
#[derive(Debug)]
struct Staged {
    index: usize,
    size: u64,
    /// Chunks written, and how many from the first are all written.
    written: Vec<bool>,
    prefix: usize,
    plain: File,
    direct: Option<File>,
    upload: Option<PartsUpload>,
    parts: Vec<JoinHandle<Result<(), BlobError>>>,
    sent: u64,
    failed: bool,
}

impl Staged {
    fn into_upload(self) -> Option<FileUpload> {
        let upload = self.upload?;
        Some(FileUpload { upload, parts: self.parts, sent: self.sent, size: self.size })
    }
}

type Opened = ([u8; 32], Manifest, Vec<Option<Staged>>);

/// Reads the manifest the pull wrote into `staging` (it verified it before writing it; the
/// commit verifies it again and compares) and opens each file larger than one part.
fn open_staging(staging: &Path, expected: &(DatasetId, VersionNo)) -> Result<Opened, String> {
    let bytes =
        std::fs::read(staging.join(ferry_client::transfer::SIGNED_NAME)).map_err(|e| e.to_string())?;
    let signed = SignedManifest::decode(&bytes).map_err(|e| e.to_string())?;
    let manifest = Manifest::from_json(&signed.body).map_err(|e| e.to_string())?;
    if (&manifest.dataset, manifest.version) != (&expected.0, expected.1) {
        return Err(format!("the staging directory holds {} {}", manifest.dataset, manifest.version));
    }
    let mut files = Vec::with_capacity(manifest.files.len());
    for (index, entry) in manifest.files.iter().enumerate() {
        if entry.size <= PART_SIZE as u64 || index >= MAX_FILES {
            files.push(None);
            continue;
        }
        let path = entry.name.components().fold(staging.to_path_buf(), |p, c| p.join(c));
        let plain = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let chunks = usize::try_from(manifest.chunk_count(entry.size)).map_err(|e| e.to_string())?;
        files.push(Some(Staged {
            index,
            size: entry.size,
            written: vec![false; chunks],
            prefix: 0,
            direct: ferry_client::transfer::direct::open_read(&path),
            plain,
            upload: None,
            parts: Vec::new(),
            sent: 0,
            failed: false,
        }));
    }
    Ok((*blake3::hash(&signed.body).as_bytes(), manifest, files))
}

async fn abort_all(files: &mut [Option<Staged>]) {
    for file in files.iter_mut().filter_map(Option::take) {
        if let Some(upload) = file.into_upload() {
            upload.abort().await;
        }
    }
}

/// Where the pull is, as the notes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pulling {
    Running,
    Done,
    Abandoned,
}

struct Streamer {
    blobs: Arc<dyn BlobStore>,
    manifest: Manifest,
    permits: Arc<Semaphore>,
    /// The part buffers, reused from one part to the next.
    buffers: Arc<PartBuffers>,
    /// The store takes no uploads in parts: nothing is streamed.
    unsupported: bool,
}

impl Streamer {
    /// Records a note.
    fn note(&self, files: &mut [Option<Staged>], note: Note) -> Pulling {
        match note {
            Note::Chunk { file, chunk } => {
                if let Some(Some(staged)) = files.get_mut(file as usize)
                    && let Some(seen) = staged.written.get_mut(chunk as usize)
                {
                    *seen = true;
                    while staged.written.get(staged.prefix).copied().unwrap_or(false) {
                        staged.prefix += 1;
                    }
                }
                Pulling::Running
            }
            Note::Started { .. } => Pulling::Running,
            Note::Done => Pulling::Done,
            Note::Abandoned => Pulling::Abandoned,
        }
    }

    /// Sends every part all of whose bytes are written, file by file, in order within each.
    async fn send_ready(&mut self, files: &mut [Option<Staged>]) {
        let chunk_size = u64::from(self.manifest.chunk_size.max(1));
        for staged in files.iter_mut().flatten() {
            let written = (staged.prefix as u64 * chunk_size).min(staged.size);
            while !staged.failed && !self.unsupported && staged.sent < staged.size {
                let len = (PART_SIZE as u64).min(staged.size - staged.sent);
                if staged.sent + len > written {
                    break;
                }
                self.send_part(staged, len as usize).await;
            }
        }
    }

    /// Reads the next `len` bytes of `staged` and starts sending them (waiting for a buffer).
    async fn send_part(&mut self, staged: &mut Staged, len: usize) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else { return };
        if staged.upload.is_none() {
            let entry = &self.manifest.files[staged.index];
            let key = file_path(&self.manifest.dataset, self.manifest.version, &entry.name);
            match self.blobs.upload_in_parts(&key).await {
                Ok(Some(upload)) => staged.upload = Some(upload),
                Ok(None) => {
                    self.unsupported = true;
                    return;
                }
                Err(error) => {
                    tracing::debug!(key = last_segment(&key), %error, "no upload while pulling");
                    staged.failed = true;
                    return;
                }
            }
        }
        let read = {
            let (plain, direct) = (staged.plain.try_clone(), staged.direct.as_ref().map(File::try_clone));
            let (offset, buffers) = (staged.sent, self.buffers.clone());
            tokio::task::spawn_blocking(move || {
                read_part(&plain?, direct.transpose()?.as_ref(), (offset, len), &buffers, permit)
            })
            .await
        };
        let bytes = match read {
            Ok(Ok(bytes)) if bytes.len() == len => bytes,
            _ => {
                staged.failed = true;
                return;
            }
        };
        let Some(upload) = staged.upload.as_mut() else { return };
        // The part's place is freed when its buffer comes back, once the upload is done with it.
        staged.parts.push(uploads().spawn(upload.put_part(bytes)));
        staged.sent += len as u64;
    }
}

/// The runtime the parts are sent on, apart from the node's own: sending a part signs it
/// (SHA-256 of its 10 MiB) inside its future, which on the node's two async workers would hold
/// up the pull's QUIC connection beside it. Falls back to the node's runtime if it cannot start.
fn uploads() -> tokio::runtime::Handle {
    static UPLOADS: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    let runtime = UPLOADS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-s3-parts")
            .enable_all()
            .build()
            .ok()
    });
    runtime.as_ref().map_or_else(tokio::runtime::Handle::current, |r| r.handle().clone())
}

/// `len` bytes at `offset` into a buffer of `buffers` the upload then owns; the buffer goes back,
/// and `place` (one of [`PARTS_IN_FLIGHT`]) is freed, when the upload drops it. A direct read
/// where the length allows (all parts but a file's last), else through the page cache.
fn read_part(
    plain: &File,
    direct: Option<&File>,
    (offset, len): (u64, usize),
    buffers: &Arc<PartBuffers>,
    place: OwnedSemaphorePermit,
) -> std::io::Result<Bytes> {
    let mut buf = buffers.take(len + ALIGN);
    let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
    let part = &mut buf[start..start + len];
    let direct = direct.filter(|_| len.is_multiple_of(ALIGN) && offset.is_multiple_of(ALIGN as u64));
    let read = match direct {
        Some(file) => match file.read_exact_at(part, offset) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => plain.read_exact_at(part, offset),
            other => other,
        },
        None => plain.read_exact_at(part, offset),
    };
    read?;
    Ok(Bytes::from_owner(PooledPart { buf, start, len, home: buffers.clone(), _place: place }))
}

/// The buffers of one import's parts, kept from one part to the next: a part read into a
/// fresh 10 MiB allocation costs page faults and the kernel's zeroing of every page, and
/// freeing it hands the pages back (on a virtual machine, to the host), so that the next
/// part, or the object store's server beside it, faults them in again. A part holds its place
/// in flight until its buffer is back, so no more than [`PARTS_IN_FLIGHT`] are ever made (any
/// above are freed as they come back); all are freed with the import.
#[derive(Debug, Default)]
struct PartBuffers(Mutex<Buffers>);

#[derive(Debug, Default)]
struct Buffers {
    free: Vec<Vec<u8>>,
    /// Buffers alive, free or holding a part.
    made: usize,
}

impl PartBuffers {
    fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A buffer of at least `len` bytes (its contents are stale: the caller overwrites them).
    fn take(&self, len: usize) -> Vec<u8> {
        {
            let mut buffers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            match buffers.free.pop() {
                Some(buf) if buf.len() >= len => return buf,
                Some(_) => {}
                None => buffers.made += 1,
            }
        }
        vec![0u8; len.max(PART_SIZE + ALIGN)]
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut buffers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if buffers.made > PARTS_IN_FLIGHT {
            buffers.made -= 1;
        } else {
            buffers.free.push(buf);
        }
    }
}

/// A part's bytes in a buffer of [`PartBuffers`], which it returns to them when the upload is
/// done with it, then freeing its place in flight.
struct PooledPart {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    home: Arc<PartBuffers>,
    _place: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for PooledPart {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl Drop for PooledPart {
    fn drop(&mut self) {
        self.home.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part's buffer goes back to the import's buffers once the upload drops it and the next
    /// part is read into it; a shorter part sends only its own bytes, not what the buffer held
    /// before; no more than [`PARTS_IN_FLIGHT`] are kept.
    #[test]
    fn part_buffers_are_reused_and_a_part_is_only_its_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("file");
        let data: Vec<u8> = (0..2 * PART_SIZE - 100).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let file = File::open(&path).expect("open");
        let buffers = PartBuffers::new();
        let places = Arc::new(Semaphore::new(2 * PARTS_IN_FLIGHT));
        let place = || places.clone().try_acquire_owned().expect("a place");
        let first = read_part(&file, None, (0, PART_SIZE), &buffers, place()).expect("first part");
        assert_eq!(first[..], data[..PART_SIZE]);
        let address = first.as_ptr();
        drop(first);
        let last = PART_SIZE - 100;
        let second = read_part(&file, None, (PART_SIZE as u64, last), &buffers, place()).expect("last part");
        assert_eq!(second[..], data[PART_SIZE..]);
        assert_eq!(second.as_ptr(), address, "the first part's buffer, reused");
        let held: Vec<Bytes> = (0..PARTS_IN_FLIGHT + 2)
            .map(|_| read_part(&file, None, (0, PART_SIZE), &buffers, place()).expect("part"))
            .collect();
        assert!(held.iter().all(|part| part[..] == data[..PART_SIZE]));
        assert_eq!(places.available_permits(), PARTS_IN_FLIGHT - 3, "each part holds its place");
        drop((held, second));
        assert_eq!(places.available_permits(), 2 * PARTS_IN_FLIGHT, "places freed with the buffers");
        let kept = buffers.0.lock().expect("buffers");
        assert_eq!((kept.free.len(), kept.made), (PARTS_IN_FLIGHT, PARTS_IN_FLIGHT));
    }
}
