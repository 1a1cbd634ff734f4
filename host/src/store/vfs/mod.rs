//! The file-system calls of the durable state path, behind one trait.
//!
//! Everything `state/`, `wal.rs` and `writer.rs` do to disk — open, write, sync, rename, remove,
//! directory syncs, `syncfs` — goes through a [`Vfs`]. A station runs on [`RealFs`], a thin layer
//! over `std::fs`. Tests run the same store on [`sim::SimFs`], an in-memory disk that records every
//! write and sync and can hand back the files as a power cut would leave them (unsynced writes
//! dropped, torn or zeroed, in any order), and that fails chosen calls the way a full or failing
//! disk does. That is what lets the crash tests (`store/crash_tests.rs`) check durability claims
//! that `kill -9` cannot: `kill -9` keeps the page cache.
//!
//! The version and log stores (`versions.rs`, `logs.rs`) write through `std::fs` directly: their
//! files are replaced atomically or are best-effort, and the crash tests cover the state path.

#[cfg(test)]
pub(crate) mod sim;

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write at the cursor, creating the file if missing (never truncating).
    ReadWriteCreate,
    /// Append only; the file must exist.
    Append,
    /// Append only, creating the file if missing.
    AppendCreate,
    /// Write only, created empty (truncated if it existed).
    CreateTruncate,
}

/// An open file of a [`Vfs`].
pub trait VFile: Read + Write + Seek + Send {
    /// Makes the file's data (and the size needed to read it) durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// The file-system operations the durable state path uses.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Opens `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VFile>>;
    /// The size of the file at `path`, or `None` if there is none.
    fn file_len(&self, path: &Path) -> io::Result<Option<u64>>;
    /// True if `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Creates `dir` and any missing parents (not durable until the parents are synced).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything under it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Renames `from` over `to` (atomically replacing it).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Writes back and flushes the whole file system holding `path` (Linux `syncfs(2)`).
    fn syncfs(&self, path: &Path) -> io::Result<()>;
    /// The names in `dir`.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;

    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(path, OpenMode::Read)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// The file system a store writes through. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Fs(pub(crate) Arc<dyn Vfs>);

impl Fs {
    /// The real file system.
    pub fn real() -> Fs {
        Fs(Arc::new(RealFs))
    }
}

impl std::ops::Deref for Fs {
    type Target = dyn Vfs;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RealFs;

impl VFile for File {
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

impl Vfs for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWriteCreate => {
                options.read(true).write(true).create(true).truncate(false)
            }
            OpenMode::Append => options.append(true),
            OpenMode::AppendCreate => options.append(true).create(true),
            OpenMode::CreateTruncate => options.write(true).create(true).truncate(true),
        };
        Ok(Box::new(options.open(path)?))
    }

    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn syncfs(&self, path: &Path) -> io::Result<()> {
        syncfs(&File::open(path)?)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }
}

/// Writes back and flushes the whole file system holding `file` (since Linux 5.8 it reports the
/// write-back errors of that file system).
#[cfg(target_os = "linux")]
fn syncfs(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` keeps the descriptor open for the duration of the call, and syncfs only uses
    // it to find the file system.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Off Linux there is no `syncfs`: the whole system is synced.
#[cfg(not(target_os = "linux"))]
fn syncfs(_file: &File) -> io::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}
