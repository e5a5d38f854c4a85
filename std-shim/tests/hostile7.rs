//! Hostile round 7, aimed at what the earlier rounds touched least: the
//! opt-in segment pool (`Config::pool`, `LIBSHM_POOL`), the client across
//! `fork` and `exec`, the pipe transport, and `shmctl gc` and `doctor` run
//! by root beside managers they cannot see.
//!
//! Each "Finding" test failed on the code it was written against (0d46ae0)
//! and says what went wrong and why (file:line references are to that
//! code); it guards the fix now. The others are attacks the code withstands,
//! kept because they fail if it stops withstanding them.
//!
//! Tests that fork our client re-run themselves in a process of their own
//! (this binary, `--exact <test>`), where no other test's thread holds a
//! lock the child would inherit; tests that need root fail without it under
//! `LIBSHM_REQUIRE_ROOT=1`. Names carry this run's id, and everything a
//! test puts in `/dev/shm` is removed however it ends.

mod common;

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{PrefixCleanup, SHM_MANAGER, run_id, wait_until};
use libshm::{AckMode, Config, ManagerLink, NamePrefix, PoolSizes};

/// Held by the test that times another client's answers and by the one
/// that forks hundreds of times, so that neither runs beside the other.
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    MACHINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Set in a test re-run by [`in_own_process`]: the outer run's pid.
const INNER: &str = "LIBSHM_HOSTILE7_INNER";

/// This run's id, the outer run's inside a re-run (names made inside and
/// looked for outside agree).
fn id() -> String {
    std::env::var(INNER).unwrap_or_else(|_| run_id().to_string())
}

/// Runs the test named `test` again in a process of its own (this binary,
/// one test, one test thread) and waits up to `timeout` for it. Returns
/// `true` inside, where the test goes on, and `false` outside once the inner
/// run passed; panics with its output if it did not (or did not end in time:
/// it is killed then).
fn in_own_process(test: &str, timeout: Duration) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    let (status, stdout, stderr) = run_alone(test, timeout);
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains("test result: ok. 1 passed"),
        "{test} in its own process: {status:?}\n{stdout}\n{stderr}"
    );
    false
}

/// Runs the test named `test` in a process of its own (as
/// [`in_own_process`] does), killed if it has not ended within `timeout`
/// (status `None`); returns how it ended and what it printed.
fn run_alone(test: &str, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER, std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-run the test");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    (
        status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Forks a child that keeps copies of everything the process has open (its
/// link's pipes too) for 8 s and then `_exit`s; returns its pid.
fn fork_sleeping_child() -> i32 {
    // SAFETY: the test runs alone in its process; the child sleeps and
    // `_exit`s without touching anything of the parent's.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: closing our own copies of stdout and stderr, so that the
        // outer run reads the parent's output to its end.
        unsafe {
            libc::close(1);
            libc::close(2);
        }
        std::thread::sleep(Duration::from_secs(8));
        // SAFETY: skipping destructors and atexit handlers on purpose.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// A manager executable (a script) that prints a pipe manager's handshake,
/// `pipe:<its pid>`, stops itself, and once continued runs `shm-manager`
/// with its arguments in its place: a pipe manager stopped before it has
/// looked for its client.
fn manager_stopped_at_start() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("shm-manager-stopped-at-start");
    let script = format!(
        "#!/bin/sh\necho \"pipe:$$\"\nkill -STOP $$\nexec {SHM_MANAGER} \"$@\" >/dev/null\n"
    );
    if std::fs::read_to_string(&path).ok() != Some(script.clone()) {
        let temporary = dir.join(format!(
            "shm-manager-stopped-at-start.{}",
            std::process::id()
        ));
        std::fs::write(&temporary, &script).unwrap();
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
    }
    path
}

/// Whether the process `pid` is stopped (state `T`).
fn is_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    })
}

