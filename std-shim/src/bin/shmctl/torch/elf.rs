//! Reading one named section out of an ELF executable, bounded and checked:
//! the files read are whatever sits at torch's manager path, or behind a
//! process's `/proc/<pid>/exe`, and are trusted for nothing.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// `e_shnum` is 16 bits; 0 with a count elsewhere (over 65,279 sections)
/// is not something a manager binary has.
const MAX_SECTIONS: u64 = 1 << 16;
/// Section names live in one table; ours is short, and so is everyone's.
const MAX_NAMES: u64 = 1 << 20;

/// The contents of the 64-bit ELF section called `name` (up to `max_len`
/// bytes), `None` if the file is not a 64-bit ELF file or has no such section.
pub(crate) fn section(file: &File, name: &str, max_len: usize) -> io::Result<Option<Vec<u8>>> {
    let mut ident = [0u8; 64];
    if !read_at(file, &mut ident, 0)? || ident[..4] != *b"\x7fELF" || ident[4] != 2 {
        return Ok(None);
    }
    let endian = match ident[5] {
        1 => Endian::Little,
        2 => Endian::Big,
        _ => return Ok(None),
    };
    let header = Reader {
        bytes: &ident,
        endian,
    };
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) = (
        header.u64(0x28),
        header.u16(0x3a),
        header.u16(0x3c),
        header.u16(0x3e),
    ) else {
        return Ok(None);
    };
    let (shnum, shentsize) = (u64::from(shnum), u64::from(shentsize));
    if shnum == 0 || shnum > MAX_SECTIONS || shentsize != 64 || u64::from(shstrndx) >= shnum {
        return Ok(None);
    }
    let mut table = vec![0u8; usize::try_from(shnum * shentsize).unwrap_or(0)];
    if !read_at(file, &mut table, shoff)? {
        return Ok(None);
    }
    let headers: Vec<SectionHeader> = table
        .chunks_exact(shentsize as usize)
        .filter_map(|bytes| SectionHeader::parse(Reader { bytes, endian }))
        .collect();
    let Some(names) = headers.get(usize::from(shstrndx)) else {
        return Ok(None);
    };
    if names.size > MAX_NAMES {
        return Ok(None);
    }
    let mut names_bytes = vec![0u8; names.size as usize];
    if !read_at(file, &mut names_bytes, names.offset)? {
        return Ok(None);
    }
    let wanted = name.as_bytes();
    for header in &headers {
        let Some(at) = usize::try_from(header.name).ok() else {
            continue;
        };
        let Some(found) = names_bytes
            .get(at..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
        else {
            continue;
        };
        if found == wanted {
            let len = usize::try_from(header.size)
                .unwrap_or(usize::MAX)
                .min(max_len);
            let mut contents = vec![0u8; len];
            return Ok(read_at(file, &mut contents, header.offset)?.then_some(contents));
        }
    }
    Ok(None)
}

/// Fills `buf` from `offset`; `false` if the file ends first.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

#[derive(Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
    endian: Endian,
}

impl Reader<'_> {
    fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.bytes.get(at..at + N)?.try_into().ok()
    }
    fn u16(&self, at: usize) -> Option<u16> {
        let bytes = self.array(at)?;
        Some(match self.endian {
            Endian::Little => u16::from_le_bytes(bytes),
            Endian::Big => u16::from_be_bytes(bytes),
        })
    }
    fn u32(&self, at: usize) -> Option<u32> {
        let bytes = self.array(at)?;
        Some(match self.endian {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        })
    }
    fn u64(&self, at: usize) -> Option<u64> {
        let bytes = self.array(at)?;
        Some(match self.endian {
            Endian::Little => u64::from_le_bytes(bytes),
            Endian::Big => u64::from_be_bytes(bytes),
        })
    }
}

/// The fields of an `Elf64_Shdr` we use.
struct SectionHeader {
    name: u32,
    offset: u64,
    size: u64,
}

impl SectionHeader {
    fn parse(header: Reader<'_>) -> Option<Self> {
        Some(Self {
            name: header.u32(0)?,
            offset: header.u64(0x18)?,
            size: header.u64(0x20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_section_of_the_running_test_binary_and_not_a_missing_one() {
        let exe = File::open("/proc/self/exe").unwrap();
        let text = section(&exe, ".text", 16).unwrap().expect(".text");
        assert_eq!(text.len(), 16);
        assert_eq!(section(&exe, ".libshm_no_such_section", 16).unwrap(), None);
    }

    #[test]
    fn other_files_are_not_elf() {
        let dir = std::env::temp_dir().join(format!("libshm-elf-{}", std::process::id()));
        std::fs::write(&dir, b"#!/bin/sh\necho not elf\n").unwrap();
        let file = File::open(&dir).unwrap();
        assert_eq!(section(&file, ".text", 16).unwrap(), None);
        // A truncated ELF header.
        std::fs::write(&dir, b"\x7fELF\x02\x01\x01").unwrap();
        let file = File::open(&dir).unwrap();
        assert_eq!(section(&file, ".text", 16).unwrap(), None);
        let _ = std::fs::remove_file(&dir);
    }
}
