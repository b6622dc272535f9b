//! The file operations an append-only log needs, behind a trait, so that the same log code
//! runs on the real file system ([`RealFs`]) or on one that can lose power ([`SimFs`]).
//!
//! Why: a process killed with SIGKILL leaves its writes in the OS page cache, so a crash
//! test that kills a process passes even with every fsync removed. [`SimFs`] keeps, per
//! file, what was written and what was last synced, and per directory which names were
//! last synced; [`SimFs::power_cut`] then gives the file system a machine finds after
//! the power came back: only what was synced, plus (as [`Tear`] chooses) some or all of the
//! unsynced tail, or zeros in its place. Tests drive a log up to every cut point in turn
//! ([`SimFs::cut_at_op`]) and check what it promised.
//!
//! Design constraints:
//! - One virtual call per file operation (one append of a whole group of frames, one sync),
//!   never one per record or reading: the store's append path is hot.
//! - The simulation is pessimistic where POSIX allows it: a new file's name, and a
//!   removed file's absence, survive a power cut only once its directory was synced; a
//!   write survives only once its file was synced (`sync_data` or `sync_all`).
//! - Once a simulated cut happened, every operation on that file system fails, as on a
//!   machine without power; the append that hit the cut leaves half its bytes behind
//!   (unsynced), so a torn frame is among the cases every cut tries.
//!
//! Test hook for real processes: [`from_env`] gives the real file system, or with
//! `VT_TEST_DISK_DELAY_FILE` set a [`SlowFs`] over it (a slow disk an end-to-end test turns
//! on and off while ingest runs, as `daemon::clock`'s test clock file does for time).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// An open log file, shared between the writer and whoever syncs it (group commit syncs
/// outside the writer's lock).
pub type FileRef = Arc<dyn FsFile>;

/// A file system holding append-only logs.
pub trait Fs: Send + Sync + Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir` (those that are valid UTF-8), in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for reading and appending; creates it (empty) when `create` is set and
    /// it is missing.
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef>;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` (files created or removed there) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file of an [`Fs`].
pub trait FsFile: Send + Sync + Debug {
    /// Appends `bytes` at the end of the file: all of them, or an error.
    fn append(&self, bytes: &[u8]) -> io::Result<()>;
    /// Reads the whole file.
    fn read_all(&self) -> io::Result<Vec<u8>>;
    /// Fills `buf` from `offset` on; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Cuts the file to `len` bytes (a torn tail off).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and its length) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable: `fsync`.
    fn sync_all(&self) -> io::Result<()>;
}

/// The environment variable of the slow-disk test hook (see [`from_env`]).
pub const TEST_DISK_DELAY_FILE: &str = "VT_TEST_DISK_DELAY_FILE";

/// The file system a service's logs run on: the real one. With `VT_TEST_DISK_DELAY_FILE`
/// set (a test hook; production never sets it) the real one behind a [`SlowFs`] whose delay
/// that file holds, so that an end-to-end test can give a running process a slow disk.
pub fn from_env() -> Arc<dyn Fs> {
    match std::env::var_os(TEST_DISK_DELAY_FILE) {
        Some(file) => Arc::new(SlowFs::new(Arc::new(RealFs), PathBuf::from(file))),
        None => Arc::new(RealFs),
    }
}

/// Another file system made slow: every append and sync of its files first waits the
/// number of milliseconds written in a control file (re-read at most every 100 ms; a
/// missing or unreadable file means no delay). A disk that takes 300 ms per fdatasync is
/// what a worn SD card or a saturated shared volume does to a gateway or a county server.
#[derive(Debug, Clone)]
pub struct SlowFs {
    inner: Arc<dyn Fs>,
    delay: Arc<Delay>,
}

#[derive(Debug)]
struct Delay {
    control: PathBuf,
    /// When the control file was last read, and what it said.
    cached: Mutex<Option<(Instant, Duration)>>,
}

