//! The manager's advertisement: which names it takes from a journal.
//!
//! A manager skips a journaled registration of a name outside its prefix
//! (nobody waits for an answer it could refuse), so a client must know the
//! prefixes before it journals: it sends every other name through the socket,
//! where a refusal is answered `NO` before the segment exists. The manager
//! writes the advertisement into header words 4 to 15 before it answers the
//! offer `JR`; the client reads it once that answer arrives.
//!
//! # Layout (bytes of the journal, words 4..16)
//! | bytes | meaning |
//! |---|---|
//! | 16..20 | tag (native-endian `u32`): `0` nothing said, [`ADVERT_EVERY`], or [`ADVERT_PREFIXES`] |
//! | 20..64 | with [`ADVERT_PREFIXES`]: length byte, prefix bytes, length byte (`0`: no second prefix), prefix bytes; zero after |
//!
//! A manager with no prefix accepts every name and says [`ADVERT_EVERY`]. A
//! second prefix that does not fit beside the first (together over 42 bytes)
//! is left out: names under it then go through the socket, where they are
//! answered `OK`, so leaving it out costs speed, never safety. The client
//! trusts nothing it reads here: a tag it does not know, or prefixes that do
//! not parse, read as [`Accepted::Unknown`], and it journals every name, as
//! clients did before managers advertised.

use core::fmt;
use core::sync::atomic::Ordering;

use super::{HEADER_WORDS, Journal};
use crate::name::{NameError, NamePrefix, SegmentName};

/// The word holding the tag.
const TAG_WORD: usize = 4;
/// Bytes after the tag: the prefixes.
const AREA_LEN: usize = (HEADER_WORDS - TAG_WORD - 1) * 4;

/// Tag: the manager takes every name ("LSA*").
pub const ADVERT_EVERY: u32 = 0x2a41_534c;
/// Tag: the manager takes names under the prefixes that follow ("LSP1").
pub const ADVERT_PREFIXES: u32 = 0x3150_534c;

/// Which names a manager takes from a journal, as it advertised them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// It did not say (a manager older than advertisements, or one whose
    /// advertisement does not parse): journal every name.
    Unknown,
    /// Every name.
    Every,
    /// Names under `first` or `second`. Others go through the socket.
    Prefixes {
        /// The manager's prefix.
        first: NamePrefix,
        /// The prefix it accepts beside it, if any (and if it fit).
        second: Option<NamePrefix>,
    },
}

impl Accepted {
    /// What a manager configured with `name_prefix` (`None`: every name) and
    /// `also_prefix` advertises.
    pub fn by_manager(name_prefix: Option<NamePrefix>, also_prefix: Option<NamePrefix>) -> Self {
        match name_prefix {
            None => Self::Every,
            Some(first) => Self::Prefixes {
                first,
                second: also_prefix.filter(|second| fits(&first, second)),
            },
        }
    }

    /// Whether a registration of `name` may go through the journal: the
    /// manager takes it (or did not say which names it takes).
    pub fn journals(&self, name: &SegmentName) -> bool {
        match self {
            Self::Unknown | Self::Every => true,
            Self::Prefixes { first, second } => {
                name.has_prefix(first) || second.is_some_and(|second| name.has_prefix(&second))
            }
        }
    }
}

/// Whether both prefixes fit the area, each after its length byte.
fn fits(first: &NamePrefix, second: &NamePrefix) -> bool {
    2 + first.as_str().len() + second.as_str().len() <= AREA_LEN
}

/// Why a manager's advertisement does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdvertError {
    /// The tag is none of the known ones.
    UnknownTag(u32),
    /// [`ADVERT_PREFIXES`] with no first prefix.
    NoPrefix,
    /// A length byte runs past the advertisement's 44 bytes.
    Overlong {
        /// The length byte.
        len: u8,
    },
    /// A prefix is not a valid prefix.
    BadPrefix(NameError),
}

impl fmt::Display for AdvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownTag(tag) => write!(
                f,
                "the manager's journal advertisement has an unknown tag {tag:#010x}"
            ),
            Self::NoPrefix => {
                f.write_str("the manager's journal advertisement lists prefixes but has none")
            }
            Self::Overlong { len } => write!(
                f,
                "the manager's journal advertisement has a {len}-byte prefix that runs past its end"
            ),
            Self::BadPrefix(err) => write!(
                f,
                "the manager's journal advertisement has an invalid prefix: {err}"
            ),
        }
    }
}

