//! Hostile round 15, against 806f556: the shared journal's memory, and a
//! look at status requests and the map check.
//!
//! Tried, and what came of it:
//! - A journal memory file shrunk to nothing and sealed between the
//!   manager's `fstat` and its seal check: the manager mapped the stale size
//!   and died of `SIGBUS` (finding 1, fixed; the test holds the manager at
//!   that `fstat` with `ptrace`, standing in for a preempting scheduler:
//!   8,700 unassisted tries on an idle machine never landed in the window).
//! - The ring's read counter (word 3, client-writable) wound back without
//!   end: the manager re-reads the same frames at every look, within its
//!   per-round budget; others are answered, memory stays flat, replayed
//!   releases do not reach another connection's hold (kept as a guard).
//! - Not run, by reading the code: a hole punched in the ring (reads zeros:
//!   malformed frames close that connection, no `SIGBUS`); write-sealed
//!   memory (the manager's writable shared map fails, the offer is refused);
//!   hugetlb memory (none configured here; hugetlb reserves at `mmap`, so a
//!   fault cannot fail later). Torn frames, counters out of range and a ring
//!   offered twice are rounds 3 and 10's.
//! - Status requests: at most four reports in flight, a 5 s deadline,
//!   names in pieces of 2,048 per round; unread reports were round 1's. Not
//!   attacked further this round.
//! - The map check matches mappings by device and inode (hard links, bind
//!   mounts and renames are found); descriptors only under one of our names,
//!   so a descriptor (not a mapping) held through a hard link under another
//!   name is not counted. PyTorch closes the descriptor once mapped.
//! - Journal frames have no kernel-named writer, so their pids are all
//!   believed (`writer_speaks_for` with no writer): a journal can tie holds
//!   to any live process of the user. That gives no more than a process
//!   that registers a name and dies, which the refcount rule cannot tell
//!   from a crash.
//!
//! Each "Finding" test failed on 806f556; its comment says what went wrong
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
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::journal_client::JournalClient;
use common::measure::{FLOOD_P99_BOUND, Probe, status_kib};
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

/// The `registrations` counter of the manager's status report.
fn registrations_counted(handle: &str) -> u64 {
    let mut stream = UnixStream::connect(handle).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&common::frame(0, "/libshm_status_v1"))
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .find(|line| line.starts_with("stats "))
        .and_then(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("registrations="))
        })
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no registrations counter in the status report: {text}"))
}

/// The manager reads where the ring says it stopped reading (word 3, in
/// memory the client can write). A client that winds that word back, over
/// and over, makes the manager read the same 1,024 frames again at every
/// look: registrations of names it already holds, releases of them, again
/// and again. It is the client's own connection's business, and the per
/// round budget (1,024 journal frames) bounds what one look costs; another
/// client's round trips stay within the flood bound, the manager's memory
/// does not grow with the replays, and the replayed release leaves the
/// victim's name (held by another connection) alone.
#[test]
fn a_ring_wound_back_without_end_neither_stalls_another_client_nor_frees_a_name() {
    let _one = one_at_a_time();
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let victim = unique_name("h15victim");
    let _cleanup = Cleanup(vec![victim.clone()]);
    let mut owner = daemon.connect();
    owner.register(&victim);
    create_segment(&victim, 1, 64);

    let mut attacker = JournalClient::attach(&daemon.handle, 1024);
    let me = std::process::id() as i32;
    let replayed: Vec<String> = (0..511)
        .map(|i| unique_name(&format!("h15replay{i}")))
        .collect();
    for name in &replayed {
        attacker.register(me, name);
    }
    for _ in 0..513 {
        attacker.release(me, &victim);
    }
    assert_eq!(attacker.ring(), Some(*b"OK"));
    let rss_before = status_kib(daemon.child.id(), "VmRSS");

    let mut probe = Probe::connect(&daemon.handle);
    let baseline = probe.sample(300, Duration::from_millis(1));
    let stop = Arc::new(AtomicBool::new(false));
    let rewinder = {
        let stop = Arc::clone(&stop);
        let file = std::fs::File::from(attacker.memory.fd().try_clone_to_owned().unwrap());
        std::thread::spawn(move || {
            let mut rewinds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Consumed = committed - capacity: every frame unread again.
                let mut committed = [0u8; 4];
                file.read_exact_at(&mut committed, 8).unwrap();
                let back = u32::from_ne_bytes(committed).wrapping_sub(1024);
                file.write_all_at(&back.to_ne_bytes(), 12).unwrap();
                rewinds += 1;
            }
            rewinds
        })
    };
    let running = probe.spawn(Duration::from_millis(1));
    std::thread::sleep(Duration::from_secs(2));
    let during = running.finish();
    stop.store(true, Ordering::Relaxed);
    let rewinds = rewinder.join().unwrap();
    let rss_after = status_kib(daemon.child.id(), "VmRSS");
    let registrations = registrations_counted(&daemon.handle);
    assert!(
        registrations > 10 * 511,
        "the manager read the wound-back ring again ({registrations} registrations counted, \
         {rewinds} rewinds): the attack did not take place"
    );

    let bound = FLOOD_P99_BOUND + baseline.percentile(99.0);
    assert!(
        during.percentile(99.0) < bound,
        "beside a ring wound back {rewinds} times, another client's p99 round trip was \
         {:.3?} (bound {bound:.3?}); during: {during}; idle: {baseline}",
        during.percentile(99.0)
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the manager grew from {rss_before} KiB to {rss_after} KiB replaying one ring"
    );
    // The grace (1 s) and its look, had the replayed releases reached it.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        shm_exists(&victim),
        "{victim}, held by another connection, was unlinked"
    );
    assert!(owner.answers_registration(&unique_name("h15after")));
}