/// Forks; the child runs `child` under a 10 s alarm and `_exit`s with its
/// result. Returns the child's wait status.
fn fork_and_wait(child: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the test runs alone in its process (see `in_own_process`); the
    // child runs this crate's code and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm and _exit are async-signal-safe; a child that hangs
        // dies of SIGALRM.
        unsafe { libc::alarm(10) };
        let ok = child();
        // SAFETY: `_exit` skips atexit handlers and destructors on purpose.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// Finding 1 (a client that stops): a child forked while the pool's thread
/// was topping up a shelf hung on its first create, for ever. The thread
/// registers each new segment through the link (`make`, pool.rs:304), which
/// holds the link's lock for the whole registration (link.rs:197, a round
/// trip in strict mode); a `fork` in that window gives the child the lock
/// held by a thread it does not have, and its first `register` waits on it
/// (link.rs:165). Within 200 forks at varying points of a refill, one hit it.
#[test]
fn a_child_forked_while_the_pool_refills_can_create() {
    let _machine = exclusive();
    if !in_own_process(
        "a_child_forked_while_the_pool_refills_can_create",
        Duration::from_secs(120),
    ) {
        return;
    }
    let prefix = format!("/h7fork{}_", id());
    let _cleanup = PrefixCleanup(prefix.clone());
    for mode in [AckMode::Strict, AckMode::default()] {
        let config = Config::default()
            .manager_executable(SHM_MANAGER)
            .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
            .ack_mode(mode)
            .pool(Some("4KiB:2".parse::<PoolSizes>().unwrap()))
            .quiet_manager(true);
        let link = ManagerLink::launch(&config).unwrap();
        assert!(wait_until(Duration::from_secs(5), || link.pooled(4096) == 2));
        let mut hung = 0;
        for round in 0..200u32 {
            let taken = link.create(4096).unwrap();
            // Fork at varying points of the refill the take just woke.
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_micros(u64::from(round % 50) * 4) {}
            let status = fork_and_wait(|| link.create(8192).is_ok() && link.settle().is_ok());
            drop(taken);
            if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
                hung += 1;
                break;
            }
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "round {round}: child status {status:#x}"
            );
        }
        assert_eq!(hung, 0, "{mode:?}: a forked child hung on its first create");
        link.close().unwrap();
    }
}

/// Finding 2 (a panic, and memory without bound, on an environment
/// variable): `LIBSHM_POOL=4KiB:4000000000` aborted the process ("memory
/// allocation of 32000000000 bytes failed"), and a depth of `usize::MAX`
/// killed the pool's thread ("capacity overflow"). The depth was taken as
/// given (pool.rs:74), and the filler listed every missing segment one by
/// one (`Shelves::missing`, pool.rs:120) before making the first.
#[test]
fn an_absurd_pool_depth_neither_aborts_nor_panics() {
    let prefix = format!("/h7depth{}_", run_id());
    let _cleanup = PrefixCleanup(prefix.clone());
    let daemon = common::Daemon::quiet_under(&prefix);
    for pool in ["4KiB:4000000000", "4KiB:18446744073709551615"] {
        let mut child = Command::new(common::SHMCTL)
            .args(["create", "--hold", "--manager", &daemon.handle])
            .env("LIBSHM_POOL", pool)
            .env("LIBSHM_NAME_PREFIX", &prefix)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shmctl");
        // Time for the pool's thread to start on its shelf.
        std::thread::sleep(Duration::from_millis(500));
        drop(child.stdin.take());
        let mut status = None;
        wait_until(Duration::from_secs(10), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            status.is_some_and(|s| s.code().is_some())
                && !stderr.contains("panicked")
                && !stderr.contains("memory allocation"),
            "LIBSHM_POOL={pool}: {status:?}\n{stderr}"
        );
    }
}

