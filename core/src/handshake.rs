//! The manager's one-line handshake on stdout, and the handle it carries.
//!
//! A freshly started manager prints its socket path and `\n`, or `ERROR: <why>\n`
//! and exits 1. The path is the manager's *handle*: any process that has it can
//! connect. The line comes from a child process, so it is bounded, validated and
//! never trusted to be well formed.

use core::fmt;

/// Longest handle: a Unix socket path (`sun_path` is 108 bytes with its NUL).
pub const HANDLE_MAX: usize = 107;

/// Longest handshake line we read before giving up on the child.
pub const LINE_MAX: usize = 1024;

/// A manager handle: where clients connect.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManagerHandle {
    len: u8,
    bytes: [u8; HANDLE_MAX],
}

/// Why bytes are not a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// No bytes.
    Empty,
    /// Over [`HANDLE_MAX`] bytes: it could not be a socket address.
    TooLong {
        /// The length found.
        len: usize,
    },
    /// Not UTF-8 (handles travel through Python as text too).
    NotUtf8,
    /// A control character (NUL, newline, ...) at this byte offset.
    ControlByte {
        /// Byte offset.
        at: usize,
    },
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("manager handle is empty"),
            Self::TooLong { len } => {
                write!(
                    f,
                    "manager handle is {len} bytes, a socket path holds at most {HANDLE_MAX}"
                )
            }
            Self::NotUtf8 => f.write_str("manager handle is not UTF-8"),
            Self::ControlByte { at } => write!(f, "manager handle has a control byte at {at}"),
        }
    }
}

impl core::error::Error for HandleError {}

impl ManagerHandle {
    /// Validates a handle.
    pub fn new(bytes: &[u8]) -> Result<Self, HandleError> {
        if bytes.is_empty() {
            return Err(HandleError::Empty);
        }
        if bytes.len() > HANDLE_MAX {
            return Err(HandleError::TooLong { len: bytes.len() });
        }
        let text = core::str::from_utf8(bytes).map_err(|_| HandleError::NotUtf8)?;
        if let Some(at) = text.bytes().position(|b| b.is_ascii_control()) {
            return Err(HandleError::ControlByte { at });
        }
        let mut handle = Self {
            len: 0,
            bytes: [0; HANDLE_MAX],
        };
        handle.bytes[..bytes.len()].copy_from_slice(bytes);
        handle.len = bytes.len() as u8;
        Ok(handle)
    }

    /// The handle's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The handle as text (validated UTF-8).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Debug for ManagerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ManagerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"/tmp/torch-shm-dir-x/manager.sock".parse::<ManagerHandle>()`:
/// [`ManagerHandle::new`] on the text.
impl core::str::FromStr for ManagerHandle {
    type Err = HandleError;

    fn from_str(text: &str) -> Result<Self, HandleError> {
        Self::new(text.as_bytes())
    }
}

/// What a manager said when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake<'a> {
    /// It is serving at this handle.
    Ready(ManagerHandle),
    /// It printed `ERROR: <message>` and will exit.
    Failed {
        /// The message, without the `ERROR: ` marker.
        message: &'a str,
    },
}

/// Why the handshake could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The manager closed stdout without printing anything: it did not start.
    NoOutput,
    /// The manager closed stdout in the middle of the line.
    Truncated,
    /// No newline within [`LINE_MAX`] bytes.
    TooLong,
    /// The line is not a valid handle.
    Handle(HandleError),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoOutput => f.write_str("manager exited without printing its handle"),
            Self::Truncated => {
                f.write_str("manager closed its output in the middle of the handle line")
            }
            Self::TooLong => write!(f, "manager printed over {LINE_MAX} bytes without a newline"),
            Self::Handle(_) => f.write_str("manager printed an invalid handle"),
        }
    }
}

impl core::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Handle(err) => Some(err),
            _ => None,
        }
    }
}

/// Parses one handshake line (without its `\n`).
pub fn parse_line(line: &[u8]) -> Result<Handshake<'_>, HandshakeError> {
    if let Some(rest) = line.strip_prefix(b"ERROR") {
        let message = rest.strip_prefix(b":").unwrap_or(rest);
        let message = message.strip_prefix(b" ").unwrap_or(message);
        let message = core::str::from_utf8(message).unwrap_or("(message is not UTF-8)");
        return Ok(Handshake::Failed { message });
    }
    ManagerHandle::new(line)
        .map(Handshake::Ready)
        .map_err(HandshakeError::Handle)
}

/// Why a manager gave no handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoHandle<'a> {
    /// It printed `ERROR: <message>` (the message, without the marker).
    Failed(&'a str),
    /// Its output is not a handshake.
    Handshake(HandshakeError),
}

/// Collects the handshake line from however many reads it arrives in. A
/// launcher waits for the manager's stdout with its own deadline, reads, and
/// [feeds](HandshakeReader::feed) what it read until a handle comes out.
#[derive(Default)]
pub struct HandshakeReader {
    line: heapless::Vec<u8, LINE_MAX>,
    complete: bool,
}

