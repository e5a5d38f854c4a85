//! Who holds a name, frame by frame (issue 9): holds belong to a connection
//! and the pid in each frame, a release of a name not held is ignored, and a
//! name whose header refcount counts more than its dead registrants is in
//! transit, not orphaned. Raw PyTorch frames on a real socket, real segments
//! in /dev/shm created as PyTorch's creator creates them.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{
    Daemon, RawClient, create_segment, remove_segment, set_refcount, shm_exists, unique_name,
    wait_until,
};

/// The grace period the managers here run with.
const GRACE: Duration = Duration::from_secs(1);
const GRACE_ARG: &str = "1s";
/// How late a reap may be: the grace period plus 1 s.
const REAP_BOUND: Duration = Duration::from_secs(2);

/// Registers `name` for `pid` on `client`, then creates it with refcount 1,
/// as PyTorch's creator does.
fn create_as(client: &mut RawClient, pid: i32, name: &str) {
    client.register_as(pid, name);
    create_segment(name, 1, 4096);
}

/// Names that are gone from /dev/shm.
fn gone(names: &[String]) -> Vec<&str> {
    names
        .iter()
        .filter(|n| !shm_exists(n))
        .map(String::as_str)
        .collect()
}

/// Names still in /dev/shm.
fn present(names: &[String]) -> Vec<&str> {
    names
        .iter()
        .filter(|n| shm_exists(n))
        .map(String::as_str)
        .collect()
}

/// Waits until every one of `names` is gone, up to `bound` after `since`;
/// returns how long after `since` that was, or the names still there.
fn reaped_within(names: &[String], since: Instant, bound: Duration) -> Result<Duration, String> {
    let left = bound.saturating_sub(since.elapsed());
    if wait_until(left, || present(names).is_empty()) {
        Ok(since.elapsed())
    } else {
        Err(format!(
            "{:?} still in /dev/shm {:.1} s later",
            present(names),
            since.elapsed().as_secs_f64()
        ))
    }
}

/// A process that lives until killed, whose pid frames can carry.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Self {
        Self(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// SIGKILL, returning when it happened.
    fn kill(&mut self) -> Instant {
        self.0.kill().unwrap();
        let killed = Instant::now();
        self.0.wait().unwrap();
        killed
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the test's segments whatever happens.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.iter().for_each(|n| remove_segment(n));
    }
}

#[test]
fn a_stray_release_leaves_the_connection_serving_and_its_segments_held() {
    let daemon = Daemon::start(&["--reap-grace", GRACE_ARG]);
    let mut client = daemon.connect();
    let me = std::process::id() as i32;
    let held: Vec<String> = (0..2).map(|_| unique_name("held")).collect();
    let _cleanup = Cleanup(held.clone());
    for name in &held {
        create_as(&mut client, me, name);
    }

    let stray = unique_name("never-registered");
    client.release(&stray);
    let released = Instant::now();
    let after = unique_name("after-stray");
    let served = client.answers_registration(&after);
    remove_segment(&after);

    std::thread::sleep(REAP_BOUND + Duration::from_millis(500));
    assert_left_alone(
        &format!("a release of {stray}, which it never registered"),
        served,
        &gone(&held),
        released,
    );
    assert!(client.answers_registration(&unique_name("still-serving")));
}

/// Both halves of "left alone": the connection still answers, and the names
/// it holds are still there.
fn assert_left_alone(what: &str, served: bool, lost: &[&str], since: Instant) {
    let mut wrong = Vec::new();
    if !served {
        wrong.push("the manager closed the connection".to_owned());
    }
    if !lost.is_empty() {
        wrong.push(format!(
            "{lost:?}, which the connection still holds, were unlinked within {:.1} s",
            since.elapsed().as_secs_f64()
        ));
    }
    assert!(wrong.is_empty(), "after {what}: {}", wrong.join("; "));
}

#[test]
fn a_double_free_leaves_the_connection_serving_and_its_other_segments_held() {
    let daemon = Daemon::start(&["--reap-grace", GRACE_ARG]);
    let mut client = daemon.connect();
    let me = std::process::id() as i32;
    let held: Vec<String> = (0..2).map(|_| unique_name("held")).collect();
    let freed = unique_name("freed-twice");
    let _cleanup = Cleanup(held.iter().cloned().chain([freed.clone()]).collect());
    for name in held.iter().chain([&freed]) {
        create_as(&mut client, me, name);
    }

    // The last closer unlinks, then tells the manager; and again, by mistake.
    remove_segment(&freed);
    client.release(&freed);
    client.release(&freed);
    let released = Instant::now();
    let after = unique_name("after-double-free");
    let served = client.answers_registration(&after);
    remove_segment(&after);

    std::thread::sleep(REAP_BOUND + Duration::from_millis(500));
    assert_left_alone(
        &format!("a double free of {freed}"),
        served,
        &gone(&held),
        released,
    );
    assert!(client.answers_registration(&unique_name("still-serving")));
}

