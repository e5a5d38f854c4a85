//! Which manager an executable is, read from the file without running it:
//! running an unknown `torch_shm_manager` would start a manager.
//!
//! - ours: it has the `.libshm_manager` ELF section `shm-manager` is built
//!   with (`manager_identity`), which also gives its version;
//! - PyTorch's: its SHA-256 is the one torch's wheel recorded for
//!   `torch/bin/torch_shm_manager` (the `RECORD` file), or, where there is no
//!   such record (conda, distribution packages), it links `libshm.so` and
//!   names `torch-shm-dir-` directories, which only PyTorch's manager does;
//! - anything else is unknown.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::manager_identity;

use super::elf;
use super::sha256;

/// Files bigger than this are not scanned for PyTorch's strings (its manager
/// is about 50 KiB).
const SCAN_MAX: u64 = 64 << 20;

/// What a manager executable is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// libshm-rs's `shm-manager`, of this version.
    Ours { version: String },
    /// PyTorch's `torch_shm_manager`.
    Pytorch(Evidence),
    /// Something else (another replacement, a script, a broken file).
    Unknown,
}

/// How a file was recognised as PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// Its hash is the one torch's `RECORD` lists for it.
    Record,
    /// It links `libshm.so` and makes `torch-shm-dir-` directories.
    Contents,
}

impl Identity {
    pub(crate) fn is_ours(&self) -> bool {
        matches!(self, Self::Ours { .. })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ours { version } => write!(f, "ours (libshm-rs shm-manager {version})"),
            Self::Pytorch(Evidence::Record) => {
                f.write_str("PyTorch's (its hash matches torch's RECORD)")
            }
            Self::Pytorch(Evidence::Contents) => f.write_str("PyTorch's (by its contents)"),
            Self::Unknown => f.write_str("unknown (neither ours nor PyTorch's)"),
        }
    }
}

/// Identifies the executable at `path` (a file, or `/proc/<pid>/exe`).
/// `record` is the hash torch's wheel lists for its manager, if known, in
/// the wheel's own form (`RECORD`'s unpadded URL-safe base64).
pub(crate) fn identify(path: &Path, record: Option<&str>) -> io::Result<Identity> {
    let file = File::open(path)?;
    if let Some(contents) = elf::section(&file, manager_identity::SECTION, 256)?
        && let Some(version) = manager_identity::version_in(&contents)
    {
        return Ok(Identity::Ours {
            version: version.to_owned(),
        });
    }
    if let Some(record) = record
        && sha256::of_file(path)?.record_form() == record
    {
        return Ok(Identity::Pytorch(Evidence::Record));
    }
    let mut bytes = Vec::new();
    (&file).take(SCAN_MAX).read_to_end(&mut bytes)?;
    let is_elf = bytes.starts_with(b"\x7fELF");
    if is_elf && contains(&bytes, b"libshm.so\0") && contains(&bytes, b"torch-shm-dir-") {
        return Ok(Identity::Pytorch(Evidence::Contents));
    }
    Ok(Identity::Unknown)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
