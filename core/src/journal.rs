//! The registration journal: frames a client hands its manager through shared
//! memory instead of the socket.
//!
//! Writing a frame into the socket costs a system call and, on most machines,
//! waking the manager, which together cost more than a quarter of a small
//! allocation. The manager does not need registrations the moment they
//! happen: only before it decides to reap, and when a client dies. So a client
//! of our manager appends its frames to a ring in a sealed memory file it
//! shares with the manager, and the manager reads the ring when the client
//! rings the doorbell (the ring is half full), when the connection ends, and
//! before every decision that depends on who holds what. A frame committed to
//! the ring is seen by the manager even if the client dies the next instant,
//! which is the same guarantee a written socket frame gives.
//!
//! The setup and the doorbell travel as ordinary registration frames with
//! reserved names, so PyTorch's manager, which knows nothing of journals,
//! simply answers `OK` and the client keeps using the socket.
//!
//! # Layout (all native-endian `u32` words, accessed atomically)
//! | word | meaning |
//! |---|---|
//! | 0 | [`MAGIC`] |
//! | 1 | capacity in frames |
//! | 2 | frames committed by the client (wrapping counter) |
//! | 3 | frames consumed by the manager (wrapping counter) |
//! | 4 | the manager's [advertisement](advert) tag: `0` nothing said, [`ADVERT_EVERY`], [`ADVERT_PREFIXES`] |
//! | 5..16 | with [`ADVERT_PREFIXES`]: its prefixes, each a length byte and the bytes (44 bytes, zero after) |
//! | 16.. | `capacity` slots of 17 words (one 68-byte frame each) |
//!
//! Only the client writes words 0 to 2 and the slots; only the manager writes
//! words 3 to 15. The manager trusts nothing it reads: counters out of range
//! and frames that do not parse close the connection. The client trusts
//! nothing either: an advertisement that does not parse says nothing.
//!
//! # The protocol, all of it here
//! - Offer: the client registers [`SETUP`] with the memory attached (a file
//!   descriptor, over the Unix socket). Our manager answers
//!   [`JOURNAL_READY`] if it took the memory, `NO` if not; PyTorch's answers
//!   `OK`. Any answer but `JR` is a decline, and the client releases
//!   [`SETUP`] again so a manager that stored it forgets it.
//! - Advertisement: before it answers `JR`, the manager writes which names it
//!   takes into words 4 to 15 ([`Control::accept_offer`]); after `JR`, the
//!   client reads them ([`Journal::advertised`]). A manager skips a journaled
//!   registration it would refuse (nobody waits to hear `NO`), so the client
//!   sends those names through the socket, where the refusal is answered
//!   before the segment exists; nothing said, or nothing readable, means
//!   every name is journaled.
//! - Append: the client commits frames to the ring ([`Journal::append`]),
//!   registrations and releases of the names the manager advertised; the
//!   rest take the socket, so each name keeps to one route and its frames
//!   stay in order.
//! - Doorbell: registering [`DOORBELL`] asks the manager to read the ring now;
//!   it answers `OK` once it has. The client rings when the ring is half full,
//!   when it is full (and waits), and when it settles.
//! - Drain: the manager reads the ring ([`Journal::drain_up_to`]) on the
//!   doorbell, before acting on the connection's end, and before every
//!   decision that depends on who holds what.
//!
//! The client's half is the session's route ([`crate::client::ClientSession`]
//! calls it); the manager's half is [`Control`] and
//! [`crate::manager::Manager::read_journal`]. Memory is owned by whoever
//! reads or writes it ([`JournalMemory`]), and every [`Journal`] view borrows
//! it, so no view outlives its memory.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::ack::{ACK, JOURNAL_READY, REFUSAL, Reply};
use crate::frame::{AllocInfo, FRAME_LEN, Frame, FrameKind};
use crate::name::SegmentName;

pub mod advert;

pub use advert::{ADVERT_EVERY, ADVERT_PREFIXES, Accepted, AdvertError};

/// "LSJ1".
pub const MAGIC: u32 = 0x314a_534c;

/// Words before the first slot.
const HEADER_WORDS: usize = 16;
/// Words per slot.
const SLOT_WORDS: usize = FRAME_LEN / 4;
const MAGIC_WORD: usize = 0;
const CAPACITY_WORD: usize = 1;
const COMMITTED_WORD: usize = 2;
const CONSUMED_WORD: usize = 3;

/// The largest ring a manager accepts (keeps a hostile size from costing it memory).
pub const MAX_CAPACITY: usize = 1 << 16;

