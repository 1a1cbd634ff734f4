//! `SimFs`: an in-memory disk that remembers what is durable, for crash tests.
//!
//! Every file keeps two images: what a running process reads (`current`) and what is certainly on
//! the platter (`durable`), plus the writes and truncations made since its last successful sync
//! (`pending`). The namespace is kept the same way: entries created, renamed and removed since the
//! last sync of their directory are pending. [`SimFs::crash`] then builds the disk a power cut
//! leaves: a prefix of the pending namespace changes (metadata is journaled, in order), and for
//! every file each pending write independently kept, dropped, zeroed (its size reached the disk,
//! its data did not) or torn at any byte — so later writes can survive earlier ones, which is the
//! reordering write-back does. Synced data always survives.
//!
//! Faults ([`Fault`]) make a chosen call fail the way a full or failing disk does: a write that
//! stores part of its bytes and then fails, or a sync that fails. A failed sync behaves as Linux
//! does since "fsyncgate": the dirty pages are dropped from the write-back queue, reads still see
//! them, and the next sync reports success without writing them.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};

use super::{OpenMode, VFile, Vfs};

/// A simulated disk. Cheap to clone; clones share the disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct SimFs {
    disk: Arc<Mutex<Disk>>,
    /// While closed, file syncs wait (a disk slower than the commits); see [`SimFs::hold_syncs`].
    gate: Arc<SyncGate>,
}

/// Holds file syncs back while closed.
#[derive(Debug, Default)]
struct SyncGate {
    closed: Mutex<bool>,
    opened: std::sync::Condvar,
    /// Syncs waiting at the gate now.
    waiting: Mutex<usize>,
    arrived: std::sync::Condvar,
}

impl SyncGate {
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if !*closed {
            return;
        }
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.arrived.notify_all();
        while *closed {
            closed = self.opened.wait(closed).unwrap_or_else(|e| e.into_inner());
        }
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

/// What a crash keeps of the writes that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashMode {
    /// Any subset, torn or zeroed (a power cut).
    Random,
    /// Everything written (a process crash: the page cache survives).
    KeepAll,
    /// Nothing unsynced.
    DropAll,
}

/// The call a [`Fault`] makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultOp {
    /// A write: `keep` bytes of it are stored, then it (or, if `keep > 0`, the next write to the
    /// same file) fails.
    Write {
        /// Bytes stored before the failure.
        keep: usize,
    },
    /// `fdatasync`/`fsync` of a file: its dirty data is lost (see the module doc).
    Sync,
    /// The sync of a directory.
    SyncDir,
    /// `syncfs`: the dirty data of every file is lost.
    SyncFs,
    /// A rename.
    Rename,
}

/// One injected failure: the `skip + 1`-th call of `op` on a path containing `path` fails with
/// `errno` (once).
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    /// Which call.
    pub(crate) op: FaultOp,
    /// A substring of the path it applies to (`""`: any).
    pub(crate) path: String,
    /// Matching calls let through first.
    pub(crate) skip: usize,
    /// The error (`libc::EIO`, `libc::ENOSPC`, ...).
    pub(crate) errno: i32,
}

#[derive(Debug, Default)]
struct Disk {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// The namespace a running process sees.
    names: BTreeMap<PathBuf, Node>,
    /// The namespace that survives a crash for certain.
    durable_names: BTreeMap<PathBuf, Node>,
    /// Namespace changes since `durable_names`, in order.
    pending_names: Vec<NameOp>,
    faults: Vec<Fault>,
    /// Set by [`SimFs::crash`]: the process that used this disk is gone, every call fails.
    crashed: bool,
    /// Armed by [`SimFs::crash_after`]: changes still allowed, and the seed of the crash.
    crash_at: Option<(u64, u64)>,
    /// The disk the armed crash left.
    crash_image: Option<SimFs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Default, Clone)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<DataOp>,
}

#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

