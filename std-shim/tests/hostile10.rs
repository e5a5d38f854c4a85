//! Hostile round 10: pid reuse around a connection a family shares, the
//! registration journal, and names at their edges.
//!
//! Each "Finding" test failed on the code it was written against (95bb795)
//! and says what went wrong and why (file:line references are to that
//! code); it guards the fix now. The others are attacks the code withstands,
//! kept because they fail if it stops withstanding them.
//!
//! Tests that need root fail without it under `LIBSHM_REQUIRE_ROOT=1`.
//! Names carry this run's id, and everything a test puts in `/dev/shm` is
//! removed however it ends.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::hold;
use common::journal_client::JournalClient;
use common::{
    Cleanup, Daemon, create_segment, frame_from, in_private_pid_namespace, one_at_a_time,
    shm_exists, sleeper_with_pid, story, unique_name, wait_until,
};

// --- Finding 1: a reused pid's frame read before its old owner's end ---------

/// A family shares one connection (PyTorch's client keeps one per process
/// and its forks inherit it). Its parent A (pid P, watched) registered a
/// name; the manager has just taken in a round's events (another member's
/// frame made the connection readable) when A dies, is reaped, and a new
/// member B of the family is forked with pid P and registers its own
/// segment on the shared connection. The manager reads B's frame in that
/// round, before any wait tells it that A ended: `known_holder`
/// (core/src/manager.rs:2191) finds the connection's holder for pid P, A's,
/// and B's registration joins it. One round later A's pidfd ends that holder
/// with B's hold: B's segment (refcount 1, one dead registration) is an
/// orphan, nobody maps it (B has put it in a queue), and it is unlinked while
/// B lives and holds it. Round 1's fix (`pid_exiting` before the reads,
/// transport-unix/src/event_loop.rs:393) covers only an end the manager has
/// heard of before it reads; the same happens to a frame a journal commits,
/// read at the top of the loop before the wait (event_loop.rs:264).
#[test]
fn a_reused_pids_frame_read_before_its_old_owners_end_is_not_charged_to_it() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_reused_pids_frame_read_before_its_old_owners_end_is_not_charged_to_it",
    ) {
        return;
    }
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let _bystander = daemon.bystander();
    let mut family = daemon.connect();
    let (a_name, b_name) = (unique_name("h10reuse_a"), unique_name("h10reuse_b"));
    let _cleanup = Cleanup(vec![a_name.clone(), b_name.clone()]);
    let mut a = common::Sleeper::spawn();
    let pid = a.pid();
    family.register_as(pid, &a_name);
    create_segment(&a_name, 1, 64);
    let member = std::process::id() as i32;

    let mut held = hold::Held::seize(daemon.child.id());
    held.until_waiting();
    // Another member's release of something it never held: the connection
    // is readable, and the manager's wait returns with it.
    family.send(&frame_from(member, 1, &unique_name("h10nothing")));
    held.until_events_in_hand();
    a.kill();
    let mut b = sleeper_with_pid(pid);
    family.send(&frame_from(pid, 0, &b_name));
    create_segment(&b_name, 1, 64);
    held.resume();
    assert_eq!(family.reply(), Some(*b"OK"), "B's registration");

    // Grace (1 s), the map check, and slack.
    std::thread::sleep(Duration::from_secs(4));
    assert!(b.is_alive());
    assert!(
        shm_exists(&b_name),
        "{b_name}, registered by a live process B (pid {pid}) on the family's connection, \
         was unlinked: its frame was read before the manager heard that A, pid {pid} before \
         it, had ended, and joined A's holder. The manager's story:\n  {}",
        story(&daemon.handle, &b_name)
    );
    assert!(
        !shm_exists(&a_name),
        "{a_name}, A's, is reaped after A's end"
    );
}