/// The name of the registration that offers a journal (with the memory file
/// attached to it). Our manager answers [`crate::ack::JOURNAL_READY`].
pub const SETUP_NAME: &str = "/libshm_journal_v1";

/// The name of the registration that asks the manager to read the ring now;
/// answered `OK` once it has.
pub const DOORBELL_NAME: &str = "/libshm_doorbell_v1";

/// [`SETUP_NAME`] as a name.
pub const SETUP: SegmentName = SegmentName::from_known(SETUP_NAME);

/// [`DOORBELL_NAME`] as a name.
pub const DOORBELL: SegmentName = SegmentName::from_known(DOORBELL_NAME);

/// Bytes of a journal with room for `capacity` frames.
pub const fn journal_len(capacity: usize) -> usize {
    (HEADER_WORDS + capacity * SLOT_WORDS) * 4
}

/// Whether `name` is reserved for the protocol (the journal's names, and
/// [`status`](crate::status) requests): never a segment.
pub fn is_reserved(name: &SegmentName) -> bool {
    *name == SETUP || *name == DOORBELL || crate::status::request(name).is_some()
}

/// Why memory is not a usable journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// Its length is not the header plus a whole number of slots, or the
    /// capacity is zero or over [`MAX_CAPACITY`].
    BadLength {
        /// The length in bytes.
        len: usize,
    },
    /// Not aligned for `u32` words.
    Misaligned,
    /// The header does not carry [`MAGIC`] and the capacity its length implies.
    BadHeader,
    /// The counters claim more unread frames than the ring holds.
    Overrun {
        /// Frames claimed unread.
        unread: u32,
    },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength { len } => {
                write!(f, "journal of {len} bytes does not have a valid size")
            }
            Self::Misaligned => f.write_str("journal memory is not 4-byte aligned"),
            Self::BadHeader => f.write_str("journal header is missing or inconsistent"),
            Self::Overrun { unread } => {
                write!(
                    f,
                    "journal claims {unread} unread frames, more than it holds"
                )
            }
        }
    }
}

impl core::error::Error for JournalError {}

/// The ring is full: the manager must read it before more frames fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Memory that holds a journal, owned by the side that uses it (the client's
/// session owns its journal's memory). Views are handed out per call and
/// borrow the memory, so none outlives it.
pub trait JournalMemory {
    /// The journal in this memory.
    fn journal(&self) -> Journal<'_>;
}

impl JournalMemory for Journal<'_> {
    fn journal(&self) -> Journal<'_> {
        *self
    }
}

/// The memory of a session that never offers a journal (PyTorch's wire,
/// pipes): it has no values.
#[derive(Debug)]
pub enum NoJournal {}

impl JournalMemory for NoJournal {
    fn journal(&self) -> Journal<'_> {
        match *self {}
    }
}

/// A frame with one of the journal's names, as the manager reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// The client offers its journal (the memory came with the frame).
    /// Answer with [`Control::accept_offer`].
    Offer,
    /// Read the client's journal now, then answer `OK`.
    Doorbell,
    /// A release of a journal name: a client taking back the offer a manager
    /// answered `OK`. Nothing to do, and no answer.
    TakeBack,
}

impl Control {
    /// What `frame` asks of the journal protocol; `None` if it carries no
    /// journal name.
    pub fn of(frame: &Frame) -> Option<Self> {
        if frame.name != SETUP && frame.name != DOORBELL {
            return None;
        }
        Some(match frame.kind {
            FrameKind::Release => Self::TakeBack,
            FrameKind::Register if frame.name == SETUP => Self::Offer,
            FrameKind::Register => Self::Doorbell,
        })
    }

    /// The answer to an offer: [`JOURNAL_READY`] once the journal is
    /// attached, `NO` if it was not.
    fn offer_reply(attached: bool) -> [u8; 2] {
        if attached { JOURNAL_READY } else { REFUSAL }
    }

    /// Answers an offer: with the journal attached, first tells the client
    /// which names the manager takes (`accepted`, see [`advert`]), then
    /// [`JOURNAL_READY`]; `NO` if nothing was attached.
    pub fn accept_offer(attached: Option<Journal<'_>>, accepted: &Accepted) -> [u8; 2] {
        if let Some(journal) = attached {
            journal.advertise(accepted);
        }
        Self::offer_reply(attached.is_some())
    }

    /// The answer to a doorbell, once the journal has been read.
    pub const DOORBELL_REPLY: [u8; 2] = ACK;
}