impl HandshakeReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the manager's stdout. Returns the handshake once
    /// the newline has arrived; bytes after it are ignored.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<Handshake<'_>>, HandshakeError> {
        if !self.complete {
            let (chunk, done) = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[..end], true),
                None => (bytes, false),
            };
            self.line
                .extend_from_slice(chunk)
                .map_err(|_| HandshakeError::TooLong)?;
            self.complete = done;
        }
        if self.complete {
            parse_line(&self.line).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Called when stdout reached end of file.
    pub fn finish(&self) -> Result<Handshake<'_>, HandshakeError> {
        match (self.complete, self.line.is_empty()) {
            (true, _) => parse_line(&self.line),
            (false, true) => Err(HandshakeError::NoOutput),
            (false, false) => Err(HandshakeError::Truncated),
        }
    }

    /// Feeds what one read of the manager's stdout returned; empty `bytes`
    /// is end of file, as a read returns it. Returns the handle once the
    /// line is complete, `None` while more is needed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<ManagerHandle>, NoHandle<'_>> {
        let handshake = if bytes.is_empty() {
            self.finish().map(Some)
        } else {
            self.push(bytes)
        };
        match handshake {
            Ok(None) => Ok(None),
            Ok(Some(Handshake::Ready(handle))) => Ok(Some(handle)),
            Ok(Some(Handshake::Failed { message })) => Err(NoHandle::Failed(message)),
            Err(err) => Err(NoHandle::Handshake(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_handle_split_across_reads() {
        let mut reader = HandshakeReader::new();
        assert_eq!(reader.push(b"/tmp/torch-shm-dir-abc123/man"), Ok(None));
        let handle = match reader.push(b"ager.sock\nignored").unwrap() {
            Some(Handshake::Ready(handle)) => handle,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(handle.as_str(), "/tmp/torch-shm-dir-abc123/manager.sock");
        assert!(matches!(reader.finish(), Ok(Handshake::Ready(_))));
    }

    #[test]
    fn handles_parse_from_text_as_from_bytes() {
        let text = "/tmp/torch-shm-dir-abc123/manager.sock";
        assert_eq!(
            text.parse::<ManagerHandle>(),
            ManagerHandle::new(text.as_bytes())
        );
        assert_eq!("".parse::<ManagerHandle>(), Err(HandleError::Empty));
        assert_eq!(
            "a\nb".parse::<ManagerHandle>(),
            Err(HandleError::ControlByte { at: 1 })
        );
    }

    #[test]
    fn feeding_reads_ends_in_a_handle_or_says_why_not() {
        let mut reader = HandshakeReader::new();
        assert_eq!(reader.feed(b"/tmp/x/manager"), Ok(None));
        let handle = reader.feed(b".sock\n").unwrap().unwrap();
        assert_eq!(handle.as_str(), "/tmp/x/manager.sock");

        let mut reader = HandshakeReader::new();
        assert_eq!(
            reader.feed(b"ERROR: no room\n"),
            Err(NoHandle::Failed("no room"))
        );
        let mut reader = HandshakeReader::new();
        assert_eq!(
            reader.feed(b""),
            Err(NoHandle::Handshake(HandshakeError::NoOutput))
        );
        let mut reader = HandshakeReader::new();
        assert_eq!(reader.feed(b"/tmp/x"), Ok(None));
        assert_eq!(
            reader.feed(b""),
            Err(NoHandle::Handshake(HandshakeError::Truncated))
        );
    }

    #[test]
    fn reports_manager_errors() {
        assert_eq!(
            parse_line(b"ERROR: could not bind"),
            Ok(Handshake::Failed {
                message: "could not bind"
            })
        );
        assert_eq!(parse_line(b"ERROR"), Ok(Handshake::Failed { message: "" }));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(
            HandshakeReader::new().finish(),
            Err(HandshakeError::NoOutput)
        );
        let mut reader = HandshakeReader::new();
        reader.push(b"/tmp/x").unwrap();
        assert_eq!(reader.finish(), Err(HandshakeError::Truncated));
        assert_eq!(
            parse_line(b""),
            Err(HandshakeError::Handle(HandleError::Empty))
        );
        assert_eq!(
            parse_line(b"/a\0b"),
            Err(HandshakeError::Handle(HandleError::ControlByte { at: 2 }))
        );
        assert_eq!(
            parse_line(b"/\xff"),
            Err(HandshakeError::Handle(HandleError::NotUtf8))
        );
        assert_eq!(
            parse_line(&[b'a'; HANDLE_MAX + 1]),
            Err(HandshakeError::Handle(HandleError::TooLong {
                len: HANDLE_MAX + 1
            }))
        );
        let mut reader = HandshakeReader::new();
        assert_eq!(
            reader.push(&[b'a'; LINE_MAX + 1]),
            Err(HandshakeError::TooLong)
        );
    }

    // Property tests exercise no unsafe code and need the filesystem, which
    // Miri isolates; they run in the normal test pass.
    #[cfg(not(miri))]
    proptest::proptest! {
        #[test]
        fn reader_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8)) {
            let mut reader = HandshakeReader::new();
            for chunk in &chunks {
                if reader.push(chunk).is_err() { break; }
            }
            let _ = reader.finish();
        }
    }
}
