//! Hostile round 15, against 806f556: the shared journal's memory, status
//! requests, the map check and recovery sweep, and `shmctl gc`.
//!
//! Each "Finding" test fails on 806f556; its comment says what went wrong
//! and why. The others are attacks the code withstands, kept because they
//! fail if it stops withstanding them.
//!
//! Tests that need root fail without it under `LIBSHM_REQUIRE_ROOT=1`.
//! Names carry this run's id, and everything a test puts in `/dev/shm` is
//! removed however it ends.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{
    Cleanup, Daemon, create_segment, is_root_or_skip, one_at_a_time, shm_exists, unique_name,
    wait_until,
};
use libshm::protocol::frame::Frame;
use libshm::protocol::journal;
use libshm_unix::UnixTransport;
use rustix::fs::{MemfdFlags, SealFlags};

/// A journal's memory for `capacity` frames with a valid header, not
/// sealed yet: what a client makes before it seals.
fn unsealed_ring(tag: &str, capacity: usize) -> OwnedFd {
    let fd =
        rustix::fs::memfd_create(tag, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, journal::journal_len(capacity) as u64).unwrap();
    let file = std::fs::File::from(fd.try_clone().unwrap());
    file.write_all_at(&journal::MAGIC.to_ne_bytes(), 0).unwrap();
    file.write_all_at(&(capacity as u32).to_ne_bytes(), 4)
        .unwrap();
    fd
}

/// The descriptor number under which process `pid` holds the memory file
/// named `tag` (`memfd:<tag>` in `/proc/<pid>/fd`).
fn descriptor_of(pid: u32, tag: &str) -> Option<i32> {
    let wanted = format!("/memfd:{tag} (deleted)");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| target.to_str() == Some(&wanted))
        })
        .and_then(|entry| entry.file_name().to_str()?.parse().ok())
}

/// Lets thread `pid` run until it returns from a `stat` of descriptor `fd`
/// (`fstat`, `newfstatat` or `statx` on it), runs `at_stop` while it is
/// held there, then lets it go. Stands in for a scheduler that takes the
/// CPU from the manager right after that call, as a loaded machine may.
/// `false` if the thread ended first, or made no such call within 10 s.
fn hold_after_stat_of(pid: i32, fd: i32, ready: impl FnOnce(), at_stop: impl FnOnce()) -> bool {
    const FSTAT: u64 = libc::SYS_fstat as u64;
    const NEWFSTATAT: u64 = libc::SYS_newfstatat as u64;
    const STATX: u64 = libc::SYS_statx as u64;
    // SAFETY: plain ptrace and waitpid calls on a child process we own; the
    // register block is a plain C struct the kernel fills.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, pid, 0, libc::PTRACE_O_TRACESYSGOOD),
            0,
            "seize the manager: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, libc::__WALL), pid);
        ready();
        let mut entered: Option<(u64, u64)> = None;
        let mut inject = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if Instant::now() > deadline {
                libc::ptrace(libc::PTRACE_DETACH, pid, 0, inject);
                return false;
            }
            assert_eq!(libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, inject), 0);
            inject = 0;
            if libc::waitpid(pid, &mut status, libc::__WALL) != pid || !libc::WIFSTOPPED(status) {
                return false;
            }
            let signal = libc::WSTOPSIG(status);
            if signal != libc::SIGTRAP | 0x80 {
                // A signal for the manager (not a ptrace event stop): deliver it.
                if status >> 16 == 0 {
                    inject = signal;
                }
                continue;
            }
            let mut regs: libc::user_regs_struct = std::mem::zeroed();
            assert_eq!(libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs), 0);
            if regs.rax == (-libc::ENOSYS) as u64 && entered.is_none() {
                entered = Some((regs.orig_rax, regs.rdi));
                continue;
            }
            let was = entered.take();
            if let Some((nr, arg0)) = was
                && matches!(nr, FSTAT | NEWFSTATAT | STATX)
                && arg0 as i32 == fd
            {
                at_stop();
                libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
                return true;
            }
        }
    }
}

