//! `shm-manager` as a process: its handshake, its wire format, its shutdown,
//! and how it treats clients that misbehave. Real sockets, real /dev/shm.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, RawClient, create_object, frame, shm_exists, unique_name, wait_until};

#[test]
fn prints_its_socket_in_a_private_directory_and_exits_after_two_idle_seconds() {
    let started = Instant::now();
    let mut daemon = Daemon::start(&[]);
    let socket_path = daemon.handle.clone();
    let socket = Path::new(&socket_path);
    assert!(socket.is_absolute());
    assert_eq!(socket.file_name().unwrap(), "manager.sock");
    let dir = socket.parent().unwrap();
    let dir_name = dir.file_name().unwrap().to_str().unwrap();
    assert!(dir_name.starts_with("torch-shm-dir-") && dir_name.len() == "torch-shm-dir-".len() + 6);
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(std::fs::metadata(socket).unwrap().file_type().is_socket());

    let status = daemon
        .wait_exit(Duration::from_secs(4))
        .expect("manager should exit when idle");
    let lived = started.elapsed();
    assert!(status.success());
    assert!(
        lived >= Duration::from_millis(1900),
        "exited after only {lived:?}"
    );
    assert!(!dir.exists(), "socket directory removed");
}

#[test]
fn reports_startup_failure_as_an_error_line_and_exit_code_1() {
    let output = Command::new(common::SHM_MANAGER)
        .args(["--run-dir", "/nonexistent/libshm"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with("ERROR: ") && stdout.ends_with('\n'),
        "{stdout:?}"
    );
}

#[test]
fn speaks_pytorch_frames_byte_for_byte() {
    let daemon = Daemon::start(&[]);
    let mut client = daemon.connect();
    let name = unique_name("wire");
    client.register(&name);
    client.release(&name);

    // A hundred registrations in one write: a hundred OKs, in order.
    let mut burst = Vec::new();
    let names: Vec<String> = (0..100).map(|_| unique_name("burst")).collect();
    for name in &names {
        burst.extend_from_slice(&frame(0, name));
    }
    client.send(&burst);
    for _ in &names {
        assert_eq!(client.reply(), Some(*b"OK"));
    }
    // Releases are never answered: the next reply belongs to the next registration.
    for name in &names {
        client.release(name);
    }
    let last = unique_name("last");
    client.register(&last);
}

#[test]
fn unlinks_what_is_still_registered_when_the_last_client_is_gone() {
    let mut daemon = Daemon::start(&["--reap-grace", "off"]);
    let name = unique_name("shutdown");
    create_object(&name);
    let mut client = daemon.connect();
    client.register(&name);
    drop(client); // never released: a crash, as far as the manager knows
    let gone_at = Instant::now();
    assert!(shm_exists(&name));
    assert!(
        daemon
            .wait_exit(Duration::from_secs(3))
            .is_some_and(|s| s.success())
    );
    assert!(!shm_exists(&name), "unlinked at shutdown");
    assert!(
        gone_at.elapsed() <= Duration::from_secs(3),
        "within the shutdown timeout plus 1 s"
    );
}

#[test]
fn half_a_frame_stalls_nobody() {
    let mut daemon = Daemon::start(&[]);
    let mut staller = daemon.connect();
    staller.send(&frame(0, &unique_name("half"))[..10]);

    let mut second = daemon.connect();
    let started = Instant::now();
    second.register(&unique_name("second"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served at once"
    );

    std::thread::sleep(Duration::from_millis(300));
    let mut third = daemon.connect();
    third.register(&unique_name("third"));
    assert!(daemon.is_running());
}

#[test]
fn a_stalled_half_frame_is_cut_off_after_the_frame_timeout() {
    let daemon = Daemon::start(&["--frame-timeout", "300ms"]);
    let mut staller = daemon.connect();
    staller.send(&frame(0, &unique_name("stall"))[..10]);
    assert!(staller.is_closed_by_peer(Duration::from_secs(2)));
}

#[test]
fn a_malformed_frame_closes_only_its_own_connection() {
    let daemon = Daemon::start(&[]);
    let mut good = daemon.connect();
    type Corruption = fn(&mut [u8; 68]);
    let cases: [(&str, Corruption); 4] = [
        ("free flag 7", |f| f[4] = 7),
        ("no NUL in the name", |f| f[5..65].fill(b'a')),
        ("a slash inside the name", |f| {
            f[5..9].copy_from_slice(b"/a/b")
        }),
        ("a control byte in the name", |f| f[7] = 0x07),
    ];
    for (what, corrupt) in cases {
        let mut bad = daemon.connect();
        let mut bytes = frame(0, &unique_name("bad"));
        corrupt(&mut bytes);
        bad.send(&bytes);
        assert!(
            bad.is_closed_by_peer(Duration::from_secs(2)),
            "{what}: closed"
        );
        good.register(&unique_name("good"));
    }
    // A release of a name this connection never registered is a stray free,
    // which PyTorch's client can send: ignored, and the connection lives
    // (see `holds.rs`).
    let mut stray = daemon.connect();
    stray.release(&unique_name("never-registered"));
    stray.register(&unique_name("after-the-stray-free"));
    good.register(&unique_name("still-good"));
}

#[test]
fn garbage_and_connection_churn_leave_it_serving() {
    let daemon = Daemon::start(&[]);
    let mut keeper = daemon.connect();
    for round in 0..500 {
        let mut client = RawClient::connect(&daemon.handle);
        if round % 2 == 0 {
            client.send(&[0xff; 200]);
        }
    }
    keeper.register(&unique_name("after-churn"));
}

#[test]
fn refuses_clients_of_another_user() {
    if !common::is_root_or_skip("root to run the manager as another user") {
        return;
    }
    // The manager runs as `nobody`; root can reach its socket despite the 0700
    // directory, so only the SO_PEERCRED check stands in the way.
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(common::SHM_MANAGER);
    command.args(["--run-dir", "/tmp"]).uid(65534).gid(65534);
    let daemon = Daemon::spawn(&mut command);
    let mut client = daemon.connect();
    // The manager may have closed it already: then the write fails.
    let _ = std::io::Write::write_all(&mut client.stream, &frame(0, &unique_name("intruder")));
    assert_eq!(client.reply(), None, "connection closed without an answer");
}

#[test]
fn waits_for_stalled_connections_before_shutting_down() {
    // A connected client keeps the manager alive, as in PyTorch.
    let mut daemon = Daemon::start(&["--frame-timeout", "off"]);
    let client = daemon.connect();
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(daemon.is_running());
    drop(client);
    assert!(wait_until(Duration::from_secs(3), || !daemon.is_running()));
}

#[test]
fn a_name_prefix_restricts_what_is_accepted() {
    let daemon = Daemon::start(&["--name-prefix", "/mine_"]);
    let mut client = daemon.connect();
    client.register(&format!("/mine_{}", std::process::id()));
    let mut other = daemon.connect();
    other.send(&frame(0, &unique_name("outside")));
    assert_eq!(
        other.reply(),
        Some(*b"NO"),
        "a name outside the prefix is refused, even the default prefix's"
    );
    other.register(&format!("/mine_{}_other", std::process::id()));
    client.register(&format!("/mine_{}_again", std::process::id()));
}

#[test]
fn the_prefix_slash_accepts_any_name() {
    let daemon = Daemon::start(&["--name-prefix", "/"]);
    let mut client = daemon.connect();
    client.register(&format!("/anything_{}", std::process::id()));
    client.register(&unique_name("torch-too"));
}

#[test]
fn never_unlinks_a_segment_another_user_owns() {
    if !common::is_root_or_skip("root to give a segment to another user") {
        return;
    }
    let mut daemon = Daemon::start(&["--reap-grace", "200ms"]);
    let theirs = unique_name("theirs");
    let mine = unique_name("mine");
    create_object(&theirs);
    create_object(&mine);
    let path = format!("/dev/shm{theirs}");
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let mut client = daemon.connect();
    client.register(&theirs);
    client.register(&mine);
    drop(client); // a crash: both are orphans now
    assert!(
        wait_until(Duration::from_secs(2), || !shm_exists(&mine)),
        "ours is reaped"
    );
    assert!(
        daemon.wait_exit(Duration::from_secs(4)).is_some(),
        "and the manager shuts down"
    );
    assert!(
        shm_exists(&theirs),
        "the other user's segment survives reaping and shutdown"
    );
    std::fs::remove_file(path).unwrap();
}
