//! Small file-system helpers: durable directory entries, atomic file replacement, a bounded cache of open file handles, the object-id guard, and wall-clock milliseconds.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{Error, IoContext};
use super::vfs::{OpenMode, VFile, Vfs};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The cheap last line of defence against an id that could escape the data directory. The caller validates ids
/// against `[a-z0-9][a-z0-9_.-]{0,127}` (no `..`) before they reach the store; this re-checks the same rule.
pub(crate) fn check_id(id: &str) -> Result<(), Error> {
    let ok = is_valid_id(id);
    debug_assert!(ok, "object id {id:?} reached the store unvalidated");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// True if `id` matches `[a-z0-9][a-z0-9_.-]{0,127}` and has no `..`.
pub(crate) fn is_valid_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
        && !bytes.windows(2).any(|pair| pair == b"..")
}

/// fsyncs a directory so the entries created, renamed or removed in it survive a crash.
pub(crate) fn fsync_dir(fs: &dyn Vfs, dir: &Path) -> Result<(), Error> {
    // The parent of a relative single-component path (`data`) is the empty path: the cwd.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs.sync_dir(dir).at(dir)
}

/// Creates `dir` (and its parents) and makes the new entries durable.
pub(crate) fn create_dir_durable(fs: &dyn Vfs, dir: &Path) -> Result<(), Error> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !fs.is_dir(a))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs.create_dir_all(dir).at(dir)?;
    // Each new entry is made durable by a sync of its parent, from the top down.
    for created in missing.iter().rev() {
        fsync_dir(fs, created.parent().unwrap_or(Path::new("")))?;
    }
    Ok(())
}

/// The temp file a replace of `path` writes first: `{path}.tmp`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    PathBuf::from(tmp_name)
}

/// Replaces `path` with what `write` writes: into [`tmp_path`] (created or truncated), fsynced, then renamed
/// over `path`; the caller fsyncs the directory. On failure the temp file is removed and `path` is untouched;
/// the error comes with the path it concerns (the temp file, or `path` if the rename failed).
pub(crate) fn replace_file(
    fs: &dyn Vfs,
    path: &Path,
    write: impl FnOnce(&mut dyn VFile) -> io::Result<()>,
) -> Result<(), (PathBuf, io::Error)> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = fs
            .open(&tmp, OpenMode::CreateTruncate)
            .map_err(|e| (tmp.clone(), e))?;
        write(&mut *f)
            .and_then(|()| f.sync_all())
            .map_err(|e| (tmp.clone(), e))?;
        drop(f);
        fs.rename(&tmp, path).map_err(|e| (path.to_path_buf(), e))
    })();
    if result.is_err() {
        let _ = fs.remove_file(&tmp);
    }
    result
}

/// Replaces `path` with `bytes` atomically: write `path.tmp`, fsync it, rename it over `path`, fsync the
/// directory. A crash leaves either the old file or the new one.
pub(crate) fn write_atomic(fs: &dyn Vfs, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    replace_file(fs, path, |f| f.write_all(bytes)).map_err(|(at, e)| Error::io(at, e))?;
    fsync_dir(fs, path.parent().unwrap_or(Path::new(".")))
}

/// A map of open handles bounded to `capacity` entries; inserting past it drops (closes) the least recently
/// used one. There may be 10,000 objects on a station, far more than a process may keep open.
pub(crate) struct HandleCache<K, V> {
    capacity: usize,
    tick: u64,
    /// Hashed with foldhash: the log writer looks a handle up for every line.
    map: HashMap<K, (V, u64), foldhash::fast::RandomState>,
}

impl<K: Hash + Eq + Clone, V> HandleCache<K, V> {
    /// An empty cache holding at most `capacity` handles (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        HandleCache {
            capacity: capacity.max(1),
            tick: 0,
            map: HashMap::default(),
        }
    }

    /// The handle for `key`, marked as most recently used.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(v, t)| {
            *t = tick;
            v
        })
    }

    /// Inserts a handle, returning the one it evicted (the caller may flush it before it is dropped).
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        self.tick += 1;
        self.map.insert(key, (value, self.tick));
        if self.map.len() <= self.capacity {
            return None;
        }
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, (_, t))| *t)
            .map(|(k, _)| k.clone())?;
        self.map.remove(&oldest).map(|(v, _)| (oldest, v))
    }

    /// Removes and returns the handle for `key`.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(v, _)| v)
    }

    /// All handles, in no particular order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.map.iter_mut().map(|(k, (v, _))| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::vfs::RealFs;

    #[test]
    fn fsync_of_the_empty_parent_means_the_current_directory() {
        // `Path::new("data").parent()` is `Some("")`: a relative --data must work.
        let parent = Path::new("data").parent().unwrap();
        fsync_dir(&RealFs, parent).unwrap();
    }

    #[test]
    fn ids_that_could_escape_are_refused() {
        for good in ["a", "counter", "0", "a.b-c_d", &"a".repeat(128)] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "a..b",
            "../x",
            "A",
            "a/b",
            ".a",
            "-a",
            "a b",
            &"a".repeat(129),
        ] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn handle_cache_evicts_least_recently_used() {
        let mut c = HandleCache::new(2);
        assert!(c.insert("a", 1).is_none());
        assert!(c.insert("b", 2).is_none());
        assert_eq!(c.get_mut(&"a"), Some(&mut 1));
        assert_eq!(c.insert("c", 3), Some(("b", 2)));
        assert_eq!(c.remove(&"a"), Some(1));
        assert_eq!(c.values_mut().count(), 1);
    }

    #[test]
    fn write_atomic_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.tsv");
        write_atomic(&RealFs, &p, b"one").unwrap();
        write_atomic(&RealFs, &p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("f.tsv.tmp").exists());
    }
}
