//! What must hold for any output a starting manager prints.
//!
//! # Input format
//! The first byte is the *read plan*: its low seven bits are the size of every
//! read (0: the whole output in one read), and its high bit adds an empty read
//! before each one. The rest is the manager's stdout. The plan lets the fuzzer
//! put the newline, a UTF-8 sequence or the [`LINE_MAX`] boundary at any read
//! boundary without changing the text.

use libshm_core::handshake::{
    HANDLE_MAX, Handshake, HandshakeError, HandshakeReader, LINE_MAX, ManagerHandle, parse_line,
};

/// A decoded handshake input: how stdout is split into reads, and its bytes.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeInput<'a> {
    /// Size of each read; 0 means one read of everything.
    pub read_size: usize,
    /// Whether an empty read comes before each read.
    pub empty_reads: bool,
    /// What the manager printed.
    pub stdout: &'a [u8],
}

impl<'a> HandshakeInput<'a> {
    /// Decodes fuzz input (see the module doc).
    pub fn decode(bytes: &'a [u8]) -> Self {
        let (plan, stdout) = bytes
            .split_first()
            .map_or((0, bytes), |(&plan, rest)| (plan, rest));
        Self {
            read_size: usize::from(plan & 0x7f),
            empty_reads: plan & 0x80 != 0,
            stdout,
        }
    }

    /// Encodes `stdout` read in pieces of `read_size` bytes (at most 127).
    pub fn encode(read_size: u8, empty_reads: bool, stdout: &[u8]) -> Vec<u8> {
        assert!(
            read_size < 0x80,
            "read sizes above 127 do not fit the plan byte"
        );
        let mut bytes = vec![read_size | if empty_reads { 0x80 } else { 0 }];
        bytes.extend_from_slice(stdout);
        bytes
    }

    fn reads(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let size = if self.read_size == 0 {
            self.stdout.len().max(1)
        } else {
            self.read_size
        };
        let empty: &'a [u8] = &[];
        self.stdout
            .chunks(size)
            .flat_map(move |read| self.empty_reads.then_some(empty).into_iter().chain([read]))
    }
}

/// Reads the handshake the way the launcher does (stop at the first answer or
/// error, [`HandshakeReader::finish`] at end of file) and panics if the result
/// differs from what the whole output says, or if a `Ready` handle could not
/// be a socket path. Also parses the whole output as one line.
pub fn check_handshake(input: &HandshakeInput<'_>) {
    let mut reader = HandshakeReader::new();
    let mut outcome = None;
    for read in input.reads() {
        match reader.push(read) {
            Ok(None) => {}
            Ok(Some(handshake)) => {
                outcome = Some(Outcome::from(Ok(handshake)));
                break;
            }
            Err(err) => {
                outcome = Some(Outcome::Error(err));
                break;
            }
        }
    }
    let outcome = outcome.unwrap_or_else(|| Outcome::from(reader.finish()));
    let expected = Outcome::from(expected_outcome(input.stdout));
    assert_eq!(outcome, expected, "the read plan changed the outcome");
    match &outcome {
        Outcome::Ready(handle) => check_handle(handle),
        Outcome::Failed(message) => {
            assert!(!message.contains('\n'), "an error message spans lines")
        }
        Outcome::Error(_) => {}
    }

    // The whole output as one line: newlines inside are out of contract for
    // an error message, but a handle must still be a valid one.
    if let Ok(Handshake::Ready(handle)) = parse_line(input.stdout) {
        check_handle(&handle);
    }
}

/// A handshake result that owns its message, so results from different
/// readers can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ready(ManagerHandle),
    Failed(String),
    Error(HandshakeError),
}

impl From<Result<Handshake<'_>, HandshakeError>> for Outcome {
    fn from(result: Result<Handshake<'_>, HandshakeError>) -> Self {
        match result {
            Ok(Handshake::Ready(handle)) => Self::Ready(handle),
            Ok(Handshake::Failed { message }) => Self::Failed(message.to_owned()),
            Err(err) => Self::Error(err),
        }
    }
}

/// The outcome from the whole output at once: the first line decides.
fn expected_outcome(stdout: &[u8]) -> Result<Handshake<'_>, HandshakeError> {
    match stdout.iter().position(|&b| b == b'\n') {
        Some(end) if end <= LINE_MAX => parse_line(&stdout[..end]),
        Some(_) => Err(HandshakeError::TooLong),
        None if stdout.len() > LINE_MAX => Err(HandshakeError::TooLong),
        None if stdout.is_empty() => Err(HandshakeError::NoOutput),
        None => Err(HandshakeError::Truncated),
    }
}

fn check_handle(handle: &ManagerHandle) {
    let bytes = handle.as_bytes();
    assert!(!bytes.is_empty(), "empty handle accepted");
    assert!(
        bytes.len() <= HANDLE_MAX,
        "handle of {} bytes accepted",
        bytes.len()
    );
    assert!(
        !bytes.iter().any(u8::is_ascii_control),
        "handle with a control byte accepted: {bytes:?}"
    );
    assert_eq!(handle.as_str().as_bytes(), bytes, "handle is not UTF-8");
    assert!(
        !bytes.starts_with(b"ERROR"),
        "an error line was taken for a handle"
    );
    assert_eq!(
        ManagerHandle::new(bytes),
        Ok(*handle),
        "handle does not validate again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_plans_split_the_output_as_documented() {
        let bytes = HandshakeInput::encode(3, true, b"abcdefg");
        let input = HandshakeInput::decode(&bytes);
        let reads: Vec<&[u8]> = input.reads().collect();
        assert_eq!(reads, [&b""[..], b"abc", b"", b"def", b"", b"g"]);
        let whole = HandshakeInput::decode(&[0, b'x', b'y']);
        assert_eq!(whole.reads().collect::<Vec<_>>(), [&b"xy"[..]]);
        assert_eq!(HandshakeInput::decode(&[]).reads().count(), 0);
    }
}
