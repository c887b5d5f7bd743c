//! Power-loss emulation: a FUSE file system that keeps every write in its own page cache
//! until the writer fsyncs it, and can lose that cache on demand — what a power cut does
//! to a machine's page cache, and what a kill -9 does not (the kernel writes the cache of
//! a killed process out anyway).
//!
//! The model follows lazyfs (the FUSE file system Jepsen uses for the same purpose):
//! - file *contents* written since the file's last `fsync`/`fdatasync` are lost by a cut;
//!   a file extended by unsynced writes falls back to its synced length;
//! - *metadata* operations (create, mkdir, rename, unlink, truncate) go to the backing
//!   directory at once and survive. Real file systems may lose those too, so this is
//!   the milder half of a power cut; the data half is the one the fsync interval of a
//!   server decides.
//!
//! The kernel keeps no page cache of its own for these files (every open is
//! `FOPEN_DIRECT_IO`), and [`PowerCutMount::cut_power`] unmounts and mounts again, so no
//! cached attribute or page outlives a cut. Cut only after the writers are dead.
//!
//! Mounting needs `/dev/fuse` and the right to mount (root, or a `fusermount3`):
//! [`PowerCutMount::mount`] says why when it cannot, so a test can report a skip.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, FUSE_ROOT_ID,
};

/// Granularity of the emulated page cache.
const PAGE: u64 = 4096;
/// How long the kernel may cache entries and attributes. Short: sizes change under
/// writes, and a cut remounts anyway.
const TTL: Duration = Duration::from_millis(100);

/// What a cut threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced writes.
    pub files: u64,
    /// Pages (4 KiB) of unsynced writes lost.
    pub pages: u64,
}

/// Counters since the mount was made (they survive cuts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerCutStats {
    /// Write requests received.
    pub writes: u64,
    /// fsync/fdatasync requests received.
    pub syncs: u64,
    /// Pages written to the backing directory by those syncs.
    pub pages_synced: u64,
}

/// Unsynced contents of one file.
#[derive(Debug)]
struct DirtyFile {
    /// Page index → the page as the writer sees it now.
    pages: BTreeMap<u64, Vec<u8>>,
    /// Length as the writer sees it now.
    size: u64,
}

#[derive(Debug)]
struct Handle {
    id: u64,
    file: File,
    /// Opened with O_SYNC or O_DSYNC: every write is durable when it returns
    /// (nats-server writes its raft snapshots and metadata files so).
    sync_writes: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Node id → path relative to the backing directory. The root is `""`.
    paths: HashMap<u64, PathBuf>,
    /// The reverse of `paths`. Ids are ours, not the backing inode numbers: the kernel
    /// must never see one id for two files, and a backing inode number is reused as soon
    /// as its file is deleted, while the kernel may still know the old one.
    ids: HashMap<PathBuf, u64>,
    next_id: u64,
    /// Inode → unsynced contents.
    dirty: HashMap<u64, DirtyFile>,
    /// Open handles → the file behind each.
    handles: HashMap<u64, Handle>,
    next_handle: u64,
    stats: PowerCutStats,
}

/// The mounted file system. Unmounted on drop (the backing directory stays: it is what
/// the disk would hold).
pub struct PowerCutMount {
    mountpoint: PathBuf,
    backing: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
}

impl std::fmt::Debug for PowerCutMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerCutMount")
            .field("mountpoint", &self.mountpoint)
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}

