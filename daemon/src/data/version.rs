//! Describing files for a manifest: sizes, page hashes of the chunk hashes, whole-file BLAKE3.

use ferry_client::transfer::direct;
use ferry_net::aligned::{ALIGN, AlignedBuf};
use ferry_proto::{FileEntry, FileRole, Hash32, PageHasher, RelPath};
use ferry_tables::canonical::WrittenHashes;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How [`hash_chunks`] reads a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Through the page cache: for a file just written through it (a publish's new table).
    Cached,
    /// Around the page cache (`O_DIRECT`) where the file system and the chunk size allow, else
    /// through it: for a file written around it (a pull's copy), read once. On the 2-core machine
    /// of `docs/PERFORMANCE.md` (tenth pass) a cold buffered read cost a full core at ~500 MB/s, all of it copying
    /// into freshly filled cache pages (`perf`: `_copy_to_iter`), and halved the rate of a node
    /// importing what it had pulled.
    Direct,
}

/// Reads `path` once and describes it as manifest file `name` with `rows` rows (role
/// `Snapshot`; callers set another role where it applies).
pub fn describe_file(path: &Path, name: RelPath, rows: u64, chunk_size: u32) -> std::io::Result<FileEntry> {
    let hashes = hash_chunks(path, chunk_size, Reading::Cached, |_| Ok(()))?;
    Ok(FileEntry {
        role: FileRole::Snapshot,
        name,
        size: hashes.size,
        rows,
        blake3: hashes.blake3,
        chunk_pages: hashes.chunk_pages,
    })
}

/// One file to describe: where it is, its manifest name, rows and role.
#[derive(Debug, Clone)]
pub struct ToDescribe {
    pub path: PathBuf,
    pub name: RelPath,
    pub rows: u64,
    pub role: FileRole,
    /// Whether its chunk hashes are wanted (a file the version stores). A table file a delta
    /// version only names (its size and whole-file BLAKE3 in the manifest's table) is hashed
    /// once, and its entry has no chunk pages.
    pub chunks: bool,
    /// The hashes its writer took as it wrote it: where they hold what is wanted (the chunk
    /// hashes at this chunk size, if wanted), the file is not read.
    pub written: Option<WrittenHashes>,
}

/// A file described for a manifest: its entry and, where the entry has chunk pages, the chunk
/// hashes they were made of (for the store's commit, which then need not read the file again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub entry: FileEntry,
    pub chunk_hashes: Option<Vec<Hash32>>,
}

/// `file` described from the hashes its writer took, if they are what is wanted.
fn described_as_written(file: &ToDescribe, chunk_size: u32) -> Option<Described> {
    let written = file.written.as_ref()?;
    let chunk_hashes = match (&written.chunks, file.chunks) {
        (_, false) => None,
        (Some((size, hashes)), true) if *size == chunk_size => {
            Some(hashes.iter().map(|h| Hash32(*h.as_bytes())).collect::<Vec<_>>())
        }
        (_, true) => return None,
    };
    let chunk_pages = chunk_hashes.as_ref().map_or_else(Vec::new, |hashes| {
        let mut pages = PageHasher::default();
        hashes.iter().for_each(|h| pages.push(h));
        pages.finish()
    });
    let entry = FileEntry {
        role: file.role,
        name: file.name.clone(),
        size: written.size,
        rows: file.rows,
        blake3: Hash32(*written.blake3.as_bytes()),
        chunk_pages,
    };
    Some(Described { entry, chunk_hashes })
}

/// Reads `file` for what is wanted of it (see [`ToDescribe::chunks`]).
fn describe_by_reading(file: &ToDescribe, chunk_size: u32) -> std::io::Result<Described> {
    if !file.chunks {
        let entry = describe_whole(&file.path, file.name.clone(), file.rows)?;
        return Ok(Described { entry: FileEntry { role: file.role, ..entry }, chunk_hashes: None });
    }
    let mut chunk_hashes = Vec::new();
    let hashes = hash_chunks(&file.path, chunk_size, Reading::Cached, |h| {
        chunk_hashes.push(*h);
        Ok(())
    })?;
    let entry = FileEntry {
        role: file.role,
        name: file.name.clone(),
        size: hashes.size,
        rows: file.rows,
        blake3: hashes.blake3,
        chunk_pages: hashes.chunk_pages,
    };
    Ok(Described { entry, chunk_hashes: Some(chunk_hashes) })
}

/// Reads `path` once for its size and whole-file BLAKE3 only (no chunk pages).
fn describe_whole(path: &Path, name: RelPath, rows: u64) -> std::io::Result<FileEntry> {
    let mut whole = blake3::Hasher::new();
    whole.update_reader(std::fs::File::open(path)?)?;
    let size = whole.count();
    Ok(FileEntry {
        role: FileRole::Snapshot,
        name,
        size,
        rows,
        blake3: Hash32(*whole.finalize().as_bytes()),
        chunk_pages: Vec::new(),
    })
}

/// Threads [`describe_files`] hashes on: the cores, at most the files.
fn describe_threads(files: usize) -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).min(files).max(1)
}

