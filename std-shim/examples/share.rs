//! Two processes and one segment: the parent writes a typed header and a
//! message, shares the segment, and lets go of it before the child has even
//! started; the share handle keeps it alive. The child opens it, reads, and
//! counts itself in an atomic both processes see. The last one out unlinks.
//!
//! Needs `shm-manager`, started on first use: build it first (it is found
//! beside the example's directory), or name one with `LIBSHM_MANAGER`.
//!
//! ```text
//! cargo build -p libshm --bins && cargo run -p libshm --example share
//! ```

use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use bytemuck::{Pod, Zeroable};
use libshm::{ShareHandle, SharedSegment};

/// The layout: a counter of readers that both processes update atomically
/// (kept apart from what is copied), a header, then the message.
const READERS_AT: usize = 0;
const HEADER_AT: usize = 8;
const MESSAGE_AT: usize = HEADER_AT + size_of::<Header>();

/// Describes the message.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct Header {
    /// Bytes of message after the header.
    message_len: u32,
    /// Format version.
    version: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("receive") => receive(&std::env::args().nth(2).ok_or("no share handle")?),
        _ => send(),
    }
}

fn send() -> Result<(), Box<dyn std::error::Error>> {
    let segment = SharedSegment::create(4096)?;
    let message = b"hello from the parent";
    segment.write_obj(
        HEADER_AT,
        Header {
            message_len: message.len() as u32,
            version: 1,
        },
    )?;
    let mut cursor = segment.cursor();
    cursor.set_position(MESSAGE_AT as u64);
    cursor.write_all(message)?;

    let handle = segment.share()?;
    println!("parent: shared {} ({} bytes)", handle.name(), handle.len());
    let child = Command::new(std::env::current_exe()?)
        .args(["receive", &handle.to_string()])
        .spawn()?;
    // The handle's reference keeps the segment; ours is not needed.
    let name = segment.name().to_string();
    drop(segment);
    println!("parent: dropped my segment; {name} lives on in transit");

    let status = child.wait_with_output()?.status;
    assert!(status.success(), "the child failed: {status}");
    let gone = !std::path::Path::new(&format!("/dev/shm{name}")).exists();
    println!("parent: the child was the last holder; unlinked: {gone}");
    Ok(())
}

fn receive(text: &str) -> Result<(), Box<dyn std::error::Error>> {
    let segment = text.parse::<ShareHandle>()?.open()?;
    let header: Header = segment.read_obj(HEADER_AT)?;
    let mut message = vec![0; header.message_len as usize];
    let mut cursor = segment.cursor();
    cursor.set_position(MESSAGE_AT as u64);
    cursor.read_exact(&mut message)?;
    let readers = &segment.atomics::<AtomicU32>(READERS_AT, 1)?[0];
    let me = readers.fetch_add(1, Ordering::AcqRel) + 1;
    println!(
        "child: {:?} (format {}), reader #{me}, refcount {}",
        String::from_utf8_lossy(&message),
        header.version,
        segment.refcount_now()
    );
    Ok(())
}