/// How a client's frames reach its manager: the client's half of the
/// journal protocol. [`crate::client::ClientSession`] holds one and calls its
/// methods.
#[derive(Debug)]
pub(crate) struct Route<M> {
    state: RouteState<M>,
}

#[derive(Debug)]
enum RouteState<M> {
    /// Through the socket: no journal, or the manager declined it.
    Socket,
    /// Through the socket while the offer of `M` awaits its answer.
    Offered(M),
    /// Through the journal in `memory`, for the names the manager takes.
    Journal {
        memory: M,
        /// Which names the manager said it takes.
        accepted: Accepted,
        /// A doorbell is written and not yet answered (so it is in the
        /// session's list of frames awaiting an answer).
        rung: bool,
    },
}

/// What a reply to one of the client's frames means to the journal protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// It answered the offer or the doorbell: the protocol took it.
    Taken,
    /// `JR` to anything but the offer: the manager broke the protocol.
    Misplaced,
    /// An ordinary answer to a registration.
    Ordinary,
}

/// Where a frame the client appended stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Committed.
    Committed,
    /// Committed, and the ring is half full: ring the doorbell.
    HalfFull,
    /// Not committed: the ring is full. Ring the doorbell, wait for an
    /// answer, and append again.
    Full,
}

impl<M: JournalMemory> Route<M> {
    /// Frames go through the socket.
    pub(crate) fn socket() -> Self {
        Self {
            state: RouteState::Socket,
        }
    }

    /// Whether frames go through a journal.
    pub(crate) fn is_journal(&self) -> bool {
        matches!(self.state, RouteState::Journal { .. })
    }

    /// The journal frames go through, once the manager accepted it.
    pub(crate) fn journal(&self) -> Option<Journal<'_>> {
        match &self.state {
            RouteState::Journal { memory, .. } => Some(memory.journal()),
            _ => None,
        }
    }

    /// Whether frames for `name` go through the journal: there is one, and
    /// the manager takes `name` from it (others take the socket, where a
    /// refusal is answered).
    pub(crate) fn journals(&self, name: &SegmentName) -> bool {
        match &self.state {
            RouteState::Journal { accepted, .. } => accepted.journals(name),
            _ => false,
        }
    }

    /// The memory on offer, while its answer is awaited.
    pub(crate) fn offered(&self) -> Option<&M> {
        match &self.state {
            RouteState::Offered(memory) => Some(memory),
            _ => None,
        }
    }

    /// Starts offering `memory`: writes an empty ring's header into it. Gives
    /// the memory back if frames already take another route (a journal, or
    /// an offer in flight).
    pub(crate) fn offer(&mut self, memory: M) -> Result<(), M> {
        if !matches!(self.state, RouteState::Socket) {
            return Err(memory);
        }
        memory.journal().initialize();
        self.state = RouteState::Offered(memory);
        Ok(())
    }

    /// The frame that offers the journal; the memory travels with it.
    pub(crate) fn offer_frame(pid: i32) -> Frame {
        Frame::register(pid, SETUP)
    }

    /// The offer is off (the operation failed before its answer came):
    /// frames stay on the socket, and the memory is dropped.
    pub(crate) fn withdraw(&mut self) {
        if let RouteState::Offered(_) = self.state {
            self.state = RouteState::Socket;
        }
    }

    /// The release that takes a declined offer back.
    pub(crate) fn take_back(pid: i32) -> Frame {
        Frame::release(pid, SETUP)
    }

    /// The manager answered `reply` to the client's frame for `name`.
    pub(crate) fn answer(&mut self, name: &SegmentName, reply: Reply) -> Answer {
        if *name == SETUP {
            // Any answer to the offer is its answer: `JR` accepts, anything
            // else (PyTorch's `OK`, our `NO`) declines.
            let state = core::mem::replace(&mut self.state, RouteState::Socket);
            self.state = match (state, reply) {
                (RouteState::Offered(memory), Reply::JournalReady) => {
                    // A manager that wrote garbage said nothing: journal
                    // every name, as before managers advertised.
                    let accepted = memory.journal().advertised().unwrap_or(Accepted::Unknown);
                    RouteState::Journal {
                        memory,
                        accepted,
                        rung: false,
                    }
                }
                (RouteState::Offered(_), _) => RouteState::Socket,
                (other, _) => other,
            };
            return Answer::Taken;
        }
        if reply == Reply::JournalReady {
            return Answer::Misplaced;
        }
        if *name == DOORBELL {
            if let RouteState::Journal { rung, .. } = &mut self.state {
                *rung = false;
            }
            if reply == Reply::Accepted {
                return Answer::Taken;
            }
        }
        Answer::Ordinary
    }

    /// Commits `frame` to the journal.
    pub(crate) fn append(&self, frame: &Frame) -> Result<Appended, JournalError> {
        let RouteState::Journal { memory, .. } = &self.state else {
            // Never: sessions append only while a journal is attached, and
            // nothing detaches one.
            return Err(JournalError::BadHeader);
        };
        let journal = memory.journal();
        if journal.append(&frame.to_raw()).is_err() {
            return Ok(Appended::Full);
        }
        if journal.unread()? * 2 >= journal.capacity() {
            Ok(Appended::HalfFull)
        } else {
            Ok(Appended::Committed)
        }
    }

    /// The doorbell frame to write now, unless one is already awaiting its
    /// answer. The caller puts [`DOORBELL`] among the frames awaiting an
    /// answer.
    pub(crate) fn ring(&mut self, pid: i32) -> Option<Frame> {
        match &mut self.state {
            RouteState::Journal {
                rung: rung @ false, ..
            } => {
                *rung = true;
                Some(Frame::register(pid, DOORBELL))
            }
            _ => None,
        }
    }
}

