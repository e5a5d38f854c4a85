//! Segment names: the POSIX shared-memory object names that travel in frames.
//!
//! A name is what `shm_open` receives, so it is validated before anything else sees
//! it: one leading `/`, no other `/`, visible ASCII only, and short enough that the
//! frame's 60-byte field still holds its NUL terminator. Names that pass can be
//! handed to the OS without further checks, which is why every name a manager
//! might unlink has been through [`SegmentName::new`].

use core::fmt;

/// The longest name a frame can carry: the 60-byte field minus its NUL.
pub const NAME_MAX: usize = 59;

/// The name prefix PyTorch uses, and ours by default.
pub const DEFAULT_PREFIX: &str = "/torch_";

/// A validated shared-memory object name such as `/torch_4242_1808412233_0`.
///
/// Stored inline (no allocation) and zero-padded, so the derived equality,
/// ordering and hashing only ever see the name's own bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    len: u8,
    bytes: [u8; NAME_MAX],
}

/// Why bytes are not a segment name. Each variant is a different mistake a
/// caller or a hostile peer can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Nothing after the leading `/` (or nothing at all).
    Empty,
    /// Longer than [`NAME_MAX`] bytes, so it cannot fit a frame.
    TooLong {
        /// The offending length.
        len: usize,
    },
    /// POSIX names for `shm_open` start with `/`.
    MissingLeadingSlash,
    /// A second `/` would make it a path, not an object name.
    InnerSlash {
        /// Byte offset of the slash.
        at: usize,
    },
    /// A byte outside visible ASCII (control characters, space, NUL, non-ASCII).
    BadByte {
        /// Byte offset.
        at: usize,
        /// The byte itself.
        byte: u8,
    },
    /// `/.` and `/..` name directories, not objects.
    DotName,
    /// The frame's name field has no NUL terminator.
    Unterminated,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("segment name is empty"),
            Self::TooLong { len } => {
                write!(
                    f,
                    "segment name is {len} bytes long, at most {NAME_MAX} fit a frame"
                )
            }
            Self::MissingLeadingSlash => f.write_str("segment name must start with '/'"),
            Self::InnerSlash { at } => write!(f, "segment name has a '/' at byte {at}"),
            Self::BadByte { at, byte } => {
                write!(
                    f,
                    "segment name has byte {byte:#04x} at {at}; only visible ASCII is allowed"
                )
            }
            Self::DotName => f.write_str("segment name may not be '/.' or '/..'"),
            Self::Unterminated => f.write_str("segment name field has no NUL terminator"),
        }
    }
}

impl core::error::Error for NameError {}

impl SegmentName {
    /// Not a name: zero length, so it equals no validated name. A stand-in
    /// where a lookup needs a reference and there is no name.
    pub(crate) const NONE: Self = Self {
        len: 0,
        bytes: [0; NAME_MAX],
    };

    /// Validates `bytes` (without a NUL) as a shared-memory object name.
    pub fn new(bytes: &[u8]) -> Result<Self, NameError> {
        validate(bytes, false)?;
        let mut name = Self {
            len: 0,
            bytes: [0; NAME_MAX],
        };
        name.bytes[..bytes.len()].copy_from_slice(bytes);
        // Fits: validate() bounded the length by NAME_MAX (59).
        name.len = bytes.len() as u8;
        Ok(name)
    }

    /// Reads the name out of a frame's fixed, NUL-terminated field. Bytes after
    /// the first NUL are ignored, as C's `strcpy` would.
    pub fn from_nul_terminated(field: &[u8]) -> Result<Self, NameError> {
        let end = field
            .iter()
            .position(|&b| b == 0)
            .ok_or(NameError::Unterminated)?;
        Self::new(&field[..end])
    }

    /// Builds PyTorch's name shape, `<prefix><pid>_<random>_<counter>`.
    ///
    /// The random part keeps names unique across pid reuse and across processes
    /// that share a pid namespace view; the counter keeps them unique within one.
    pub fn generate(
        prefix: &NamePrefix,
        pid: u32,
        random: u32,
        counter: u64,
    ) -> Result<Self, NameError> {
        let mut out = Writer {
            buf: [0; NAME_MAX + 1],
            len: 0,
        };
        let written = fmt::write(
            &mut out,
            format_args!("{}{pid}_{random}_{counter}", prefix.as_str()),
        );
        if written.is_err() {
            return Err(NameError::TooLong { len: out.len + 1 });
        }
        Self::new(&out.buf[..out.len])
    }

