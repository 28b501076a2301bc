//! Blob regions as read-only memory maps, so a blob GET copies each byte once (into
//! the socket, or into the TLS record) instead of reading it into a buffer first.
//!
//! 1. [`Region::open`] checks that the region lies inside the file.
//! 2. [`Region::map`] maps the next window of it, read-only, with its pages already
//!    mapped (`MAP_POPULATE`, so page-cache misses are read on the calling blocking
//!    thread, never on an async worker that later writes the window).
//! 3. The caller hands the window to the connection as [`bytes::Bytes`]; the window is
//!    unmapped when the connection has written it.
//!
//! This is the only module that allows `unsafe`: mapping a file is unsafe because a
//! process that truncates the file while it is mapped makes reads of the lost pages
//! fault (SIGBUS), and one that rewrites it changes the bytes under the reader. Blob
//! files are never changed in place: the store writes a temp file and renames it, and
//! a bundle is opened read-only and never rewritten by airlock.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use bytes::Bytes;

/// A region of a blob file, mapped window by window.
#[derive(Debug)]
pub(crate) struct Region {
    file: File,
    next: u64,
    end: u64,
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
            file,
            next: at,
            end,
        })
    }

    /// The next window of at most `window` bytes, or `None` at the end.
    pub(crate) fn map(&mut self, window: usize) -> Option<io::Result<Bytes>> {
        if self.next >= self.end {
            return None;
        }
        let len = usize::try_from((self.end - self.next).min(window as u64)).unwrap_or(window);
        // SAFETY: read-only map of a file airlock never truncates or rewrites in
        // place (see the module's documentation); `open` checked the bounds.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(self.next)
                .len(len)
                .populate()
                .map(&self.file)
        };
        self.next += len as u64;
        Some(map.map(Bytes::from_owner))
    }
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
        let err = Region::open(file, 50_000, 50_001).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