/// Finding 3 (a leak for as long as the manager lives): a pooled segment
/// dropped as its process's last reference stayed in `/dev/shm` when the
/// process was killed soon after, until its manager shut down, while the
/// segments the process still held were reaped. The drop told the manager
/// at once that the name was released and unlinked (`link.release(name,
/// last)`, segment.rs:257), but left the unlinking to the pool's thread
/// (`give_back`, segment.rs:256), which gets to it only once it has topped
/// up its shelves (`fill` takes its list at the top of a round, pool.rs:270,
/// and the round's refills come first, pool.rs:278). The manager keeps a
/// released name that still exists only to unlink it at shutdown, and a
/// shared manager's shutdown may be hours away. Here the release is written
/// by a settle; the thread's own next registration writes it as surely.
#[test]
fn a_pooled_segment_dropped_just_before_a_crash_is_not_leaked() {
    const TEST: &str = "a_pooled_segment_dropped_just_before_a_crash_is_not_leaked";
    const SIZE: usize = 64 << 20;
    let prefix = format!("/h7spent{}_", id());
    if std::env::var_os(INNER).is_some() {
        let config = Config::default()
            .manager_executable(SHM_MANAGER)
            .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
            .pool(Some(PoolSizes::Fixed(vec![(SIZE, 4)])))
            .quiet_manager(true);
        let link = ManagerLink::launch(&config).unwrap();
        assert!(wait_until(Duration::from_secs(20), || link.pooled(SIZE) == 4));
        // Three taken: the thread sets about making three more (paging in
        // 64 MiB each); the drop of the fourth waits on its list meanwhile.
        let kept: Vec<_> = (0..3).map(|_| link.create(SIZE).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(2));
        let dropped = link.create(SIZE).unwrap();
        let name = *dropped.name();
        drop(dropped);
        link.settle().unwrap();
        println!(
            "handle={} dropped={name} there={}",
            link.handle(),
            std::path::Path::new("/dev/shm")
                .join(name.as_str().trim_start_matches('/'))
                .exists()
        );
        std::mem::forget(kept);
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
        unreachable!("killed");
    }
    let cleanup = PrefixCleanup(prefix.clone());
    let (status, stdout, stderr) = run_alone(TEST, Duration::from_secs(60));
    let handle = stdout
        .lines()
        .find_map(|line| line.split("handle=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    assert!(
        stdout.contains("there=true"),
        "the pool's thread unlinked the dropped segment before the kill; no race: {stdout}"
    );
    let mut bystander = common::RawClient::connect(handle);
    bystander.register(&format!("{prefix}bystander"));
    let dropped = stdout
        .lines()
        .find_map(|line| line.split("dropped=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the inner run said nothing: {status:?}\n{stdout}\n{stderr}"))
        .to_owned();
    // The manager reaps what the dead process held after its grace (1 s);
    // the bystander keeps it running.
    let reaped = wait_until(Duration::from_secs(6), || cleanup.names().is_empty());
    assert!(
        reaped,
        "left in /dev/shm 6 s after the process died, its manager still running: {:?} \
         (the dropped one: {dropped})",
        cleanup.names()
    );
    drop(bystander);
}

/// Finding 4 (a segment in transit unlinked): `shmctl gc --yes` removed a
/// segment whose creator had exited after pickling it, while a live manager
/// of ours kept it as in transit and its receiver had yet to open it. gc
/// judges a segment by its creator's liveness and by who maps it now
/// (inspect.rs:14-20); a handle in a queue maps nothing, so after
/// `--older-than` (1 minute by default, 3 s here) a tensor a slow consumer
/// has not reached yet "looks leaked". The manager that knows better was not
/// asked (`gc`, bin/shmctl/inspect.rs:96); its status documents listed
/// holders with counts, not names.
#[test]
fn gc_keeps_a_segment_a_live_manager_holds_in_transit() {
    if !common::in_private_pid_namespace("gc_keeps_a_segment_a_live_manager_holds_in_transit") {
        return;
    }
    gc_beside_a_segment_in_transit(false);
}

/// Findings 4 and 8 together: the manager that keeps the segment in transit
/// listens in another network namespace, where gc did not look for it.
#[test]
fn gc_keeps_a_segment_a_manager_in_another_network_namespace_holds_in_transit() {
    if !common::in_private_pid_namespace(
        "gc_keeps_a_segment_a_manager_in_another_network_namespace_holds_in_transit",
    ) {
        return;
    }
    gc_beside_a_segment_in_transit(true);
}

/// A producer leaves a segment in transit and exits; gc runs; the receiver
/// must still open it.
fn gc_beside_a_segment_in_transit(manager_in_own_netns: bool) {
    let prefix = format!("/h7gc{}_{}_", run_id(), u8::from(manager_in_own_netns));
    let _cleanup = PrefixCleanup(prefix.clone());
    let daemon = if manager_in_own_netns {
        let mut command = Command::new("unshare");
        command
            .args(["--net", "--", SHM_MANAGER, "--name-prefix", &prefix])
            .stderr(Stdio::null());
        common::Daemon::spawn(&mut command)
    } else {
        common::Daemon::quiet_under(&prefix)
    };
    let _bystander = common::bystander_under(&daemon, &prefix);
    // The producer: creates, shares (the refcount raised for the handle in
    // transit) and exits, as a DataLoader worker that put its last batch.
    let produced = Command::new(common::SHMCTL)
        .args(["create", "--share", "--manager", &daemon.handle])
        .env("LIBSHM_NAME_PREFIX", &prefix)
        .output()
        .unwrap();
    assert!(produced.status.success(), "{produced:?}");
    let share = String::from_utf8(produced.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let name = share.split_whitespace().nth(1).unwrap().to_owned();
    std::thread::sleep(Duration::from_secs(4));
    let gc = Command::new(common::SHMCTL)
        .args(["gc", "--prefix", &prefix, "--older-than", "3s", "--yes"])
        .output()
        .unwrap();
    let gc_said = String::from_utf8_lossy(&gc.stdout).into_owned();
    let opened = Command::new(common::SHMCTL)
        .args(["open", "--share", &share])
        .output()
        .unwrap();
    assert!(
        opened.status.success(),
        "the receiver could not open {name} after gc: {}\ngc said: {gc_said}\n\
         the manager's story: {}",
        String::from_utf8_lossy(&opened.stderr),
        common::story(&daemon.handle, &name)
    );
}

/// Finding 5 (a leak for as long as a child lives): a process whose private
/// pipe manager held its segments was killed while a child it had forked
/// earlier (one that never used libshm, and maps none of the segments: a
/// worker, a helper) lived on with copies of the pipes, and its segments
/// stayed until that child exited. The pipe manager watches no pid (its
/// `Effects` keep the default `watch_pid`, false:
/// transport-pipe/src/serve.rs:352, core/src/manager.rs:522), so its
/// client's holds last as long as the request pipe, and the pipe reaches
/// end of file (serve.rs:285) only once every copy is closed. (A child
/// forked after the segment was made maps it, and keeps it rightly.)
#[test]
fn a_pipe_clients_segments_are_reaped_when_it_dies_beside_a_forked_child() {
    pipe_client_dies_beside_a_child(
        "a_pipe_clients_segments_are_reaped_when_it_dies_beside_a_forked_child",
        false,
    );
}

/// With finding 5's fix: a segment the forked child maps (it was made before
/// the fork) is kept while the child lives, though its creator is dead.
#[test]
fn a_dead_pipe_clients_segment_its_child_maps_is_kept() {
    pipe_client_dies_beside_a_child("a_dead_pipe_clients_segment_its_child_maps_is_kept", true);
}

/// A pipe client forks a child that sleeps 8 s, makes a segment (before
/// the fork when `child_maps`), and is killed.
fn pipe_client_dies_beside_a_child(test: &str, child_maps: bool) {
    let prefix = format!("/h7pipe{}_{}_", id(), u8::from(child_maps));
    if std::env::var_os(INNER).is_some() {
        let config = Config::default()
            .manager_executable(SHM_MANAGER)
            .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
            .transport(libshm::TransportKind::Pipe)
            .quiet_manager(true);
        let link = ManagerLink::launch(&config).unwrap();
        link.settle().unwrap();
        let early = child_maps.then(|| link.create(4096).unwrap());
        link.settle().unwrap();
        let pid = fork_sleeping_child();
        // Made after the fork, the child does not map it.
        let segment = early.unwrap_or_else(|| link.create(4096).unwrap());
        link.settle().unwrap();
        println!("name={}", segment.name());
        println!("child={pid}");
        std::mem::forget(segment);
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
        unreachable!("killed");
    }
    let cleanup = PrefixCleanup(prefix.clone());
    let (status, stdout, stderr) = run_alone(test, Duration::from_secs(30));
    let field = |key: &str| {
        stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(key))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                panic!("no {key} from the inner run: {status:?}\n{stdout}\n{stderr}")
            })
    };
    let name = field("name=");
    let child: i32 = field("child=").parse().unwrap();
    if child_maps {
        // Past the reap grace (1 s) and then some, the child still maps it.
        let kept = !wait_until(Duration::from_secs(3), || cleanup.names().is_empty());
        let child_alive = !common::process_gone(child as u32);
        if let Some(pid) = rustix::process::Pid::from_raw(child) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        assert!(
            kept && child_alive,
            "{name} was unlinked while a live child mapped it (child alive: {child_alive})"
        );
        return;
    }
    let reaped = wait_until(Duration::from_secs(5), || cleanup.names().is_empty());
    let child_alive = !common::process_gone(child as u32);
    if let Some(pid) = rustix::process::Pid::from_raw(child) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    assert!(
        reaped,
        "{name} still in /dev/shm 5 s after its creator was killed (forked child alive: \
         {child_alive})"
    );
}

