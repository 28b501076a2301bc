//! Blob regions as read-only memory maps, so a blob GET copies each byte once (into
//! the socket, or into the TLS record) instead of reading it into a buffer first.
//!
//! 1. [`Region::open`] checks that the region lies inside the file.
//! 2. [`Region::map`] maps the next window of it, read-only, with its pages already
//!    mapped (`MAP_POPULATE`, so page-cache misses are read on the calling blocking
//!    thread, never on an async worker that later writes the window). Windows that
//!    will go out by `sendfile` ([`Region::for_sendfile`]) are read into the page
//!    cache on that thread too, but not left mapped page by page.
//! 3. The caller hands the window to the connection as [`bytes::Bytes`]; the window is
//!    unmapped when the connection has written it.
//! 4. Every live window is listed with the file and offset it maps, so a plain TCP
//!    connection asked to write bytes that lie in one ([`file_behind`]) can `sendfile`
//!    them from the file instead of copying them from memory
//!    ([`super::zerocopy`]). A window is listed from its mapping until just before
//!    its unmapping, so an address found in the list always maps what it says.
//!
//! This is the only module that allows `unsafe`: mapping a file is unsafe because a
//! process that truncates the file while it is mapped makes reads of the lost pages
//! fault (SIGBUS), and one that rewrites it changes the bytes under the reader. Blob
//! files are never changed in place: the store writes a temp file and renames it, and
//! a bundle is opened read-only and never rewritten by airlock.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A live window: its length, its file and the file offset of its start.
type Listed = (usize, Arc<File>, u64);

/// Live windows by start address.
static WINDOWS: Mutex<BTreeMap<usize, Listed>> = Mutex::new(BTreeMap::new());

/// The file and offset behind `bytes` when they start inside a live window, with how
/// many of them (at most `bytes.len()`) the window holds from there.
pub(crate) fn file_behind(bytes: &[u8]) -> Option<(Arc<File>, u64, usize)> {
    let address = bytes.as_ptr() as usize;
    let windows = WINDOWS.lock().ok()?;
    let (start, (len, file, offset)) = windows.range(..=address).next_back()?;
    let into = address - start;
    (into < *len).then(|| {
        let available = (*len - into).min(bytes.len());
        (file.clone(), offset + into as u64, available)
    })
}

/// A mapped window, listed in [`WINDOWS`] while it lives.
struct Window {
    map: memmap2::Mmap,
}

impl Window {
    fn new(map: memmap2::Mmap, file: Arc<File>, offset: u64) -> Self {
        if !map.is_empty()
            && let Ok(mut windows) = WINDOWS.lock()
        {
            windows.insert(map.as_ptr() as usize, (map.len(), file, offset));
        }
        Self { map }
    }
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // Unlisted before `map` is dropped (unmapped), so no lookup finds a stale entry.
        if let Ok(mut windows) = WINDOWS.lock() {
            windows.remove(&(self.map.as_ptr() as usize));
        }
    }
}

/// A region of a blob file, mapped window by window.
#[derive(Debug)]
pub(crate) struct Region {
    file: Arc<File>,
    next: u64,
    end: u64,
    /// Windows are only sent with `sendfile`: read their pages into the page cache
    /// instead of mapping them.
    sendfile: bool,
}