/// Every file described, in the order given: from the hashes its writer took where they are
/// what is wanted, else read (each file once by one of as many threads as the machine has cores:
/// a publish's new table and delta are dozens of files of a few MiB each, which one core hashed
/// one after another while the others were idle). Stops at the first failure (in file order)
/// and returns it.
pub fn describe_files(files: Vec<ToDescribe>, chunk_size: u32) -> std::io::Result<Vec<Described>> {
    let mut described: Vec<Option<Described>> =
        files.iter().map(|f| described_as_written(f, chunk_size)).collect();
    let unread: Vec<usize> = (0..files.len()).filter(|&i| described[i].is_none()).collect();
    let mut read = read_files(unread.iter().map(|&i| &files[i]).collect(), chunk_size)?.into_iter();
    for i in unread {
        described[i] = read.next();
    }
    described
        .into_iter()
        .map(|d| d.ok_or_else(|| std::io::Error::other("a file was not described")))
        .collect()
}

/// [`describe_by_reading`] of every file, on as many threads as the machine has cores, in the
/// order given; stops at the first failure (in file order) and returns it.
fn read_files(files: Vec<&ToDescribe>, chunk_size: u32) -> std::io::Result<Vec<Described>> {
    let threads = describe_threads(files.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut slots: Vec<Option<std::io::Result<Described>>> = Vec::new();
    slots.resize_with(files.len(), || None);
    let slots = Mutex::new(slots);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(at) else { break };
                    let described = describe_by_reading(file, chunk_size);
                    failed.fetch_or(described.is_err(), Ordering::Relaxed);
                    if let Ok(mut slots) = slots.lock() {
                        slots[at] = Some(described);
                    }
                }
            });
        }
    });
    let slots = slots.into_inner().map_err(|_| std::io::Error::other("a describing thread panicked"))?;
    let mut entries = Vec::with_capacity(slots.len());
    for slot in slots {
        match slot {
            Some(described) => entries.push(described?),
            // Not reached: a file after a failure; the failure comes first in order.
            None => return Err(std::io::Error::other("a file was not described")),
        }
    }
    Ok(entries)
}

/// What reading a file chunk by chunk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHashes {
    pub size: u64,
    pub blake3: Hash32,
    pub chunk_pages: Vec<Hash32>,
}

