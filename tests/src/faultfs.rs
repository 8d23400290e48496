//! A fault-injecting passthrough filesystem (FUSE, through `fuser`'s own mount, no libfuse):
//! [`FaultFs::mount_over`] moves a directory's contents aside and mounts, in its place, a
//! filesystem that forwards every operation to them, except the ones its [`FsFault`] plan says
//! to fail with an errno (EIO by default). It gives the node and the puller a real kernel path
//! with real errors: a failed `write(2)`, `read(2)`, `fsync(2)`, `rename(2)`, `open(2, O_CREAT)`.
//!
//! Used by the EIO tests of the testkit's integration tests (`tests/it/eio_fs.rs`) and by
//! `ferry-bench reliability eio`. Mounting needs `/dev/fuse` and the right to mount (root);
//! where either is missing, [`FaultFs::mount_over`] says why and the caller skips, unless
//! `FERRY_REQUIRE_FUSE=1` ([`required`]) makes it a failure.
//!
//! The kernel is told to cache nothing (zero entry and attribute lifetimes, files opened for
//! direct I/O: no page cache), so every write and every read reaches the plan. (Direct I/O
//! refuses shared writable `mmap`; nothing here maps files.) Inode numbers are those of the files underneath (the root is 1).

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Input/output error.
pub const EIO: i32 = 5;
/// No space left on device.
pub const ENOSPC: i32 = 28;

/// Whether `FERRY_REQUIRE_FUSE=1`: a FUSE mount that fails is then a test failure, not a skip.
pub fn required() -> bool {
    std::env::var("FERRY_REQUIRE_FUSE").is_ok_and(|v| v == "1")
}

/// The operations a fault can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsOp {
    /// `write(2)` to a file.
    Write,
    /// `read(2)` from a file.
    Read,
    /// `fsync(2)` / `fdatasync(2)` of a file.
    Fsync,
    /// `fsync(2)` of a directory.
    FsyncDir,
    /// `rename(2)`, matched on the source or the destination.
    Rename,
    /// Creating a file or a directory.
    Create,
}

/// One planned fault: the `nth` (from 1) operation `op` on a path containing `path` fails, and
/// with `always` every later one too.
#[derive(Clone, Debug)]
pub struct FsFault {
    op: FsOp,
    path: String,
    nth: usize,
    always: bool,
    errno: i32,
}

impl FsFault {
    /// The first `op` on a path (`/` + the path under the mount) containing `path` fails with EIO.
    pub fn new(op: FsOp, path: &str) -> Self {
        Self { op, path: path.to_owned(), nth: 1, always: false, errno: EIO }
    }

    /// The `nth` matching operation (from 1) fails, not the first.
    pub fn nth(self, nth: usize) -> Self {
        Self { nth: nth.max(1), ..self }
    }

    /// Every matching operation from the `nth` on fails (a disk that stays broken).
    pub fn always(self) -> Self {
        Self { always: true, ..self }
    }

    /// Fails with `errno` instead of EIO.
    pub fn errno(self, errno: i32) -> Self {
        Self { errno, ..self }
    }
}

/// The plan the mounted filesystem consults, shared with its [`FaultFs`].
#[derive(Debug, Default)]
struct Plan {
    fault: Mutex<Option<(FsFault, usize)>>,
    injected: AtomicUsize,
}