impl Region {
    /// The `length` bytes of `file` from `at`; fails when the file is shorter.
    pub(crate) fn open(file: File, at: u64, length: u64) -> io::Result<Self> {
        let size = file.metadata()?.len();
        let end = at
            .checked_add(length)
            .filter(|end| *end <= size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("blob region {at}+{length} is past the end of its file ({size} bytes)"),
                )
            })?;
        Ok(Self {
            file: Arc::new(file),
            next: at,
            end,
            sendfile: false,
        })
    }

    /// Windows for a connection that sends them with `sendfile`
    /// ([`super::zerocopy`]): their pages are read into the page cache on the calling
    /// (blocking) thread, so `sendfile` on an async worker never waits for the disk,
    /// but they are not left mapped, so they add nothing to the process's memory;
    /// bytes read through memory after all are faulted in where they are read.
    pub(crate) fn for_sendfile(mut self) -> Self {
        self.sendfile = true;
        self
    }

    /// Make sure `map`'s pages are in the page cache: when `mincore` says some are
    /// not, read them in and drop them from the page tables again
    /// (`MADV_POPULATE_READ`, then `MADV_DONTNEED`, which for a shared file mapping
    /// only unmaps: the next access faults the same cached page back in). Kernels
    /// before 5.14 lack the first: the pages are then only read ahead.
    fn read_into_page_cache(&self, map: &memmap2::Mmap, len: usize) {
        // The common case, a blob read moments ago, costs one `mincore`.
        if all_cached(map) {
            return;
        }
        if map.advise(memmap2::Advice::PopulateRead).is_ok() {
            // SAFETY: `DONTNEED` on a read-only shared file mapping discards no data.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
            return;
        }
        if let (Ok(at), Ok(n)) = (i64::try_from(self.next), i64::try_from(len)) {
            // Only advice: a failure leaves reading to `sendfile`.
            let _ = nix::fcntl::posix_fadvise(
                &*self.file,
                at,
                n,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// The next window of at most `window` bytes, or `None` at the end.
    pub(crate) fn map(&mut self, window: usize) -> Option<io::Result<Bytes>> {
        if self.next >= self.end {
            return None;
        }
        let len = usize::try_from((self.end - self.next).min(window as u64)).unwrap_or(window);
        let mut options = memmap2::MmapOptions::new();
        options.offset(self.next).len(len);
        if !self.sendfile {
            options.populate();
        }
        // SAFETY: read-only map of a file airlock never truncates or rewrites in
        // place (see the module's documentation); `open` checked the bounds.
        let map = unsafe { options.map(&*self.file) };
        if self.sendfile
            && let Ok(map) = &map
        {
            self.read_into_page_cache(map, len);
        }
        let offset = self.next;
        self.next += len as u64;
        Some(map.map(|map| Bytes::from_owner(Window::new(map, self.file.clone(), offset))))
    }
}

/// Whether every page of `map` is in the page cache (`mincore`, which for a file
/// mapping answers for pages not mapped into the page tables too).
fn all_cached(map: &memmap2::Mmap) -> bool {
    use nix::libc;
    // SAFETY: `sysconf` only reads a system value.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // `mincore` wants a page-aligned start: the mapping begins at the page holding the
    // window's first byte.
    let lead = map.as_ptr() as usize % page;
    let len = map.len() + lead;
    let mut resident = vec![0u8; len.div_ceil(page)];
    // SAFETY: the range is the live mapping `map` (widened to the page it starts in,
    // which the mapping covers), and `resident` has one byte per page of it.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr().wrapping_sub(lead).cast_mut().cast(),
            len,
            resident.as_mut_ptr(),
        )
    };
    rc == 0 && resident.iter().all(|b| b & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn windows_cover_the_region_exactly() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        file.write_all(&data).unwrap();
        // An offset that is not page-aligned, and a last window shorter than the rest.
        let mut region = Region::open(file.try_clone().unwrap(), 4097, 90_000).unwrap();
        let mut got = Vec::new();
        while let Some(window) = region.map(32 * 1024) {
            got.extend_from_slice(&window.unwrap());
        }
        assert_eq!(got, &data[4097..4097 + 90_000]);

        // A live window is found with its file offset; a dropped one is not.
        let mut region = Region::open(file.try_clone().unwrap(), 4097, 90_000).unwrap();
        let window = region.map(32 * 1024).unwrap().unwrap();
        let (_, offset, available) = file_behind(&window[100..]).unwrap();
        assert_eq!((offset, available), (4097 + 100, 32 * 1024 - 100));
        let (_, offset, available) = file_behind(&window[..10]).unwrap();
        assert_eq!((offset, available), (4097, 10));
        let heap = window.to_vec();
        assert!(file_behind(&heap).is_none(), "a copy is not a window");
        let address = window.as_ptr() as usize;
        drop(window);
        // (another test may have mapped something else at the same address since)
        let entry = WINDOWS
            .lock()
            .unwrap()
            .get(&address)
            .map(|(len, _, at)| (*len, *at));
        assert_ne!(entry, Some((32 * 1024, 4097)));

        // Pages just written are in the page cache; sendfile windows still hold the bytes.
        let mut region = Region::open(file.try_clone().unwrap(), 4097, 90_000)
            .unwrap()
            .for_sendfile();
        let window = region.map(32 * 1024).unwrap().unwrap();
        assert_eq!(&window[..], &data[4097..4097 + 32 * 1024]);
        // SAFETY: the test's own file, not changed while mapped.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(4097)
                .len(10)
                .map(&*region.file)
        };
        assert!(all_cached(&map.unwrap()), "a page just written is cached");
        let err = Region::open(file, 50_000, 50_001).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[test]
    fn a_sendfile_window_not_in_the_page_cache_is_read_in_before_it_is_handed_over() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
        file.write_all(&data).unwrap();
        file.sync_all().unwrap();
        // Clean pages that nothing maps are dropped from the page cache.
        nix::fcntl::posix_fadvise(
            &file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
        let probe = |file: &File| {
            // SAFETY: the test's own file, not changed while mapped.
            let map = unsafe { memmap2::MmapOptions::new().len(1_000_000).map(file) };
            all_cached(&map.unwrap())
        };
        assert!(
            !probe(&file),
            "the file's pages were not evicted; the test cannot run here"
        );
        let mut region = Region::open(file, 0, 1_000_000).unwrap().for_sendfile();
        let window = region.map(1_000_000).unwrap().unwrap();
        assert!(
            probe(&region.file),
            "the window's pages were read into the page cache"
        );
        assert!(window[..] == data[..], "the window holds the file's bytes");
    }
}