    /// A name from a literal the crate knows is valid (a test checks each
    /// use); `const` so reserved names can be constants.
    pub(crate) const fn from_known(text: &'static str) -> Self {
        let src = text.as_bytes();
        let mut bytes = [0; NAME_MAX];
        let mut i = 0;
        while i < src.len() && i < NAME_MAX {
            bytes[i] = src[i];
            i += 1;
        }
        Self {
            len: i as u8,
            bytes,
        }
    }

    /// The name's bytes, leading `/` included, without a NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name as text; always valid because only visible ASCII is accepted.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// Whether the name starts with `prefix`.
    pub fn has_prefix(&self, prefix: &NamePrefix) -> bool {
        self.as_bytes().starts_with(prefix.as_str().as_bytes())
    }

    /// The creating process's pid, when the name has the generated shape
    /// `<prefix><pid>_...`. Used to tell leaked segments from live ones.
    pub fn creator_pid(&self, prefix: &NamePrefix) -> Option<u32> {
        let rest = self.as_bytes().strip_prefix(prefix.as_str().as_bytes())?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&b'_') {
            return None;
        }
        core::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
    }
}

impl fmt::Debug for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"/torch_1_2_3".parse::<SegmentName>()`: [`SegmentName::new`] on the text.
impl core::str::FromStr for SegmentName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, NameError> {
        Self::new(text.as_bytes())
    }
}

/// A validated name prefix such as `/torch_`: what managers may restrict
/// registrations to and what clients put in front of generated names.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NamePrefix {
    len: u8,
    bytes: [u8; PREFIX_MAX],
}

/// Longest accepted prefix; leaves room for `<pid>_<u32>_<counter>`.
pub const PREFIX_MAX: usize = 24;

impl NamePrefix {
    /// PyTorch's `/torch_`. A test pins that it passes [`NamePrefix::new`].
    pub const fn torch() -> Self {
        let src = DEFAULT_PREFIX.as_bytes();
        let mut bytes = [0; PREFIX_MAX];
        let mut i = 0;
        while i < src.len() {
            bytes[i] = src[i];
            i += 1;
        }
        Self {
            len: src.len() as u8,
            bytes,
        }
    }

    /// Validates a prefix: it must start a valid name (`/` alone is allowed)
    /// and be at most [`PREFIX_MAX`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, NameError> {
        if bytes.len() > PREFIX_MAX {
            return Err(NameError::TooLong { len: bytes.len() });
        }
        validate(bytes, true)?;
        let mut prefix = Self {
            len: 0,
            bytes: [0; PREFIX_MAX],
        };
        prefix.bytes[..bytes.len()].copy_from_slice(bytes);
        prefix.len = bytes.len() as u8;
        Ok(prefix)
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("/")
    }
}

impl Default for NamePrefix {
    fn default() -> Self {
        Self::torch()
    }
}

impl fmt::Debug for NamePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for NamePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"/torch_".parse::<NamePrefix>()`: [`NamePrefix::new`] on the text.
impl core::str::FromStr for NamePrefix {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, NameError> {
        Self::new(text.as_bytes())
    }
}

fn validate(bytes: &[u8], is_prefix: bool) -> Result<(), NameError> {
    let Some((&first, rest)) = bytes.split_first() else {
        return Err(NameError::Empty);
    };
    if first != b'/' {
        return Err(NameError::MissingLeadingSlash);
    }
    if rest.is_empty() && !is_prefix {
        return Err(NameError::Empty);
    }
    if bytes.len() > NAME_MAX {
        return Err(NameError::TooLong { len: bytes.len() });
    }
    for (i, &byte) in rest.iter().enumerate() {
        let at = i + 1;
        if byte == b'/' {
            return Err(NameError::InnerSlash { at });
        }
        if !byte.is_ascii_graphic() {
            return Err(NameError::BadByte { at, byte });
        }
    }
    if !is_prefix && (rest == b"." || rest == b"..") {
        return Err(NameError::DotName);
    }
    Ok(())
}