impl core::error::Error for AdvertError {}

impl Journal<'_> {
    /// Manager: says which names it takes, before it answers the offer `JR`.
    /// A second prefix that does not fit is left out (see the module doc).
    pub fn advertise(&self, accepted: &Accepted) {
        let mut area = [0u8; AREA_LEN];
        let tag = match accepted {
            Accepted::Unknown => 0,
            Accepted::Every => ADVERT_EVERY,
            Accepted::Prefixes { first, second } => {
                let mut at = put(&mut area, 0, first);
                if let Some(second) = second.filter(|second| fits(first, second)) {
                    at = put(&mut area, at, &second);
                }
                debug_assert!(at <= AREA_LEN);
                ADVERT_PREFIXES
            }
        };
        for (word, chunk) in self.words[TAG_WORD + 1..HEADER_WORDS]
            .iter()
            .zip(area.chunks_exact(4))
        {
            word.store(
                u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                Ordering::Relaxed,
            );
        }
        // Published by the tag: a client that sees it sees the prefixes.
        self.words[TAG_WORD].store(tag, Ordering::Release);
    }

    /// Client: which names the manager takes, once it answered the offer
    /// `JR`. Nothing said is [`Accepted::Unknown`]; contents that do not
    /// parse are an error, which callers treat as unknown.
    pub fn advertised(&self) -> Result<Accepted, AdvertError> {
        let tag = self.words[TAG_WORD].load(Ordering::Acquire);
        match tag {
            0 => return Ok(Accepted::Unknown),
            ADVERT_EVERY => return Ok(Accepted::Every),
            ADVERT_PREFIXES => {}
            other => return Err(AdvertError::UnknownTag(other)),
        }
        let mut area = [0u8; AREA_LEN];
        for (chunk, word) in area
            .chunks_exact_mut(4)
            .zip(&self.words[TAG_WORD + 1..HEADER_WORDS])
        {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        let (first, at) = take(&area, 0)?;
        let first = first.ok_or(AdvertError::NoPrefix)?;
        let (second, _) = take(&area, at)?;
        Ok(Accepted::Prefixes { first, second })
    }
}

/// Writes `prefix` with its length byte at `at`; returns where the next goes.
/// The caller checked that it fits.
fn put(area: &mut [u8; AREA_LEN], at: usize, prefix: &NamePrefix) -> usize {
    let bytes = prefix.as_str().as_bytes();
    // Fits a byte: at most PREFIX_MAX (24).
    area[at] = bytes.len() as u8;
    area[at + 1..at + 1 + bytes.len()].copy_from_slice(bytes);
    at + 1 + bytes.len()
}

