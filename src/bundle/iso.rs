//! A small ISO 9660 writer for handing a bundle over on USB or DVD.
//!
//! The image has one directory (the root) holding a few files, and three views of it:
//! ISO 9660 (level 3 names and multi-extent files), Rock Ridge (real names, and the
//! bundle's exec bit), and Joliet (names for Windows). Layout, in 2048-byte sectors:
//! ```text
//! 0-15   system area (zeros)
//! 16     primary volume descriptor     17  Joliet supplementary descriptor
//! 18     descriptor set terminator     19-22  path tables (L, M; Joliet L, M)
//! 23     Rock Ridge continuation area (the ER entry naming RRIP_1991A)
//! ...    primary root directory, Joliet root directory
//! ...    file data, each file from a sector boundary; both trees point at it
//! ```
//! 1. [`write_iso`] gives each file its sectors, split into extents of at most
//!    `max_extent` bytes (under 4 GiB, as the 32-bit size field needs): a file larger
//!    than that gets one directory record per extent, all but the last flagged
//!    multi-extent.
//! 2. It writes the descriptors, path tables and directories, then copies each file.
//! 3. Every date is fixed and files are sorted by name, so the same input gives the
//!    same bytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// Sector size of ISO 9660.
pub const SECTOR: u64 = 2048;
/// The largest extent: 4 GiB minus one sector, a multiple of the sector size.
pub const MAX_EXTENT: u64 = 0xFFFF_F800;

const PVD: u64 = 16;
const FIRST_FREE: u64 = 24;
const CONTINUATION: u64 = 23;
/// 1970-01-01 00:00:00 UTC, as a directory record date.
const RECORD_DATE: [u8; 7] = [70, 1, 1, 0, 0, 0, 0];
/// The same, as a volume descriptor date.
const VOLUME_DATE: &[u8; 17] = b"1970010100000000\0";
const FLAG_DIRECTORY: u8 = 0x02;
const FLAG_MULTI_EXTENT: u8 = 0x80;

/// Where a file's bytes come from.
pub enum IsoSource {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file on disk, copied as it is.
    File(PathBuf),
}

/// One file in the root directory.
pub struct IsoFile {
    /// Its name (Rock Ridge and Joliet show it as is; ISO 9660 gets an upper-case form).
    pub name: String,
    /// Its content.
    pub source: IsoSource,
    /// Its size in bytes.
    pub size: u64,
    /// Its POSIX permission bits (`0o755` for the bundle).
    pub mode: u32,
}

/// Settings of the image.
pub struct IsoOptions {
    /// The volume label (upper-cased, at most 32 characters of `A-Z 0-9 _`).
    pub label: String,
    /// The largest extent; [`MAX_EXTENT`] except in tests.
    pub max_extent: u64,
}

/// Why an ISO cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// I/O failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A name that does not fit a directory record.
    #[error("file name {0:?} is empty, too long (over 100 bytes) or contains `/`")]
    BadName(String),
    /// A source file changed size while it was copied.
    #[error("{name} changed size while it was written to the ISO (expected {expected} bytes)")]
    SizeChanged {
        /// The file.
        name: String,
        /// Its size when the layout was made.
        expected: u64,
    },
}

/// A file placed on the image.
struct Placed<'a> {
    file: &'a IsoFile,
    iso_name: Vec<u8>,
    joliet_name: Vec<u8>,
    start: u64,
}

