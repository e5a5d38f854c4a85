//! A private manager over two anonymous pipes, served in a thread, and its
//! one client. When the client's end closes (it exited, crashed, or, here,
//! dropped its connection) the manager unlinks everything it still holds.
//!
//! The namespace is a table in memory; `libshm`'s `ShmNamespace` is the real
//! `/dev/shm`. A real private manager is a child process that
//! `libshm_pipe::ChildPipes` hands the pipes as descriptors 3 and 4.
//!
//! ```text
//! cargo run -p libshm-pipe --example private_manager
//! ```

use std::collections::HashSet;
use std::convert::Infallible;

use libshm_core::frame::Frame;
use libshm_core::manager::ManagerConfig;
use libshm_core::name::SegmentName;
use libshm_core::namespace::{Namespace, Observed, Unlinked};
use libshm_core::transport::Transport;
use libshm_pipe::{ClientProcess, Ended, ManagerEnds, PipeTransport, serve};
use rustix::pipe::{PipeFlags, pipe_with};

/// Segments that "exist", each with one reference.
#[derive(Default)]
struct InMemory(HashSet<SegmentName>);

impl Namespace for InMemory {
    type Error = Infallible;

    fn observe(&mut self, name: &SegmentName) -> Result<Observed, Infallible> {
        Ok(match self.0.contains(name) {
            true => Observed::Segment { refcount: 1 },
            false => Observed::Absent,
        })
    }

    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Infallible> {
        println!("manager: unlinking {name}");
        Ok(match self.0.remove(name) {
            true => Unlinked::Removed,
            false => Unlinked::Absent,
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let names = [
        SegmentName::new(b"/torch_7_8_0")?,
        SegmentName::new(b"/torch_7_8_1")?,
        SegmentName::new(b"/torch_7_8_2")?,
    ];
    let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC)?;
    let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC)?;
    let ends = ManagerEnds::new(request_read, reply_write)?;
    let mut namespace = InMemory(names.into_iter().collect());
    // Its client is this process, not a parent; the pipes' end of file is
    // what ends it here.
    let client = ClientProcess::Parent.hold();
    let manager =
        std::thread::spawn(move || serve(ends, client, ManagerConfig::default(), &mut namespace));

    let mut pipes = PipeTransport::new(request_write, reply_read, None)?;
    // Pipelined: every registration written at once, the OKs read after.
    for name in names {
        pipes.send_all(&Frame::register(7, name).encode())?;
    }
    let mut replies = [0u8; 6];
    let mut got = 0;
    while got < replies.len() {
        match pipes.receive(&mut replies[got..])? {
            0 => return Err("the manager closed its pipe".into()),
            n => got += n,
        }
    }
    assert_eq!(&replies, b"OKOKOK");
    println!("client: registered {} segments", names.len());
    drop(pipes); // end of file on the manager's request pipe

    let summary = manager.join().map_err(|_| "the manager thread panicked")?;
    println!("manager ended by {:?}: {:?}", summary.ended, summary.stats);
    assert_eq!(summary.ended, Ended::EndOfFile);
    assert_eq!(summary.stats.unlinked_at_shutdown, 3);
    Ok(())
}