/// Finding 1: a journal offer whose memory the client shrinks, then seals,
/// between the manager's look at its size and its look at its seals.
/// `SharedJournal::adopt` (transport-unix/src/shared_journal.rs:95-110)
/// reads the size with `fstat` first and the seals after: a file that was
/// unsealed and of a journal's size at the first look, and sealed at size 0
/// at the second, passes both. The manager maps the old size and reads the
/// header: `SIGBUS`, and the manager is gone. Every name it held (here a
/// bystander's segment) is left in `/dev/shm` for good, and every client
/// loses its manager.
///
/// The window is two system calls wide, narrower than a client's own
/// `ftruncate` + `F_ADD_SEALS`, so it takes the manager losing its CPU right
/// after the `fstat` (a loaded machine); 8,700 unassisted tries on an idle
/// two-CPU machine did not hit it. Here `ptrace` holds the manager at the
/// return of that `fstat`, standing in for the scheduler.
///
/// Fixed: `adopt` reads the seals first; once sealed against shrinking, the
/// size cannot change, so the size read after is the size for good.
#[test]
fn finding_a_journal_shrunk_between_the_size_and_seal_checks_does_not_kill_the_manager() {
    let _one = one_at_a_time();
    if !is_root_or_skip("root, to hold the manager at one system call (ptrace)") {
        return;
    }
    let mut daemon = Daemon::start(&[]);
    let mut bystander = daemon.bystander();
    let kept = unique_name("h15kept");
    let _cleanup = Cleanup(vec![kept.clone()]);
    bystander.register(&kept);
    create_segment(&kept, 1, 4096);

    let tag = format!("h15ring{}", std::process::id());
    let ring = unsealed_ring(&tag, 100);
    let mut stream = UnixStream::connect(&daemon.handle).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let offer = Frame::register(std::process::id() as i32, journal::SETUP).encode();
    // The descriptor travels with the first byte; the manager keeps it
    // until the frame is whole, and then adopts it.
    let mut first = UnixTransport::from_fd(stream.try_clone().unwrap().into());
    first.send_with_fd(&offer[..1], ring.as_fd()).unwrap();
    drop(first);
    let manager = daemon.child.id();
    let mut held_as = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            held_as = descriptor_of(manager, &tag);
            held_as.is_some()
        }),
        "the manager received the memory"
    );
    let held_as = held_as.unwrap();
    let shrink_and_seal = ring.try_clone().unwrap();
    let (traced, tracing) = std::sync::mpsc::channel();
    let tracer = std::thread::spawn(move || {
        hold_after_stat_of(
            manager as i32,
            held_as,
            || traced.send(()).unwrap(),
            || {
                rustix::fs::ftruncate(&shrink_and_seal, 0).unwrap();
                rustix::fs::fcntl_add_seals(&shrink_and_seal, SealFlags::SHRINK | SealFlags::GROW)
                    .unwrap();
            },
        )
    });
    tracing.recv().unwrap();
    stream.write_all(&offer[1..]).unwrap();
    assert!(
        tracer.join().unwrap(),
        "the manager looked at the offered memory's size"
    );
    let mut reply = [0u8; 2];
    let answered = stream.read_exact(&mut reply).map(|()| reply);
    let status = daemon.wait_exit(Duration::from_millis(500));
    assert!(
        status.is_none(),
        "the manager died ({status:?}; 7 is SIGBUS) adopting a journal shrunk under it; \
         {kept} is left in /dev/shm: {}",
        shm_exists(&kept)
    );
    assert_eq!(
        answered.ok(),
        Some(*b"NO"),
        "a journal unsealed at the look at its seals is refused"
    );
    assert!(bystander.answers_registration(&unique_name("h15after")));
}
