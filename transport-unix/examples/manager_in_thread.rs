//! A manager daemon's event loop in a thread, and a client registering
//! segments with it over its Unix socket, as PyTorch's client would.
//!
//! The namespace here is a table in memory, so nothing touches `/dev/shm`;
//! `libshm`'s `ShmNamespace` is the real one. Once the client is gone the
//! manager unlinks what it still held and shuts down.
//!
//! ```text
//! cargo run -p libshm-unix --example manager_in_thread
//! ```

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libshm_core::frame::Frame;
use libshm_core::manager::ManagerConfig;
use libshm_core::name::SegmentName;
use libshm_core::namespace::{Namespace, Observed, Unlinked};
use libshm_core::transport::Transport;
use libshm_unix::{Listener, RunDir, UnixTransport, serve};

/// Segments that "exist", each with one reference; the client's side
/// removes one as the last holder of a segment unlinks it.
#[derive(Clone, Default)]
struct InMemory(Arc<Mutex<HashSet<SegmentName>>>);

impl InMemory {
    fn names(&self) -> std::sync::MutexGuard<'_, HashSet<SegmentName>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Namespace for InMemory {
    type Error = Infallible;

    fn observe(&mut self, name: &SegmentName) -> Result<Observed, Infallible> {
        Ok(match self.names().contains(name) {
            true => Observed::Segment { refcount: 1 },
            false => Observed::Absent,
        })
    }

    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Infallible> {
        println!("manager: unlinking {name}");
        Ok(match self.names().remove(name) {
            true => Unlinked::Removed,
            false => Unlinked::Absent,
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let names = [
        SegmentName::new(b"/torch_1_2_0")?,
        SegmentName::new(b"/torch_1_2_1")?,
    ];
    let listener = Listener::bind(RunDir::create(&std::env::temp_dir())?)?;
    let handle = *listener.handle();
    println!("manager serving at {handle}");
    let config = ManagerConfig {
        shutdown_after: Duration::from_millis(200),
        ..ManagerConfig::default()
    };
    let shm = InMemory::default();
    shm.names().extend(names);
    let mut namespace = shm.clone();
    let manager = std::thread::spawn(move || serve(listener, config, &mut namespace));

    // PyTorch's client, frame by frame: register and wait for OK.
    let mut socket = UnixTransport::connect(&handle, Some(Duration::from_secs(5)))?;
    for name in names {
        socket.send_all(&Frame::register(1, name).encode())?;
        let mut reply = [0u8; 2];
        let mut got = 0;
        while got < reply.len() {
            match socket.receive(&mut reply[got..])? {
                0 => return Err("the manager closed the connection".into()),
                n => got += n,
            }
        }
        assert_eq!(&reply, b"OK");
        println!("client: registered {name}");
    }
    shm.names().remove(&names[0]); // our reference was the last: we unlink it
    socket.send_all(&Frame::release(1, names[0]).encode())?;
    println!(
        "client: closed {}; leaving with {} held",
        names[0], names[1]
    );
    drop(socket);

    let summary = manager.join().map_err(|_| "the manager thread panicked")?;
    println!("manager finished: {:?}", summary.stats);
    assert_eq!(summary.stats.registrations, 2);
    assert_eq!(summary.stats.unlinked_at_shutdown, 1);
    Ok(())
}