impl PowerCutMount {
    /// Mount a view of `backing` (an existing directory, the "disk") at `mountpoint` (an
    /// existing empty directory).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<PowerCutMount> {
        let fuse = Path::new("/dev/fuse");
        if !fuse.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "/dev/fuse does not exist (no FUSE in this kernel or container)",
            ));
        }
        let mut mount = PowerCutMount {
            mountpoint: mountpoint.to_path_buf(),
            backing: backing.to_path_buf(),
            state: Arc::new(Mutex::new(State::default())),
            session: None,
        };
        mount.attach()?;
        Ok(mount)
    }

    fn attach(&mut self) -> io::Result<()> {
        {
            let mut state = lock(&self.state);
            state.paths.clear();
            state.ids.clear();
            state.paths.insert(FUSE_ROOT_ID, PathBuf::new());
            state.ids.insert(PathBuf::new(), FUSE_ROOT_ID);
            state.next_id = FUSE_ROOT_ID + 1;
            state.handles.clear();
        }
        let fs = PowerCutFs {
            backing: self.backing.clone(),
            state: Arc::clone(&self.state),
        };
        let options = [
            MountOption::FSName("tspi-power-cut".into()),
            MountOption::RW,
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(fs, &self.mountpoint, &options)?;
        self.session = Some(session);
        // The mount is in place once the kernel answers for it with our file system.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if is_fuse_mount(&self.mountpoint) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the FUSE mount did not appear within 10 s",
        ))
    }

    fn detach(&mut self) {
        if let Some(session) = self.session.take() {
            drop(session);
        }
        if is_fuse_mount(&self.mountpoint) {
            if let Ok(c) = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes()) {
                #[allow(unsafe_code)]
                // SAFETY: umount2(2) with a NUL-terminated path this mount created.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }

    /// The power goes out: every write not yet fsynced is lost, then the file system is
    /// mounted again (the machine comes back). Kill the writers first.
    pub fn cut_power(&mut self) -> io::Result<CutReport> {
        self.detach();
        let report = {
            let mut state = lock(&self.state);
            let report = CutReport {
                files: state.dirty.len() as u64,
                pages: state.dirty.values().map(|d| d.pages.len() as u64).sum(),
            };
            state.dirty.clear();
            report
        };
        self.attach()?;
        Ok(report)
    }

    /// Unsynced pages held now.
    pub fn unsynced_pages(&self) -> u64 {
        lock(&self.state)
            .dirty
            .values()
            .map(|d| d.pages.len() as u64)
            .sum()
    }

    pub fn stats(&self) -> PowerCutStats {
        lock(&self.state).stats
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for PowerCutMount {
    fn drop(&mut self) {
        self.detach();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `path` is a FUSE mount of ours now (/proc/self/mountinfo).
fn is_fuse_mount(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Ok(target) = path.canonicalize() else {
        return false;
    };
    let target = target.to_string_lossy().into_owned();
    text.lines().any(|line| {
        let mut fields = line.split(' ');
        let mount_point = fields.nth(4);
        mount_point == Some(target.as_str()) && line.contains("tspi-power-cut")
    })
}

/// The FUSE side; the state is shared with [`PowerCutMount`].
struct PowerCutFs {
    backing: PathBuf,
    state: Arc<Mutex<State>>,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

fn kind_of(meta: &fs::Metadata) -> FileType {
    let t = meta.file_type();
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    }
}

impl State {
    /// The node id of `rel`, made on first sight.
    fn id_for(&mut self, rel: &Path) -> u64 {
        if let Some(&id) = self.ids.get(rel) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.ids.insert(rel.to_path_buf(), id);
        self.paths.insert(id, rel.to_path_buf());
        id
    }

    /// A new handle on `file` for node `id`, opened with `flags`.
    fn add_handle(&mut self, id: u64, file: File, flags: i32) -> u64 {
        self.next_handle += 1;
        let sync_writes = flags & libc::O_DSYNC != 0;
        self.handles.insert(
            self.next_handle,
            Handle {
                id,
                file,
                sync_writes,
            },
        );
        self.next_handle
    }

    fn is_open(&self, id: u64) -> bool {
        self.handles.values().any(|h| h.id == id)
    }

    /// `rel` is gone from the backing directory: forget its id, and its unsynced
    /// contents unless a handle still writes to it.
    fn forget_path(&mut self, rel: &Path) {
        if let Some(id) = self.ids.remove(rel) {
            self.paths.remove(&id);
            if !self.is_open(id) {
                self.dirty.remove(&id);
            }
        }
    }
}

impl PowerCutFs {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn real(&self, state: &State, ino: u64) -> Option<PathBuf> {
        state.paths.get(&ino).map(|rel| self.backing.join(rel))
    }

    fn child(&self, state: &State, parent: u64, name: &OsStr) -> Option<(PathBuf, PathBuf)> {
        let rel = state.paths.get(&parent)?.join(name);
        Some((self.backing.join(&rel), rel))
    }

    fn attr(&self, state: &State, ino: u64, meta: &fs::Metadata) -> FileAttr {
        let size = state.dirty.get(&ino).map_or(meta.size(), |d| d.size);
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: system_time(meta.atime(), meta.atime_nsec()),
            mtime: system_time(meta.mtime(), meta.mtime_nsec()),
            ctime: system_time(meta.ctime(), meta.ctime_nsec()),
            crtime: system_time(meta.mtime(), meta.mtime_nsec()),
            kind: kind_of(meta),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        }
    }

    /// Record `rel` under its inode and answer with its attributes.
    fn enter(&self, state: &mut State, rel: PathBuf, reply: ReplyEntry) {
        let real = self.backing.join(&rel);
        match fs::symlink_metadata(&real) {
            Ok(meta) => {
                let ino = state.id_for(&rel);
                let attr = self.attr(state, ino, &meta);
                reply.entry(&TTL, &attr, 0);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open_backing(&self, real: &Path, create: Option<(u32, bool)>) -> io::Result<File> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if let Some((mode, exclusive)) = create {
            if exclusive {
                o.create_new(true);
            } else {
                o.create(true);
            }
            o.mode(mode);
        }
        o.open(real)
    }

    /// One page as the writer sees it: the dirty copy or the backing file's.
    fn load_page(file: &File, index: u64) -> io::Result<Vec<u8>> {
        let mut page = vec![0u8; PAGE as usize];
        let mut filled = 0;
        while filled < page.len() {
            let n = file.read_at(&mut page[filled..], index * PAGE + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(page)
    }

    fn truncate(state: &mut State, ino: u64, file: &File, size: u64) -> io::Result<()> {
        file.set_len(size)?;
        if let Some(d) = state.dirty.get_mut(&ino) {
            let keep = size.div_ceil(PAGE);
            d.pages.retain(|&i, _| i < keep);
            if let Some(last) = d.pages.get_mut(&(size / PAGE)) {
                let cut = (size % PAGE) as usize;
                last[cut..].fill(0);
            }
            d.size = size;
        }
        Ok(())
    }

    /// Write the unsynced pages of `ino` through to the backing file and fsync it.
    fn sync(state: &mut State, ino: u64, file: &File) -> io::Result<()> {
        state.stats.syncs += 1;
        if let Some(d) = state.dirty.remove(&ino) {
            for (&index, page) in &d.pages {
                let start = index * PAGE;
                if start >= d.size {
                    continue;
                }
                let len = (d.size - start).min(PAGE) as usize;
                file.write_all_at(&page[..len], start)?;
                state.stats.pages_synced += 1;
            }
            if file.metadata()?.len() != d.size {
                file.set_len(d.size)?;
            }
        }
        file.sync_data()
    }

    fn handle_file(state: &State, fh: u64) -> Option<File> {
        state.handles.get(&fh).and_then(|h| h.file.try_clone().ok())
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        match self.child(&state, parent, name) {
            Some((_, rel)) => self.enter(&mut state, rel, reply),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let state = self.state();
        let Some(real) = self.real(&state, ino) else {
            return reply.error(libc::ENOENT);
        };
        match fs::symlink_metadata(&real) {
            Ok(meta) => reply.attr(&TTL, &self.attr(&state, ino, &meta)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let Some(real) = self.real(&state, ino) else {
            return reply.error(libc::ENOENT);
        };
        if let Some(mode) = mode {
            if let Err(e) = fs::set_permissions(&real, fs::Permissions::from_mode(mode)) {
                return reply.error(errno(&e));
            }
        }
        if uid.is_some() || gid.is_some() {
            if let Err(e) = std::os::unix::fs::lchown(&real, uid, gid) {
                return reply.error(errno(&e));
            }
        }
        if let Some(size) = size {
            let file = match fh.and_then(|fh| Self::handle_file(&state, fh)) {
                Some(f) => Ok(f),
                None => self.open_backing(&real, None),
            };
            let result = file.and_then(|f| Self::truncate(&mut state, ino, &f, size));
            if let Err(e) = result {
                return reply.error(errno(&e));
            }
        }
        match fs::symlink_metadata(&real) {
            Ok(meta) => reply.attr(&TTL, &self.attr(&state, ino, &meta)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let Some((real, rel)) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let made = fs::create_dir(&real)
            .and_then(|()| fs::set_permissions(&real, fs::Permissions::from_mode(mode & !umask)));
        match made {
            Ok(()) => self.enter(&mut state, rel, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let Some((real, rel)) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match fs::remove_file(&real) {
            Ok(()) => {
                state.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let Some((real, rel)) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match fs::remove_dir(&real) {
            Ok(()) => {
                state.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags != 0 {
            return reply.error(libc::EINVAL);
        }
        let mut state = self.state();
        let (Some((from, from_rel)), Some((to, to_rel))) = (
            self.child(&state, parent, name),
            self.child(&state, newparent, newname),
        ) else {
            return reply.error(libc::ENOENT);
        };
        match fs::rename(&from, &to) {
            Ok(()) => {
                // A file renamed over is gone, with its unsynced contents.
                state.forget_path(&to_rel);
                let moved: Vec<(PathBuf, u64)> = state
                    .ids
                    .iter()
                    .filter(|(p, _)| p.starts_with(&from_rel))
                    .map(|(p, &id)| (p.clone(), id))
                    .collect();
                for (old, id) in moved {
                    state.ids.remove(&old);
                    let new = match old.strip_prefix(&from_rel) {
                        Ok(rest) if rest.as_os_str().is_empty() => to_rel.clone(),
                        Ok(rest) => to_rel.join(rest),
                        Err(_) => continue,
                    };
                    state.ids.insert(new.clone(), id);
                    state.paths.insert(id, new);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut state = self.state();
        let Some(real) = self.real(&state, ino) else {
            return reply.error(libc::ENOENT);
        };
        match self.open_backing(&real, None) {
            Ok(file) => {
                if flags & libc::O_TRUNC != 0 {
                    if let Err(e) = Self::truncate(&mut state, ino, &file, 0) {
                        return reply.error(errno(&e));
                    }
                }
                let fh = state.add_handle(ino, file, flags);
                reply.opened(fh, fuser::consts::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let Some((real, rel)) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let exclusive = flags & libc::O_EXCL != 0;
        let file = match self.open_backing(&real, Some((mode & !umask & 0o7777, exclusive))) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return reply.error(errno(&e)),
        };
        let ino = state.id_for(&rel);
        if flags & libc::O_TRUNC != 0 {
            if let Err(e) = Self::truncate(&mut state, ino, &file, 0) {
                return reply.error(errno(&e));
            }
        }
        let attr = self.attr(&state, ino, &meta);
        let fh = state.add_handle(ino, file, flags);
        reply.created(&TTL, &attr, 0, fh, fuser::consts::FOPEN_DIRECT_IO);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let state = self.state();
        let Some(file) = Self::handle_file(&state, fh) else {
            return reply.error(libc::EBADF);
        };
        let offset = offset.max(0) as u64;
        let length = match state.dirty.get(&ino) {
            Some(d) => d.size,
            None => match file.metadata() {
                Ok(m) => m.len(),
                Err(e) => return reply.error(errno(&e)),
            },
        };
        let end = length.min(offset.saturating_add(u64::from(size)));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let take = ((PAGE - at % PAGE).min(end - at)) as usize;
            let page = match state.dirty.get(&ino).and_then(|d| d.pages.get(&index)) {
                Some(p) => p.clone(),
                None => match Self::load_page(&file, index) {
                    Ok(p) => p,
                    Err(e) => return reply.error(errno(&e)),
                },
            };
            out.extend_from_slice(&page[within..within + take]);
            at += take as u64;
        }
        reply.data(&out);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        state.stats.writes += 1;
        let Some(file) = Self::handle_file(&state, fh) else {
            return reply.error(libc::EBADF);
        };
        let dirty = match state.dirty.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let size = match file.metadata() {
                    Ok(m) => m.len(),
                    Err(e) => return reply.error(errno(&e)),
                };
                v.insert(DirtyFile {
                    pages: BTreeMap::new(),
                    size,
                })
            }
        };
        let offset = offset.max(0) as u64;
        let mut written = 0usize;
        while written < data.len() {
            let at = offset + written as u64;
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let take = (PAGE as usize - within).min(data.len() - written);
            if !dirty.pages.contains_key(&index) {
                // Read-modify-write, bounded by what the writer sees as the file.
                let mut page = if index * PAGE < dirty.size {
                    match Self::load_page(&file, index) {
                        Ok(p) => p,
                        Err(e) => return reply.error(errno(&e)),
                    }
                } else {
                    vec![0u8; PAGE as usize]
                };
                let visible = dirty.size.saturating_sub(index * PAGE).min(PAGE) as usize;
                page[visible..].fill(0);
                dirty.pages.insert(index, page);
            }
            if let Some(page) = dirty.pages.get_mut(&index) {
                page[within..within + take].copy_from_slice(&data[written..written + take]);
            }
            written += take;
        }
        dirty.size = dirty.size.max(offset + data.len() as u64);
        if state.handles.get(&fh).is_some_and(|h| h.sync_writes) {
            if let Err(e) = Self::sync(&mut state, ino, &file) {
                return reply.error(errno(&e));
            }
        }
        reply.written(data.len() as u32);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        // close(2) does not make anything durable.
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        if state.handles.remove(&fh).is_some()
            && !state.paths.contains_key(&ino)
            && !state.is_open(ino)
        {
            // The last handle of a deleted file.
            state.dirty.remove(&ino);
        }
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut state = self.state();
        let Some(file) = Self::handle_file(&state, fh) else {
            return reply.error(libc::EBADF);
        };
        match Self::sync(&mut state, ino, &file) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, _ino: u64, _flags: i32, reply: ReplyOpen) {
        reply.opened(0, 0);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.state();
        let (Some(real), Some(rel)) = (self.real(&state, ino), state.paths.get(&ino).cloned())
        else {
            return reply.error(libc::ENOENT);
        };
        let entries = match fs::read_dir(&real) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut all: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for entry in entries.flatten() {
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let child = state.id_for(&rel.join(entry.file_name()));
            all.push((child, kind, entry.file_name()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, (i + 1) as i64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        // Metadata is durable at once in this model.
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let Ok(path) = std::ffi::CString::new(self.backing.as_os_str().as_encoded_bytes()) else {
            return reply.error(libc::EINVAL);
        };
        #[allow(unsafe_code)]
        // SAFETY: statvfs(3) fills the zeroed struct; the path is NUL-terminated.
        let (rc, st) = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            let rc = libc::statvfs(path.as_ptr(), &mut st);
            (rc, st)
        };
        if rc != 0 {
            return reply.error(errno(&io::Error::last_os_error()));
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::io::{Read, Write};

    fn mounted() -> Option<(tempfile::TempDir, PowerCutMount)> {
        let dir = tempfile::tempdir().unwrap();
        let (backing, mnt) = (dir.path().join("disk"), dir.path().join("mnt"));
        fs::create_dir(&backing).unwrap();
        fs::create_dir(&mnt).unwrap();
        match PowerCutMount::mount(&backing, &mnt) {
            Ok(m) => Some((dir, m)),
            Err(e) => {
                eprintln!("power-cut file system not tested: cannot mount FUSE here: {e}");
                None
            }
        }
    }

    #[test]
    fn unsynced_writes_are_lost_by_a_cut_and_synced_ones_kept() {
        let Some((_dir, mut m)) = mounted() else {
            return;
        };
        let root = m.mountpoint().to_path_buf();
        fs::create_dir(root.join("d")).unwrap();
        let mut synced = File::create(root.join("d/synced")).unwrap();
        synced.write_all(&[7u8; 10_000]).unwrap();
        synced.sync_data().unwrap();
        synced.write_all(b"tail not synced").unwrap();
        let mut lost = File::create(root.join("d/lost")).unwrap();
        lost.write_all(b"never synced").unwrap();
        // The writer sees its own writes.
        assert_eq!(fs::read(root.join("d/lost")).unwrap(), b"never synced");
        assert_eq!(fs::metadata(root.join("d/synced")).unwrap().len(), 10_015);
        drop((synced, lost));
        assert!(m.unsynced_pages() >= 2);

        let report = m.cut_power().unwrap();
        assert_eq!(report.files, 2);
        let mut back = Vec::new();
        File::open(root.join("d/synced"))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(
            back,
            vec![7u8; 10_000],
            "synced part kept, unsynced tail lost"
        );
        assert_eq!(
            fs::read(root.join("d/lost")).unwrap(),
            b"",
            "created, contents lost"
        );
        assert_eq!(m.unsynced_pages(), 0);
    }

    #[test]
    fn overwrites_truncation_and_renames_keep_the_writers_view() {
        let Some((_dir, mut m)) = mounted() else {
            return;
        };
        let root = m.mountpoint().to_path_buf();
        let path = root.join("f");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(&vec![1u8; 3 * PAGE as usize]).unwrap();
        f.sync_all().unwrap();
        f.write_at(b"xyz", PAGE - 1).unwrap();
        let mut got = vec![0u8; 5];
        f.read_at(&mut got, PAGE - 2).unwrap();
        assert_eq!(&got, &[1, b'x', b'y', b'z', 1]);
        f.set_len(PAGE + 1).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), PAGE + 1);
        fs::rename(&path, root.join("g")).unwrap();
        f.sync_all().unwrap();
        drop(f);
        m.cut_power().unwrap();
        let back = fs::read(root.join("g")).unwrap();
        assert_eq!(back.len() as u64, PAGE + 1);
        assert_eq!(&back[PAGE as usize - 1..], b"xy");
        assert!(!root.join("f").exists());
    }

    #[test]
    fn a_path_deleted_and_made_again_as_a_directory_is_a_directory() {
        // Backing inode numbers are reused at once; nats-server's store start-up hit this.
        let Some((_dir, _m)) = mounted() else {
            return;
        };
        let root = _m.mountpoint().to_path_buf();
        for round in 0..50 {
            let x = root.join(format!("x{}", round % 3));
            fs::write(&x, b"file").unwrap();
            assert!(x.is_file());
            fs::remove_file(&x).unwrap();
            fs::create_dir(&x).unwrap();
            fs::write(x.join("y"), b"inside").unwrap();
            assert_eq!(fs::read(x.join("y")).unwrap(), b"inside");
            fs::remove_file(x.join("y")).unwrap();
            fs::remove_dir(&x).unwrap();
        }
    }

    #[test]
    fn writes_through_an_o_sync_handle_survive_a_cut() {
        let Some((_dir, mut m)) = mounted() else {
            return;
        };
        let root = m.mountpoint().to_path_buf();
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_SYNC)
            .open(root.join("s"))
            .unwrap();
        f.write_all(b"durable").unwrap();
        drop(f);
        fs::rename(root.join("s"), root.join("t")).unwrap();
        m.cut_power().unwrap();
        assert_eq!(fs::read(root.join("t")).unwrap(), b"durable");
    }
}
