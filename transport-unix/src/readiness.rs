//! Which descriptors are ready: `epoll`, so that a round costs what is ready,
//! not what is open.
//!
//! With `poll`, every round hands the kernel every descriptor: ten thousand
//! idle connections (anyone may open them) would make each other client's
//! round trip milliseconds long. Registrations here are level-triggered, so
//! what a bounded round leaves unread is reported again, and the kernel
//! requeues what it reported behind what it did not: nobody starves.

use std::os::fd::{AsFd, OwnedFd};

use libshm_core::manager::ConnId;
use rustix::buffer::spare_capacity;
use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;

/// Events taken per wait; level triggering reports the rest next time.
pub(crate) const EVENTS_PER_WAIT: usize = 1024;

const LISTENER_TAG: u64 = 1 << 63;
const PID_TAG: u64 = 1 << 62;

/// What a ready descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The listening socket.
    Listener,
    /// A client's connection.
    Client(ConnId),
    /// A watched process's pidfd: it ended.
    Pid(i32),
}

impl Source {
    fn data(self) -> EventData {
        EventData::new_u64(match self {
            Self::Listener => LISTENER_TAG,
            Self::Client(id) => id.0 & !(LISTENER_TAG | PID_TAG),
            Self::Pid(pid) => PID_TAG | u64::from(pid as u32),
        })
    }

    fn from_data(data: u64) -> Self {
        if data & LISTENER_TAG != 0 {
            Self::Listener
        } else if data & PID_TAG != 0 {
            Self::Pid(data as u32 as i32)
        } else {
            Self::Client(ConnId(data))
        }
    }
}

/// What a ready descriptor is ready for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ready {
    pub(crate) source: Source,
    /// Readable, or hung up, or failed: a read will say which.
    pub(crate) readable: bool,
    pub(crate) writable: bool,
}

/// An epoll instance and its event buffer.
pub(crate) struct Readiness {
    epoll: OwnedFd,
    events: Vec<Event>,
}

impl Readiness {
    pub(crate) fn new() -> Result<Self, Errno> {
        Ok(Self {
            epoll: epoll::create(CreateFlags::CLOEXEC)?,
            events: Vec::with_capacity(EVENTS_PER_WAIT),
        })
    }

    /// Starts reporting `fd` as `source`, readable only. A descriptor
    /// already registered stays as it was.
    pub(crate) fn add(&self, fd: impl AsFd, source: Source) -> Result<(), Errno> {
        match epoll::add(&self.epoll, fd, source.data(), EventFlags::IN) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(errno) => Err(errno),
        }
    }

    /// What `fd` is reported for: reading (or nothing, for a listener that
    /// must not accept now), and writing.
    pub(crate) fn set(
        &self,
        fd: impl AsFd,
        source: Source,
        readable: bool,
        writable: bool,
    ) -> Result<(), Errno> {
        let mut flags = EventFlags::empty();
        if readable {
            flags |= EventFlags::IN;
        }
        if writable {
            flags |= EventFlags::OUT;
        }
        epoll::modify(&self.epoll, fd, source.data(), flags)
    }

    /// Stops reporting `fd`, before it is closed.
    pub(crate) fn remove(&self, fd: impl AsFd) {
        // Closing removes it anyway (nobody else holds a copy); this only
        // makes that independent of who does.
        let _ = epoll::delete(&self.epoll, fd);
    }

    /// Waits up to `timeout` (none: forever) for something to be ready.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<&Timespec>,
    ) -> Result<impl Iterator<Item = Ready> + '_, Errno> {
        self.events.clear();
        match epoll::wait(&self.epoll, spare_capacity(&mut self.events), timeout) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => return Err(errno),
        }
        Ok(self.events.iter().map(|event| {
            let flags = event.flags;
            Ready {
                source: Source::from_data(event.data.u64()),
                readable: flags.intersects(
                    EventFlags::IN | EventFlags::HUP | EventFlags::RDHUP | EventFlags::ERR,
                ),
                writable: flags.contains(EventFlags::OUT),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_survive_the_round_trip_through_event_data() {
        for source in [
            Source::Listener,
            Source::Client(ConnId(0)),
            Source::Client(ConnId(12_345_678_901)),
            Source::Pid(1),
            Source::Pid(i32::MAX),
        ] {
            assert_eq!(Source::from_data(source.data().u64()), source);
        }
    }

    #[test]
    fn a_ready_socket_is_reported_until_it_is_read() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut readiness = Readiness::new().unwrap();
        readiness.add(&b, Source::Client(ConnId(7))).unwrap();
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(readiness.wait(Some(&timeout)).unwrap().count(), 0);
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        for _ in 0..2 {
            let ready: Vec<Ready> = readiness.wait(Some(&timeout)).unwrap().collect();
            assert_eq!(ready.len(), 1);
            assert_eq!(ready[0].source, Source::Client(ConnId(7)));
            assert!(ready[0].readable && !ready[0].writable);
        }
        readiness
            .set(&b, Source::Client(ConnId(7)), true, true)
            .unwrap();
        let ready: Vec<Ready> = readiness.wait(Some(&timeout)).unwrap().collect();
        assert!(ready[0].writable);
        readiness.remove(&b);
        assert_eq!(readiness.wait(Some(&timeout)).unwrap().count(), 0);
    }
}