/// A view of journal memory shared with another process.
#[derive(Clone, Copy)]
pub struct Journal<'a> {
    words: &'a [AtomicU32],
    capacity: u32,
}

impl<'a> Journal<'a> {
    /// A journal over words the caller owns (tests, in-process managers).
    pub fn from_words(words: &'a [AtomicU32]) -> Result<Self, JournalError> {
        let len = words
            .len()
            .checked_mul(4)
            .ok_or(JournalError::BadLength { len: usize::MAX })?;
        let slots = words
            .len()
            .checked_sub(HEADER_WORDS)
            .ok_or(JournalError::BadLength { len })?;
        if slots == 0 || !slots.is_multiple_of(SLOT_WORDS) || slots / SLOT_WORDS > MAX_CAPACITY {
            return Err(JournalError::BadLength { len });
        }
        // Fits: at most MAX_CAPACITY (65536).
        let capacity = (slots / SLOT_WORDS) as u32;
        Ok(Self { words, capacity })
    }

    /// A journal over mapped shared memory.
    ///
    /// # Safety
    /// `memory` must point to `len` bytes that stay mapped, readable and
    /// writable for `'a`. Other processes may write them at any time; this view
    /// only ever accesses them atomically, so their writes cannot make our reads
    /// undefined, only wrong, and wrong contents are detected and refused.
    pub unsafe fn from_raw(memory: NonNull<u8>, len: usize) -> Result<Self, JournalError> {
        if memory.as_ptr().align_offset(4) != 0 {
            return Err(JournalError::Misaligned);
        }
        // SAFETY: aligned for AtomicU32 (checked above); the caller guarantees
        // `len` valid bytes for 'a, of which len / 4 whole words are used.
        // AtomicU32 has the size and alignment of u32 and is always accessed
        // atomically through this slice.
        let words =
            unsafe { core::slice::from_raw_parts(memory.as_ptr().cast::<AtomicU32>(), len / 4) };
        if !len.is_multiple_of(4) {
            return Err(JournalError::BadLength { len });
        }
        Self::from_words(words)
    }

    /// Frames the ring holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The client's first step: writes the header of an empty ring.
    pub fn initialize(&self) {
        for word in &self.words[..HEADER_WORDS] {
            word.store(0, Ordering::Relaxed);
        }
        self.words[CAPACITY_WORD].store(self.capacity, Ordering::Relaxed);
        self.words[MAGIC_WORD].store(MAGIC, Ordering::Release);
    }

    /// The manager's first step: checks the header the client wrote.
    pub fn validate(&self) -> Result<(), JournalError> {
        let magic = self.words[MAGIC_WORD].load(Ordering::Acquire);
        let capacity = self.words[CAPACITY_WORD].load(Ordering::Relaxed);
        if magic != MAGIC || capacity != self.capacity {
            return Err(JournalError::BadHeader);
        }
        self.unread().map(drop)
    }

    /// Frames committed and not yet consumed.
    pub fn unread(&self) -> Result<u32, JournalError> {
        let committed = self.words[COMMITTED_WORD].load(Ordering::Acquire);
        let consumed = self.words[CONSUMED_WORD].load(Ordering::Acquire);
        let unread = committed.wrapping_sub(consumed);
        if unread > self.capacity {
            return Err(JournalError::Overrun { unread });
        }
        Ok(unread)
    }

