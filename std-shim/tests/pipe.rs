//! The pipe transport with real processes and real /dev/shm: the create,
//! open, drop and crash stories of the Unix transport, each process with a
//! private manager over pipes.

mod common;

use std::time::{Duration, Instant};

use common::{
    Daemon, Holder, PIPE_ENV, Report, SHM_MANAGER, pipe_manager_pid, process_gone, shm_exists,
    wait_until,
};
use libshm::{Config, ManagerLink, SharedSegment, TransportKind};

/// This test process uses pipe managers too (every test installs the same).
fn pipe_mode() -> Config {
    let config = Config::from_env()
        .unwrap()
        .manager_executable(SHM_MANAGER)
        .transport(TransportKind::Pipe);
    config.clone().install();
    config
}

#[test]
fn segments_open_across_processes_with_refcounts_and_data_both_ways() {
    pipe_mode();
    let mut creator = Holder::spawn(&["create", "--size", "4096", "--fill", "7"], 1, PIPE_ENV);
    let report = creator.segments[0].clone();
    let creator_manager = pipe_manager_pid(&report.handle);
    assert!(!process_gone(creator_manager));
    assert_eq!(report.refcount, 1);

    // The creator's manager cannot be reached from here: ours protects us.
    let opened = SharedSegment::open(
        &report.manager_handle(),
        &report.segment_name(),
        report.size,
    )
    .unwrap();
    let ours = opened.manager_handle().to_string();
    assert!(ours.starts_with("pipe:") && ours != report.handle, "{ours}");
    assert_eq!(opened.refcount_now(), 2);
    let mut byte = [0u8];
    opened.read_at(4095, &mut byte).unwrap();
    assert_eq!(byte, [7], "the creator's data, seen here");
    opened.fill(9);
    assert_eq!(creator.ask("check 9"), "ok refcount=2", "ours, seen there");

    // A third process, with a private manager of its own.
    let mut third = Holder::spawn(
        &[
            "open",
            "--manager",
            &report.handle,
            "--name",
            &report.name,
            "--size",
            "4096",
        ],
        1,
        PIPE_ENV,
    );
    let third_manager = pipe_manager_pid(&third.segments[0].handle);
    assert!(third_manager != creator_manager && third.segments[0].handle != ours);
    assert_eq!(third.segments[0].refcount, 3);
    assert_eq!(third.ask("fill 5"), "ok");
    assert_eq!(creator.ask("check 5"), "ok refcount=3");

    drop(opened);
    assert_eq!(creator.ask("refcount"), "refcount=2");
    assert!(creator.finish().success());
    assert_eq!(third.ask("check 5"), "ok refcount=1");
    assert!(third.finish().success());
    assert!(!shm_exists(&report.name), "the last holder unlinked it");
    assert!(
        wait_until(Duration::from_secs(1), || process_gone(creator_manager)
            && process_gone(third_manager)),
        "each manager exits with its process"
    );
}

#[test]
fn a_pipe_managed_process_takes_its_names_along_but_mappings_stay_valid() {
    // A pipe manager is a family of one: once its process is gone, it
    // unlinks every name that process registered, even one others still map
    // (a Unix manager would wait for the whole family). Mappings are not
    // affected; only opening by name fails from then on.
    pipe_mode();
    let creator = Holder::spawn(&["create", "--size", "64", "--fill", "3"], 1, PIPE_ENV);
    let report = creator.segments[0].clone();
    let opened = SharedSegment::open(&report.manager_handle(), &report.segment_name(), 64).unwrap();
    assert!(creator.finish().success());
    assert!(
        wait_until(Duration::from_secs(1), || !shm_exists(&report.name)),
        "unlinked by the creator's manager when the creator exited"
    );
    assert_eq!(opened.refcount_now(), 1);
    let mut byte = [0u8];
    opened.read_at(63, &mut byte).unwrap();
    assert_eq!(byte, [3], "our mapping still works");
    let err =
        SharedSegment::open(&report.manager_handle(), &report.segment_name(), 64).unwrap_err();
    assert!(matches!(err, libshm::Error::NotFound { .. }), "{err}");
    drop(opened); // the last reference: unlinking a name already gone is fine
    assert!(!shm_exists(&report.name));
}

#[test]
fn a_sigkilled_holder_is_cleaned_up_by_its_pipe_manager_within_a_second() {
    let holder = Holder::spawn(&["create", "--count", "5", "--size", "64K"], 5, PIPE_ENV);
    let manager = pipe_manager_pid(&holder.segments[0].handle);
    let names = holder.names();
    assert!(names.iter().all(|n| shm_exists(n)));
    holder.kill();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || names
            .iter()
            .all(|n| !shm_exists(n))),
        "still there: {:?}",
        names.iter().filter(|n| shm_exists(n)).collect::<Vec<_>>()
    );
    assert!(
        wait_until(Duration::from_secs(1), || process_gone(manager)),
        "the manager exits once its client is gone"
    );
    assert!(killed.elapsed() <= Duration::from_secs(1));
}

#[test]
fn a_holder_that_closes_cleanly_leaves_nothing_and_its_manager_exits() {
    let holder = Holder::spawn(&["create", "--count", "3"], 3, PIPE_ENV);
    let manager = pipe_manager_pid(&holder.segments[0].handle);
    let names = holder.names();
    assert!(holder.finish().success());
    assert!(names.iter().all(|n| !shm_exists(n)));
    assert!(wait_until(Duration::from_secs(1), || process_gone(manager)));
}

/// How the holder in [`a_killed_pipe_manager`] ends.
#[derive(Clone, Copy, Debug)]
enum Exit {
    Clean,
    Killed,
}