/// A `fmt::Write` into a fixed buffer that fails instead of truncating.
struct Writer {
    buf: [u8; NAME_MAX + 1],
    len: usize,
}

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_pytorch_names() {
        let name = SegmentName::new(b"/torch_4242_1808412233_17").unwrap();
        assert_eq!(name.as_str(), "/torch_4242_1808412233_17");
        assert_eq!(name.creator_pid(&NamePrefix::torch()), Some(4242));
    }

    #[test]
    fn names_and_prefixes_parse_from_text_as_from_bytes() {
        assert_eq!(
            "/torch_1_2_3".parse::<SegmentName>(),
            SegmentName::new(b"/torch_1_2_3")
        );
        assert_eq!(
            "/a/b".parse::<SegmentName>(),
            Err(NameError::InnerSlash { at: 2 })
        );
        assert_eq!("/mine_".parse::<NamePrefix>(), NamePrefix::new(b"/mine_"));
        assert_eq!(
            "mine_".parse::<NamePrefix>(),
            Err(NameError::MissingLeadingSlash)
        );
    }

    #[test]
    fn rejects_each_kind_of_bad_name() {
        assert_eq!(SegmentName::new(b""), Err(NameError::Empty));
        assert_eq!(SegmentName::new(b"/"), Err(NameError::Empty));
        assert_eq!(
            SegmentName::new(b"torch_1"),
            Err(NameError::MissingLeadingSlash)
        );
        assert_eq!(
            SegmentName::new(b"/a/b"),
            Err(NameError::InnerSlash { at: 2 })
        );
        assert_eq!(
            SegmentName::new(b"/a b"),
            Err(NameError::BadByte { at: 2, byte: b' ' })
        );
        assert_eq!(
            SegmentName::new(b"/a\0"),
            Err(NameError::BadByte { at: 2, byte: 0 })
        );
        assert_eq!(
            SegmentName::new(b"/\xc3\xa9"),
            Err(NameError::BadByte { at: 1, byte: 0xc3 })
        );
        assert_eq!(SegmentName::new(b"/.."), Err(NameError::DotName));
        assert_eq!(SegmentName::new(b"/."), Err(NameError::DotName));
        let long = [b'a'; NAME_MAX + 1];
        let mut long = long;
        long[0] = b'/';
        assert_eq!(
            SegmentName::new(&long),
            Err(NameError::TooLong { len: NAME_MAX + 1 })
        );
        assert!(SegmentName::new(&long[..NAME_MAX]).is_ok());
    }

    #[test]
    fn nul_terminated_field_ignores_trailing_bytes() {
        let mut field = [0xffu8; 60];
        field[..4].copy_from_slice(b"/abc");
        field[4] = 0;
        assert_eq!(
            SegmentName::from_nul_terminated(&field).unwrap().as_str(),
            "/abc"
        );
        assert_eq!(
            SegmentName::from_nul_terminated(&[b'a'; 60]),
            Err(NameError::Unterminated)
        );
    }

    #[test]
    fn generated_names_have_pytorch_shape_and_fail_cleanly_when_too_long() {
        let prefix = NamePrefix::torch();
        let name = SegmentName::generate(&prefix, 77, u32::MAX, u64::MAX).unwrap();
        assert_eq!(name.as_str(), "/torch_77_4294967295_18446744073709551615");
        assert_eq!(name.creator_pid(&prefix), Some(77));
        let long = NamePrefix::new(b"/a_rather_long_prefix_xx").unwrap();
        let err = SegmentName::generate(&long, u32::MAX, u32::MAX, u64::MAX).unwrap_err();
        assert!(matches!(err, NameError::TooLong { .. }));
    }

    #[test]
    fn prefixes_are_validated() {
        assert_eq!(NamePrefix::torch().as_str(), DEFAULT_PREFIX);
        assert_eq!(
            NamePrefix::new(DEFAULT_PREFIX.as_bytes()),
            Ok(NamePrefix::torch())
        );
        assert!(NamePrefix::new(b"/").is_ok());
        assert_eq!(NamePrefix::new(b"x"), Err(NameError::MissingLeadingSlash));
        assert!(NamePrefix::new(&[b'/'; PREFIX_MAX + 1]).is_err());
        let name = SegmentName::new(b"/torch_1_2_3").unwrap();
        assert!(name.has_prefix(&NamePrefix::torch()));
        assert!(!name.has_prefix(&NamePrefix::new(b"/other_").unwrap()));
        assert_eq!(
            name.creator_pid(&NamePrefix::new(b"/other_").unwrap()),
            None
        );
        let odd = SegmentName::new(b"/torch_x_1").unwrap();
        assert_eq!(odd.creator_pid(&NamePrefix::torch()), None);
    }
}
