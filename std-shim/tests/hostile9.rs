//! Hostile round 9: `shmctl gc` beside managers that cannot answer, pid
//! reuse, and manager death with a tensor in transit.
//!
//! Each "Finding" test failed on the code it was written against (f527494)
//! and says what went wrong and why (file:line references are to that
//! code); it guards the fix now. The others are attacks the code withstands,
//! kept because they fail if it stops withstanding them.
//!
//! Tests that need root fail without it under `LIBSHM_REQUIRE_ROOT=1`.
//! Names carry this run's id, and everything a test puts in `/dev/shm` is
//! removed however it ends.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Daemon, PrefixCleanup, SHMCTL, one_at_a_time, run_id};

// Every test here takes `one_at_a_time`: a stopped or half-answering
// manager of one test is a live manager of ours to another's gc (its pid
// unseen from a private pid namespace, so gc cannot tell which names it
// takes), and would hold that gc back.

/// Sends `signal` to `pid`, if it names a process.
fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Continues a stopped manager however the test ends, so that dropping its
/// [`Daemon`] (a SIGKILL) and its clients never hang.
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        signal(self.0, rustix::process::Signal::CONT);
    }
}

/// A producer (`shmctl create --share`) that made a segment under `prefix`
/// with `daemon`, shared it (the refcount raised for the handle in transit,
/// as PyTorch's pickling does) and exited. Returns the share line a receiver
/// opens with and the segment's name.
fn produce_in_transit(daemon: &Daemon, prefix: &str) -> (String, String) {
    let produced = Command::new(SHMCTL)
        .args(["create", "--share", "--manager", &daemon.handle])
        .env("LIBSHM_NAME_PREFIX", prefix)
        .output()
        .unwrap();
    assert!(produced.status.success(), "{produced:?}");
    let share = String::from_utf8(produced.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let name = share.split_whitespace().nth(1).unwrap().to_owned();
    (share, name)
}

/// A segment under `prefix` that looks leaked: its creator (the pid in its
/// name) has exited, nobody maps it, its refcount is 1.
fn leaked_segment(prefix: &str, tag: u32) -> String {
    let mut creator = Command::new("true").spawn().unwrap();
    let dead = creator.id();
    creator.wait().unwrap();
    let name = format!("{prefix}{dead}_{tag}_0");
    common::create_segment(&name, 1, 4096);
    name
}

/// `shmctl gc --yes` under `prefix`, for segments unchanged for
/// `older_than`, printing what it said.
fn gc(prefix: &str, older_than: &str, force: bool) -> Output {
    let mut args = vec![
        "gc",
        "--prefix",
        prefix,
        "--older-than",
        older_than,
        "--yes",
    ];
    if force {
        args.push("--force");
    }
    let out = Command::new(SHMCTL).args(&args).output().unwrap();
    println!("gc said: {}", text(&out));
    out
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Finding 1 (a segment in transit unlinked): `shmctl gc --yes` removed a
/// segment in transit (its creator exited after sharing it, its receiver
/// had yet to open it) while the one manager that kept it was stopped
/// (SIGSTOP here; a debugger, `docker pause`, a cgroup freezer, a manager
/// swapped out or starved for half a second do the same). gc asks each live
/// manager of ours for the names it answers for (hostile round 7, finding
/// 4), but `tracked_names` (bin/shmctl/inspect.rs:140) skips a manager whose
/// answer fails, and `status::query` (status.rs:183-190) reads silence for
/// 500 ms as "not ours" (PyTorch's manager, which only says `OK`). So the
/// manager that knows better was counted as knowing nothing, and the
/// segment (creator dead, mapped by nobody) was removed as leaked.
#[test]
fn gc_keeps_a_segment_in_transit_while_its_manager_is_stopped() {
    let _serial = one_at_a_time();
    if !common::in_private_pid_namespace(
        "gc_keeps_a_segment_in_transit_while_its_manager_is_stopped",
    ) {
        return;
    }
    let prefix = format!("/h9stop{}_", run_id());
    let _cleanup = PrefixCleanup(prefix.clone());
    let daemon = Daemon::quiet_under(&prefix);
    let _bystander = common::bystander_under(&daemon, &prefix);
    let (share, name) = produce_in_transit(&daemon, &prefix);
    std::thread::sleep(Duration::from_secs(4));
    let manager = daemon.child.id();
    signal(manager, rustix::process::Signal::STOP);
    let resume = Continue(manager);
    let gc = gc(&prefix, "3s", false);
    drop(resume);
    let opened = Command::new(SHMCTL)
        .args(["open", "--share", &share])
        .output()
        .unwrap();
    assert!(
        opened.status.success(),
        "the receiver could not open {name} after gc beside its stopped manager: {}\n\
         gc said: {}",
        String::from_utf8_lossy(&opened.stderr),
        text(&gc)
    );
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains(&daemon.handle),
        "gc does not say which manager did not answer: {}",
        text(&gc)
    );
}

/// Finding 2 (a segment in transit unlinked): `shmctl gc --yes` removed a
/// segment in transit that a live manager of ours kept, when that manager
/// ran in a mount namespace of its own: a service with systemd's
/// `PrivateTmp=yes` (its `/tmp` private, `/dev/shm` shared), or a container
/// sharing the host's `/dev/shm` (`--ipc=host`) with a network namespace
/// of its own too. gc found live managers by their sockets' paths in our
/// `/proc/net/unix` and in our `/tmp` (`live`, bin/shmctl/managers.rs:44):
/// the first manager's path names nothing in our `/tmp`, so it could not be
/// asked (and after finding 1's fix, gc then removed nothing at all); the
/// second was not found at all. Either is reachable through its process's
/// root, `/proc/<pid>/root/<path>`.
#[test]
fn gc_asks_a_manager_in_a_mount_namespace_of_its_own() {
    let _serial = one_at_a_time();
    if !common::in_private_pid_namespace("gc_asks_a_manager_in_a_mount_namespace_of_its_own") {
        return;
    }
    gc_beside_a_manager_with_a_private_tmp(false);
}

/// Finding 2, the container: its own mount and network namespaces.
#[test]
fn gc_asks_a_manager_in_a_mount_and_network_namespace_of_its_own() {
    let _serial = one_at_a_time();
    if !common::in_private_pid_namespace(
        "gc_asks_a_manager_in_a_mount_and_network_namespace_of_its_own",
    ) {
        return;
    }
    gc_beside_a_manager_with_a_private_tmp(true);
}

/// A manager with a `/tmp` of its own (and a network namespace of its own
/// with `own_netns`) keeps a segment in transit; gc runs from outside.
fn gc_beside_a_manager_with_a_private_tmp(own_netns: bool) {
    let prefix = format!("/h9mnt{}_{}_", run_id(), u8::from(own_netns));
    let _cleanup = PrefixCleanup(prefix.clone());
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private"]);
    if own_netns {
        command.arg("--net");
    }
    command
        .args([
            "--",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /tmp && exec \"$@\"",
            "sh",
            common::SHM_MANAGER,
            "--name-prefix",
            &prefix,
        ])
        .stderr(std::process::Stdio::null());
    let mut daemon = Daemon::spawn(&mut command);
    // Its clients share its /tmp; from here, its root leads there.
    daemon.handle = format!("/proc/{}/root{}", daemon.child.id(), daemon.handle);
    let _bystander = common::bystander_under(&daemon, &prefix);
    let (share, name) = produce_in_transit(&daemon, &prefix);
    std::thread::sleep(Duration::from_secs(4));
    let gc = gc(&prefix, "3s", false);
    let opened = Command::new(SHMCTL)
        .args(["open", "--share", &share])
        .output()
        .unwrap();
    assert!(
        opened.status.success(),
        "the receiver could not open {name} after gc: {}\ngc said: {}",
        String::from_utf8_lossy(&opened.stderr),
        text(&gc)
    );
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains(&format!("kept    {name}: live manager")),
        "gc did not hear from the manager that keeps {name}: {}",
        text(&gc)
    );
}