/// Finding 6 (a panic on a caller's size): with `LIBSHM_POOL=auto`, the
/// fourth create of a size past a quarter of the address space panicked
/// ("attempt to multiply with overflow") instead of failing as every create
/// of it had: `learn` weighs a size against the budget as `size *
/// AUTO_DEPTH` (pool.rs:244), unchecked; in a release build the product
/// wraps, and the pool keeps a shelf of a size it can never make.
#[test]
fn auto_pooling_an_impossible_size_fails_the_create_and_nothing_else() {
    let prefix = format!("/h7auto{}_", id());
    let _cleanup = PrefixCleanup(prefix.clone());
    let config = Config::default()
        .manager_executable(SHM_MANAGER)
        .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
        .pool(Some(PoolSizes::Auto))
        .quiet_manager(true);
    let link = ManagerLink::launch(&config).unwrap();
    for size in [usize::MAX / 2, usize::MAX - 64] {
        for attempt in 0..6 {
            let created = std::panic::catch_unwind(|| link.create(size).map(drop));
            match created {
                Ok(result) => assert!(result.is_err(), "a segment of {size} bytes"),
                Err(_) => panic!("create({size}) panicked on attempt {attempt}"),
            }
        }
        assert_eq!(link.pooled(size), 0, "a shelf for {size} bytes");
    }
    link.close().unwrap();
}