impl Plan {
    /// `Err(errno)` when the planned fault fails this operation.
    fn check(&self, op: FsOp, paths: &[&Path]) -> Result<(), Errno> {
        let mut fault = lock(&self.fault);
        let Some((planned, seen)) = fault.as_mut() else { return Ok(()) };
        let hit = planned.op == op
            && paths.iter().any(|p| format!("/{}", p.display()).contains(planned.path.as_str()));
        if !hit {
            return Ok(());
        }
        *seen += 1;
        if *seen == planned.nth || (planned.always && *seen > planned.nth) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(Errno::from_i32(planned.errno));
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another FUSE request must not take every later one down with it.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A mounted fault-injecting passthrough filesystem; unmounted (and the contents moved back)
/// when dropped.
pub struct FaultFs {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    backing: PathBuf,
    plan: Arc<Plan>,
}

impl FaultFs {
    /// Mounts over `dir` (created if missing): its contents move to a sibling `<dir>.backing`
    /// and stay reachable at `dir` through the filesystem. `Err` says why it cannot mount.
    pub fn mount_over(dir: &Path) -> Result<Self, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse on this machine".to_owned());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(".backing");
        let backing = dir.with_file_name(name);
        std::fs::rename(dir, &backing).map_err(|e| format!("moving {} aside: {e}", dir.display()))?;
        std::fs::create_dir(dir).map_err(|e| format!("creating the mount point: {e}"))?;
        let plan = Arc::new(Plan::default());
        let fs = Passthrough::new(backing.clone(), plan.clone());
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("ferry-faultfs".to_owned()), MountOption::RW];
        config.n_threads = Some(2);
        match fuser::spawn_mount(fs, dir, &config) {
            Ok(session) => Ok(Self { session: Some(session), mountpoint: dir.to_owned(), backing, plan }),
            Err(e) => {
                let _ = std::fs::remove_dir(dir);
                let _ = std::fs::rename(&backing, dir);
                Err(format!("cannot mount a FUSE filesystem: {e}"))
            }
        }
    }

    /// Replaces the plan: from now on `fault` applies, counted from zero.
    pub fn plan(&self, fault: FsFault) {
        *lock(&self.plan.fault) = Some((fault, 0));
    }

    /// No more faults.
    pub fn clear(&self) {
        *lock(&self.plan.fault) = None;
    }

    /// How many operations failed by plan since the mount.
    pub fn injected(&self) -> usize {
        self.plan.injected.load(Ordering::SeqCst)
    }

    /// Where the files really are.
    pub fn backing(&self) -> &Path {
        &self.backing
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && session.umount_and_join().is_err()
        {
            // Still in use: detach it, so the directory can be put back.
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        }
        if std::fs::remove_dir(&self.mountpoint).is_ok() {
            let _ = std::fs::rename(&self.backing, &self.mountpoint);
        }
    }
}

/// Nothing is cached by the kernel: every operation asks again.
const TTL: Duration = Duration::ZERO;

/// The filesystem: paths under `root`, inode numbers of the files there.
struct Passthrough {
    root: PathBuf,
    /// Inode → path under `root` (relative; empty for the root).
    paths: Mutex<HashMap<u64, PathBuf>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    next_handle: AtomicU64,
    plan: Arc<Plan>,
}

impl Passthrough {
    fn new(root: PathBuf, plan: Arc<Plan>) -> Self {
        let paths = HashMap::from([(INodeNo::ROOT.0, PathBuf::new())]);
        Self { root, paths: Mutex::new(paths), files: Mutex::default(), next_handle: AtomicU64::new(1), plan }
    }

    fn relative(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        lock(&self.paths).get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.relative(parent)?.join(name))
    }

    fn full(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }

    /// The attributes of `relative`, remembering its inode.
    fn remember(&self, relative: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.full(relative))?;
        let ino = if relative.as_os_str().is_empty() { INodeNo::ROOT.0 } else { meta.ino() };
        lock(&self.paths).insert(ino, relative.to_owned());
        Ok(attr(ino, &meta))
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        lock(&self.files).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn keep(&self, file: File) -> FileHandle {
        let fh = self.next_handle.fetch_add(1, Ordering::SeqCst);
        lock(&self.files).insert(fh, Arc::new(file));
        FileHandle(fh)
    }

    /// After a rename, every remembered path under `from` is under `to`.
    fn moved(&self, from: &Path, to: &Path) {
        let mut paths = lock(&self.paths);
        for path in paths.values_mut() {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = if rest.as_os_str().is_empty() { to.to_owned() } else { to.join(rest) };
            }
        }
    }

    fn open_file(&self, relative: &Path, flags: i32, create: Option<u32>) -> Result<File, Errno> {
        let access = flags & libc::O_ACCMODE;
        let mut options = OpenOptions::new();
        options.read(access != libc::O_WRONLY).write(access != libc::O_RDONLY);
        options.truncate(flags & libc::O_TRUNC != 0 && access != libc::O_RDONLY);
        if let Some(mode) = create {
            options.create(true).mode(mode);
            options.create_new(flags & libc::O_EXCL != 0);
        }
        Ok(options.open(self.full(relative))?)
    }

    fn setattr_inner(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        size: Option<u64>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let relative = self.relative(ino)?;
        let full = self.full(&relative);
        if let Some(mode) = mode {
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if let Some(size) = size {
            match fh.map(|fh| self.handle(fh)) {
                Some(Ok(file)) => file.set_len(size)?,
                _ => OpenOptions::new().write(true).open(&full)?.set_len(size)?,
            }
        }
        self.remember(&relative)
    }
}

