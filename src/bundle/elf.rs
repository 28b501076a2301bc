//! Just enough ELF reading for bundles.
//!
//! 1. [`Elf::read`] parses the 64-bit little-endian header, program headers and
//!    section headers of an executable.
//! 2. [`Elf::extent`] is where the ELF image ends: a file longer than that carries
//!    appended data, so a runner with bytes after its extent but no valid trailer is a
//!    damaged bundle, not plain airlock; a file shorter than that was cut short.
//! 3. [`Elf::is_dynamic`] tells whether it needs a dynamic loader (`PT_INTERP`): a
//!    bundle's runner must be static to run on any Linux.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const PT_INTERP: u32 = 3;
const SHT_NOBITS: u32 = 8;
/// More program or section headers than this is not an executable we wrote.
const MAX_HEADERS: u64 = 4096;

/// What airlock needs to know about an ELF executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elf {
    /// The end of the last byte the ELF headers account for.
    pub extent: u64,
    /// Whether a `PT_INTERP` program header is present.
    pub is_dynamic: bool,
}

impl Elf {
    /// Parse `file`; `None` when it is not a 64-bit little-endian ELF file.
    pub fn read(file: &File) -> io::Result<Option<Self>> {
        let mut header = [0u8; 64];
        if file.read_exact_at(&mut header, 0).is_err() {
            return Ok(None);
        }
        // ELF magic, ELFCLASS64, ELFDATA2LSB.
        if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
            return Ok(None);
        }
        let phoff = u64_at(&header, 0x20);
        let shoff = u64_at(&header, 0x28);
        let phentsize = u64::from(u16_at(&header, 0x36));
        let phnum = u64::from(u16_at(&header, 0x38));
        let shentsize = u64::from(u16_at(&header, 0x3a));
        let shnum = u64::from(u16_at(&header, 0x3c));
        if phnum > MAX_HEADERS
            || shnum > MAX_HEADERS
            || phentsize < 56
            || (shnum > 0 && shentsize < 64)
        {
            return Ok(None);
        }
        let mut extent = 64u64
            .max(phoff + phnum * phentsize)
            .max(shoff + shnum * shentsize);
        let mut is_dynamic = false;
        let mut entry = [0u8; 64];
        if extent > file.metadata()?.len() {
            // The file is cut short of its own headers: report the extent they need.
            return Ok(Some(Self { extent, is_dynamic }));
        }
        for i in 0..phnum {
            file.read_exact_at(&mut entry[..56], phoff + i * phentsize)?;
            if u32_at(&entry, 0) == PT_INTERP {
                is_dynamic = true;
            }
            extent = extent.max(u64_at(&entry, 0x08) + u64_at(&entry, 0x20));
        }
        for i in 0..shnum {
            file.read_exact_at(&mut entry, shoff + i * shentsize)?;
            if u32_at(&entry, 0x04) != SHT_NOBITS {
                extent = extent.max(u64_at(&entry, 0x18) + u64_at(&entry, 0x20));
            }
        }
        Ok(Some(Self { extent, is_dynamic }))
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_elf_and_its_extent_is_its_size() {
        let exe = std::env::current_exe().unwrap();
        let file = File::open(&exe).unwrap();
        let elf = Elf::read(&file).unwrap().expect("test binary is ELF");
        assert_eq!(elf.extent, file.metadata().unwrap().len());
    }

    #[test]
    fn a_text_file_is_not_elf() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        io::Write::write_all(&mut tmp, b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(Elf::read(tmp.as_file()).unwrap(), None);
    }
}