    /// Client: appends a frame and commits it. Once this returns, a manager
    /// that reads the ring sees the frame, whatever happens to the client.
    pub fn append(&self, frame: &AllocInfo) -> Result<(), Full> {
        let committed = self.words[COMMITTED_WORD].load(Ordering::Relaxed);
        let consumed = self.words[CONSUMED_WORD].load(Ordering::Acquire);
        if committed.wrapping_sub(consumed) >= self.capacity {
            return Err(Full);
        }
        let slot = self.slot(committed);
        let bytes: &[u8; FRAME_LEN] = bytemuck::cast_ref(frame);
        for (word, chunk) in slot.iter().zip(bytes.chunks_exact(4)) {
            word.store(
                u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                Ordering::Relaxed,
            );
        }
        self.words[COMMITTED_WORD].store(committed.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Manager: hands every committed, unread frame to `each`, oldest first,
    /// then marks them consumed. Returns how many there were.
    pub fn drain(&self, each: impl FnMut([u8; FRAME_LEN])) -> Result<u32, JournalError> {
        self.drain_up_to(u32::MAX, each)
    }

    /// Like [`Journal::drain`], reading at most `max` frames, so that one
    /// client refilling its journal cannot keep the reader from others.
    /// Returns how many it read; the rest stays for the next call.
    pub fn drain_up_to(
        &self,
        max: u32,
        mut each: impl FnMut([u8; FRAME_LEN]),
    ) -> Result<u32, JournalError> {
        let committed = self.words[COMMITTED_WORD].load(Ordering::Acquire);
        let consumed = self.words[CONSUMED_WORD].load(Ordering::Relaxed);
        let unread = committed.wrapping_sub(consumed);
        if unread > self.capacity {
            return Err(JournalError::Overrun { unread });
        }
        let read = unread.min(max);
        for k in 0..read {
            let mut bytes = [0u8; FRAME_LEN];
            for (chunk, word) in bytes
                .chunks_exact_mut(4)
                .zip(self.slot(consumed.wrapping_add(k)))
            {
                chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
            }
            each(bytes);
        }
        self.words[CONSUMED_WORD].store(consumed.wrapping_add(read), Ordering::Release);
        Ok(read)
    }

    fn slot(&self, index: u32) -> &'a [AtomicU32] {
        let start = HEADER_WORDS + (index % self.capacity) as usize * SLOT_WORDS;
        &self.words[start..start + SLOT_WORDS]
    }
}

impl fmt::Debug for Journal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("capacity", &self.capacity)
            .field("unread", &self.unread())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use std::sync::Arc;
    use std::vec::Vec;

    fn words(capacity: usize) -> Vec<AtomicU32> {
        (0..journal_len(capacity) / 4)
            .map(|_| AtomicU32::new(0))
            .collect()
    }

    fn frame(i: u64) -> AllocInfo {
        let name = SegmentName::generate(&crate::name::NamePrefix::torch(), 1, 2, i).unwrap();
        Frame::register(1, name).to_raw()
    }

    #[test]
    fn reserved_names_are_valid_names() {
        assert_eq!(SegmentName::new(SETUP_NAME.as_bytes()), Ok(SETUP));
        assert_eq!(SegmentName::new(DOORBELL_NAME.as_bytes()), Ok(DOORBELL));
        assert!(is_reserved(&SETUP) && is_reserved(&DOORBELL));
        assert!(!is_reserved(&SegmentName::new(b"/torch_1_2_3").unwrap()));
    }

    #[test]
    fn control_frames_are_told_apart() {
        assert_eq!(
            Control::of(&Frame::register(1, SETUP)),
            Some(Control::Offer)
        );
        assert_eq!(
            Control::of(&Frame::register(1, DOORBELL)),
            Some(Control::Doorbell)
        );
        for name in [SETUP, DOORBELL] {
            assert_eq!(
                Control::of(&Frame::release(1, name)),
                Some(Control::TakeBack)
            );
        }
        let ordinary = SegmentName::new(b"/torch_1_2_3").unwrap();
        assert_eq!(Control::of(&Frame::register(1, ordinary)), None);
        assert_eq!(
            Control::of(&Frame::register(1, crate::status::SUMMARY)),
            None
        );
        assert_eq!(Control::offer_reply(true), JOURNAL_READY);
        assert_eq!(Control::offer_reply(false), REFUSAL);
    }