fn attr(ino: u64, meta: &Metadata) -> FileAttr {
    let time = |secs: i64, nanos: i64| {
        let since = Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
        SystemTime::UNIX_EPOCH + since
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: time(meta.ctime(), meta.ctime_nsec()),
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

impl Filesystem for Passthrough {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|path| self.remember(&path)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let open = fh.and_then(|fh| self.handle(fh).ok());
        let result = match open {
            Some(file) => file.metadata().map(|meta| attr(ino.0, &meta)).map_err(Errno::from),
            None => self.relative(ino).and_then(|path| self.remember(&path)),
        };
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.setattr_inner(ino, mode, size, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let result = self.child(parent, name).and_then(|path| {
            self.plan.check(FsOp::Create, &[&path])?;
            std::fs::create_dir(self.full(&path))?;
            let _ = std::fs::set_permissions(
                self.full(&path),
                std::fs::Permissions::from_mode(mode & !umask & 0o7777),
            );
            self.remember(&path)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.child(parent, name).and_then(|path| Ok(std::fs::remove_file(self.full(&path))?)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.child(parent, name).and_then(|path| Ok(std::fs::remove_dir(self.full(&path))?)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let (from, to) = (self.child(parent, name)?, self.child(newparent, newname)?);
            self.plan.check(FsOp::Rename, &[&from, &to])?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE)
                && std::fs::symlink_metadata(self.full(&to)).is_ok()
            {
                return Err(Errno::EEXIST);
            }
            std::fs::rename(self.full(&from), self.full(&to))?;
            self.moved(&from, &to);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let result = (|| {
            let (from, to) = (self.relative(ino)?, self.child(newparent, newname)?);
            self.plan.check(FsOp::Create, &[&to])?;
            std::fs::hard_link(self.full(&from), self.full(&to))?;
            self.remember(&to)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.relative(ino).and_then(|path| self.open_file(&path, flags.0, None)) {
            Ok(file) => reply.opened(self.keep(file), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            let path = self.child(parent, name)?;
            self.plan.check(FsOp::Create, &[&path])?;
            let file = self.open_file(&path, flags, Some(mode & !umask & 0o7777))?;
            Ok((self.remember(&path)?, file))
        })();
        match result {
            Ok((attr, file)) => {
                reply.created(&TTL, &attr, Generation(0), self.keep(file), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = (|| {
            self.plan.check(FsOp::Read, &[&self.relative(ino).unwrap_or_default()])?;
            let file = self.handle(fh)?;
            let mut buf = vec![0; size as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                    0 => break,
                    n => filled += n,
                }
            }
            buf.truncate(filled);
            Ok(buf)
        })();
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = (|| {
            self.plan.check(FsOp::Write, &[&self.relative(ino).unwrap_or_default()])?;
            self.handle(fh)?.write_all_at(data, offset)?;
            Ok(data.len() as u32)
        })();
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.files).remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let result = (|| {
            self.plan.check(FsOp::Fsync, &[&self.relative(ino).unwrap_or_default()])?;
            let file = self.handle(fh)?;
            if datasync {
                file.sync_data()?
            } else {
                file.sync_all()?
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = (|| {
            let path = self.relative(ino)?;
            let mut entries =
                vec![(ino.0, FileType::Directory, ".".into()), (ino.0, FileType::Directory, "..".into())];
            for entry in std::fs::read_dir(self.full(&path))? {
                let entry = entry?;
                let kind =
                    entry.file_type().ok().and_then(FileType::from_std).unwrap_or(FileType::RegularFile);
                entries.push((entry.ino(), kind, entry.file_name()));
            }
            Ok::<_, Errno>(entries)
        })();
        match entries {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let result = (|| {
            let path = self.relative(ino)?;
            self.plan.check(FsOp::FsyncDir, &[&path])?;
            File::open(self.full(&path))?.sync_all()?;
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_meets_the_nth_matching_operation_and_with_always_every_later_one() {
        let plan = Plan::default();
        *lock(&plan.fault) = Some((FsFault::new(FsOp::Write, "/v1/").nth(2), 0));
        let (hit, miss) = (Path::new("datasets/x/v1/part"), Path::new("datasets/x/v2/part"));
        assert!(plan.check(FsOp::Write, &[hit]).is_ok());
        assert!(plan.check(FsOp::Read, &[hit]).is_ok());
        assert!(plan.check(FsOp::Write, &[miss]).is_ok());
        assert_eq!(plan.check(FsOp::Write, &[hit]), Err(Errno::EIO));
        assert!(plan.check(FsOp::Write, &[hit]).is_ok(), "once, without always");
        *lock(&plan.fault) = Some((FsFault::new(FsOp::Fsync, "").always().errno(ENOSPC), 0));
        assert_eq!(plan.check(FsOp::Fsync, &[miss]), Err(Errno::ENOSPC));
        assert_eq!(plan.check(FsOp::Fsync, &[hit]), Err(Errno::ENOSPC));
        assert_eq!(plan.injected.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn files_pass_through_and_planned_faults_reach_the_caller_as_errno() {
        use std::io::Write;
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("mnt");
        std::fs::create_dir_all(dir.join("kept")).unwrap();
        std::fs::write(dir.join("kept/old"), b"before the mount").unwrap();
        let fs = match FaultFs::mount_over(&dir) {
            Ok(fs) => fs,
            Err(reason) => {
                assert!(!required(), "{reason} — but FERRY_REQUIRE_FUSE=1");
                eprintln!("skipped: {reason}");
                return;
            }
        };
        assert_eq!(std::fs::read(dir.join("kept/old")).unwrap(), b"before the mount");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let mut file = File::create(dir.join("a/b/f.tmp")).unwrap();
        file.write_all(&[7; 300_000]).unwrap();
        file.sync_all().unwrap();
        drop(file);
        std::fs::rename(dir.join("a"), dir.join("c")).unwrap();
        std::fs::rename(dir.join("c/b/f.tmp"), dir.join("c/b/f")).unwrap();
        File::open(dir.join("c/b")).unwrap().sync_all().unwrap();
        assert_eq!(std::fs::read(dir.join("c/b/f")).unwrap(), vec![7; 300_000]);
        assert_eq!(std::fs::read(fs.backing().join("c/b/f")).unwrap().len(), 300_000);
        let names: Vec<_> =
            std::fs::read_dir(dir.join("c/b")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["f"]);

        fs.plan(FsFault::new(FsOp::Write, "/c/").nth(2));
        let mut file = OpenOptions::new().append(true).open(dir.join("c/b/f")).unwrap();
        file.write_all(b"one").unwrap();
        assert_eq!(file.write_all(b"two").unwrap_err().raw_os_error(), Some(EIO));
        fs.plan(FsFault::new(FsOp::Fsync, "").errno(ENOSPC));
        assert_eq!(file.sync_all().unwrap_err().raw_os_error(), Some(ENOSPC));
        drop(file);
        fs.plan(FsFault::new(FsOp::Rename, "/c/b/g"));
        assert_eq!(
            std::fs::rename(dir.join("c/b/f"), dir.join("c/b/g")).unwrap_err().raw_os_error(),
            Some(EIO)
        );
        fs.plan(FsFault::new(FsOp::Read, "/c/b/f"));
        assert_eq!(std::fs::read(dir.join("c/b/f")).unwrap_err().raw_os_error(), Some(EIO));
        fs.clear();
        assert_eq!(std::fs::read(dir.join("c/b/f")).unwrap().len(), 300_003);
        assert_eq!(fs.injected(), 4);
        std::fs::remove_file(dir.join("c/b/f")).unwrap();
        drop(fs);
        assert!(dir.join("kept/old").exists(), "the contents are back in place after the unmount");
    }
}