impl Delay {
    fn wait(&self) {
        let now = Instant::now();
        let delay = {
            let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            match *cached {
                Some((at, d)) if now.duration_since(at) < Duration::from_millis(100) => d,
                _ => {
                    let ms = std::fs::read_to_string(&self.control)
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    let d = Duration::from_millis(ms);
                    *cached = Some((now, d));
                    d
                }
            }
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

impl SlowFs {
    /// `inner` slowed by the delay in `control` (milliseconds, as text).
    pub fn new(inner: Arc<dyn Fs>, control: PathBuf) -> SlowFs {
        SlowFs { inner, delay: Arc::new(Delay { control, cached: Mutex::new(None) }) }
    }
}

impl Fs for SlowFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        Ok(Arc::new(SlowFile { inner: self.inner.open(path, create)?, delay: self.delay.clone() }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.delay.wait();
        self.inner.sync_dir(dir)
    }
}

/// A file of [`SlowFs`].
#[derive(Debug)]
struct SlowFile {
    inner: FileRef,
    delay: Arc<Delay>,
}

impl FsFile for SlowFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        self.delay.wait();
        self.inner.append(bytes)
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        self.inner.read_all()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.delay.wait();
        self.inner.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.delay.wait();
        self.inner.sync_all()
    }
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

/// A file of [`RealFs`].
#[derive(Debug)]
struct RealFile(std::fs::File);

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        let file = std::fs::OpenOptions::new().read(true).append(true).create(create).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

impl FsFile for RealFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.0).write_all(bytes)
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut f = &self.0;
        f.seek(SeekFrom::Start(0))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)?;
        Ok(out)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// What a simulated power cut leaves of the bytes written to a file since its last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// Nothing: the file is what was last synced.
    Lose,
    /// The first half of them: a torn last write.
    Half,
    /// All of them (what a killed process leaves: the page cache survived).
    Keep,
    /// As many zero bytes: the file's length reached the disk, its data did not.
    Zeros,
}

impl Tear {
    /// Every kind, for tests that try them all.
    pub const ALL: [Tear; 4] = [Tear::Lose, Tear::Half, Tear::Keep, Tear::Zeros];
}

/// A file system in memory that can lose power: see the module doc.
///
/// Clones share the same files. Operations that change something (append, set_len, a
/// sync, creating or removing a file, syncing a directory) are numbered from 0; with
/// [`SimFs::cut_at_op`] set, the power goes at that operation: it and every later one fail.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Contents: what was written, and what was synced.
    nodes: Vec<SimNode>,
    /// The names as the running system sees them.
    live: BTreeMap<PathBuf, usize>,
    /// The names as they were at each directory's last sync.
    durable: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    ops: u64,
    cut_at: Option<u64>,
    dead: bool,
    /// The disk is full: see [`SimFs::set_full`].
    full: bool,
}

#[derive(Debug, Default, Clone)]
struct SimNode {
    written: Vec<u8>,
    synced: Vec<u8>,
}

/// A file of [`SimFs`].
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    node: usize,
}

fn disk_full() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "simulated full disk: no space left on device")
}

fn power_is_off() -> io::Error {
    io::Error::other("simulated power cut: the machine is off")
}

impl SimState {
    /// Counts one changing operation; fails it (and makes the fs dead) at the cut.
    fn op(&mut self) -> io::Result<()> {
        self.alive()?;
        if self.cut_at == Some(self.ops) {
            self.dead = true;
            return Err(power_is_off());
        }
        self.ops += 1;
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead { Err(power_is_off()) } else { Ok(()) }
    }
}

impl SimFs {
    /// An empty file system with power.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power at changing operation `n` (counted from 0 over the life of this
    /// file system): it and every later operation fail.
    pub fn cut_at_op(&self, n: u64) {
        self.lock().cut_at = Some(n);
    }