/// Finding 7 (a client that stops working): a link started with a
/// configuration of its own (`ManagerLink::launch(&config)`) replaced its
/// manager with one started from the process-wide configuration (the
/// environment's), which refuses the link's names when their prefixes
/// differ. Hit by a forked child over pipes (it starts a private manager:
/// `launch_pipe`, link.rs:470, `registry::config()`) and by recovery from a
/// killed manager (`revive`, link.rs:499, and `replace_manager`,
/// link.rs:516): every create then failed ("refused", or the child's new
/// manager "failed"), and held names lost their protection.
#[test]
fn a_link_with_its_own_configuration_replaces_its_manager_with_the_same() {
    if !in_own_process(
        "a_link_with_its_own_configuration_replaces_its_manager_with_the_same",
        Duration::from_secs(60),
    ) {
        return;
    }
    let prefix = format!("/h7own{}_", id());
    let _cleanup = PrefixCleanup(prefix.clone());
    let config = |transport| {
        Config::default()
            .manager_executable(SHM_MANAGER)
            .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
            .transport(transport)
            .quiet_manager(true)
    };

    // A forked child of a process whose private pipe manager it cannot use.
    let link = ManagerLink::launch(&config(libshm::TransportKind::Pipe)).unwrap();
    let kept = link.create(4096).unwrap();
    let status = fork_and_wait(|| match link.create(4096).and_then(|_| link.settle()) {
        Ok(()) => true,
        Err(err) => {
            eprintln!("the forked child's create: {err}");
            false
        }
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "a forked child could not create through its parent's link (status {status:#x})"
    );
    drop(kept);
    link.close().unwrap();

    // A process whose Unix manager was killed.
    let link = ManagerLink::launch(&config(libshm::TransportKind::Unix)).unwrap();
    let held = link.create(4096).unwrap();
    link.settle().unwrap();
    let manager = libshm::status::query(link.handle().as_str(), libshm::status::Detail::Summary)
        .unwrap()
        .manager
        .pid as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(manager).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || common::process_gone(
        manager as u32
    )));
    let after = link
        .create(4096)
        .and_then(|segment| link.settle().map(|()| segment));
    assert!(
        after.is_ok(),
        "no create after the manager was replaced: {}",
        after.unwrap_err()
    );
    assert_eq!(link.held(), 2, "both names held, and registered again");
    drop(held);
    link.close().unwrap();
}

/// Withstood: a process that execs another program (same pid) with
/// segments still registered, here its pool's shelves and one it held: the
/// exec closes its connection and drops its mappings, and nothing of the
/// old program is left to release them. The manager reaps them while the
/// new program runs, not once it exits.
#[test]
fn segments_of_a_process_that_execs_are_reaped_while_the_new_program_runs() {
    const TEST: &str = "segments_of_a_process_that_execs_are_reaped_while_the_new_program_runs";
    let prefix = format!("/h7exec{}_", id());
    if std::env::var_os(INNER).is_some() {
        let config = Config::default()
            .manager_executable(SHM_MANAGER)
            .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
            .pool(Some("4KiB:3".parse::<PoolSizes>().unwrap()))
            .quiet_manager(true);
        let link = ManagerLink::launch(&config).unwrap();
        assert!(wait_until(Duration::from_secs(5), || link.pooled(4096) == 3));
        let held = link.create(8192).unwrap();
        link.settle().unwrap();
        println!("handle={} pid={}", link.handle(), std::process::id());
        std::mem::forget(held);
        use std::os::unix::process::CommandExt;
        // Our stdout and stderr go with the exec: the outer run reads to
        // their end only once the new program exits.
        let err = Command::new("sleep")
            .arg("6")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .exec();
        panic!("exec: {err}");
    }
    let cleanup = PrefixCleanup(prefix.clone());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(INNER, std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.contains("handle=") {
        line.clear();
        if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() == 0 {
            break;
        }
    }
    assert!(line.contains("handle="), "the inner run said nothing");
    // After the exec: a bystander keeps the manager running.
    let handle = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("handle="))
        .unwrap()
        .to_owned();
    let mut bystander = common::RawClient::connect(&handle);
    bystander.register(&format!("{prefix}bystander"));
    std::thread::sleep(Duration::from_millis(500));
    let reaped = wait_until(Duration::from_secs(4), || cleanup.names().is_empty());
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        reaped,
        "left while the exec'd program still ran ({running}): {:?}",
        cleanup.names()
    );
}