/// A stand-in for a manager of ours that stalls half-way through a names
/// report: it holds its directory's lock (as only ours do), answers `OK`
/// and the report's first lines, and says no more for a while. A process of
/// its own, started with `LIBSHM_NAME_PREFIX=prefix` (what gc reads to tell
/// which names a manager may answer for).
struct HalfAnswering {
    child: std::process::Child,
    dir: std::path::PathBuf,
    handle: String,
}

const HALF_ANSWERING: &str = r#"
import fcntl, os, socket, sys, threading, time
d = sys.argv[1]
os.mkdir(d)
lock = os.open(d, os.O_RDONLY)
fcntl.flock(lock, fcntl.LOCK_EX)
s = socket.socket(socket.AF_UNIX)
s.bind(d + "/manager.sock")
s.listen(16)
print("ready", flush=True)
def serve(c):
    if len(c.recv(68, socket.MSG_WAITALL)) == 68:
        c.sendall(b"OKlibshm-status v=1\nmanager pid=1 names=1\n")
        time.sleep(30)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"#;

impl HalfAnswering {
    fn start(prefix: &str) -> Self {
        use std::io::BufRead;
        let tag = prefix.trim_matches(|c| c == '/' || c == '_');
        let dir = std::env::temp_dir().join(format!("torch-shm-dir-{tag}"));
        let mut child = Command::new("python3")
            .args(["-c", HALF_ANSWERING])
            .arg(&dir)
            .env("LIBSHM_NAME_PREFIX", prefix)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n", "the stand-in did not start");
        let handle = dir.join("manager.sock").to_str().unwrap().to_owned();
        Self { child, dir, handle }
    }
}

