//! The `AllocInfo` frame: the only message a client sends a manager.
//!
//! PyTorch writes the C struct `{ pid_t pid; char free; char filename[60]; }`
//! straight onto the socket, so the wire format is that struct's native layout:
//! 68 bytes, 4-byte aligned, three trailing padding bytes. A registration
//! (`free == 0`) is answered with [`crate::ack::ACK`]; a release (`free == 1`) is
//! not answered.

use core::fmt;

use bytemuck::{Pod, Zeroable};

use crate::name::{NameError, SegmentName};

/// Size of one frame on the wire.
pub const FRAME_LEN: usize = 68;

/// Size of the NUL-terminated name field.
pub const FILENAME_LEN: usize = 60;

/// The raw frame, byte for byte what PyTorch's `AllocInfo` is in memory.
///
/// It is `Pod`, so any 68 bytes are *a* value; [`Frame::parse`] decides whether
/// they are a meaningful one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AllocInfo {
    /// Sender's pid (informational: forked children may share a connection).
    pub pid: i32,
    /// 0 registers the name, 1 releases it.
    pub free: u8,
    /// The segment name, NUL-terminated.
    pub filename: [u8; FILENAME_LEN],
    /// Struct padding; C leaves it unspecified, so it is never checked.
    pub padding: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<AllocInfo>() == FRAME_LEN);
const _: () = assert!(core::mem::align_of::<AllocInfo>() == 4);

/// What a frame asks of the manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// "I am about to create or open this name": answered with `OK`.
    Register,
    /// "I no longer use this name": not answered.
    Release,
}

/// A validated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Sender's pid as it wrote it.
    pub pid: i32,
    /// Register or release.
    pub kind: FrameKind,
    /// The segment.
    pub name: SegmentName,
}

/// Why 68 bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The input is not exactly [`FRAME_LEN`] bytes.
    Length {
        /// How many bytes were given.
        len: usize,
    },
    /// `free` was neither 0 nor 1.
    FreeFlag {
        /// The byte found.
        value: u8,
    },
    /// The name field does not hold a valid segment name.
    Name(NameError),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { len } => write!(f, "frame is {len} bytes, expected {FRAME_LEN}"),
            Self::FreeFlag { value } => write!(f, "frame's free flag is {value}, expected 0 or 1"),
            Self::Name(_) => f.write_str("frame's name is invalid"),
        }
    }
}

impl core::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Name(err) => Some(err),
            _ => None,
        }
    }
}

impl From<NameError> for FrameError {
    fn from(err: NameError) -> Self {
        Self::Name(err)
    }
}

impl Frame {
    /// A registration frame.
    pub fn register(pid: i32, name: SegmentName) -> Self {
        Self {
            pid,
            kind: FrameKind::Register,
            name,
        }
    }

    /// A release frame.
    pub fn release(pid: i32, name: SegmentName) -> Self {
        Self {
            pid,
            kind: FrameKind::Release,
            name,
        }
    }