/// Write `files` as an ISO image to `out`.
pub fn write_iso(files: &[IsoFile], options: &IsoOptions, out: &mut File) -> Result<(), IsoError> {
    let max_extent = options.max_extent.min(MAX_EXTENT) / SECTOR * SECTOR;
    let max_extent = max_extent.max(SECTOR);
    let mut placed = place_names(files)?;
    // Directory sizes do not depend on where files start, so measure them first.
    let primary_size = directory(&placed, max_extent, Tree::Primary, 0, 0).len() as u64;
    let joliet_size = directory(&placed, max_extent, Tree::Joliet, 0, 0).len() as u64;
    let primary_dir = FIRST_FREE;
    let joliet_dir = primary_dir + primary_size / SECTOR;
    let data_start = joliet_dir + joliet_size / SECTOR;
    let mut next = data_start;
    for p in &mut placed {
        p.start = next;
        next += p.file.size.div_ceil(SECTOR);
    }
    let total_sectors = next;

    let mut head = vec![0u8; usize::try_from(data_start * SECTOR).unwrap_or(0)];
    let sector = |n: u64| usize::try_from(n * SECTOR).unwrap_or(usize::MAX);
    let primary = directory(
        &placed,
        max_extent,
        Tree::Primary,
        primary_dir,
        primary_size,
    );
    let joliet = directory(&placed, max_extent, Tree::Joliet, joliet_dir, joliet_size);
    let descriptor = |tree: Tree, root: u64, root_size: u64, l_table: u64, m_table: u64| {
        volume_descriptor(
            tree,
            &options.label,
            total_sectors,
            root,
            root_size,
            l_table,
            m_table,
        )
    };
    head[sector(PVD)..sector(PVD + 1)].copy_from_slice(&descriptor(
        Tree::Primary,
        primary_dir,
        primary_size,
        19,
        20,
    ));
    head[sector(PVD + 1)..sector(PVD + 2)].copy_from_slice(&descriptor(
        Tree::Joliet,
        joliet_dir,
        joliet_size,
        21,
        22,
    ));
    let terminator = sector(PVD + 2);
    head[terminator] = 255;
    head[terminator + 1..terminator + 6].copy_from_slice(b"CD001");
    head[terminator + 6] = 1;
    for (at, dir, big_endian) in [
        (19, primary_dir, false),
        (20, primary_dir, true),
        (21, joliet_dir, false),
        (22, joliet_dir, true),
    ] {
        let table = path_table(dir, big_endian);
        head[sector(at)..sector(at) + table.len()].copy_from_slice(&table);
    }
    let er = extension_reference();
    head[sector(CONTINUATION)..sector(CONTINUATION) + er.len()].copy_from_slice(&er);
    head[sector(primary_dir)..sector(primary_dir) + primary.len()].copy_from_slice(&primary);
    head[sector(joliet_dir)..sector(joliet_dir) + joliet.len()].copy_from_slice(&joliet);
    out.write_all(&head)?;

    let zeros = [0u8; SECTOR as usize];
    for p in &placed {
        let written = match &p.file.source {
            IsoSource::Bytes(bytes) => {
                out.write_all(bytes)?;
                bytes.len() as u64
            }
            IsoSource::File(path) => {
                let source = File::open(path)?;
                io::copy(&mut source.take(p.file.size), out)?
            }
        };
        if written != p.file.size {
            return Err(IsoError::SizeChanged {
                name: p.file.name.clone(),
                expected: p.file.size,
            });
        }
        let pad = usize::try_from(p.file.size.div_ceil(SECTOR) * SECTOR - p.file.size).unwrap_or(0);
        out.write_all(&zeros[..pad])?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tree {
    Primary,
    Joliet,
}

/// Give each file its ISO 9660 and Joliet names, sorted as each tree needs.
fn place_names(files: &[IsoFile]) -> Result<Vec<Placed<'_>>, IsoError> {
    let mut placed: Vec<Placed<'_>> = Vec::new();
    for file in files {
        if file.name.is_empty() || file.name.len() > 100 || file.name.contains('/') {
            return Err(IsoError::BadName(file.name.clone()));
        }
        let mut iso_name = iso9660_name(&file.name);
        let mut n = 1;
        while placed.iter().any(|p| p.iso_name == iso_name) {
            let mut alternative = iso9660_name(&file.name);
            let suffix = format!("_{n}");
            let dot = alternative.iter().position(|b| *b == b'.').unwrap_or(0);
            alternative.splice(dot.saturating_sub(suffix.len())..dot, suffix.bytes());
            iso_name = alternative;
            n += 1;
        }
        let joliet_name: Vec<u8> = file
            .name
            .chars()
            .take(64)
            .chain(";1".chars())
            .flat_map(|c| {
                let c = u16::try_from(u32::from(c)).unwrap_or(u16::from(b'_'));
                c.to_be_bytes()
            })
            .collect();
        placed.push(Placed {
            file,
            iso_name,
            joliet_name,
            start: 0,
        });
    }
    placed.sort_by(|a, b| a.iso_name.cmp(&b.iso_name));
    Ok(placed)
}

/// `Cluster-v1.run` -> `CLUSTER_V1.RUN;1`: d-characters, at most 30 with the dot.
fn iso9660_name(name: &str) -> Vec<u8> {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .map(|c| {
                let c = c.to_ascii_uppercase();
                if c.is_ascii_uppercase() || c.is_ascii_digit() {
                    c
                } else {
                    '_'
                }
            })
            .take(max)
            .collect()
    };
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) if !b.is_empty() => (b, e),
        _ => (name, ""),
    };
    let ext = clean(ext, 3);
    let base = clean(base, 29 - ext.len());
    format!("{base}.{ext};1").into_bytes()
}

