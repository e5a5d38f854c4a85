//! Processes that die holding segments, and the manager cleaning up after them.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Holder, shm_exists, wait_until};

#[test]
fn a_sigkilled_holder_leaks_nothing_once_every_client_is_gone() {
    // PyTorch's behaviour (no reaping): everything goes at shutdown.
    let mut daemon = Daemon::start(&["--reap-grace", "off"]);
    let holder = Holder::spawn(
        &[
            "create",
            "--manager",
            &daemon.handle,
            "--count",
            "5",
            "--size",
            "64K",
        ],
        5,
        &[],
    );
    let names = holder.names();
    assert!(names.iter().all(|n| shm_exists(n)));
    holder.kill();
    let killed = Instant::now();
    assert!(daemon.wait_exit(Duration::from_secs(4)).is_some());
    assert!(
        names.iter().all(|n| !shm_exists(n)),
        "all unlinked at shutdown"
    );
    assert!(
        killed.elapsed() <= Duration::from_secs(3),
        "within the 2 s shutdown timeout plus 1 s"
    );
}

#[test]
fn a_sigkilled_holder_is_reaped_while_other_clients_go_on() {
    let mut daemon = Daemon::start(&["--reap-grace", "1s"]);
    let mut bystander = daemon.bystander();
    let holder = Holder::spawn(
        &["create", "--manager", &daemon.handle, "--count", "5"],
        5,
        &[],
    );
    let names = holder.names();
    holder.kill();
    let killed = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || names
        .iter()
        .all(|n| !shm_exists(n))));
    assert!(
        killed.elapsed() <= Duration::from_secs(2),
        "within the grace period plus 1 s"
    );
    assert!(daemon.is_running());
    bystander.register(&common::unique_name("bystander"));
}

#[test]
fn a_segment_the_dead_process_opened_is_reaped_after_the_live_holder_lets_go() {
    let daemon = Daemon::start(&["--reap-grace", "1s"]);
    let mut owner = Holder::spawn(
        &["create", "--manager", &daemon.handle, "--size", "4096"],
        1,
        &[],
    );
    let name = owner.segments[0].name.clone();
    let opener = Holder::spawn(
        &[
            "open",
            "--manager",
            &daemon.handle,
            "--name",
            &name,
            "--size",
            "4096",
        ],
        1,
        &[],
    );
    opener.kill(); // its reference in the header can never be dropped now
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(shm_exists(&name), "the owner still holds it");
    assert_eq!(owner.ask("refcount"), "refcount=2");
    assert!(owner.finish().success());
    assert!(shm_exists(&name), "refcount stuck at 1 by the dead opener");
    assert!(
        wait_until(Duration::from_secs(3), || !shm_exists(&name)),
        "reaped"
    );
}

/// The `handle=...` field of a report line.
fn handle_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("handle="))
        .unwrap_or_else(|| panic!("no handle in {line:?}"))
        .to_owned()
}

#[test]
fn clients_of_a_killed_manager_meet_again_at_the_same_handle_and_leak_nothing() {
    let mut daemon = Daemon::start(&["--reap-grace", "1s"]);
    let handle = daemon.handle.clone();
    let mut first = Holder::spawn(&["create", "--manager", &handle, "--count", "2"], 2, &[]);
    let mut second = Holder::spawn(&["create", "--manager", &handle, "--count", "2"], 2, &[]);
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();

    // Each notices on its next call; the first to notice starts a manager
    // that adopts the dead one's directory, the other finds it there.
    let reply = first.ask("create 4096");
    assert_eq!(
        handle_of(&reply),
        handle,
        "first recovered at the old handle: {reply}"
    );
    let reply = second.ask("create 4096");
    assert_eq!(handle_of(&reply), handle, "second met it there: {reply}");

    // The revived manager knows what both hold: the first dies, and its
    // segments (re-registered and new) are reaped while the second lives on.
    let first_names: Vec<String> = first.names();
    let mut first_new = first_names.clone();
    first_new.push(reply_name(&first.ask("create 4096")));
    first.kill();
    let killed = Instant::now();
    // The revived manager runs with the clients' defaults: a 2 s grace period.
    assert!(wait_until(Duration::from_secs(4), || first_new
        .iter()
        .all(|n| !shm_exists(n))));
    assert!(
        killed.elapsed() <= Duration::from_secs(3),
        "within the grace period plus 1 s"
    );
    assert!(
        second.names().iter().all(|n| shm_exists(n)),
        "the survivor's segments are untouched"
    );
    assert_eq!(second.ask("refcount"), "refcount=1,1,1");

    let second_names = second.names();
    assert!(second.finish().success());
    assert!(second_names.iter().all(|n| !shm_exists(n)));
    let dir = std::path::Path::new(&handle).parent().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(4), || !dir.exists()),
        "the revived manager cleaned up after itself"
    );
}

fn reply_name(line: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("name="))
        .unwrap_or_else(|| panic!("no name in {line:?}"))
        .to_owned()
}

#[test]
fn segments_of_a_process_that_died_while_its_manager_was_dead_are_swept_up() {
    // The sweep reaps only where it can inspect every process (see
    // `hostile_namespace.rs` for where it cannot).
    if !common::in_private_pid_namespace(
        "segments_of_a_process_that_died_while_its_manager_was_dead_are_swept_up",
    ) {
        return;
    }
    let prefix = format!("/crashT{}_", common::run_id());
    // A sweep's guessed orphan waits out the linger (a producer that let go
    // of a pickled tensor looks the same): one second here.
    let scratch = std::env::temp_dir().join(format!("libshm-crash-{}", common::run_id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let manager = common::short_linger_manager(&scratch);
    let envs = [
        ("LIBSHM_NAME_PREFIX", prefix.as_str()),
        ("LIBSHM_MANAGER", manager.to_str().unwrap()),
    ];
    let mut daemon = Daemon::start(&["--name-prefix", &prefix]);
    let handle = daemon.handle.clone();
    let unlucky = Holder::spawn(&["create", "--manager", &handle, "--count", "2"], 2, &envs);
    let mut survivor = Holder::spawn(&["create", "--manager", &handle], 1, &envs);
    let lost = unlucky.names();
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    unlucky.kill(); // dies before it ever noticed: no manager knows its segments now

    let reply = survivor.ask("create 4096");
    let revived = Instant::now();
    assert_eq!(handle_of(&reply), handle);
    assert!(lost.iter().all(|n| shm_exists(n)));
    assert!(
        wait_until(Duration::from_secs(4), || lost
            .iter()
            .all(|n| !shm_exists(n))),
        "the revived manager found and reaped them"
    );
    assert!(
        revived.elapsed() <= Duration::from_secs(3),
        "within the grace period plus 1 s"
    );
    assert!(survivor.names().iter().all(|n| shm_exists(n)));
    assert!(survivor.finish().success());
}
