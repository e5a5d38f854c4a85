//! ATen's `ALLOCATOR_MAPPED_*` flag bits and the rules its refcounted allocator
//! applies to them.
//!
//! Callers that speak ATen (bindings, a C API) pass these bits; checking them
//! here gives the same answers ATen gives, as typed errors instead of asserts.

use core::fmt;
use core::ops::BitOr;

/// A set of ATen mapping flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapFlags(u32);

impl MapFlags {
    /// Map a file shared (`open`).
    pub const SHARED: Self = Self(1);
    /// Map a POSIX shared-memory object (`shm_open`).
    pub const SHAREDMEM: Self = Self(2);
    /// Create; fail if it exists (`O_EXCL`).
    pub const EXCLUSIVE: Self = Self(4);
    /// Open only; never create.
    pub const NOCREATE: Self = Self(8);
    /// Keep the file descriptor open after mapping.
    pub const KEEPFD: Self = Self(16);
    /// Map a descriptor the caller already has.
    pub const FROMFD: Self = Self(32);
    /// Unlink right after mapping.
    pub const UNLINK: Self = Self(64);

    const ALL: u32 = 127;

    /// Accepts the known bits, refuses any other.
    pub fn from_bits(bits: u32) -> Result<Self, FlagsError> {
        if bits & !Self::ALL != 0 {
            return Err(FlagsError::UnknownBits {
                bits: bits & !Self::ALL,
            });
        }
        Ok(Self(bits))
    }

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// What a refcounted, managed segment does with these flags, following
    /// ATen's `RefcountedMapAllocatorArgCheck`, plus one rule of ours: the
    /// caller must say whether it creates or opens, because a refcount can only
    /// be trusted when exactly one side initialises it.
    pub fn refcounted_mode(self) -> Result<OpenMode, FlagsError> {
        for unsupported in [Self::FROMFD, Self::KEEPFD, Self::UNLINK] {
            if self.contains(unsupported) {
                return Err(FlagsError::Unsupported { flag: unsupported });
            }
        }
        if !self.contains(Self::SHAREDMEM) {
            return Err(FlagsError::RequiresSharedMem);
        }
        match (
            self.contains(Self::EXCLUSIVE),
            self.contains(Self::NOCREATE),
        ) {
            (true, false) => Ok(OpenMode::CreateExclusive),
            (false, true) => Ok(OpenMode::OpenExisting),
            (true, true) => Err(FlagsError::ExclusiveAndNoCreate),
            (false, false) => Err(FlagsError::NeitherCreateNorOpen),
        }
    }
}

impl BitOr for MapFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for MapFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(MapFlags, &str); 7] = [
            (MapFlags::SHARED, "SHARED"),
            (MapFlags::SHAREDMEM, "SHAREDMEM"),
            (MapFlags::EXCLUSIVE, "EXCLUSIVE"),
            (MapFlags::NOCREATE, "NOCREATE"),
            (MapFlags::KEEPFD, "KEEPFD"),
            (MapFlags::FROMFD, "FROMFD"),
            (MapFlags::UNLINK, "UNLINK"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("(empty)")?;
        }
        Ok(())
    }
}

/// How a refcounted segment is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// `O_CREAT | O_EXCL`; the refcount starts at 1.
    CreateExclusive,
    /// No `O_CREAT`; the refcount is incremented.
    OpenExisting,
}

/// Why flags are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagsError {
    /// Bits ATen does not define.
    UnknownBits {
        /// The undefined bits.
        bits: u32,
    },
    /// The refcount lives in a POSIX shared-memory object.
    RequiresSharedMem,
    /// ATen's refcounted allocator refuses FROMFD, KEEPFD and UNLINK.
    Unsupported {
        /// The refused flag.
        flag: MapFlags,
    },
    /// Contradictory: create exclusively and never create.
    ExclusiveAndNoCreate,
    /// Neither EXCLUSIVE nor NOCREATE: it is unknown who initialises the refcount.
    NeitherCreateNorOpen,
}

impl fmt::Display for FlagsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownBits { bits } => write!(f, "unknown mapping flag bits {bits:#x}"),
            Self::RequiresSharedMem => f.write_str("a refcounted segment requires SHAREDMEM"),
            Self::Unsupported { flag } => {
                write!(f, "a refcounted segment does not support {flag:?}")
            }
            Self::ExclusiveAndNoCreate => f.write_str("EXCLUSIVE and NOCREATE contradict each other"),
            Self::NeitherCreateNorOpen => f.write_str(
                "a managed segment needs EXCLUSIVE (create) or NOCREATE (open) to know who initialises its refcount",
            ),
        }
    }
}

impl core::error::Error for FlagsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_values_match_aten() {
        let bits: [u32; 7] = [
            MapFlags::SHARED.bits(),
            MapFlags::SHAREDMEM.bits(),
            MapFlags::EXCLUSIVE.bits(),
            MapFlags::NOCREATE.bits(),
            MapFlags::KEEPFD.bits(),
            MapFlags::FROMFD.bits(),
            MapFlags::UNLINK.bits(),
        ];
        assert_eq!(bits, [1, 2, 4, 8, 16, 32, 64]);
    }

    #[test]
    fn pytorch_share_and_rebuild_flags_map_to_create_and_open() {
        let share = MapFlags::SHAREDMEM | MapFlags::EXCLUSIVE;
        let rebuild = MapFlags::SHAREDMEM | MapFlags::NOCREATE;
        assert_eq!(share.refcounted_mode(), Ok(OpenMode::CreateExclusive));
        assert_eq!(rebuild.refcounted_mode(), Ok(OpenMode::OpenExisting));
    }

    #[test]
    fn refuses_what_aten_refuses() {
        let base = MapFlags::SHAREDMEM | MapFlags::EXCLUSIVE;
        for flag in [MapFlags::FROMFD, MapFlags::KEEPFD, MapFlags::UNLINK] {
            assert_eq!(
                (base | flag).refcounted_mode(),
                Err(FlagsError::Unsupported { flag })
            );
        }
        assert_eq!(
            MapFlags::SHARED.refcounted_mode(),
            Err(FlagsError::RequiresSharedMem)
        );
        assert_eq!(
            (MapFlags::SHAREDMEM | MapFlags::EXCLUSIVE | MapFlags::NOCREATE).refcounted_mode(),
            Err(FlagsError::ExclusiveAndNoCreate)
        );
        assert_eq!(
            MapFlags::SHAREDMEM.refcounted_mode(),
            Err(FlagsError::NeitherCreateNorOpen)
        );
        assert_eq!(
            MapFlags::from_bits(128),
            Err(FlagsError::UnknownBits { bits: 128 })
        );
        assert_eq!(MapFlags::from_bits(127).map(|f| f.bits()), Ok(127));
    }

    #[test]
    fn debug_lists_names() {
        use std::format;
        assert_eq!(
            format!("{:?}", MapFlags::SHAREDMEM | MapFlags::NOCREATE),
            "SHAREDMEM|NOCREATE"
        );
        assert_eq!(format!("{:?}", MapFlags::from_bits(0).unwrap()), "(empty)");
    }
}
