//! A manager out of file descriptors: `shm-manager` under a limit of 64
//! (soft and hard, so it cannot raise it), filled with real clients until it
//! cannot accept another. It must go on answering the clients it has, not
//! spin while it waits, accept again once a descriptor frees, and keep (then
//! reap) an orphan it could not look at for want of a descriptor. Clients
//! that connect and never say anything are closed after the frame timeout,
//! so they cannot take every descriptor for good.

mod common;

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::measure::{LogFile, cpu_time};
use common::{
    Daemon, RawClient, SHM_MANAGER, create_object, frame, shm_exists, unique_name, wait_until,
};

/// The descriptor limit the manager runs under.
const LIMIT: u64 = 64;

/// `shm-manager <args>` with at most [`LIMIT`] descriptors, logging to `log`.
fn limited_daemon(args: &[&str], log: &LogFile) -> Daemon {
    let mut command = Command::new(SHM_MANAGER);
    command.args(args).stderr(log.stdio());
    // SAFETY: runs in the forked child before exec; setrlimit is a single
    // system call (async-signal-safe) and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(LIMIT),
                maximum: Some(LIMIT),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                .map_err(std::io::Error::from)
        });
    }
    Daemon::spawn(&mut command)
}

/// Open descriptors of `pid` numbered below the limit: all [`LIMIT`] of them
/// when it is out of descriptors (anything inherited above the limit does not
/// count against it).
fn descriptors_in_use(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&fd| fd < LIMIT)
        .count() as u64
}

/// Whether `client` got `OK` within `timeout`; `false` if nothing came.
fn answered_within(client: &mut RawClient, timeout: Duration) -> bool {
    client.stream.set_read_timeout(Some(timeout)).unwrap();
    let mut reply = [0u8; 2];
    match client.stream.read_exact(&mut reply) {
        Ok(()) => {
            assert_eq!(&reply, b"OK");
            true
        }
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(err) => panic!("reading a reply: {err}"),
    }
}

/// Connects clients, each registering a name, until one goes unanswered:
/// the manager could not accept it. Returns the answered clients and the
/// waiting one (its registration sent).
fn fill(daemon: &Daemon) -> (Vec<RawClient>, RawClient) {
    let mut answered = Vec::new();
    loop {
        let mut client = daemon.connect();
        client.send(&frame(0, &unique_name("fill")));
        if !answered_within(&mut client, Duration::from_millis(500)) {
            return (answered, client);
        }
        answered.push(client);
        assert!(
            answered.len() < LIMIT as usize,
            "{} clients accepted under a limit of {LIMIT} descriptors: the limit did not apply",
            answered.len()
        );
    }
}

/// Checks that the manager is out of descriptors and said so.
fn assert_exhausted(daemon: &Daemon, log: &LogFile) {
    let pid = daemon.child.id();
    assert_eq!(
        descriptors_in_use(pid),
        LIMIT,
        "every descriptor is in use: {:?}",
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| dir.count())
            .ok()
    );
    assert!(
        log.text().contains("out of file descriptors"),
        "the manager said it stopped accepting: {}",
        log.text()
    );
}

#[test]
fn out_of_descriptors_it_serves_its_clients_without_spinning_and_then_accepts_again() {
    let log = LogFile::new("exhausted");
    let daemon = limited_daemon(&["--shutdown-timeout", "1s"], &log);
    let (mut answered, mut waiting) = fill(&daemon);
    assert!(
        answered.len() > 40,
        "only {} clients before the limit",
        answered.len()
    );
    assert_exhausted(&daemon, &log);

    // (a) The clients it has are still answered, each at once.
    for client in &mut answered {
        client.send(&frame(0, &unique_name("again")));
        assert!(
            answered_within(client, Duration::from_secs(1)),
            "an accepted client went unanswered while the manager was out of descriptors"
        );
    }

    // (b) Waiting for a descriptor costs it (almost) no CPU. A loop that
    // retried the accept at once would burn the whole interval.
    let pid = daemon.child.id();
    let before = cpu_time(pid);
    let interval = Duration::from_secs(3);
    std::thread::sleep(interval);
    let used = cpu_time(pid) - before;
    eprintln!(
        "{} clients accepted under {LIMIT} descriptors; {used:?} of CPU in {interval:?} while unable to accept",
        answered.len()
    );
    assert!(
        used < interval / 10,
        "the manager used {used:?} of CPU in {interval:?} while unable to accept"
    );
    assert!(
        !answered_within(&mut waiting, Duration::from_millis(10)),
        "the waiting client cannot have been accepted: no descriptor freed"
    );

    // (c) Once some clients leave, the waiting one is accepted and answered,
    // and so is a new one.
    answered.truncate(answered.len() - 3);
    assert!(
        answered_within(&mut waiting, Duration::from_secs(3)),
        "the waiting client was not accepted after descriptors freed"
    );
    let mut newcomer = daemon.connect();
    newcomer.send(&frame(0, &unique_name("newcomer")));
    assert!(
        answered_within(&mut newcomer, Duration::from_secs(3)),
        "a new client was not accepted after descriptors freed"
    );
}