/// Finding 8 (a live manager's directory called stale): `shmctl doctor`
/// told root to `rm -r` the directory of a live manager of ours that
/// listens in another network namespace (a container sharing `/tmp`):
/// managers are found by their listening sockets in `/proc/net/unix`, which
/// lists this namespace's only (`stale_dirs`, bin/shmctl/managers.rs:71),
/// and the lock every manager of ours holds on its directory was not
/// looked at. Removing it leaves that manager's clients, and every handle
/// to it in flight, unable to connect.
#[test]
fn doctor_does_not_call_a_live_managers_directory_stale() {
    if !common::is_root_or_skip("root, to run a manager in a network namespace of its own") {
        return;
    }
    let prefix = format!("/h7netns{}_", id());
    let mut command = Command::new("unshare");
    command
        .args(["--net", "--", SHM_MANAGER, "--name-prefix", &prefix])
        .stderr(Stdio::null());
    let daemon = common::Daemon::spawn(&mut command);
    // Reachable by path from here, unseen in our /proc/net/unix.
    let _bystander = common::bystander_under(&daemon, &prefix);
    let dir = std::path::Path::new(&daemon.handle)
        .parent()
        .unwrap()
        .to_owned();
    // Doctor leaves directories younger than 10 s alone (a manager starting).
    std::thread::sleep(Duration::from_secs(11));
    let doctor = Command::new(common::SHMCTL)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let managers = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["id"] == "managers")
        .unwrap();
    let stale = &managers["details"]["stale_dirs"];
    assert!(
        !stale
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == dir.to_str().unwrap()),
        "doctor calls the live manager's {} stale: {stale}",
        dir.display()
    );
    let live = &managers["details"]["live"];
    assert!(
        live.as_array()
            .unwrap()
            .iter()
            .any(|m| m["handle"] == daemon.handle.as_str()),
        "doctor does not list the live manager {}: {live}",
        daemon.handle
    );
}

/// Finding 5, read late: the pipe client's registrations are read only
/// after it died (its manager was slow: stopped here while the client
/// wrote them and was killed), beside a forked child that keeps the pipes
/// open. They must still end with the client, not with the pipes.
///
/// Guards a finding that failed about 1 run in 4 under load (94a43bf): a
/// pipe manager stopped before it took its parent's pidfd resumed after its
/// client died, reparented, and took init for its client; the client's
/// frames then lasted as long as the pipes. The launcher now names the
/// client (`--client-pid`) and a manager that finds it gone ends its holds
/// as it reads them. The manager here is started through a script that
/// prints its handshake and stops itself before it runs `shm-manager`, so
/// the manager always looks for its client after the client died: without
/// the fix this fails every run.
#[test]
fn a_pipe_clients_registrations_read_after_its_death_are_reaped_beside_its_child() {
    const TEST: &str =
        "a_pipe_clients_registrations_read_after_its_death_are_reaped_beside_its_child";
    let prefix = format!("/h7late{}_", id());
    if std::env::var_os(INNER).is_some() {
        let config = Config::default()
            .manager_executable(manager_stopped_at_start())
            .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
            .transport(libshm::TransportKind::Pipe)
            .ack_mode(AckMode::Pipelined { max_in_flight: 32 })
            .quiet_manager(true);
        let link = ManagerLink::launch(&config).unwrap();
        let handle = link.handle().to_string();
        let manager: i32 = handle.strip_prefix("pipe:").unwrap().parse().unwrap();
        // Stopped by itself, or a continue sent after our death would be
        // spent before its stop, which nothing would then end.
        assert!(
            wait_until(Duration::from_secs(5), || is_stopped(manager)),
            "the manager {manager} did not stop"
        );
        let pid = fork_sleeping_child();
        let segments: Vec<_> = (0..3).map(|_| link.create(4096).unwrap()).collect();
        println!("manager={manager} child={pid}");
        std::mem::forget(segments);
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
        unreachable!("killed");
    }
    let cleanup = PrefixCleanup(prefix.clone());
    let (status, stdout, stderr) = run_alone(TEST, Duration::from_secs(30));
    let field = |key: &str| -> i32 {
        stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(key))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| {
                panic!("no {key} from the inner run: {status:?}\n{stdout}\n{stderr}")
            })
    };
    let (manager, child) = (field("manager="), field("child="));
    let signal = |pid: i32, signal| {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    };
    assert_eq!(cleanup.names().len(), 3, "three segments made");
    signal(manager, rustix::process::Signal::CONT);
    let reaped = wait_until(Duration::from_secs(5), || cleanup.names().is_empty());
    let child_alive = !common::process_gone(child as u32);
    signal(child, rustix::process::Signal::KILL);
    assert!(
        reaped,
        "{:?} still in /dev/shm 5 s after their creator was killed (forked child alive: \
         {child_alive})",
        cleanup.names()
    );
}