    /// Parses untrusted bytes. Never panics; any input is either a frame or a
    /// [`FrameError`] saying which field is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, FrameError> {
        let raw: AllocInfo = bytemuck::try_pod_read_unaligned(bytes)
            .map_err(|_| FrameError::Length { len: bytes.len() })?;
        Self::from_raw(&raw)
    }

    /// Validates a raw frame.
    pub fn from_raw(raw: &AllocInfo) -> Result<Self, FrameError> {
        let kind = match raw.free {
            0 => FrameKind::Register,
            1 => FrameKind::Release,
            value => return Err(FrameError::FreeFlag { value }),
        };
        let name = SegmentName::from_nul_terminated(&raw.filename)?;
        Ok(Self {
            pid: raw.pid,
            kind,
            name,
        })
    }

    /// The raw struct, zero-filled after the name as PyTorch's `{0}` initialiser does.
    pub fn to_raw(&self) -> AllocInfo {
        let mut raw = AllocInfo::zeroed();
        raw.pid = self.pid;
        raw.free = u8::from(self.kind == FrameKind::Release);
        let name = self.name.as_bytes();
        // A SegmentName is at most 59 bytes, so the NUL always fits.
        raw.filename[..name.len()].copy_from_slice(name);
        raw
    }

    /// The 68 wire bytes.
    pub fn encode(&self) -> [u8; FRAME_LEN] {
        bytemuck::cast(self.to_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    fn name(s: &str) -> SegmentName {
        SegmentName::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn layout_matches_pytorch_alloc_info() {
        assert_eq!(core::mem::size_of::<AllocInfo>(), 68);
        assert_eq!(offset_of!(AllocInfo, pid), 0);
        assert_eq!(offset_of!(AllocInfo, free), 4);
        assert_eq!(offset_of!(AllocInfo, filename), 5);
        assert_eq!(offset_of!(AllocInfo, padding), 65);
    }

    #[test]
    fn encodes_each_field_at_its_offset() {
        let bytes = Frame::release(0x0102_0304, name("/torch_1_2_3")).encode();
        assert_eq!(&bytes[0..4], &0x0102_0304i32.to_ne_bytes());
        assert_eq!(bytes[4], 1);
        assert_eq!(&bytes[5..17], b"/torch_1_2_3");
        assert!(bytes[17..].iter().all(|&b| b == 0));
    }

    #[test]
    fn round_trips() {
        let frame = Frame::register(-7, name("/x"));
        assert_eq!(Frame::parse(&frame.encode()), Ok(frame));
    }

    #[test]
    fn rejects_bad_fields_with_typed_errors() {
        let good = Frame::register(1, name("/ok")).encode();
        assert_eq!(
            Frame::parse(&good[..67]),
            Err(FrameError::Length { len: 67 })
        );
        assert_eq!(Frame::parse(&[0; 69]), Err(FrameError::Length { len: 69 }));

        let mut bad_free = good;
        bad_free[4] = 2;
        assert_eq!(
            Frame::parse(&bad_free),
            Err(FrameError::FreeFlag { value: 2 })
        );

        let mut unterminated = good;
        unterminated[5..65].fill(b'a');
        assert_eq!(
            Frame::parse(&unterminated),
            Err(NameError::Unterminated.into())
        );

        let mut empty = good;
        empty[5] = 0;
        assert_eq!(Frame::parse(&empty), Err(NameError::Empty.into()));

        let mut slash = good;
        slash[5..9].copy_from_slice(b"/a/b");
        assert_eq!(
            Frame::parse(&slash),
            Err(NameError::InnerSlash { at: 2 }.into())
        );
    }

    #[test]
    fn padding_and_bytes_after_nul_are_ignored() {
        let mut bytes = Frame::register(1, name("/ok")).encode();
        bytes[65..].fill(0xaa);
        bytes[9..65].fill(0xbb);
        assert_eq!(Frame::parse(&bytes).unwrap().name.as_str(), "/ok");
    }

    // Property tests exercise no unsafe code and need the filesystem, which
    // Miri isolates; they run in the normal test pass.
    #[cfg(not(miri))]
    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..140)) {
            let _ = Frame::parse(&bytes);
        }

        #[test]
        fn valid_frames_round_trip(pid in proptest::prelude::any::<i32>(), free in 0u8..2, body in "[a-zA-Z0-9_.-]{1,58}") {
            let mut text = heapless::String::<64>::new();
            text.push('/').unwrap();
            text.push_str(&body).unwrap();
            proptest::prop_assume!(body != "." && body != "..");
            let frame = Frame { pid, kind: if free == 0 { FrameKind::Register } else { FrameKind::Release }, name: name(&text) };
            proptest::prop_assert_eq!(Frame::parse(&frame.encode()), Ok(frame));
        }
    }
}