impl Drop for HalfAnswering {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Finding 1, cut short: a manager of ours that stops half-way through its
/// names report (stopped, starved or swapped out between two pieces; the
/// report is written in pieces between rounds of its loop) tells gc only
/// some of the names it answers for, and gc read a report without its end
/// as "not a status report" (`Malformed`) and went on as if that manager
/// knew nothing. With finding 1's fix it removes nothing and says which
/// manager did not finish; a silent manager that takes no name under gc's
/// prefix holds nothing back (the next test).
#[test]
fn gc_removes_nothing_beside_a_manager_of_ours_that_stops_half_way() {
    let _serial = one_at_a_time();
    if !common::in_private_pid_namespace(
        "gc_removes_nothing_beside_a_manager_of_ours_that_stops_half_way",
    ) {
        return;
    }
    let prefix = format!("/h9half{}_", run_id());
    let _cleanup = PrefixCleanup(prefix.clone());
    let fake = HalfAnswering::start(&prefix);
    let name = leaked_segment(&prefix, 1);
    let gc = gc(&prefix, "0", false);
    assert!(
        common::shm_exists(&name),
        "gc removed {name} though a manager of ours did not finish its report: {}",
        text(&gc)
    );
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains(&fake.handle),
        "gc does not say which manager did not finish: {}",
        text(&gc)
    );
}

/// Finding 1's fix, bounded: a silent manager of ours that takes no name
/// under gc's prefix (by its `--name-prefix`, `$LIBSHM_NAME_PREFIX`, or
/// `--sweep-prefix` when adopting) cannot keep one in transit, and holds
/// nothing back. Else one stopped manager anywhere on the machine would
/// stop every gc.
#[test]
fn gc_is_not_held_back_by_a_silent_manager_of_other_names() {
    let _serial = one_at_a_time();
    if !common::in_private_pid_namespace("gc_is_not_held_back_by_a_silent_manager_of_other_names") {
        return;
    }
    let prefix = format!("/h9other{}_", run_id());
    let _cleanup = PrefixCleanup(prefix.clone());
    let _fake = HalfAnswering::start(&format!("/h9elsewhere{}_", run_id()));
    let name = leaked_segment(&prefix, 1);
    let gc = gc(&prefix, "0", false);
    assert!(
        !common::shm_exists(&name),
        "gc kept a leaked {name} for a silent manager of other names: {}",
        text(&gc)
    );
}

/// gc beside PyTorch's manager, which cannot be asked what it keeps: one
/// serving a DataLoader keeps the batches its killed worker pickled into the
/// queue, and they look leaked (creator dead, mapped by nobody). A segment
/// made since that manager started is kept (the manager unlinks it itself
/// when it exits), one made before it started is removed, and `--force`
/// removes both. Without the rule, gc removed the first.
#[test]
fn gc_keeps_what_pytorchs_manager_may_keep_in_transit() {
    use std::io::BufRead;
    let _serial = one_at_a_time();
    if !common::in_private_pid_namespace("gc_keeps_what_pytorchs_manager_may_keep_in_transit") {
        return;
    }
    let Some(peer) = common::torch::peer() else {
        return;
    };
    let prefix = format!("/h9torch{}_", run_id());
    let _cleanup = PrefixCleanup(prefix.clone());
    let before = leaked_segment(&prefix, 1);
    // Past gc's allowance for coarse process start times.
    std::thread::sleep(Duration::from_secs(3));
    let mut manager = Command::new(peer.torch_shm_manager())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut handle = String::new();
    std::io::BufReader::new(manager.stdout.take().unwrap())
        .read_line(&mut handle)
        .unwrap();
    // A client, so that it does not shut down.
    let _client = std::os::unix::net::UnixStream::connect(handle.trim()).unwrap();
    let since = leaked_segment(&prefix, 2);
    let kept = gc(&prefix, "0", false);
    let (before_gone, since_kept) = (!common::shm_exists(&before), common::shm_exists(&since));
    let forced = gc(&prefix, "0", true);
    let since_forced_gone = !common::shm_exists(&since);
    let _ = manager.kill();
    let _ = manager.wait();
    assert!(
        since_kept,
        "gc removed {since}, made while PyTorch's manager ran: {}",
        text(&kept)
    );
    assert!(
        String::from_utf8_lossy(&kept.stdout).contains("made while the manager"),
        "{}",
        text(&kept)
    );
    assert!(
        before_gone,
        "gc kept {before}, made before PyTorch's manager started: {}",
        text(&kept)
    );
    assert!(since_forced_gone, "--force: {}", text(&forced));
}
