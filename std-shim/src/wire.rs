//! One client code path over either transport.
//!
//! The client's driver ([`Client`](crate::client::Client)) sees only the
//! [`Transport`](libshm_core::transport::Transport) trait. [`Wire`] is the one
//! transport type the shim's links use: a Unix socket to a manager that any
//! process may share, or the pipes to a private manager. Everything above it
//! (registration, pipelining, recovery) is the same code for both.

use libshm_core::transport::{ErrorKind, Transport, TransportError};
use libshm_pipe::{PipeError, PipeTransport};
use libshm_unix::{SocketError, UnixTransport};

/// How a process reaches its managers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// A Unix socket in a private directory: PyTorch's wire. One manager
    /// serves a family of processes, which share it by handle.
    #[default]
    Unix,
    /// A pair of anonymous pipes to a private manager that lives as long as
    /// this process: no socket file, no filesystem access, nothing to share.
    Pipe,
}

impl TransportKind {
    /// Parses `unix` or `pipe`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "unix" => Some(Self::Unix),
            "pipe" => Some(Self::Pipe),
            _ => None,
        }
    }
}

/// A connection to a manager over either transport.
#[derive(Debug)]
pub(crate) enum Wire {
    Unix(UnixTransport),
    Pipe(PipeTransport),
}

/// What failed on a manager connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The Unix socket failed.
    #[error(transparent)]
    Unix(#[from] SocketError),
    /// The pipes failed.
    #[error(transparent)]
    Pipe(#[from] PipeError),
}

impl TransportError for WireError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unix(err) => err.kind(),
            Self::Pipe(err) => err.kind(),
        }
    }
}

impl Transport for Wire {
    type Error = WireError;

    #[inline]
    fn send_all(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        match self {
            Self::Unix(socket) => socket.send_all(bytes).map_err(WireError::Unix),
            Self::Pipe(pipes) => pipes.send_all(bytes).map_err(WireError::Pipe),
        }
    }

    #[inline]
    fn receive(&mut self, buf: &mut [u8]) -> Result<usize, WireError> {
        match self {
            Self::Unix(socket) => socket.receive(buf).map_err(WireError::Unix),
            Self::Pipe(pipes) => pipes.receive(buf).map_err(WireError::Pipe),
        }
    }

    #[inline]
    fn try_receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, WireError> {
        match self {
            Self::Unix(socket) => socket.try_receive(buf).map_err(WireError::Unix),
            Self::Pipe(pipes) => pipes.try_receive(buf).map_err(WireError::Pipe),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use libshm_core::client::AckMode;
    use libshm_core::name::SegmentName;

    #[test]
    fn transport_kinds_parse() {
        assert_eq!(TransportKind::parse("unix"), Some(TransportKind::Unix));
        assert_eq!(TransportKind::parse("pipe"), Some(TransportKind::Pipe));
        assert_eq!(TransportKind::parse("tcp"), None);
        assert_eq!(TransportKind::default(), TransportKind::Unix);
    }

    #[test]
    fn errors_keep_their_kind_through_the_wire() {
        let closed = WireError::Pipe(PipeError::Closed { op: "poll" });
        assert_eq!(closed.kind(), ErrorKind::Closed);
        assert_eq!(
            closed.to_string(),
            PipeError::Closed { op: "poll" }.to_string()
        );
        let socket = WireError::Unix(SocketError {
            op: "recv",
            errno: rustix::io::Errno::INTR,
        });
        assert_eq!(socket.kind(), ErrorKind::Interrupted);
    }

    #[test]
    fn the_same_client_runs_over_a_pipe_wire() {
        use rustix::pipe::{PipeFlags, pipe_with};
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let manager = std::thread::spawn(move || {
            let mut frame = [0u8; 68];
            let mut got = 0;
            while got < frame.len() {
                got += rustix::io::read(&request_read, &mut frame[got..]).unwrap();
            }
            rustix::io::write(&reply_write, b"OK").unwrap();
            frame
        });
        let pipes = PipeTransport::new(request_write, reply_read, None).unwrap();
        let mut client: Client<Wire, 8> = Client::new(Wire::Pipe(pipes), AckMode::Strict);
        client
            .register(42, SegmentName::new(b"/torch_42_1_0").unwrap())
            .unwrap();
        let frame = manager.join().unwrap();
        assert_eq!(&frame[5..18], b"/torch_42_1_0");
    }
}