    /// Fills the disk (or frees it again). While full, an append writes half of its bytes
    /// (a short write) and fails with `StorageFull`, and an fdatasync with written bytes
    /// to flush fails the same way (one that only makes a cut durable succeeds) (delayed allocation finds no blocks); cutting a file
    /// shorter and everything else still work, as on a real full disk.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// Changing operations done so far: run a scenario once without a cut to learn how
    /// many cut points it has.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Whether the power is off (a cut happened).
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Turns the power off (if it is not already) and returns the file system found when it
    /// comes back: the names of the last directory syncs, each file's synced bytes, and of
    /// the bytes written since, what `tear` says. The old file system stays dead.
    pub fn power_cut(&self, tear: Tear) -> SimFs {
        let mut s = self.lock();
        s.dead = true;
        let mut next = SimState { dirs: s.dirs.clone(), ..SimState::default() };
        for (path, &id) in &s.durable {
            let node = &s.nodes[id];
            let mut data = node.synced.clone();
            if let Some(tail) = node.written.strip_prefix(node.synced.as_slice()) {
                match tear {
                    Tear::Lose => {}
                    Tear::Half => data.extend_from_slice(&tail[..tail.len() / 2]),
                    Tear::Keep => data.extend_from_slice(tail),
                    Tear::Zeros => data.resize(data.len() + tail.len(), 0),
                }
            } else if tear == Tear::Keep {
                // Rewritten (cut shorter) since the sync, and the page cache survived.
                data = node.written.clone();
            }
            next.live.insert(path.clone(), next.nodes.len());
            next.durable.insert(path.clone(), next.nodes.len());
            next.nodes.push(SimNode { written: data.clone(), synced: data });
        }
        SimFs { state: Arc::new(Mutex::new(next)) }
    }

    /// The current (running system's) contents of `path`, for tests that look at or damage
    /// a file directly.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        s.live.get(path).map(|&id| s.nodes[id].written.clone())
    }
}

fn parent_exists(s: &SimState, path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() && !s.dirs.contains(p) => {
            Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", p.display())))
        }
        _ => Ok(()),
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.alive()?;
        for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            s.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        s.alive()?;
        if !s.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", dir.display())));
        }
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        let mut s = self.lock();
        s.alive()?;
        parent_exists(&s, path)?;
        let node = match s.live.get(path) {
            Some(&id) => id,
            None if create => {
                s.op()?;
                let id = s.nodes.len();
                s.nodes.push(SimNode::default());
                s.live.insert(path.to_path_buf(), id);
                id
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {}", path.display()))),
        };
        Ok(Arc::new(SimFile { fs: self.clone(), node }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.alive()?;
        if !s.live.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {}", path.display())));
        }
        s.op()?;
        s.live.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.op()?;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        let live: Vec<(PathBuf, usize)> =
            s.live.iter().filter(|(p, _)| in_dir(p)).map(|(p, &i)| (p.clone(), i)).collect();
        s.durable.retain(|p, _| !in_dir(p));
        s.durable.extend(live);
        Ok(())
    }
}