/// A holder whose pipe manager is SIGKILLed: its next create starts a new
/// manager, which learns every name the holder still holds, so the holder's
/// exit leaves nothing behind either way.
fn a_killed_pipe_manager(exit: Exit) {
    let mut holder = Holder::spawn(&["create", "--count", "2"], 2, PIPE_ENV);
    let old = pipe_manager_pid(&holder.segments[0].handle);
    let pid = rustix::process::Pid::from_raw(old as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    assert!(wait_until(Duration::from_secs(2), || process_gone(old)));
    let mut names = holder.names();
    assert!(
        names.iter().all(|n| shm_exists(n)),
        "a killed manager unlinks nothing"
    );

    let line = holder.ask("create 4096");
    assert!(line.starts_with("handle="), "{line}");
    let created = Report::parse(&line);
    let new = pipe_manager_pid(&created.handle);
    assert_ne!(new, old);
    assert!(!process_gone(new));
    assert!(shm_exists(&created.name));
    names.push(created.name);

    match exit {
        Exit::Clean => assert!(holder.finish().success()),
        Exit::Killed => holder.kill(),
    }
    assert!(
        wait_until(Duration::from_secs(1), || names
            .iter()
            .all(|n| !shm_exists(n))),
        "{exit:?}: left behind {:?}",
        names.iter().filter(|n| shm_exists(n)).collect::<Vec<_>>()
    );
    assert!(wait_until(Duration::from_secs(1), || process_gone(new)));
}

#[test]
fn a_killed_pipe_manager_is_replaced_and_a_killed_client_still_leaks_nothing() {
    a_killed_pipe_manager(Exit::Killed);
}

#[test]
fn a_killed_pipe_manager_is_replaced_and_a_clean_exit_leaves_nothing() {
    a_killed_pipe_manager(Exit::Clean);
}

#[test]
fn in_process_a_pipe_manager_is_private_and_replaced_when_killed() {
    let config = pipe_mode();
    let manager = ManagerLink::launch(&config).unwrap();
    let first = manager.handle();
    let first_pid = pipe_manager_pid(first.as_str());
    let kept = manager.create(128).unwrap();
    kept.fill(1);

    // Another process's pipe handle, or our own, reaches a manager of ours.
    let default = ManagerLink::default_for_process().unwrap();
    let elsewhere = format!("pipe:{}", u32::MAX).parse().unwrap();
    let other = ManagerLink::connect(&elsewhere).unwrap();
    assert_eq!(other.handle(), default.handle());
    assert_eq!(ManagerLink::connect(&first).unwrap().handle(), first);

    let pid = rustix::process::Pid::from_raw(first_pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    assert!(wait_until(Duration::from_secs(2), || process_gone(
        first_pid
    )));
    let next = manager.create(128).unwrap();
    let second = manager.handle();
    assert_ne!(second, first);
    assert!(!process_gone(pipe_manager_pid(second.as_str())));
    assert_eq!(manager.held(), 2);
    assert!(shm_exists(kept.name().as_str()) && shm_exists(next.name().as_str()));
    drop((kept, next));
    manager.settle().unwrap();
    assert_eq!(manager.held(), 0);
}

/// A private manager that stalls past the reply timeout is given up on and
/// replaced, and what is held is registered with its successor. The stalled
/// one must not come back to its end of file and unlink every name it knew:
/// the link kills it before letting its pipes go.
#[test]
fn a_pipe_manager_given_up_on_is_killed_and_unlinks_nothing_its_successor_holds() {
    let config = pipe_mode().reply_timeout(Some(Duration::from_millis(300)));
    let manager = ManagerLink::launch(&config).unwrap();
    let first_pid = pipe_manager_pid(manager.handle().as_str());
    let kept = manager.create(128).unwrap();
    kept.fill(7);
    manager.settle().unwrap();
    let signal = |signal| {
        let pid = rustix::process::Pid::from_raw(first_pid as i32).unwrap();
        rustix::process::kill_process(pid, signal)
    };
    signal(rustix::process::Signal::STOP).unwrap();
    let late = manager.create(128).unwrap();
    assert!(
        manager.settle().is_err(),
        "the stalled manager's reply timed out"
    );
    // The next use replaces it, and registers what is held there.
    let next = manager.create(128).unwrap();
    manager.settle().unwrap();
    assert_ne!(pipe_manager_pid(manager.handle().as_str()), first_pid);
    // Had it only been let go, it would wake now and unlink what it knew.
    let _ = signal(rustix::process::Signal::CONT);
    assert!(
        wait_until(Duration::from_secs(3), || process_gone(first_pid)),
        "the manager given up on was stopped for good"
    );
    std::thread::sleep(Duration::from_millis(500));
    for segment in [&kept, &late, &next] {
        assert!(shm_exists(segment.name().as_str()), "{}", segment.name());
    }
    let mut data = [0u8; 128];
    kept.read_at(0, &mut data).unwrap();
    assert!(data.iter().all(|&b| b == 7), "its data is intact");
    drop((kept, late, next));
    manager.settle().unwrap();
    assert_eq!(manager.held(), 0);
}

#[test]
fn a_pipe_configured_process_still_uses_unix_managers_it_is_given() {
    let daemon = Daemon::start(&[]);
    let holder = Holder::spawn(
        &["create", "--manager", &daemon.handle, "--count", "2"],
        2,
        PIPE_ENV,
    );
    assert!(holder.segments.iter().all(|s| s.handle == daemon.handle));
    let names = holder.names();
    assert!(holder.finish().success());
    assert!(names.iter().all(|n| !shm_exists(n)));
}
