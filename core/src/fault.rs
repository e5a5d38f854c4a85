//! A fault-injecting [`Transport`] wrapper, in the spirit of smoltcp's
//! `FaultInjector`: it makes the rare paths (split writes, short reads, `EINTR`,
//! end of file mid-reply) happen on every call, over any transport.

use core::fmt;

use crate::transport::{ErrorKind, Transport, TransportError};

/// Which faults to inject. All off by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Split every write into chunks of at most this many bytes, and return at
    /// most this many bytes per read.
    pub max_chunk: Option<usize>,
    /// Fail every n-th receive with [`ErrorKind::Interrupted`] before reading.
    pub interrupt_every: Option<u32>,
    /// Report end of file once this many bytes have been received in total.
    pub eof_after: Option<usize>,
}

/// Wraps a transport and injects [`Faults`].
#[derive(Debug)]
pub struct FaultInjector<T> {
    inner: T,
    faults: Faults,
    receives: u32,
    received: usize,
}

/// An injected fault, or the inner transport's own error.
#[derive(Debug)]
pub enum FaultError<E> {
    /// A fault the injector made up.
    Injected(ErrorKind),
    /// The wrapped transport failed.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for FaultError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Injected(kind) => write!(f, "injected fault: {kind:?}"),
            Self::Inner(err) => err.fmt(f),
        }
    }
}

impl<E: TransportError> TransportError for FaultError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Injected(kind) => *kind,
            Self::Inner(err) => err.kind(),
        }
    }
}

impl<T> FaultInjector<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, faults: Faults) -> Self {
        Self {
            inner,
            faults,
            receives: 0,
            received: 0,
        }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutably.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    fn read_limit(&self, wanted: usize) -> Option<usize> {
        let mut limit = wanted;
        if let Some(chunk) = self.faults.max_chunk {
            limit = limit.min(chunk.max(1));
        }
        if let Some(eof) = self.faults.eof_after {
            let left = eof.saturating_sub(self.received);
            if left == 0 {
                return None;
            }
            limit = limit.min(left);
        }
        Some(limit)
    }

    fn interrupt_now(&mut self) -> bool {
        self.receives = self.receives.wrapping_add(1);
        matches!(self.faults.interrupt_every, Some(n) if n > 0 && self.receives.is_multiple_of(n))
    }
}

impl<T: Transport> Transport for FaultInjector<T> {
    type Error = FaultError<T::Error>;

    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        let chunk = self.faults.max_chunk.unwrap_or(usize::MAX).max(1);
        for piece in bytes.chunks(chunk) {
            self.inner.send_all(piece).map_err(FaultError::Inner)?;
        }
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if self.interrupt_now() {
            return Err(FaultError::Injected(ErrorKind::Interrupted));
        }
        let Some(limit) = self.read_limit(buf.len()) else {
            return Ok(0);
        };
        let n = self
            .inner
            .receive(&mut buf[..limit])
            .map_err(FaultError::Inner)?;
        self.received += n;
        Ok(n)
    }

    fn try_receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        if self.interrupt_now() {
            return Err(FaultError::Injected(ErrorKind::Interrupted));
        }
        let Some(limit) = self.read_limit(buf.len()) else {
            return Ok(Some(0));
        };
        let n = self
            .inner
            .try_receive(&mut buf[..limit])
            .map_err(FaultError::Inner)?;
        self.received += n.unwrap_or(0);
        Ok(n)
    }
}