/// The window the test above left: a pipe manager held still right after
/// its handshake, while its client registers names, forks a child that keeps
/// the pipes open, and is killed. The manager looked for its client only
/// after the handshake, so it resumed after its client's death; started
/// without `--client-pid` (a launcher that does not name its client), it
/// took its new parent (init) for its client, and the names lasted as long
/// as the child. Failed every run before the manager held its client before
/// its handshake (`ClientProcess::hold`).
///
/// The manager is held by a FIFO bound over `/dev/null` in a mount namespace
/// of its own: after its handshake it opens `/dev/null` for its stdout and
/// blocks there until the test opens the FIFO for reading, after the
/// client's death. Needs root (a mount namespace).
#[test]
fn a_pipe_manager_held_after_its_handshake_watches_the_parent_that_launched_it() {
    pipe_client_dies_while_its_manager_is_held_after_the_handshake(
        "a_pipe_manager_held_after_its_handshake_watches_the_parent_that_launched_it",
        false,
    );
}

/// The same with `--client-pid`, as `ChildPipes` starts it: the pidfd taken
/// before the handshake reports the client's exit. (This passed before that
/// change too: a manager that looked late found no process with the
/// client's pid.)
#[test]
fn a_pipe_manager_held_after_its_handshake_watches_the_launcher_it_was_named() {
    pipe_client_dies_while_its_manager_is_held_after_the_handshake(
        "a_pipe_manager_held_after_its_handshake_watches_the_launcher_it_was_named",
        true,
    );
}

/// The FIFO and the manager executable (a script) of
/// [`pipe_client_dies_while_its_manager_is_held_after_the_handshake`], named
/// for this run and whether the client is named; removed on drop.
struct HeldAfterHandshake {
    fifo: std::path::PathBuf,
    script: std::path::PathBuf,
}

impl HeldAfterHandshake {
    /// The script's path (the FIFO's is the same, ending `.fifo`).
    fn script(named: bool) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "h7-held-after-handshake-{}-{}.sh",
            id(),
            u8::from(named)
        ))
    }

    /// Creates the FIFO and a script that runs `shm-manager` with its
    /// arguments (less `--client-pid <pid>` unless `named`) in a mount
    /// namespace of its own where `/dev/null` is that FIFO. `unshare` and
    /// `sh` exec in turn, so the manager keeps the pid the launcher spawned.
    fn create(named: bool) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let script = Self::script(named);
        let files = Self {
            fifo: script.with_extension("fifo"),
            script,
        };
        let _ = std::fs::remove_file(&files.fifo);
        let fifo = std::ffi::CString::new(files.fifo.to_str().unwrap()).unwrap();
        // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
        let drop_client_pid = r#"skip=
for arg do
  shift
  if [ -n "$skip" ]; then skip=; continue; fi
  if [ "$arg" = --client-pid ]; then skip=1; continue; fi
  set -- "$@" "$arg"
done
"#;
        let script = format!(
            "#!/bin/sh\n{}exec unshare --mount sh -c 'mount --bind \"$0\" /dev/null && exec \"$@\"' \
             '{}' '{SHM_MANAGER}' \"$@\"\n",
            if named { "" } else { drop_client_pid },
            files.fifo.display(),
        );
        std::fs::write(&files.script, script).unwrap();
        std::fs::set_permissions(&files.script, std::fs::Permissions::from_mode(0o755)).unwrap();
        files
    }
}