/// Reads `path` once in `chunk_size` pieces: its size, whole-file BLAKE3 and page hashes. Each
/// chunk's hash goes to `each_chunk` as it is made, in order.
pub fn hash_chunks(
    path: &Path,
    chunk_size: u32,
    reading: Reading,
    mut each_chunk: impl FnMut(&Hash32) -> std::io::Result<()>,
) -> std::io::Result<FileHashes> {
    let len = chunk_size as usize;
    let opened = match reading {
        Reading::Direct if len.is_multiple_of(ALIGN) => direct::open_read(path).map(|f| (f, true)),
        _ => None,
    };
    let (mut file, direct) = match opened {
        Some(opened) => opened,
        None => (std::fs::File::open(path)?, false),
    };
    let mut whole = blake3::Hasher::new();
    let mut pages = PageHasher::default();
    let mut aligned = AlignedBuf::default();
    let buf = aligned.get(len);
    let mut size = 0u64;
    loop {
        let n = read_full(&mut file, buf, direct)?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        let chunk = Hash32(*blake3::hash(&buf[..n]).as_bytes());
        each_chunk(&chunk)?;
        pages.push(&chunk);
        size += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok(FileHashes { size, blake3: Hash32(*whole.finalize().as_bytes()), chunk_pages: pages.finish() })
}

/// Fills `buf` unless the file ends first; returns the bytes read. With `direct` reads (whose
/// offsets and lengths must stay aligned) a read that ends off an aligned boundary is the end
/// of the file.
fn read_full(file: &mut std::fs::File, buf: &mut [u8], direct: bool) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
        if direct && !filled.is_multiple_of(ALIGN) {
            break;
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file_and_last_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(150 * 1024)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let entry = describe_file(&path, RelPath::parse("f").unwrap(), 3, 64 * 1024).unwrap();
        assert_eq!(entry.size, data.len() as u64);
        // Three chunks, the last short: one page holding their three hashes.
        let hashes: Vec<u8> = data.chunks(64 * 1024).flat_map(|c| *blake3::hash(c).as_bytes()).collect();
        assert_eq!(hashes.len(), 3 * 32);
        assert_eq!(entry.chunk_pages, vec![Hash32(*blake3::hash(&hashes).as_bytes())]);
        assert_eq!(entry.blake3.0, *blake3::hash(&data).as_bytes());
    }

    fn to_describe(dir: &Path, sizes: &[usize]) -> Vec<ToDescribe> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let path = dir.join(format!("f{i}"));
                let data: Vec<u8> = (0..len).map(|b| ((b * 7 + i) % 251) as u8).collect();
                std::fs::write(&path, &data).unwrap();
                let role = if i % 2 == 0 { FileRole::Snapshot } else { FileRole::Upserts };
                let (name, rows) = (RelPath::parse(format!("f{i}")).unwrap(), i as u64);
                ToDescribe { path, name, rows, role, chunks: true, written: None }
            })
            .collect()
    }

    /// Files described together, on several threads, come back in their order with the entries
    /// one [`describe_file`] each gives, and their roles.
    #[test]
    fn describing_files_together_equals_describing_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let files = to_describe(dir.path(), &[0, 1, 70_000, 4096, 200_000, 3, 65_536, 131_073, 9]);
        let together = describe_files(files.clone(), 64 * 1024).unwrap();
        assert_eq!(together.len(), files.len());
        for (described, file) in together.iter().zip(&files) {
            let alone = describe_file(&file.path, file.name.clone(), file.rows, 64 * 1024).unwrap();
            assert_eq!(described.entry, FileEntry { role: file.role, ..alone });
            let data = std::fs::read(&file.path).unwrap();
            let chunks: Vec<Hash32> =
                data.chunks(64 * 1024).map(|c| Hash32(*blake3::hash(c).as_bytes())).collect();
            assert_eq!(described.chunk_hashes.as_ref(), Some(&chunks));
        }
        assert!(describe_files(Vec::new(), 64 * 1024).unwrap().is_empty());
    }

    /// The hashes a file's writer took stand for reading it where they hold what is wanted: a
    /// file described from them is never opened (here it no longer exists) and is described as
    /// read; one whose chunk hashes are of another size, or missing, is read.
    #[test]
    fn a_file_is_described_from_its_writers_hashes_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0, 70_000, 200_000, 65_536];
        let read = describe_files(to_describe(dir.path(), &sizes), 64 * 1024).unwrap();
        let mut files = to_describe(dir.path(), &sizes);
        for (i, file) in files.iter_mut().enumerate() {
            let data = std::fs::read(&file.path).unwrap();
            let chunk = if i == 3 { 4096 } else { 64 * 1024 };
            file.written = Some(WrittenHashes {
                size: data.len() as u64,
                blake3: blake3::hash(&data),
                chunks: (i != 2).then(|| (chunk as u32, data.chunks(chunk).map(blake3::hash).collect())),
            });
            if i < 2 {
                std::fs::remove_file(&file.path).unwrap();
            }
        }
        let described = describe_files(files.clone(), 64 * 1024).unwrap();
        assert_eq!(described, read);
        // Only the whole file wanted: the whole-file hash is enough, even without chunk hashes.
        files[2].chunks = false;
        std::fs::remove_file(&files[2].path).unwrap();
        let whole = describe_files(files, 64 * 1024).unwrap();
        assert_eq!((whole[2].entry.size, whole[2].entry.blake3), (read[2].entry.size, read[2].entry.blake3));
        assert!(whole[2].entry.chunk_pages.is_empty() && whole[2].chunk_hashes.is_none());
    }

    /// A file described without its chunk hashes has the size and whole-file BLAKE3 the full
    /// description gives, and no chunk pages; the others in the same call keep theirs.
    #[test]
    fn a_file_described_whole_only_has_no_chunk_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = to_describe(dir.path(), &[0, 70_000, 200_000, 65_536]);
        let full = describe_files(files.clone(), 64 * 1024).unwrap();
        files[1].chunks = false;
        files[2].chunks = false;
        let some = describe_files(files, 64 * 1024).unwrap();
        let full: Vec<FileEntry> = full.into_iter().map(|d| d.entry).collect();
        for (i, (whole, full)) in some.iter().map(|d| &d.entry).zip(&full).enumerate() {
            match i {
                1 | 2 => {
                    assert_eq!((whole.size, whole.blake3, whole.role), (full.size, full.blake3, full.role));
                    assert!(whole.chunk_pages.is_empty() && !full.chunk_pages.is_empty());
                }
                _ => assert_eq!(whole, full),
            }
        }
    }

    #[test]
    fn a_missing_file_fails_the_description() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = to_describe(dir.path(), &[10, 20, 30]);
        files[1].path = dir.path().join("gone");
        let e = describe_files(files, 64 * 1024).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    /// Direct and cached reads find the same hashes, for files that end on, off and before a
    /// chunk or alignment boundary, and for a chunk size direct I/O cannot use.
    #[test]
    fn direct_reads_hash_as_cached_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for len in [0, 1, 4095, 4096, 65_536, 65_537, 150 * 1024 + 7, 3 * 65_536] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            for chunk_size in [64 * 1024, 4096, 1000] {
                let mut direct_chunks = Vec::new();
                let direct = hash_chunks(&path, chunk_size, Reading::Direct, |c| {
                    direct_chunks.push(*c);
                    Ok(())
                })
                .unwrap();
                let mut cached_chunks = Vec::new();
                let cached = hash_chunks(&path, chunk_size, Reading::Cached, |c| {
                    cached_chunks.push(*c);
                    Ok(())
                })
                .unwrap();
                assert_eq!(direct, cached, "{len} bytes in chunks of {chunk_size}");
                assert_eq!(direct_chunks, cached_chunks);
                assert_eq!(direct.size, len as u64);
                assert_eq!(direct.blake3.0, *blake3::hash(&data).as_bytes());
            }
        }
    }
}