    #[test]
    fn frames_come_out_in_order_and_the_ring_wraps() {
        let memory = words(4);
        let client = Journal::from_words(&memory).unwrap();
        client.initialize();
        let manager = Journal::from_words(&memory).unwrap();
        manager.validate().unwrap();
        let mut seen = Vec::new();
        for round in 0..5u64 {
            for k in 0..3 {
                client.append(&frame(round * 3 + k)).unwrap();
            }
            manager
                .drain(|bytes| seen.push(Frame::parse(&bytes).unwrap()))
                .unwrap();
        }
        let expected: Vec<Frame> = (0..15)
            .map(|i| Frame::from_raw(&frame(i)).unwrap())
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_bounded_drain_leaves_the_rest_for_later() {
        let memory = words(4);
        let journal = Journal::from_words(&memory).unwrap();
        journal.initialize();
        for i in 0..3 {
            journal.append(&frame(i)).unwrap();
        }
        let mut seen = Vec::new();
        assert_eq!(journal.drain_up_to(2, |b| seen.push(b)), Ok(2));
        assert_eq!(journal.unread(), Ok(1));
        assert_eq!(journal.drain_up_to(2, |b| seen.push(b)), Ok(1));
        let expected: Vec<[u8; FRAME_LEN]> = (0..3).map(|i| bytemuck::cast(frame(i))).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_full_ring_refuses_until_drained() {
        let memory = words(2);
        let journal = Journal::from_words(&memory).unwrap();
        journal.initialize();
        journal.append(&frame(0)).unwrap();
        journal.append(&frame(1)).unwrap();
        assert_eq!(journal.append(&frame(2)), Err(Full));
        assert_eq!(journal.drain(|_| {}), Ok(2));
        journal.append(&frame(2)).unwrap();
    }

    #[test]
    fn hostile_contents_are_refused() {
        assert!(matches!(
            Journal::from_words(&words(0)),
            Err(JournalError::BadLength { .. })
        ));
        let mut odd = words(1);
        odd.push(AtomicU32::new(0));
        assert!(matches!(
            Journal::from_words(&odd),
            Err(JournalError::BadLength { .. })
        ));

        let memory = words(4);
        let journal = Journal::from_words(&memory).unwrap();
        assert_eq!(
            journal.validate(),
            Err(JournalError::BadHeader),
            "never initialized"
        );
        journal.initialize();
        memory[CAPACITY_WORD].store(9, Ordering::Relaxed);
        assert_eq!(
            journal.validate(),
            Err(JournalError::BadHeader),
            "capacity lies"
        );
        journal.initialize();
        memory[COMMITTED_WORD].store(1_000, Ordering::Relaxed);
        assert_eq!(
            journal.drain(|_| panic!("nothing may be read")),
            Err(JournalError::Overrun { unread: 1_000 })
        );
    }

    #[test]
    fn raw_memory_round_trip() {
        let mut memory = words(8);
        let len = memory.len() * 4;
        let ptr = NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `memory` outlives `journal` and is only accessed atomically.
        let journal = unsafe { Journal::from_raw(ptr, len) }.unwrap();
        journal.initialize();
        journal.append(&frame(7)).unwrap();
        let mut got = None;
        journal
            .drain(|bytes| got = Some(Frame::parse(&bytes).unwrap()))
            .unwrap();
        assert_eq!(got, Frame::from_raw(&frame(7)).ok());
        // SAFETY: as above; one byte in, so misaligned, which must be refused.
        let misaligned = unsafe { Journal::from_raw(ptr.add(1), len - 4) };
        assert_eq!(misaligned.unwrap_err(), JournalError::Misaligned);
    }

    #[test]
    fn a_writer_and_a_reader_in_parallel_lose_nothing() {
        let memory: Arc<Vec<AtomicU32>> = Arc::new(words(8));
        Journal::from_words(&memory).unwrap().initialize();
        let total = if cfg!(miri) { 40 } else { 20_000 };
        let writer = {
            let memory = Arc::clone(&memory);
            std::thread::spawn(move || {
                let journal = Journal::from_words(&memory).unwrap();
                let mut i = 0;
                while i < total {
                    if journal.append(&frame(i)).is_ok() {
                        i += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let journal = Journal::from_words(&memory).unwrap();
        let mut next = 0u64;
        while next < total {
            journal
                .drain(|bytes| {
                    assert_eq!(Frame::parse(&bytes), Frame::from_raw(&frame(next)));
                    next += 1;
                })
                .unwrap();
            std::thread::yield_now();
        }
        writer.join().unwrap();
    }
}
