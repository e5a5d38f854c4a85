//! The manager's two-byte reply to a registration.
//!
//! PyTorch's manager answers every registration with `OK` and its client treats
//! anything else as failure. Ours answers `NO` when it refuses a registration
//! (its registry is full): PyTorch's client reports that as an error, ours as
//! [`Reply::Refused`]. Ours also answers `JR` to the journal offer (see
//! [`crate::journal`]), which only our client ever sends. Replies may arrive
//! split across reads.

use core::fmt;

/// The reply to an accepted registration.
pub const ACK: [u8; 2] = *b"OK";

/// The reply to a refused registration.
pub const REFUSAL: [u8; 2] = *b"NO";

/// The reply to an accepted journal offer.
pub const JOURNAL_READY: [u8; 2] = *b"JR";

/// One decoded reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `OK`.
    Accepted,
    /// `NO`.
    Refused,
    /// `JR`.
    JournalReady,
}

/// Two bytes that are not a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadReply(pub [u8; 2]);

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "manager replied {:?} instead of \"OK\"", self.0)
    }
}

impl core::error::Error for BadReply {}

/// Reassembles replies from arbitrary byte chunks.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplyReader {
    half: Option<u8>,
}

impl ReplyReader {
    /// Decodes `bytes`, calling `on_reply` for each complete reply in order.
    /// Stops at the first malformed pair.
    pub fn push(&mut self, bytes: &[u8], mut on_reply: impl FnMut(Reply)) -> Result<(), BadReply> {
        for &byte in bytes {
            let Some(first) = self.half.take() else {
                self.half = Some(byte);
                continue;
            };
            on_reply(match [first, byte] {
                ACK => Reply::Accepted,
                REFUSAL => Reply::Refused,
                JOURNAL_READY => Reply::JournalReady,
                other => return Err(BadReply(other)),
            });
        }
        Ok(())
    }

    /// Whether half a reply is buffered.
    pub fn is_mid_reply(&self) -> bool {
        self.half.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn decodes_split_and_batched_replies() {
        let mut reader = ReplyReader::default();
        let mut seen = Vec::new();
        reader.push(b"OKN", |r| seen.push(r)).unwrap();
        assert!(reader.is_mid_reply());
        reader.push(b"OO", |r| seen.push(r)).unwrap();
        reader.push(b"K", |r| seen.push(r)).unwrap();
        assert_eq!(seen, [Reply::Accepted, Reply::Refused, Reply::Accepted]);
        assert!(!reader.is_mid_reply());
    }

    #[test]
    fn rejects_anything_else() {
        let mut reader = ReplyReader::default();
        assert_eq!(reader.push(b"Ok", |_| {}), Err(BadReply(*b"Ok")));
    }
}