#[derive(Debug, Clone)]
enum NameOp {
    Create(PathBuf, Node),
    Remove(PathBuf),
    RemoveTree(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl NameOp {
    /// True if the op changes an entry of `dir`.
    fn touches(&self, dir: &Path) -> bool {
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        match self {
            NameOp::Create(p, _) | NameOp::Remove(p) | NameOp::RemoveTree(p) => in_dir(p),
            NameOp::Rename(from, to) => in_dir(from) || in_dir(to),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Node>) {
        match self {
            NameOp::Create(p, node) => {
                names.insert(p.clone(), *node);
            }
            NameOp::Remove(p) => {
                names.remove(p);
            }
            NameOp::RemoveTree(root) => names.retain(|p, _| !p.starts_with(root)),
            NameOp::Rename(from, to) => {
                if let Some(node) = names.remove(from) {
                    names.insert(to.clone(), node);
                }
            }
        }
    }
}

impl DataOp {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            DataOp::Write {
                offset,
                bytes: data,
            } => write_at(bytes, *offset, data),
            DataOp::SetLen(len) => bytes.resize(*len, 0),
        }
    }
}

fn write_at(bytes: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if bytes.len() < offset + data.len() {
        bytes.resize(offset + data.len(), 0);
    }
    bytes[offset..offset + data.len()].copy_from_slice(data);
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl Disk {
    fn check(&self) -> io::Result<()> {
        if self.crashed {
            Err(errno(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// Counts a change to the disk; the one an armed crash falls on fails, and the crash happens
    /// there (see [`SimFs::crash_after`]).
    fn tick(&mut self) -> io::Result<()> {
        self.check()?;
        match &mut self.crash_at {
            Some((0, seed)) => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(*seed);
                self.crash_image = Some(image_of(self, &mut rng, CrashMode::Random));
                self.crash_at = None;
                self.crashed = true;
                Err(errno(libc::EIO))
            }
            Some((left, _)) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Takes the fault this call triggers, if any.
    fn fault(&mut self, op: FaultOp, path: &Path) -> Option<Fault> {
        let path = path.to_string_lossy();
        let matches = |f: &Fault| {
            std::mem::discriminant(&f.op) == std::mem::discriminant(&op)
                && path.contains(f.path.as_str())
        };
        let i = self.faults.iter().position(matches)?;
        if self.faults[i].skip > 0 {
            self.faults[i].skip -= 1;
            return None;
        }
        Some(self.faults.remove(i))
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        dir.as_os_str().is_empty()
            || dir.parent().is_none()
            || self.names.get(dir) == Some(&Node::Dir)
    }

    fn name_op(&mut self, op: NameOp) {
        op.apply(&mut self.names);
        self.pending_names.push(op);
    }

    fn sync_inode(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            for op in inode.pending.drain(..) {
                op.apply(&mut inode.durable);
            }
        }
    }
}

impl SimFs {
    /// An empty disk.
    pub(crate) fn new() -> SimFs {
        SimFs::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every file sync wait until [`SimFs::release_syncs`] (a disk that cannot keep up).
    pub(crate) fn hold_syncs(&self) {
        *self.gate.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Lets held syncs, and later ones, through.
    pub(crate) fn release_syncs(&self) {
        *self.gate.closed.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.gate.opened.notify_all();
    }

    /// Waits until a sync is held at the gate.
    pub(crate) fn wait_for_held_sync(&self) {
        let mut waiting = self.gate.waiting.lock().unwrap_or_else(|e| e.into_inner());
        while *waiting == 0 {
            waiting = self
                .gate
                .arrived
                .wait(waiting)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Arms a fault (see [`Fault`]).
    pub(crate) fn inject(&self, fault: Fault) {
        self.disk().faults.push(fault);
    }

    /// Arms a power cut: the disk crashes just before the `changes + 1`-th change from now (a
    /// write, truncation, sync, rename, removal or creation), with what survives chosen from `seed`.
    /// From then on every call fails, as for a process that is gone; [`SimFs::take_crash`] hands
    /// back the disk it left.
    pub(crate) fn crash_after(&self, changes: u64, seed: u64) {
        self.disk().crash_at = Some((changes, seed));
    }

    /// The disk the armed crash left, if it happened.
    pub(crate) fn take_crash(&self) -> Option<SimFs> {
        self.disk().crash_image.take()
    }

    /// Faults armed and not yet triggered.
    pub(crate) fn faults_left(&self) -> usize {
        self.disk().faults.len()
    }

    /// Overwrites bytes of a file in place, durably (damage a test inflicts, not a crash).
    pub(crate) fn damage(&self, path: &Path, offset: usize, bytes: &[u8]) {
        let mut disk = self.disk();
        let Some(Node::File(ino)) = disk.names.get(path).copied() else {
            panic!("damage: no file {}", path.display());
        };
        let inode = disk.inodes.get_mut(&ino).expect("inode");
        write_at(&mut inode.current, offset, bytes);
        write_at(&mut inode.durable, offset, bytes);
    }

    /// The disk a crash leaves (this one stops working: the process using it is gone). `rng`
    /// chooses what survives in [`CrashMode::Random`].
    pub(crate) fn crash(&self, rng: &mut impl Rng, mode: CrashMode) -> SimFs {
        let mut disk = self.disk();
        disk.crashed = true;
        image_of(&disk, rng, mode)
    }

    /// The disk a crash now would leave, this one going on (to sample many outcomes of one moment).
    pub(crate) fn image(&self, rng: &mut impl Rng, mode: CrashMode) -> SimFs {
        image_of(&self.disk(), rng, mode)
    }
}

/// The disk a crash of `disk` leaves: synced data and namespace, a prefix of the pending namespace
/// changes, and what `mode` keeps of each pending write.
fn image_of(disk: &Disk, rng: &mut impl Rng, mode: CrashMode) -> SimFs {
    let kept_names = match mode {
        CrashMode::Random => rng.random_range(0..=disk.pending_names.len()),
        CrashMode::KeepAll => disk.pending_names.len(),
        CrashMode::DropAll => 0,
    };
    let mut names = disk.durable_names.clone();
    for op in &disk.pending_names[..kept_names] {
        op.apply(&mut names);
    }
    let mut inodes = HashMap::new();
    for node in names.values() {
        let Node::File(ino) = node else { continue };
        let Some(inode) = disk.inodes.get(ino) else {
            continue;
        };
        let mut bytes = inode.durable.clone();
        for op in &inode.pending {
            survive(op, &mut bytes, rng, mode);
        }
        inodes.insert(
            *ino,
            Inode {
                durable: bytes.clone(),
                current: bytes,
                pending: Vec::new(),
            },
        );
    }
    SimFs {
        disk: Arc::new(Mutex::new(Disk {
            inodes,
            next_ino: disk.next_ino,
            durable_names: names.clone(),
            names,
            pending_names: Vec::new(),
            faults: Vec::new(),
            crashed: false,
            crash_at: None,
            crash_image: None,
        })),
        gate: Arc::default(),
    }
}

/// Applies what a crash keeps of one unsynced operation.
fn survive(op: &DataOp, bytes: &mut Vec<u8>, rng: &mut impl Rng, mode: CrashMode) {
    match mode {
        CrashMode::KeepAll => return op.apply(bytes),
        CrashMode::DropAll => return,
        CrashMode::Random => {}
    }
    let DataOp::Write {
        offset,
        bytes: data,
    } = op
    else {
        if rng.random_bool(0.5) {
            op.apply(bytes);
        }
        return;
    };
    let cut = if data.is_empty() {
        0
    } else {
        rng.random_range(0..data.len())
    };
    match rng.random_range(0..20) {
        // Kept whole.
        0..8 => write_at(bytes, *offset, data),
        // Lost.
        8..13 => {}
        // The size reached the disk, the data did not.
        13..15 => write_at(bytes, *offset, &vec![0; data.len()]),
        // Torn: a prefix reached the disk.
        15..18 => write_at(bytes, *offset, &data[..cut]),
        // Torn, and the rest reads as zeros.
        _ => {
            let mut torn = data[..cut].to_vec();
            torn.resize(data.len(), 0);
            write_at(bytes, *offset, &torn);
        }
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    disk: Arc<Mutex<Disk>>,
    gate: Arc<SyncGate>,
    ino: u64,
    /// The path it was opened by (for faults).
    path: PathBuf,
    pos: usize,
    mode: OpenMode,
}

impl SimFile {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sync(&self) -> io::Result<()> {
        self.gate.pass();
        let mut disk = self.disk();
        disk.tick()?;
        if let Some(fault) = disk.fault(FaultOp::Sync, &self.path) {
            // Write-back failed: the pages are marked clean and never written.
            if let Some(inode) = disk.inodes.get_mut(&self.ino) {
                inode.pending.clear();
            }
            return Err(errno(fault.errno));
        }
        disk.sync_inode(self.ino);
        Ok(())
    }
}

impl Read for SimFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let disk = self.disk();
            disk.check()?;
            let current = &disk.inodes[&self.ino].current;
            let start = self.pos.min(current.len());
            let n = buf.len().min(current.len() - start);
            buf[..n].copy_from_slice(&current[start..start + n]);
            n
        };
        self.pos += n;
        Ok(n)
    }
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if matches!(self.mode, OpenMode::Read) {
            return Err(errno(libc::EBADF));
        }
        let mut disk = self.disk();
        disk.tick()?;
        let mut data = buf;
        let mut failure = None;
        if let Some(fault) = disk.fault(FaultOp::Write { keep: 0 }, &self.path) {
            let FaultOp::Write { keep } = fault.op else {
                unreachable!()
            };
            if keep == 0 || buf.is_empty() {
                return Err(errno(fault.errno));
            }
            // Part of it is stored; the next write fails.
            data = &buf[..keep.min(buf.len())];
            failure = Some(Fault {
                op: FaultOp::Write { keep: 0 },
                skip: 0,
                path: self.path.to_string_lossy().into_owned(),
                ..fault
            });
        }
        let inode = disk
            .inodes
            .get_mut(&self.ino)
            .expect("inode of an open file");
        let offset = match self.mode {
            OpenMode::Append | OpenMode::AppendCreate => inode.current.len(),
            _ => self.pos,
        };
        write_at(&mut inode.current, offset, data);
        inode.pending.push(DataOp::Write {
            offset,
            bytes: data.to_vec(),
        });
        if let Some(fault) = failure {
            disk.faults.insert(0, fault);
        }
        let written = data.len();
        drop(disk);
        self.pos = offset + written;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SimFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.len()? as i64;
        let pos = match to {
            SeekFrom::Start(p) => p as i64,
            SeekFrom::End(d) => len + d,
            SeekFrom::Current(d) => self.pos as i64 + d,
        };
        if pos < 0 {
            return Err(errno(libc::EINVAL));
        }
        self.pos = pos as usize;
        Ok(pos as u64)
    }
}

impl VFile for SimFile {
    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        disk.tick()?;
        let inode = disk
            .inodes
            .get_mut(&self.ino)
            .expect("inode of an open file");
        let op = DataOp::SetLen(len as usize);
        op.apply(&mut inode.current);
        inode.pending.push(op);
        Ok(())
    }
}

impl SimFile {
    fn len(&self) -> io::Result<u64> {
        let disk = self.disk();
        disk.check()?;
        Ok(disk.inodes[&self.ino].current.len() as u64)
    }
}

impl Vfs for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VFile>> {
        let mut disk = self.disk();
        disk.check()?;
        let ino = match disk.names.get(path).copied() {
            Some(Node::Dir) => return Err(errno(libc::EISDIR)),
            Some(Node::File(ino)) => {
                if mode == OpenMode::CreateTruncate {
                    disk.tick()?;
                    let inode = disk.inodes.get_mut(&ino).expect("inode");
                    inode.current.clear();
                    inode.pending.push(DataOp::SetLen(0));
                }
                ino
            }
            None => {
                let creates = matches!(
                    mode,
                    OpenMode::ReadWriteCreate | OpenMode::AppendCreate | OpenMode::CreateTruncate
                );
                if !creates {
                    return Err(not_found(path));
                }
                if !disk.dir_exists(path.parent().unwrap_or(Path::new(""))) {
                    return Err(not_found(path));
                }
                disk.tick()?;
                disk.next_ino += 1;
                let ino = disk.next_ino;
                disk.inodes.insert(ino, Inode::default());
                disk.name_op(NameOp::Create(path.to_path_buf(), Node::File(ino)));
                ino
            }
        };
        Ok(Box::new(SimFile {
            disk: Arc::clone(&self.disk),
            gate: Arc::clone(&self.gate),
            ino,
            path: path.to_path_buf(),
            pos: 0,
            mode,
        }))
    }

    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        let disk = self.disk();
        disk.check()?;
        match disk.names.get(path) {
            Some(Node::File(ino)) => Ok(Some(disk.inodes[ino].current.len() as u64)),
            Some(Node::Dir) => Err(errno(libc::EISDIR)),
            None => Ok(None),
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        let disk = self.disk();
        !disk.crashed && (path.parent().is_none() || disk.names.get(path) == Some(&Node::Dir))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.tick()?;
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty() && a.parent().is_some())
            .take_while(|a| !disk.names.contains_key(*a))
            .map(Path::to_path_buf)
            .collect();
        if let Some(file) = dir
            .ancestors()
            .find(|a| matches!(disk.names.get(*a), Some(Node::File(_))))
        {
            return Err(io::Error::other(format!("{} is a file", file.display())));
        }
        missing.reverse();
        for path in missing {
            disk.name_op(NameOp::Create(path, Node::Dir));
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.tick()?;
        match disk.names.get(path) {
            Some(Node::File(_)) => {
                disk.name_op(NameOp::Remove(path.to_path_buf()));
                Ok(())
            }
            Some(Node::Dir) => Err(errno(libc::EISDIR)),
            None => Err(not_found(path)),
        }
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.tick()?;
        if disk.names.get(dir) != Some(&Node::Dir) {
            return Err(not_found(dir));
        }
        disk.name_op(NameOp::RemoveTree(dir.to_path_buf()));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.tick()?;
        if let Some(fault) = disk.fault(FaultOp::Rename, to) {
            return Err(errno(fault.errno));
        }
        match disk.names.get(from) {
            Some(Node::File(_)) => {}
            Some(Node::Dir) => return Err(errno(libc::EISDIR)),
            None => return Err(not_found(from)),
        }
        if !disk.dir_exists(to.parent().unwrap_or(Path::new(""))) {
            return Err(not_found(to));
        }
        disk.name_op(NameOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.tick()?;
        if !disk.dir_exists(dir) {
            return Err(not_found(dir));
        }
        if let Some(fault) = disk.fault(FaultOp::SyncDir, dir) {
            return Err(errno(fault.errno));
        }
        // Metadata reaches the disk in order: everything up to the last change in `dir`.
        if let Some(last) = disk.pending_names.iter().rposition(|op| op.touches(dir)) {
            let done: Vec<NameOp> = disk.pending_names.drain(..=last).collect();
            for op in &done {
                op.apply(&mut disk.durable_names);
            }
        }
        Ok(())
    }

    fn syncfs(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.tick()?;
        if let Some(fault) = disk.fault(FaultOp::SyncFs, path) {
            for inode in disk.inodes.values_mut() {
                inode.pending.clear();
            }
            return Err(errno(fault.errno));
        }
        let done: Vec<NameOp> = disk.pending_names.drain(..).collect();
        for op in &done {
            op.apply(&mut disk.durable_names);
        }
        let inos: Vec<u64> = disk.inodes.keys().copied().collect();
        for ino in inos {
            disk.sync_inode(ino);
        }
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let disk = self.disk();
        disk.check()?;
        if !disk.dir_exists(dir) {
            return Err(not_found(dir));
        }
        Ok(disk
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn append(fs: &SimFs, path: &str, bytes: &[u8]) -> Box<dyn VFile> {
        let mut f = fs.open(Path::new(path), OpenMode::AppendCreate).unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn setup() -> SimFs {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs
    }

    #[test]
    fn synced_data_survives_every_crash_and_unsynced_data_may_not() {
        let fs = setup();
        let f = append(&fs, "/d/f", b"synced ");
        f.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        let mut f = f;
        f.write_all(b"unsynced").unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut outcomes = std::collections::HashSet::new();
        for _ in 0..200 {
            let image = fs.image(&mut rng, CrashMode::Random);
            let bytes = image.read(Path::new("/d/f")).unwrap();
            assert!(bytes.starts_with(b"synced "), "{bytes:?}");
            outcomes.insert(bytes);
        }
        assert!(outcomes.contains(b"synced ".as_slice()));
        assert!(outcomes.contains(b"synced unsynced".as_slice()));
        assert!(
            outcomes.iter().any(|b| b.len() == 15 && b.ends_with(&[0])),
            "zeroed or torn-to-zeros outcomes occur"
        );
        let all = fs.image(&mut rng, CrashMode::KeepAll);
        assert_eq!(all.read(Path::new("/d/f")).unwrap(), b"synced unsynced");
        let none = fs.crash(&mut rng, CrashMode::DropAll);
        assert_eq!(none.read(Path::new("/d/f")).unwrap(), b"synced ");
    }

    #[test]
    fn an_entry_is_durable_only_once_its_directory_is_synced() {
        let fs = setup();
        let f = append(&fs, "/d/new", b"x");
        f.sync_data().unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let lost = fs.crash(&mut rng, CrashMode::DropAll);
        assert_eq!(lost.file_len(Path::new("/d/new")).unwrap(), None);
        let fs = setup();
        let f = append(&fs, "/d/new", b"x");
        f.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        let kept = fs.crash(&mut rng, CrashMode::DropAll);
        assert_eq!(kept.read(Path::new("/d/new")).unwrap(), b"x");
    }

    #[test]
    fn a_rename_over_a_file_is_all_or_nothing() {
        let fs = setup();
        let old = append(&fs, "/d/f", b"old");
        old.sync_all().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        let tmp = append(&fs, "/d/f.tmp", b"new");
        tmp.sync_all().unwrap();
        fs.rename(Path::new("/d/f.tmp"), Path::new("/d/f")).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let image = fs.image(&mut rng, CrashMode::Random);
            let bytes = image.read(Path::new("/d/f")).unwrap();
            assert!(bytes == b"old" || bytes == b"new", "{bytes:?}");
        }
        fs.sync_dir(Path::new("/d")).unwrap();
        let image = fs.crash(&mut rng, CrashMode::Random);
        assert_eq!(image.read(Path::new("/d/f")).unwrap(), b"new");
        assert_eq!(image.file_len(Path::new("/d/f.tmp")).unwrap(), None);
    }

    #[test]
    fn a_failed_sync_loses_the_data_and_the_next_sync_does_not_bring_it_back() {
        let fs = setup();
        let f = append(&fs, "/d/f", b"a");
        f.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        let mut f = f;
        f.write_all(b"b").unwrap();
        fs.inject(Fault {
            op: FaultOp::Sync,
            path: "/d/f".into(),
            skip: 0,
            errno: libc::EIO,
        });
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
        assert!(f.sync_data().is_ok(), "the error is reported once");
        assert_eq!(
            fs.read(Path::new("/d/f")).unwrap(),
            b"ab",
            "reads still see it"
        );
        let mut rng = StdRng::seed_from_u64(0);
        let image = fs.crash(&mut rng, CrashMode::KeepAll);
        assert_eq!(image.read(Path::new("/d/f")).unwrap(), b"a");
    }

    #[test]
    fn a_partial_write_stores_its_prefix_then_fails() {
        let fs = setup();
        fs.inject(Fault {
            op: FaultOp::Write { keep: 3 },
            path: "/d/f".into(),
            skip: 0,
            errno: libc::ENOSPC,
        });
        let mut f = fs.open(Path::new("/d/f"), OpenMode::AppendCreate).unwrap();
        let err = f.write_all(b"abcdef").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs.read(Path::new("/d/f")).unwrap(), b"abc");
        assert_eq!(fs.faults_left(), 0);
        f.write_all(b"g").unwrap();
        assert_eq!(fs.read(Path::new("/d/f")).unwrap(), b"abcg");
    }

    #[test]
    fn a_crashed_disk_refuses_every_call() {
        let fs = setup();
        let mut f = append(&fs, "/d/f", b"a");
        let mut rng = StdRng::seed_from_u64(0);
        let image = fs.crash(&mut rng, CrashMode::KeepAll);
        assert!(f.write_all(b"late").is_err());
        assert!(fs.open(Path::new("/d/f"), OpenMode::Read).is_err());
        assert_eq!(image.read(Path::new("/d/f")).unwrap(), b"a");
    }

    #[test]
    fn removed_trees_and_truncations_follow_the_same_rules() {
        let fs = setup();
        fs.create_dir_all(Path::new("/d/obj")).unwrap();
        let f = append(&fs, "/d/obj/state", b"0123456789");
        f.sync_all().unwrap();
        fs.sync_dir(Path::new("/d/obj")).unwrap();
        f.set_len(4).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let dropped = fs.image(&mut rng, CrashMode::DropAll);
        assert_eq!(
            dropped.read(Path::new("/d/obj/state")).unwrap(),
            b"0123456789"
        );
        let fs = dropped;
        fs.remove_dir_all(Path::new("/d/obj")).unwrap();
        assert!(!fs.is_dir(Path::new("/d/obj")));
        assert_eq!(fs.read_dir(Path::new("/d")).unwrap().len(), 0);
        let back = fs.crash(&mut rng, CrashMode::DropAll);
        assert!(
            back.is_dir(Path::new("/d/obj")),
            "the removal was not synced"
        );
    }
}
