//! Garbage collection of the store, and the lock that keeps it away from builds.
//!
//! 1. Commands that write blobs before naming them (`build`, `load`, `pull`) hold
//!    [`GcLock::shared`] for their whole run.
//! 2. [`prune`] takes [`GcLock::exclusive`] (so it waits for them) and the store's
//!    own lock, marks every blob reachable from a named image, and deletes the rest
//!    along with the build cache entries that pointed at them.

use std::collections::HashSet;
use std::fs::File;
use std::io;

use fs_err as fs;

use crate::image::cluster::{self, ClusterImageError};
use crate::image::store::Store;

/// A held GC lock; released on drop.
#[derive(Debug)]
pub struct GcLock {
    _file: File,
}

impl GcLock {
    fn open(store: &Store) -> io::Result<File> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(store.root().join("gc.lock"))
    }

    /// Held by writers: many at once, never during a prune.
    pub fn shared(store: &Store) -> io::Result<Self> {
        let f = Self::open(store)?;
        f.lock_shared()?;
        Ok(Self { _file: f })
    }

    /// Held by prune: alone.
    pub fn exclusive(store: &Store) -> io::Result<Self> {
        let f = Self::open(store)?;
        f.lock()?;
        Ok(Self { _file: f })
    }
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// Delete every blob no named image reaches, and the build cache.
pub fn prune(store: &Store) -> Result<PruneReport, ClusterImageError> {
    let _gc = GcLock::exclusive(store)?;
    let _lock = store.lock().map_err(io::Error::other)?;
    let mut live = HashSet::new();
    for (_, d) in store.images().map_err(io::Error::other)? {
        for b in cluster::reachable(store, &d)? {
            live.insert(b.digest.hex().to_string());
        }
    }
    let mut report = PruneReport::default();
    let dir = store.root().join("blobs/sha256");
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) {
            report.bytes += entry.metadata()?.len();
            fs::remove_file(entry.path())?;
            report.blobs += 1;
        }
    }
    let cache = store.root().join("cache/build");
    if cache.exists() {
        fs::remove_dir_all(&cache)?;
    }
    Ok(report)
}