/// Finding 1 through a registration journal: A's and then B's registrations
/// are committed to the family's ring, and the manager reads B's at the top
/// of its loop (it reads every ring every 100 ms), before the wait that
/// would tell it A had ended.
#[test]
fn a_reused_pids_journaled_frame_read_before_its_old_owners_end_is_not_charged_to_it() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_reused_pids_journaled_frame_read_before_its_old_owners_end_is_not_charged_to_it",
    ) {
        return;
    }
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let _bystander = daemon.bystander();
    let mut family = JournalClient::attach(&daemon.handle, 64);
    let (a_name, b_name) = (unique_name("h10jreuse_a"), unique_name("h10jreuse_b"));
    let _cleanup = Cleanup(vec![a_name.clone(), b_name.clone()]);
    let mut a = common::Sleeper::spawn();
    let pid = a.pid();
    family.register(pid, &a_name);
    assert_eq!(family.ring(), Some(*b"OK"));
    create_segment(&a_name, 1, 64);

    let mut held = hold::Held::seize(daemon.child.id());
    held.until_waiting();
    held.until_wait_returns();
    a.kill();
    let mut b = sleeper_with_pid(pid);
    family.register(pid, &b_name);
    create_segment(&b_name, 1, 64);
    // Past the ring's read interval: the next round reads it first.
    std::thread::sleep(Duration::from_millis(150));
    held.resume();
    assert_eq!(family.ring(), Some(*b"OK"));

    std::thread::sleep(Duration::from_secs(4));
    assert!(b.is_alive());
    assert!(
        shm_exists(&b_name),
        "{b_name}, journaled by a live process B (pid {pid}) on the family's connection, \
         was unlinked: it joined the holder of A, pid {pid} before it. The manager's story:\n  {}",
        story(&daemon.handle, &b_name)
    );
    assert!(
        !shm_exists(&a_name),
        "{a_name}, A's, is reaped after A's end"
    );
}

// --- Finding 2: a fork in a pid namespace of its own on its family's connection

/// A family's connection is inherited by a worker forked in a pid namespace
/// of its own (`unshare(CLONE_NEWUSER | CLONE_NEWPID)` needs no privilege;
/// sandboxes and nested containers do it). Its frames carry its own
/// `getpid()`, which in the manager's namespace names some other process X
/// of the user. The manager trusts the pid (the connection's peer is in its
/// namespace: `same_pid_namespace`, transport-unix/src/pid_watch.rs:137, is
/// asked once per connection) and ties the worker's holds to X. X ends:
/// the worker's segment gets a dead registration; the worker then puts it
/// in a queue and releases it (a stray now), and the segment in transit,
/// refcount 1 and one dead registration, is unlinked before its receiver
/// opens it.
///
/// Fixed: the kernel names each read's writer (`SO_PASSCRED`), and a pid
/// that is neither the writer's nor a child's of the writer ties nothing to
/// the process it names; the worker's holds last as long as the connection.
#[test]
fn a_worker_in_a_pid_namespace_of_its_own_on_its_familys_connection_keeps_its_tensor() {
    use std::os::fd::AsRawFd;

    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_worker_in_a_pid_namespace_of_its_own_on_its_familys_connection_keeps_its_tensor",
    ) {
        return;
    }
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let _bystander = daemon.bystander();
    let mut family = daemon.connect();
    let parent_name = unique_name("h10nested_parent");
    let name = unique_name("h10nested");
    let _cleanup = Cleanup(vec![parent_name.clone(), name.clone()]);
    family.register(&parent_name);
    let mut x = common::Sleeper::spawn();
    let q = x.pid();
    // Its own pid in its namespace is X's in the manager's.
    let mut worker = common::NestedWorker::spawn(family.stream.as_raw_fd(), q, &name);

    x.kill();
    std::thread::sleep(Duration::from_millis(200));
    worker.queue_and_release();
    // Grace (1 s), the map check, and slack.
    std::thread::sleep(Duration::from_secs(4));
    let kept = shm_exists(&name);
    drop(worker);
    assert!(
        kept,
        "{name}, put in a queue by a live worker in a pid namespace of its own, was unlinked \
         before its receiver opened it: its holds were tied to X, the process its pid names \
         in the manager's namespace. The manager's story:\n  {}",
        story(&daemon.handle, &name)
    );
}

// --- Finding 3: another connection's ring offered as one's own ---------------

