//! A raw client whose frames go through a registration journal: the
//! memory offered with the socket's `SETUP` frame, frames committed to it by
//! hand, the doorbell rung by hand.

use super::segment_name;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use libshm::protocol::frame::Frame;
use libshm::protocol::journal::{self, JournalMemory};
use libshm_unix::{SharedJournal, UnixTransport};

/// A raw client whose frames go through a journal the manager took.
pub struct JournalClient {
    pub stream: UnixStream,
    pub memory: SharedJournal,
}

impl JournalClient {
    /// Connects and offers a journal of `capacity` frames; panics unless the
    /// manager answers `JR`.
    pub fn attach(handle: &str, capacity: usize) -> Self {
        let memory = SharedJournal::create(capacity).unwrap();
        let mut stream = UnixStream::connect(handle).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let pid = std::process::id() as i32;
        let mut offer = UnixTransport::from_fd(stream.try_clone().unwrap().into());
        offer
            .send_with_fd(&Frame::register(pid, journal::SETUP).encode(), memory.fd())
            .unwrap();
        drop(offer);
        let mut reply = [0u8; 2];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"JR", "the manager took the journal");
        Self { stream, memory }
    }

    /// Commits a registration of `name` by `pid`.
    pub fn register(&self, pid: i32, name: &str) {
        self.append(Frame::register(pid, segment_name(name)));
    }

    /// Commits a release of `name` by `pid`.
    pub fn release(&self, pid: i32, name: &str) {
        self.append(Frame::release(pid, segment_name(name)));
    }

    pub fn append(&self, frame: Frame) {
        self.memory
            .journal()
            .append(&frame.to_raw())
            .expect("room in the journal");
    }

    /// Rings the doorbell; the answer (`OK` once the manager read the ring),
    /// or `None` if it closed the connection instead.
    pub fn ring(&mut self) -> Option<[u8; 2]> {
        let pid = std::process::id() as i32;
        if self
            .stream
            .write_all(&Frame::register(pid, journal::DOORBELL).encode())
            .is_err()
        {
            return None;
        }
        let mut reply = [0u8; 2];
        match self.stream.read_exact(&mut reply) {
            Ok(()) => Some(reply),
            Err(_) => None,
        }
    }

    /// Overwrites word `index` of the ring's header, as a buggy or hostile
    /// client may (the memory is shared and writable).
    pub fn poke_word(&self, index: u64, value: u32) {
        let file = std::fs::File::from(self.memory.fd().try_clone_to_owned().unwrap());
        file.write_all_at(&value.to_ne_bytes(), index * 4).unwrap();
    }

    /// Whether the manager closed the connection (end of file within `timeout`).
    pub fn is_closed_by_peer(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
    }
}