/// The directory records of the root in `tree`, padded to whole sectors.
fn directory(
    placed: &[Placed<'_>],
    max_extent: u64,
    tree: Tree,
    self_at: u64,
    self_size: u64,
) -> Vec<u8> {
    let mut records = Vec::new();
    let dot_su = match tree {
        Tree::Primary => [susp_sp(), rr(0x01), px(0o040_755, 2), continuation()].concat(),
        Tree::Joliet => Vec::new(),
    };
    let dotdot_su = match tree {
        Tree::Primary => [rr(0x01), px(0o040_755, 2)].concat(),
        Tree::Joliet => Vec::new(),
    };
    records.push(record(self_at, self_size, FLAG_DIRECTORY, &[0], &dot_su));
    records.push(record(self_at, self_size, FLAG_DIRECTORY, &[1], &dotdot_su));
    let mut files: Vec<&Placed<'_>> = placed.iter().collect();
    if tree == Tree::Joliet {
        files.sort_by(|a, b| a.joliet_name.cmp(&b.joliet_name));
    }
    for p in files {
        let extents = p.file.size.div_ceil(max_extent).max(1);
        for k in 0..extents {
            let offset = k * max_extent;
            let size = (p.file.size - offset).min(max_extent);
            let flags = if k + 1 < extents {
                FLAG_MULTI_EXTENT
            } else {
                0
            };
            let (name, su) = match tree {
                Tree::Primary => (
                    &p.iso_name,
                    [rr(0x09), px(0o100_000 | p.file.mode, 1), nm(&p.file.name)].concat(),
                ),
                Tree::Joliet => (&p.joliet_name, Vec::new()),
            };
            records.push(record(p.start + offset / SECTOR, size, flags, name, &su));
        }
    }
    // Records never cross a sector boundary.
    let mut out = Vec::new();
    for r in records {
        let used = out.len() % SECTOR as usize;
        if used + r.len() > SECTOR as usize {
            out.resize(out.len() + SECTOR as usize - used, 0);
        }
        out.extend_from_slice(&r);
    }
    let padded = out.len().div_ceil(SECTOR as usize).max(1) * SECTOR as usize;
    out.resize(padded, 0);
    out
}

/// One directory record.
fn record(extent: u64, size: u64, flags: u8, name: &[u8], system_use: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    r[2..10].copy_from_slice(&both32(extent));
    r[10..18].copy_from_slice(&both32(size));
    r[18..25].copy_from_slice(&RECORD_DATE);
    r[25] = flags;
    r[28..32].copy_from_slice(&both16(1));
    r[32] = u8::try_from(name.len()).unwrap_or(u8::MAX);
    r.extend_from_slice(name);
    if name.len().is_multiple_of(2) {
        r.push(0);
    }
    r.extend_from_slice(system_use);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = u8::try_from(r.len()).unwrap_or(u8::MAX);
    r
}

/// A primary (ISO 9660) or supplementary (Joliet) volume descriptor.
fn volume_descriptor(
    tree: Tree,
    label: &str,
    total_sectors: u64,
    root: u64,
    root_size: u64,
    l_table: u64,
    m_table: u64,
) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR as usize];
    d[0] = if tree == Tree::Primary { 1 } else { 2 };
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    let label = volume_label(label);
    let text = |d: &mut [u8], range: std::ops::Range<usize>, value: &str| match tree {
        Tree::Primary => {
            d[range.clone()].fill(b' ');
            d[range.start..range.start + value.len().min(range.len())]
                .copy_from_slice(&value.as_bytes()[..value.len().min(range.len())]);
        }
        Tree::Joliet => {
            let units: Vec<u8> = value
                .chars()
                .chain(std::iter::repeat(' '))
                .take(range.len() / 2)
                .flat_map(|c| u16::try_from(u32::from(c)).unwrap_or(0x5f).to_be_bytes())
                .collect();
            d[range.start..range.start + units.len()].copy_from_slice(&units);
        }
    };
    text(&mut d, 8..40, "LINUX");
    text(&mut d, 40..72, &label);
    d[80..88].copy_from_slice(&both32(total_sectors));
    if tree == Tree::Joliet {
        d[88..91].copy_from_slice(b"%/E");
    }
    d[120..124].copy_from_slice(&both16(1));
    d[124..128].copy_from_slice(&both16(1));
    d[128..132].copy_from_slice(&both16(2048));
    d[132..140].copy_from_slice(&both32(10));
    d[140..144].copy_from_slice(&u32::try_from(l_table).unwrap_or(0).to_le_bytes());
    d[148..152].copy_from_slice(&u32::try_from(m_table).unwrap_or(0).to_be_bytes());
    let root_record = record(root, root_size, FLAG_DIRECTORY, &[0], &[]);
    d[156..190].copy_from_slice(&root_record);
    text(&mut d, 190..318, &label);
    text(&mut d, 318..446, "");
    text(&mut d, 446..574, "AIRLOCK");
    text(&mut d, 574..702, "AIRLOCK ISO WRITER");
    text(&mut d, 702..739, "");
    text(&mut d, 739..776, "");
    text(&mut d, 776..813, "");
    for at in [813, 830] {
        d[at..at + 17].copy_from_slice(VOLUME_DATE);
    }
    for at in [847, 864] {
        d[at..at + 16].fill(b'0');
    }
    d[881] = 1;
    d
}

