//! The one seam between the protocol and the OS: a byte stream to a manager.
//!
//! Implementations: `libshm-unix` (a Unix stream socket, the PyTorch-compatible
//! one), `libshm-pipe` (a pair of anonymous pipes to a private manager),
//! [`crate::loopback`] (an in-process manager, for zero-dependency tests) and
//! [`crate::fault`] (middleware that injects short reads, split writes, `EINTR`
//! and end-of-file into any of them).

use core::fmt;

/// What a caller can do about a transport error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A signal interrupted the call; retrying is correct.
    Interrupted,
    /// The peer did not answer in time; the stream state is unknown.
    TimedOut,
    /// The peer is gone (reset, broken pipe).
    Closed,
    /// Anything else; the stream is unusable.
    Other,
}

/// Errors a [`Transport`] reports, classifiable without knowing their type.
pub trait TransportError: fmt::Debug + fmt::Display {
    /// How the caller should react.
    fn kind(&self) -> ErrorKind;
}

/// A reliable, ordered byte stream from a client to its manager.
pub trait Transport {
    /// The transport's own error.
    type Error: TransportError;

    /// Writes every byte of `bytes`, or fails. After a failure the stream may
    /// hold part of `bytes`, so callers treat it as broken. Implementations
    /// retry short writes and `EINTR` themselves, because a frame is only
    /// meaningful whole.
    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Waits for at least one byte and returns how many were read into `buf`;
    /// `Ok(0)` means the manager closed the stream. May fail with
    /// [`ErrorKind::Interrupted`], which the caller retries.
    fn receive(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;

    /// Like [`Transport::receive`] but never waits: `Ok(None)` when nothing is
    /// buffered right now. Lets a pipelined client collect replies for free.
    fn try_receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    type Error = T::Error;

    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        (**self).send_all(bytes)
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        (**self).receive(buf)
    }

    fn try_receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        (**self).try_receive(buf)
    }
}