impl FsFile for SimFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        let hit = !s.dead && s.cut_at == Some(s.ops);
        if let Err(e) = s.op() {
            if hit {
                // The append the power went out in: half of it reached the page cache.
                s.nodes[self.node].written.extend_from_slice(&bytes[..bytes.len() / 2]);
            }
            return Err(e);
        }
        if s.full {
            s.nodes[self.node].written.extend_from_slice(&bytes[..bytes.len() / 2]);
            return Err(disk_full());
        }
        s.nodes[self.node].written.extend_from_slice(bytes);
        Ok(())
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let s = self.fs.lock();
        s.alive()?;
        Ok(s.nodes[self.node].written.clone())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.fs.lock();
        s.alive()?;
        let data = &s.nodes[self.node].written;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| data.get(start..end))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.op()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        s.nodes[self.node].written.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.op()?;
        if s.full && !s.nodes[self.node].synced.starts_with(&s.nodes[self.node].written) {
            return Err(disk_full());
        }
        let node = &mut s.nodes[self.node];
        node.synced.clone_from(&node.written);
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_fs_waits_what_its_control_file_says_before_each_write_and_sync() {
        let dir = std::env::temp_dir().join(format!("vt-slowfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let control = dir.join("delay");
        let fs = SlowFs::new(Arc::new(RealFs), control.clone());
        let f = fs.open(&dir.join("log"), true).unwrap();
        let timed = |f: &FileRef| {
            let t = Instant::now();
            f.append(b"x").unwrap();
            f.sync_data().unwrap();
            t.elapsed()
        };
        timed(&f);
        std::fs::write(&control, "120").unwrap();
        std::thread::sleep(Duration::from_millis(110));
        assert!(timed(&f) >= Duration::from_millis(240), "120 ms before the append and before the sync");
        assert_eq!(f.read_all().unwrap(), b"xx", "and the data is the real file's");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn setup() -> (SimFs, PathBuf) {
        let fs = SimFs::new();
        let dir = PathBuf::from("/log");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    #[test]
    fn a_power_cut_keeps_synced_bytes_and_tears_the_rest_as_asked() {
        let (fs, dir) = setup();
        let path = dir.join("a");
        let f = fs.open(&path, true).unwrap();
        fs.sync_dir(&dir).unwrap();
        f.append(b"durable").unwrap();
        f.sync_data().unwrap();
        f.append(b"volatile").unwrap();
        let after = |tear| fs.power_cut(tear).contents(&path).unwrap();
        assert_eq!(after(Tear::Lose), b"durable");
        assert_eq!(after(Tear::Half), b"durablevola");
        assert_eq!(after(Tear::Keep), b"durablevolatile");
        assert_eq!(after(Tear::Zeros), b"durable\0\0\0\0\0\0\0\0");
    }

    #[test]
    fn a_new_name_survives_only_once_its_directory_was_synced_and_so_does_a_removal() {
        let (fs, dir) = setup();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let f = fs.open(&a, true).unwrap();
        f.append(b"x").unwrap();
        f.sync_data().unwrap();
        assert_eq!(fs.power_cut(Tear::Keep).contents(&a), None, "the name was never synced");

        let (fs, dir) = setup();
        let f = fs.open(&a, true).unwrap();
        f.append(b"x").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        fs.open(&b, true).unwrap();
        fs.remove_file(&a).unwrap();
        let back = fs.power_cut(Tear::Keep);
        assert_eq!(back.contents(&a).as_deref(), Some(&b"x"[..]), "an unsynced removal is undone");
        assert_eq!(back.contents(&b), None);
        assert_eq!(back.list(&dir).unwrap(), vec!["a".to_string()]);

        let (fs, dir) = setup();
        fs.open(&a, true).unwrap();
        fs.sync_dir(&dir).unwrap();
        fs.remove_file(&a).unwrap();
        fs.sync_dir(&dir).unwrap();
        assert_eq!(fs.power_cut(Tear::Keep).contents(&a), None, "a synced removal stays");
    }

    #[test]
    fn the_cut_fails_that_operation_and_every_later_one_and_tears_the_append_it_hit() {
        let (fs, dir) = setup();
        let path = dir.join("a");
        let f = fs.open(&path, true).unwrap(); // op 0
        fs.sync_dir(&dir).unwrap(); // op 1
        fs.cut_at_op(3);
        f.append(b"first").unwrap(); // op 2
        assert!(f.append(b"second").is_err(), "op 3 is the cut");
        assert!(fs.is_dead());
        assert!(f.sync_data().is_err() && f.read_all().is_err() && fs.list(&dir).is_err());
        assert_eq!(fs.ops(), 3);
        assert_eq!(fs.power_cut(Tear::Keep).contents(&path).unwrap(), b"firstsec");
        assert_eq!(fs.power_cut(Tear::Lose).contents(&path).unwrap(), b"");
    }

    #[test]
    fn the_real_file_system_appends_reads_and_cuts() {
        let dir = std::env::temp_dir().join(format!("frames-fs-{}", std::process::id()));
        let fs = RealFs;
        fs.create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let f = fs.open(&path, true).unwrap();
        f.append(b"hello ").unwrap();
        f.append(b"world").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        assert_eq!(f.read_all().unwrap(), b"hello world");
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        assert!(f.read_exact_at(&mut buf, 8).is_err(), "past the end");
        f.set_len(5).unwrap();
        assert_eq!(fs.open(&path, false).unwrap().read_all().unwrap(), b"hello");
        assert_eq!(fs.list(&dir).unwrap(), vec!["log".to_string()]);
        fs.remove_file(&path).unwrap();
        assert!(fs.open(&path, false).is_err(), "a missing file is not created without create");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