#[test]
fn an_orphan_it_cannot_look_at_for_want_of_descriptors_is_kept_and_reaped_later() {
    let name = unique_name("emfile-orphan");
    create_object(&name);
    let _cleanup = RemoveOnDrop(&name);
    let log = LogFile::new("emfile-orphan");
    let mut daemon = limited_daemon(
        &["--reap-grace", "200ms", "--shutdown-timeout", "1s", "-v"],
        &log,
    );
    let mut holder = daemon.connect();
    holder.register(&name);
    let (mut answered, waiting) = fill(&daemon);

    // The holder goes: its name is an orphan (refcount 0, one dead
    // registration), but the descriptor its connection freed goes to the
    // waiting client, and reading the orphan's header needs one.
    drop(holder);
    assert!(wait_until(Duration::from_secs(5), || {
        log.text()
            .lines()
            .any(|line| line.contains(&name) && line.contains("Too many open files"))
    }));
    // Past the grace period and the first retry, it is still there: kept.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_exhausted(&daemon, &log);
    assert!(
        shm_exists(&name),
        "{name} was removed although it could not be looked at"
    );

    // Descriptors free up: the next retry looks, and reaps it.
    answered.truncate(answered.len() - 4);
    let freed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || !shm_exists(&name)),
        "{name} was never reaped after descriptors freed: forgotten?\n{}",
        log.text()
    );
    let reaped_after = freed.elapsed();
    eprintln!("the orphan was reaped {reaped_after:?} after descriptors freed");

    drop((answered, waiting));
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "the manager shut down"
    );
    assert_eq!(
        log.final_stat("reaped"),
        Some(1),
        "reaped counts the one real unlink (reaped {reaped_after:?} after descriptors freed)\n{}",
        log.text()
    );
    assert_eq!(log.final_stat("unlink_failures"), Some(0));
}

#[test]
fn connections_that_never_send_a_byte_are_closed_and_free_their_descriptors() {
    let log = LogFile::new("silent");
    let daemon = limited_daemon(&["--frame-timeout", "1s"], &log);
    let mut talker = daemon.connect();
    talker.register(&unique_name("talker"));

    // More silent connections than the manager has descriptors: some wait to
    // be accepted, and behind them a client that does talk.
    let start = Instant::now();
    let silent: Vec<UnixStream> = (0..LIMIT + 16)
        .map(|_| UnixStream::connect(&daemon.handle).unwrap())
        .collect();
    let mut newcomer = daemon.connect();
    newcomer.send(&frame(0, &unique_name("newcomer")));

    assert!(
        answered_within(&mut newcomer, Duration::from_secs(5)),
        "the client behind the silent ones was never answered"
    );
    let answered_after = start.elapsed();
    eprintln!("the client behind the silent ones was answered after {answered_after:?}");
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut byte = [0u8; 1];
        let eof = matches!(stream.read(&mut byte), Ok(0))
            || matches!(stream.read(&mut byte), Err(e) if e.kind() == ErrorKind::ConnectionReset);
        assert!(eof, "a silent connection was not closed");
    }
    assert!(
        answered_after >= Duration::from_millis(900),
        "answered after {answered_after:?}: the silent connections went before the timeout?"
    );

    // A client that has spoken may be quiet as long as it likes.
    assert!(start.elapsed() > Duration::from_secs(1));
    talker.register(&unique_name("talker-again"));
}

/// Removes a name from `/dev/shm` however the test ends.
struct RemoveOnDrop<'a>(&'a str);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(self.0.trim_start_matches('/')));
    }
}