/// A client's ring is a memory file only it and the manager should map, but
/// any process of the user can open it again through
/// `/proc/<client>/fd/<n>` and offer it as its own journal on a connection
/// of its own; the manager takes it (`SharedJournal::adopt` checks the seals,
/// the size and the header, transport-unix/src/shared_journal.rs:83). Then
/// whichever connection the manager reads first consumes the frames: the
/// attacker closes its connection right after the victim commits a
/// registration, the manager reads the ring on the attacker's end of file
/// (`drain_at_end`), charges the registration to the attacker's connection
/// and ends it there. The victim's segment, registered by a live process and
/// mapped by it, has no live registration and one dead one: it is unlinked
/// after the grace period (no map check: the connection it was charged to
/// is gone). Here the test hands over its own descriptor of the victim's
/// ring: the same memory file.
#[test]
fn a_ring_offered_by_another_connection_cannot_steal_its_owners_frames() {
    use libshm::protocol::frame::Frame;
    use libshm::protocol::journal;
    use libshm_unix::UnixTransport;
    use std::io::Read;

    let _serial = one_at_a_time();
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let _bystander = daemon.bystander();
    let victim = JournalClient::attach(&daemon.handle, 64);
    let name = unique_name("h10stolen");
    let _cleanup = Cleanup(vec![name.clone()]);
    let creator = common::Sleeper::spawn();

    let mut attacker = std::os::unix::net::UnixStream::connect(&daemon.handle).unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut offer = UnixTransport::from_fd(attacker.try_clone().unwrap().into());
    let me = std::process::id() as i32;
    offer
        .send_with_fd(
            &Frame::register(me, journal::SETUP).encode(),
            victim.memory.fd(),
        )
        .unwrap();
    drop(offer);
    let mut answer = [0u8; 2];
    attacker.read_exact(&mut answer).unwrap();
    println!(
        "the manager answered the stolen offer {:?}",
        String::from_utf8_lossy(&answer)
    );

    // Held, so that the manager reads the ring first on the attacker's end.
    let mut held = hold::Held::seize(daemon.child.id());
    held.until_waiting();
    victim.register(creator.pid(), &name);
    create_segment(&name, 1, 64);
    drop(attacker);
    held.resume();

    std::thread::sleep(Duration::from_secs(3));
    assert!(
        shm_exists(&name),
        "{name}, registered in its ring by a live process, was unlinked: another connection \
         offered the same ring and its end took the registration with it. The manager's \
         story:\n  {}",
        story(&daemon.handle, &name)
    );
}

// --- Finding 4: pid reuse where pidfds are unavailable -------------------------

