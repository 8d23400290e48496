//! Chunk writes that bypass the page cache.
//!
//! A buffered write copies every byte into the page cache and the commit's fsync then writes it
//! out; on a 2-core machine that copy was the largest single cost of a pull (a third to half of
//! the puller's CPU). A chunk is instead copied, piece by piece as the transport delivers it,
//! into a reused aligned buffer (a `ferry_net::aligned::Lease`), hashed there, and written with `O_DIRECT`: the
//! disk reads it from that buffer. Where the file system refuses direct I/O (tmpfs, some network
//! file systems) the buffered write is used.
//!
//! Copying each piece on arrival, rather than once the chunk is whole, matters for memory: a
//! piece shares the buffer of the datagrams it came in (up to 64 KB with GRO, holding other
//! streams' data too), and holding a chunk's pieces held all of those buffers.
//! The buffers themselves, shared by the process, are `ferry_net::aligned`'s.

use ferry_net::aligned::ALIGN;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` (already created) for direct writes; `None` where the file system refuses.
/// Never through a link ([`super::workdir::NO_FOLLOW`]).
pub fn open(path: &Path) -> Option<File> {
    let flags = nix::fcntl::OFlag::O_DIRECT.bits() | super::workdir::NO_FOLLOW;
    OpenOptions::new().write(true).custom_flags(flags).open(path).ok()
}

/// Opens `path` for direct reads; `None` where the file system refuses.
pub fn open_read(path: &Path) -> Option<File> {
    let flags = nix::fcntl::OFlag::O_DIRECT.bits();
    OpenOptions::new().read(true).custom_flags(flags).open(path).ok()
}

/// How many leading bytes of `data`, to be written at `offset`, can go through direct I/O: a
/// multiple of [`ALIGN`], or none when the address or offset is not aligned.
pub fn direct_len(data: &[u8], offset: u64) -> usize {
    let aligned = (data.as_ptr() as usize).is_multiple_of(ALIGN) && offset.is_multiple_of(ALIGN as u64);
    if aligned { data.len() / ALIGN * ALIGN } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_net::aligned::AlignedBuf;
    use std::os::unix::fs::FileExt;

    #[test]
    fn direct_len_is_aligned_prefix_or_nothing() {
        let mut buf = AlignedBuf::default();
        let data = buf.get(3 * ALIGN + 100);
        assert_eq!(direct_len(data, 0), 3 * ALIGN);
        assert_eq!(direct_len(data, ALIGN as u64 * 7), 3 * ALIGN);
        assert_eq!(direct_len(data, 512), 0);
        assert_eq!(direct_len(&data[1..], 0), 0);
        assert_eq!(direct_len(&data[..100], 0), 0);
    }

    #[test]
    fn direct_write_lands_where_asked_or_is_refused_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::File::create(&path).and_then(|f| f.set_len(3 * ALIGN as u64)).expect("create");
        let Some(file) = open(&path) else { return }; // a file system without direct I/O
        let mut buf = AlignedBuf::default();
        let data = buf.get(2 * ALIGN);
        data.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
        match file.write_all_at(data, ALIGN as u64) {
            Ok(()) => {
                let back = std::fs::read(&path).expect("read");
                assert_eq!(&back[ALIGN..3 * ALIGN], &data[..]);
                assert!(back[..ALIGN].iter().all(|&b| b == 0));
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(nix::libc::EINVAL), "{e}"),
        }
    }
}