/// The label as d-characters: upper case, `A-Z 0-9 _`, at most 32 (16 in Joliet).
pub fn volume_label(label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if clean.is_empty() {
        "AIRLOCK".to_string()
    } else {
        clean
    }
}

/// A path table holding only the root.
fn path_table(root: u64, big_endian: bool) -> Vec<u8> {
    let root = u32::try_from(root).unwrap_or(0);
    let mut t = vec![1u8, 0];
    if big_endian {
        t.extend_from_slice(&root.to_be_bytes());
        t.extend_from_slice(&1u16.to_be_bytes());
    } else {
        t.extend_from_slice(&root.to_le_bytes());
        t.extend_from_slice(&1u16.to_le_bytes());
    }
    t.extend_from_slice(&[0, 0]);
    t
}

/// SUSP `SP`: system use sharing is in use, nothing skipped.
fn susp_sp() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
}

/// RRIP 1.10 `RR`: which Rock Ridge fields follow (bit 0 PX, bit 3 NM).
fn rr(fields: u8) -> Vec<u8> {
    vec![b'R', b'R', 5, 1, fields]
}

/// RRIP `PX`: POSIX mode, links, uid 0, gid 0.
fn px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    for value in [mode, links, 0, 0] {
        e.extend_from_slice(&both32(u64::from(value)));
    }
    e
}

/// RRIP `NM`: the real name.
fn nm(name: &str) -> Vec<u8> {
    let mut e = vec![
        b'N',
        b'M',
        u8::try_from(5 + name.len()).unwrap_or(u8::MAX),
        1,
        0,
    ];
    e.extend_from_slice(name.as_bytes());
    e
}

/// SUSP `CE`: the rest of the root's entries (the `ER`) are in [`CONTINUATION`].
fn continuation() -> Vec<u8> {
    let mut e = vec![b'C', b'E', 28, 1];
    e.extend_from_slice(&both32(CONTINUATION));
    e.extend_from_slice(&both32(0));
    e.extend_from_slice(&both32(extension_reference().len() as u64));
    e
}

/// SUSP `ER`: the extension in use is Rock Ridge (RRIP_1991A).
fn extension_reference() -> Vec<u8> {
    let id = b"RRIP_1991A";
    let description =
        b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
    let source = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";
    let mut e = vec![
        b'E',
        b'R',
        0,
        1,
        id.len() as u8,
        description.len() as u8,
        source.len() as u8,
        1,
    ];
    e.extend_from_slice(id);
    e.extend_from_slice(description);
    e.extend_from_slice(source);
    e[2] = u8::try_from(e.len()).unwrap_or(u8::MAX);
    e
}

/// Both-byte-order 32-bit field (little-endian then big-endian).
fn both32(value: u64) -> [u8; 8] {
    let v = u32::try_from(value).unwrap_or(u32::MAX);
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&v.to_le_bytes());
    out[4..].copy_from_slice(&v.to_be_bytes());
    out
}

/// Both-byte-order 16-bit field.
fn both16(value: u16) -> [u8; 4] {
    let mut out = [0u8; 4];
    out[..2].copy_from_slice(&value.to_le_bytes());
    out[2..].copy_from_slice(&value.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_d_characters() {
        assert_eq!(iso9660_name("cluster-v1.run"), b"CLUSTER_V1.RUN;1");
        assert_eq!(iso9660_name("SHA256SUMS"), b"SHA256SUMS.;1");
        assert!(iso9660_name(&"x".repeat(80)).len() <= 32);
        assert_eq!(volume_label("my cluster:v1"), "MY_CLUSTER_V1");
    }

    #[test]
    fn records_are_even_and_fit() {
        let r = record(30, 5, 0, b"A.B;1", &nm("a.b"));
        assert_eq!(r.len() % 2, 0);
        assert_eq!(r[0] as usize, r.len());
    }
}