#[test]
fn on_a_connection_two_pids_share_only_the_sigkilled_pids_names_are_reaped() {
    let mut daemon = Daemon::start(&["--reap-grace", GRACE_ARG]);
    let mut client = daemon.connect();
    let me = std::process::id() as i32;
    let mut child = Sleeper::start();
    let mine: Vec<String> = (0..3).map(|_| unique_name("parent")).collect();
    let theirs: Vec<String> = (0..3).map(|_| unique_name("child")).collect();
    let _cleanup = Cleanup(mine.iter().chain(&theirs).cloned().collect());
    // Interleaved, as a parent and its forked child use one inherited connection.
    for (m, t) in mine.iter().zip(&theirs) {
        create_as(&mut client, me, m);
        create_as(&mut client, child.pid(), t);
    }

    let killed = child.kill();
    let reaped = reaped_within(&theirs, killed, REAP_BOUND);
    assert!(
        reaped.is_ok(),
        "the SIGKILLed pid {}'s names outlived it on the connection its parent still uses: {}",
        child.pid(),
        reaped.unwrap_err()
    );
    eprintln!(
        "the dead pid's names were reaped {:.2} s after SIGKILL",
        reaped.unwrap().as_secs_f64()
    );

    std::thread::sleep(
        (killed + REAP_BOUND + Duration::from_millis(500))
            .saturating_duration_since(Instant::now()),
    );
    assert!(
        gone(&mine).is_empty(),
        "{:?}, held by the live pid on the same connection, were unlinked",
        gone(&mine)
    );
    assert!(daemon.is_running());
    assert!(
        client.answers_registration(&unique_name("after")),
        "the connection still serves the live pid"
    );
}

#[test]
fn a_name_in_transit_outlives_its_dead_registrant_until_its_refcount_says_nobody_else_has_it() {
    let daemon = Daemon::start(&["--reap-grace", GRACE_ARG]);
    // A live client keeps the manager from shutting down.
    let mut bystander = daemon.bystander();
    let name = unique_name("in-transit");
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut registrant = daemon.connect();
    create_as(&mut registrant, std::process::id() as i32, &name);
    // Its handle is pickled (`_shared_incref`): one count more than holders.
    set_refcount(&name, 2);
    drop(registrant); // the registrant's connection ends: it crashed
    let died = Instant::now();

    std::thread::sleep(GRACE * 4);
    assert!(
        shm_exists(&name),
        "{name} was unlinked although its refcount (2) counts more than its one dead registrant: \
         it is in transit"
    );

    // The receiver opened it and closed it again; the dead registrant's count remains.
    set_refcount(&name, 1);
    let lowered = Instant::now();
    let reaped = reaped_within(
        std::slice::from_ref(&name),
        lowered,
        GRACE + Duration::from_secs(3),
    );
    assert!(
        reaped.is_ok(),
        "with its refcount down to its one dead registration it is an orphan, but: {}",
        reaped.unwrap_err()
    );
    eprintln!(
        "reaped {:.2} s after the refcount was lowered ({:.1} s after the registrant died)",
        reaped.unwrap().as_secs_f64(),
        died.elapsed().as_secs_f64()
    );
    assert!(bystander.answers_registration(&unique_name("bystander")));
}

#[test]
fn a_name_in_transit_outlives_a_sigkilled_pid_on_a_shared_connection_until_its_refcount_drops() {
    let daemon = Daemon::start(&["--reap-grace", GRACE_ARG]);
    let mut client = daemon.connect();
    let mut child = Sleeper::start();
    let name = unique_name("in-transit");
    let _cleanup = Cleanup(vec![name.clone()]);
    create_as(&mut client, child.pid(), &name);
    set_refcount(&name, 2); // the child pickled its handle before it died
    child.kill();

    std::thread::sleep(GRACE * 4);
    assert!(
        shm_exists(&name),
        "{name} was unlinked although its refcount (2) counts more than its one dead registrant"
    );
    set_refcount(&name, 1);
    let reaped = reaped_within(
        std::slice::from_ref(&name),
        Instant::now(),
        GRACE + Duration::from_secs(3),
    );
    assert!(
        reaped.is_ok(),
        "once the receiver let go, the dead pid's registration is all that is left, but: {}",
        reaped.unwrap_err()
    );
}

#[test]
fn a_name_whose_refcount_equals_its_dead_registrations_is_an_orphan() {
    let daemon = Daemon::start(&["--reap-grace", GRACE_ARG]);
    let mut bystander = daemon.bystander();
    let name = unique_name("twice-dead");
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut creator = daemon.connect();
    let mut opener = daemon.connect();
    let me = std::process::id() as i32;
    create_as(&mut creator, me, &name);
    opener.register_as(me, &name);
    set_refcount(&name, 2); // the opener's count
    drop(creator);
    drop(opener);
    let died = Instant::now();
    let reaped = reaped_within(std::slice::from_ref(&name), died, REAP_BOUND);
    assert!(
        reaped.is_ok(),
        "two dead registrations and a refcount of 2: nobody else has it, but: {}",
        reaped.unwrap_err()
    );
    assert!(bystander.answers_registration(&unique_name("bystander")));
}
