//! The whole protocol with no operating system: a client session and the
//! manager state machine in one loop, over the loopback transport, with
//! fixed-capacity storage and a clock the runtime advances by hand.
//!
//! `run` is what a `no_std` runtime would do (a microcontroller, a kernel, a
//! WebAssembly host): it uses only `libshm-core` and `core`, allocates
//! nothing, and never asks the OS the time. `main` only prints its story.
//!
//! ```text
//! cargo run -p libshm-core --example loopback
//! ```

use core::time::Duration;

use libshm_core::client::{AckMode, Broken, ClientFault, ClientSession, READ_MAX, Step};
use libshm_core::loopback::{Loopback, LoopbackError};
use libshm_core::manager::{ManagerConfig, NameState, Status};
use libshm_core::name::{NameError, NamePrefix, SegmentName};
use libshm_core::storage::Fixed;
use libshm_core::time::Timestamp;
use libshm_core::transport::Transport;

/// This process's pid, as frames carry it.
const PID: i32 = 4242;

/// The runtime: one client session and its wire, whose far end is the
/// manager. At most 16 names and 4 connections, 8 frames in flight.
struct Runtime {
    session: ClientSession<8>,
    wire: Loopback<'static, Fixed<16, 4>>,
    now: Timestamp,
}

/// What can stop the runtime.
#[derive(Debug)]
enum Failure {
    Wire(LoopbackError),
    Protocol(ClientFault),
    Name(NameError),
    /// An operation was started on a session an earlier failure broke.
    Broken,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Wire(err) => write!(f, "the wire failed: {err}"),
            Self::Protocol(fault) => write!(f, "the manager broke the protocol: {fault}"),
            Self::Name(err) => write!(f, "a name is invalid: {err}"),
            Self::Broken => f.write_str("the session is broken by an earlier failure"),
        }
    }
}

impl From<LoopbackError> for Failure {
    fn from(err: LoopbackError) -> Self {
        Self::Wire(err)
    }
}

impl From<ClientFault> for Failure {
    fn from(fault: ClientFault) -> Self {
        Self::Protocol(fault)
    }
}

impl From<Broken> for Failure {
    fn from(_: Broken) -> Self {
        Self::Broken
    }
}

impl From<NameError> for Failure {
    fn from(err: NameError) -> Self {
        Self::Name(err)
    }
}

impl Runtime {
    fn new(config: ManagerConfig) -> Self {
        Self {
            session: ClientSession::new(AckMode::Pipelined { max_in_flight: 4 }),
            wire: Loopback::new(config),
            now: Timestamp::ZERO,
        }
    }

    /// Carries out what the session asks until its operation is done: the
    /// whole driver. A driver over a socket is this, plus retries.
    fn drive(&mut self) -> Result<(), Failure> {
        let mut buf = [0u8; READ_MAX];
        loop {
            match self.session.step() {
                Step::Send(bytes) | Step::Offer { bytes, .. } => {
                    self.wire.send_all(bytes)?;
                    self.session.sent();
                }
                Step::Receive { max } => {
                    let n = self.wire.receive(&mut buf[..max])?;
                    self.session.received(&buf[..n]);
                }
                Step::TryReceive { max } => match self.wire.try_receive(&mut buf[..max])? {
                    Some(n) => self.session.received(&buf[..n]),
                    None => self.session.nothing_ready(),
                },
                Step::Done(result) => return Ok(result?),
            }
        }
    }

    /// Registers `name` (pipelined: without waiting for `OK` unless the
    /// window is full), then "creates" it in the simulated `/dev/shm`.
    fn create(&mut self, name: SegmentName) -> Result<(), Failure> {
        self.session.register(PID, name)?;
        self.drive()?;
        self.wire.create(name);
        Ok(())
    }

    /// Drops our reference: the last one unlinks, then the manager is told.
    fn close(&mut self, name: SegmentName) -> Result<(), Failure> {
        let unlinked = self.wire.remove(&name);
        self.session.release(PID, name, unlinked)?;
        self.drive()
    }

    /// Writes deferred releases and collects every outstanding reply.
    fn settle(&mut self) -> Result<(), Failure> {
        self.session.settle()?;
        self.drive()
    }

    /// Lets `by` pass on the manager's clock.
    fn advance(&mut self, by: Duration) -> Status {
        self.now = self.now.after(by);
        self.wire.advance_to(self.now)
    }

    fn state(&self, name: &SegmentName) -> Option<NameState> {
        self.wire.manager().name_state(name)
    }
}

/// What happened, for `main` to print.
#[derive(Debug)]
struct Story {
    after_settle: [Option<NameState>; 3],
    after_crash: [Option<NameState>; 3],
    unlinked_after_grace: usize,
    finished_after: Option<Duration>,
}

/// Three segments; one closed properly; the process "crashes" holding two;
/// the manager reaps those after its grace period (2 s) and then, with no
/// client left for its shutdown timeout (5 s), finishes.
fn run() -> Result<Story, Failure> {
    let config = ManagerConfig {
        reap_grace: Some(Duration::from_secs(2)),
        shutdown_after: Duration::from_secs(5),
        ..ManagerConfig::default()
    };
    let mut runtime = Runtime::new(config);
    let prefix = NamePrefix::torch();
    let mut names = [SegmentName::generate(&prefix, PID as u32, 7, 0)?; 3];
    for (counter, name) in (0..).zip(names.iter_mut()) {
        *name = SegmentName::generate(&prefix, PID as u32, 7, counter)?;
        runtime.create(*name)?;
    }
    runtime.close(names[0])?;
    runtime.settle()?;
    let after_settle = names.map(|name| runtime.state(&name));

    runtime.wire.disconnect(); // a crash: nobody releases the other two
    runtime.advance(Duration::from_millis(10));
    let after_crash = names.map(|name| runtime.state(&name));

    let mut finished_after = None;
    let mut unlinked_after_grace = 0;
    for tenth in 1..=100u64 {
        let status = runtime.advance(Duration::from_millis(100));
        if tenth == 30 {
            unlinked_after_grace = runtime.wire.unlinked();
        }
        if status == Status::Finished {
            finished_after = Some(Duration::from_millis(100 * tenth));
            break;
        }
    }
    Ok(Story {
        after_settle,
        after_crash,
        unlinked_after_grace,
        finished_after,
    })
}

fn main() {
    match run() {
        Ok(story) => {
            println!("after create x3, close x1:  {:?}", story.after_settle);
            println!("just after the crash:       {:?}", story.after_crash);
            println!(
                "unlinked 3 s after the crash: {} segment(s)",
                story.unlinked_after_grace
            );
            match story.finished_after {
                Some(after) => println!("manager finished {after:?} after the crash"),
                None => println!("manager still serving"),
            }
            assert_eq!(story.unlinked_after_grace, 2, "both orphans reaped");
            assert!(story.finished_after.is_some(), "no client left: it ends");
        }
        Err(failure) => {
            eprintln!("runtime failed: {failure}");
            std::process::exit(1);
        }
    }
}
