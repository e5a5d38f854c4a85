//! What must hold for any bytes handed to [`Frame::parse`].

use std::fmt::Write as _;

use libshm_core::frame::{FILENAME_LEN, FRAME_LEN, Frame, FrameError, FrameKind};
use libshm_core::name::SegmentName;

/// Offset of the `free` byte in the wire frame.
const FREE_AT: usize = 4;
/// Offset of the name field in the wire frame.
const NAME_AT: usize = 5;

/// Parses `bytes` as a frame and panics if the outcome is inconsistent:
/// a frame must re-encode to bytes that parse to the same frame, with the
/// same pid, flag and name bytes as the input; an error must name the field
/// that is actually wrong.
pub fn check_frame(bytes: &[u8]) {
    match Frame::parse(bytes) {
        Ok(frame) => check_accepted(bytes, frame),
        Err(err) => check_rejected(bytes, err),
    }
}

fn check_accepted(bytes: &[u8], frame: Frame) {
    assert_eq!(
        bytes.len(),
        FRAME_LEN,
        "accepted a frame of the wrong length"
    );
    let encoded = frame.encode();
    assert_eq!(
        Frame::parse(&encoded),
        Ok(frame),
        "re-encoded frame parses differently"
    );

    let name = frame.name.as_bytes();
    let name_end = NAME_AT + name.len();
    assert_eq!(
        &encoded[NAME_AT..name_end],
        name,
        "encoded name bytes differ from the parsed name"
    );
    assert_eq!(encoded[name_end], 0, "encoded name is not NUL-terminated");
    assert_eq!(
        &bytes[NAME_AT..name_end],
        name,
        "parsed name differs from the input's name field"
    );
    assert_eq!(
        bytes[name_end], 0,
        "parsed name did not stop at the input's first NUL"
    );

    assert_eq!(
        &encoded[..FREE_AT],
        &bytes[..FREE_AT],
        "pid changed in a round trip"
    );
    assert_eq!(
        encoded[FREE_AT], bytes[FREE_AT],
        "free flag changed in a round trip"
    );
    let expected_kind = if bytes[FREE_AT] == 0 {
        FrameKind::Register
    } else {
        FrameKind::Release
    };
    assert_eq!(frame.kind, expected_kind);
    assert_eq!(
        SegmentName::new(name),
        Ok(frame.name),
        "parsed name does not validate on its own"
    );
}

fn check_rejected(bytes: &[u8], err: FrameError) {
    let expected = if bytes.len() != FRAME_LEN {
        FrameError::Length { len: bytes.len() }
    } else if bytes[FREE_AT] > 1 {
        FrameError::FreeFlag {
            value: bytes[FREE_AT],
        }
    } else {
        match SegmentName::from_nul_terminated(&bytes[NAME_AT..NAME_AT + FILENAME_LEN]) {
            Err(name_err) => FrameError::Name(name_err),
            Ok(name) => panic!("rejected a frame whose fields are valid ({name}): {err:?}"),
        }
    };
    assert_eq!(err, expected, "the error names the wrong field");
    // Errors end up in logs; formatting one must not panic either.
    let mut text = String::new();
    let _ = write!(text, "{err}");
    assert!(!text.is_empty());
}