/// Makes `pidfd_open` fail with `ENOSYS` in the process `command` starts, as
/// a container runtime's seccomp profile (Docker's before 20.10) or an old
/// kernel does: the manager then watches processes by polling their start
/// times.
fn without_pidfds(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_eq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    // seccomp_data: nr at offset 0, arch at 4.
    let filter = [
        stmt(load, 4),
        jump_eq(AUDIT_ARCH, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, 0),
        jump_eq(libc::SYS_pidfd_open as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: between fork and exec only `prctl`, on memory prepared before
    // the fork (`filter`, moved into the closure and alive until exec).
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Round 1's pid reuse (`a_reused_pid_on_another_connection_keeps_its_new_owners_segment`
/// in hostile.rs) where pidfds are unavailable. Process A (pid P, watched
/// by polling) registered a name and died; before the manager's next poll,
/// process B got pid P and registered its own segment on another
/// connection. `PidWatches::watch` trusted P because it was polled already
/// (transport-unix/src/pid_watch.rs:51), without looking at its start time;
/// and had the poll come first, `check_polled` (pid_watch.rs:111) dropped
/// P before B's frame was read, which then trusted B afresh and tied it to
/// A's pid entry. Either way A's end, polled, ended B's holder too: B's
/// segment (refcount 1, one dead registration) was unlinked while B lived.
#[test]
fn without_pidfds_a_reused_pid_keeps_its_new_owners_segment() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace("without_pidfds_a_reused_pid_keeps_its_new_owners_segment") {
        return;
    }
    let mut command = std::process::Command::new(common::SHM_MANAGER);
    command.args(["--reap-grace", "1s"]).stderr(Stdio::null());
    without_pidfds(&mut command);
    let daemon = Daemon::spawn(&mut command);
    let _bystander = daemon.bystander();
    let mut first = daemon.connect();
    let mut second = daemon.connect();
    assert!(second.answers_registration(&unique_name("h10second")));
    let (a_name, b_name) = (unique_name("h10poll_a"), unique_name("h10poll_b"));
    let _cleanup = Cleanup(vec![a_name.clone(), b_name.clone()]);
    let mut a = common::Sleeper::spawn();
    let pid = a.pid();
    first.register_as(pid, &a_name);
    create_segment(&a_name, 1, 64);
    // Start times count in clock ticks (10 ms): B starts ticks after A.
    std::thread::sleep(Duration::from_millis(50));

    // Held before its wait: it reads B's frame in the round that wait
    // starts, whether or not that round polls A's end first.
    let mut held = hold::Held::seize(daemon.child.id());
    held.until_waiting();
    a.kill();
    let b = sleeper_with_pid(pid);
    second.send(&frame_from(pid, 0, &b_name));
    create_segment(&b_name, 1, 64);
    held.until_events_in_hand();
    held.resume();
    assert_eq!(second.reply(), Some(*b"OK"), "B's registration");
    // Grace (1 s), a poll, and slack.
    std::thread::sleep(Duration::from_secs(3));
    let b_lives = !common::process_gone(b.pid() as u32);
    let kept = shm_exists(&b_name);
    drop(b);
    assert!(b_lives);
    assert!(
        kept,
        "{b_name}, registered by a live process B (pid {pid}) beside a manager without \
         pidfds, was unlinked: B was taken for A, pid {pid} before it. The manager's story:\n  {}",
        story(&daemon.handle, &b_name)
    );
    assert!(
        wait_until(Duration::from_secs(3), || !shm_exists(&a_name)),
        "{a_name}, A's, is reaped after A's end"
    );
}

// --- Finding 5: a client outside the manager's pid namespace -----------------

/// A manager in a pid namespace of its own (a container, a sandbox) is
/// reached by a client outside it, through a socket path both see (a shared
/// `/tmp`). The kernel gives the manager the peer's credentials with pid 0:
/// the peer has no pid in the manager's namespace. rustix's `UCred` holds
/// the pid as a `NonZeroI32`, so `socket_peercred`
/// (transport-unix/src/listener.rs:72) made an invalid value, which came out
/// as an error (the zero is the niche of its `Result`): the manager took the
/// credentials for unknown and refused the client ("peer credentials are
/// unknown"), whose every `share_memory_()` then fails. Frames of a peer
/// outside its namespace were meant to be served, their holds lasting as
/// long as the connection.
#[test]
fn a_manager_in_a_pid_namespace_of_its_own_serves_a_client_outside_it() {
    let _serial = one_at_a_time();
    if !common::is_root_or_skip("root, to start a manager in a pid namespace of its own") {
        return;
    }
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--pid", "--fork", "--kill-child", common::SHM_MANAGER])
        .args(["--reap-grace", "1s"])
        .stderr(Stdio::null());
    let daemon = Daemon::spawn(&mut command);
    let name = unique_name("h10outside");
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut client = daemon.connect();
    assert!(
        client.answers_registration(&name),
        "a client outside the manager's pid namespace is refused"
    );
    create_segment(&name, 1, 64);
    drop(client);
    assert!(
        wait_until(Duration::from_secs(4), || !shm_exists(&name)),
        "{name}, registered by a client that then closed its connection, is reaped"
    );
}

// --- Withstood ----------------------------------------------------------------

/// Frames whose pid names no sender (0, -1, `i32::MIN`, `i32::MAX`), names
/// at the frame's limit (59 bytes) and the protocol's reserved names sent as
/// ordinary frames: none closes the connection or stalls another client,
/// every real name is registered, and once the connection closes every one
/// of them is reaped (none outlives everyone involved). Fails if an odd pid
/// got a holder that never ends (a leak past the connection), or closed the
/// connection.
#[test]
fn odd_pids_and_names_at_the_limits_neither_close_nor_leak() {
    let _serial = one_at_a_time();
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let mut bystander = daemon.bystander();
    let mut client = daemon.connect();
    let base = unique_name("h10odd");
    let mut names: Vec<String> = [0, -1, i32::MIN, i32::MAX]
        .iter()
        .map(|pid| format!("{base}_{}", *pid as u32))
        .collect();
    // The longest name a frame holds.
    let mut longest = format!("{base}_long_");
    while longest.len() < 59 {
        longest.push('x');
    }
    names.push(longest);
    let _cleanup = Cleanup(names.clone());
    for (name, pid) in names.iter().zip([0, -1, i32::MIN, i32::MAX, i32::MAX]) {
        client.send(&frame_from(pid, 0, name));
        assert_eq!(client.reply(), Some(*b"OK"), "{name} for pid {pid}");
        create_segment(name, 1, 64);
    }
    // Reserved names as ordinary frames: a doorbell without a journal is
    // answered, an offer without memory is declined, their releases ignored.
    for (free, reserved, answer) in [
        (0, "/libshm_doorbell_v1", Some(*b"OK")),
        (0, "/libshm_journal_v1", Some(*b"NO")),
        (1, "/libshm_doorbell_v1", None),
        (1, "/libshm_journal_v1", None),
    ] {
        client.send(&frame_from(i32::MAX, free, reserved));
        if let Some(answer) = answer {
            assert_eq!(client.reply(), Some(answer), "{reserved}");
        }
    }
    assert!(client.answers_registration(&format!("{base}_after")));
    assert!(bystander.answers_registration(&unique_name("h10odd_bystander")));
    drop(client);
    for name in &names {
        assert!(
            wait_until(Duration::from_secs(5), || !shm_exists(name)),
            "{name} outlived its connection: {}",
            story(&daemon.handle, name)
        );
    }
}

/// Journal offers a client may get wrong or make hostile: one whose memory
/// is not sealed, one sent twice on the same connection. The first is
/// declined (`NO`) and the connection goes on over the socket; the second
/// offer is declined and the journal already attached keeps working.
#[test]
fn bad_and_repeated_journal_offers_are_declined_and_the_connection_goes_on() {
    use libshm::protocol::frame::Frame;
    use libshm::protocol::journal;
    use libshm_unix::UnixTransport;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    let _serial = one_at_a_time();
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let me = std::process::id() as i32;
    let offer = Frame::register(me, journal::SETUP).encode();

    // Unsealed memory of a journal's size, with a valid header.
    let unsealed = rustix::fs::memfd_create("h10", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let file = std::fs::File::from(unsealed);
    file.set_len(journal::journal_len(64) as u64).unwrap();
    file.write_all_at(&journal::MAGIC.to_ne_bytes(), 0).unwrap();
    file.write_all_at(&64u32.to_ne_bytes(), 4).unwrap();
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.handle).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut transport = UnixTransport::from_fd(stream.try_clone().unwrap().into());
    transport.send_with_fd(&offer, file.as_fd()).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"NO", "unsealed memory is declined");
    let name = unique_name("h10unsealed");
    let _cleanup = Cleanup(vec![name.clone()]);
    stream.write_all(&frame_from(me, 0, &name)).unwrap();
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"OK", "the socket still serves");

    // A journal attached, then offered again.
    let mut client = JournalClient::attach(&daemon.handle, 64);
    let other = libshm_unix::SharedJournal::create(64).unwrap();
    let mut again = UnixTransport::from_fd(client.stream.try_clone().unwrap().into());
    again.send_with_fd(&offer, other.fd()).unwrap();
    client.stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"NO", "a second offer is declined");
    let creator = common::Sleeper::spawn();
    let journaled = unique_name("h10journaled");
    let _cleanup2 = Cleanup(vec![journaled.clone()]);
    client.register(creator.pid(), &journaled);
    assert_eq!(
        client.ring(),
        Some(*b"OK"),
        "the first journal is still read"
    );
    create_segment(&journaled, 1, 64);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        shm_exists(&journaled),
        "{journaled}, journaled in the first ring by a live process, is held"
    );
    drop(creator);
    assert!(
        wait_until(Duration::from_secs(4), || !shm_exists(&journaled)),
        "{journaled} is reaped after its creator's end"
    );
}