impl Drop for HeldAfterHandshake {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.fifo);
        let _ = std::fs::remove_file(&self.script);
    }
}

/// Whether the process `pid` is blocked opening a FIFO (with no reader).
fn blocked_opening_a_fifo(pid: u32) -> bool {
    let read = |what: &str| std::fs::read_to_string(format!("/proc/{pid}/{what}"));
    read("wchan").is_ok_and(|wchan| wchan.contains("wait_for_partner") || wchan.contains("fifo"))
        || read("stack").is_ok_and(|stack| stack.contains("fifo_open"))
}

/// A pipe client whose manager is held just after its handshake (see
/// [`HeldAfterHandshake`]) forks a child that sleeps 8 s, makes three
/// segments, and is killed; then the manager goes on. The segments must go
/// with the client, not with the child.
fn pipe_client_dies_while_its_manager_is_held_after_the_handshake(test: &str, named: bool) {
    if !common::is_root_or_skip("root, to give a pipe manager a mount namespace of its own") {
        return;
    }
    let prefix = format!("/h7held{}_{}_", id(), u8::from(named));
    if std::env::var_os(INNER).is_some() {
        let config = Config::default()
            .manager_executable(HeldAfterHandshake::script(named))
            .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
            .transport(libshm::TransportKind::Pipe)
            .ack_mode(AckMode::Pipelined { max_in_flight: 32 })
            .quiet_manager(true);
        let link = ManagerLink::launch(&config).unwrap();
        let manager = common::pipe_manager_pid(&link.handle().to_string());
        // First, so the outer run can let it go however this run ends.
        println!("manager={manager}");
        // Past its handshake, held before what follows it.
        assert!(
            wait_until(Duration::from_secs(5), || blocked_opening_a_fifo(manager)),
            "the manager {manager} did not block opening /dev/null after its handshake"
        );
        let pid = fork_sleeping_child();
        let segments: Vec<_> = (0..3).map(|_| link.create(4096).unwrap()).collect();
        println!("child={pid}");
        std::mem::forget(segments);
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
        unreachable!("killed");
    }
    let cleanup = PrefixCleanup(prefix.clone());
    let files = HeldAfterHandshake::create(named);
    let (status, stdout, stderr) = run_alone(test, Duration::from_secs(30));
    let field = |key: &str| -> i32 {
        stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(key))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| {
                panic!("no {key} from the inner run: {status:?}\n{stdout}\n{stderr}")
            })
    };
    let manager = field("manager=");
    let held = blocked_opening_a_fifo(manager as u32);
    let made = cleanup.names().len();
    // A reader lets the manager's open of /dev/null return.
    let reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&files.fifo)
            .unwrap()
    };
    let child = field("child=");
    let kill = |pid: i32| {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    };
    assert_eq!(made, 3, "three segments made");
    let reaped = wait_until(Duration::from_secs(5), || cleanup.names().is_empty());
    let child_alive = !common::process_gone(child as u32);
    kill(child);
    drop(reader);
    if !reaped {
        kill(manager);
    }
    assert!(
        held,
        "the manager {manager} was not held until its client died"
    );
    assert!(
        reaped,
        "{:?} still in /dev/shm 5 s after their creator was killed (forked child alive: \
         {child_alive})",
        cleanup.names()
    );
}

/// The names report that gc asks for (finding 4's fix) beside 262,144 held
/// names must not stall another client, as the summary must not (hostile
/// round 1): it lists every name, so it is written in pieces between rounds
/// of the loop, not built whole in one.
#[test]
fn a_names_report_beside_many_held_names_does_not_stall_another_client() {
    use std::io::{Read, Write};
    let _machine = exclusive();
    let daemon = common::Daemon::start_with_stderr(&[], Stdio::null());
    let tag = format!("/torch_h7many_{}", id());
    let _holders = daemon.holders(&tag, 64, 4_096);
    let mut lines = 0;
    common::measure::assert_no_stall_while(
        &daemon.handle,
        "names reports",
        "262,144 names held by 64 clients",
        || {
            let mut stream = std::os::unix::net::UnixStream::connect(&daemon.handle).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream
                .write_all(&common::frame(0, "/libshm_names_v1"))
                .unwrap();
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            lines = text
                .lines()
                .filter(|line| line.starts_with("name "))
                .count();
        },
    );
    assert!(lines >= 64 * 4_096, "every name reported: {lines}");
}