/// Reads the prefix whose length byte is at `at` (`None` for length 0, or
/// for no room left); returns it and where the next begins.
fn take(area: &[u8; AREA_LEN], at: usize) -> Result<(Option<NamePrefix>, usize), AdvertError> {
    let Some(&len) = area.get(at) else {
        return Ok((None, at));
    };
    if len == 0 {
        return Ok((None, at + 1));
    }
    let end = at + 1 + usize::from(len);
    let bytes = area.get(at + 1..end).ok_or(AdvertError::Overlong { len })?;
    let prefix = NamePrefix::new(bytes).map_err(AdvertError::BadPrefix)?;
    Ok((Some(prefix), end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::journal_len;
    use core::sync::atomic::AtomicU32;
    use std::vec::Vec;

    fn words() -> Vec<AtomicU32> {
        (0..journal_len(2) / 4).map(|_| AtomicU32::new(0)).collect()
    }

    fn prefix(text: &str) -> NamePrefix {
        NamePrefix::new(text.as_bytes()).unwrap()
    }

    fn name(text: &str) -> SegmentName {
        SegmentName::new(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_fresh_journal_says_nothing_and_everything_is_journaled() {
        let memory = words();
        let journal = Journal::from_words(&memory).unwrap();
        journal.initialize();
        assert_eq!(journal.advertised(), Ok(Accepted::Unknown));
        assert!(Accepted::Unknown.journals(&name("/anything")));
    }

    #[test]
    fn what_the_manager_advertises_the_client_reads() {
        let memory = words();
        let journal = Journal::from_words(&memory).unwrap();
        journal.initialize();
        for accepted in [
            Accepted::by_manager(None, Some(prefix("/x_"))),
            Accepted::by_manager(Some(NamePrefix::torch()), None),
            Accepted::by_manager(Some(prefix("/mine_")), Some(NamePrefix::torch())),
            Accepted::by_manager(Some(prefix("/")), Some(prefix("/"))),
        ] {
            journal.advertise(&accepted);
            assert_eq!(journal.advertised(), Ok(accepted));
        }
        assert_eq!(
            Accepted::by_manager(None, Some(prefix("/x_"))),
            Accepted::Every
        );
    }

    #[test]
    fn names_outside_the_prefixes_are_not_journaled() {
        let accepted = Accepted::by_manager(Some(prefix("/mine_")), Some(NamePrefix::torch()));
        assert!(accepted.journals(&name("/mine_1_2_3")));
        assert!(accepted.journals(&name("/torch_1_2_3")));
        assert!(!accepted.journals(&name("/other_1_2_3")));
        assert!(!Accepted::by_manager(Some(prefix("/mine_")), None).journals(&name("/torch_1")));
        assert!(Accepted::Every.journals(&name("/other_1_2_3")));
    }

    #[test]
    fn a_second_prefix_that_does_not_fit_is_left_out() {
        let long = prefix("/abcdefghijklmnopqrstuv_");
        let other = prefix("/ABCDEFGHIJKLMNOPQRSTUV_");
        assert_eq!(long.as_str().len(), crate::name::PREFIX_MAX);
        let accepted = Accepted::by_manager(Some(long), Some(other));
        assert_eq!(
            accepted,
            Accepted::Prefixes {
                first: long,
                second: None
            }
        );
        // Written by hand, it is left out when written too.
        let memory = words();
        let journal = Journal::from_words(&memory).unwrap();
        journal.advertise(&Accepted::Prefixes {
            first: long,
            second: Some(other),
        });
        assert_eq!(journal.advertised(), Ok(accepted));
        // Names under it take the socket: still answered, only slower.
        assert!(!accepted.journals(&name("/ABCDEFGHIJKLMNOPQRSTUV_1")));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let memory = words();
        let journal = Journal::from_words(&memory).unwrap();
        memory[TAG_WORD].store(0xdead_beef, Ordering::Relaxed);
        assert_eq!(
            journal.advertised(),
            Err(AdvertError::UnknownTag(0xdead_beef))
        );
        memory[TAG_WORD].store(ADVERT_PREFIXES, Ordering::Relaxed);
        assert_eq!(journal.advertised(), Err(AdvertError::NoPrefix));

        let set = |bytes: &[u8]| {
            let mut area = [0u8; AREA_LEN];
            area[..bytes.len()].copy_from_slice(bytes);
            for (word, chunk) in memory[TAG_WORD + 1..HEADER_WORDS]
                .iter()
                .zip(area.chunks_exact(4))
            {
                word.store(
                    u32::from_ne_bytes(chunk.try_into().unwrap()),
                    Ordering::Relaxed,
                );
            }
        };
        set(&[255]);
        assert_eq!(
            journal.advertised(),
            Err(AdvertError::Overlong { len: 255 })
        );
        set(&[3, b'a', b'b', b'c']);
        assert!(matches!(
            journal.advertised(),
            Err(AdvertError::BadPrefix(_))
        ));
        set(&[2, b'/', b'a', 43]);
        assert_eq!(journal.advertised(), Err(AdvertError::Overlong { len: 43 }));
        // Every byte pattern of the area parses or errs.
        for fill in 0..=255u8 {
            set(&[fill; AREA_LEN]);
            let _ = journal.advertised();
        }
        // A length byte that ends exactly at the end, with no room for a second.
        let mut exact = [b'a'; AREA_LEN];
        exact[0] = (AREA_LEN - 1) as u8;
        exact[1] = b'/';
        set(&exact);
        assert!(matches!(
            journal.advertised(),
            Err(AdvertError::BadPrefix(NameError::TooLong { .. }))
        ));
    }
}
