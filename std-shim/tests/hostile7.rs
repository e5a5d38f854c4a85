//! Hostile round 7, aimed at what the earlier rounds touched least: the
//! opt-in segment pool (`Config::pool`, `LIBSHM_POOL`), the client across
//! `fork`, the launcher, and PyTorch itself through our manager.
//!
//! Tests that fork our client re-run themselves in a process of their own
//! (this binary, `--exact <test>`), where no other test's thread holds a
//! lock the child would inherit. Names carry this run's id, and everything
//! a test puts in `/dev/shm` is removed however it ends.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SHM_MANAGER, run_id, wait_until};
use libshm::{AckMode, Config, ManagerLink, NamePrefix, PoolSizes};

/// Set in a test re-run by [`in_own_process`].
const INNER: &str = "LIBSHM_HOSTILE7_INNER";

/// Runs the test named `test` again in a process of its own (this binary,
/// one test, one test thread) and waits up to `timeout` for it. Returns
/// `true` inside, where the test goes on, and `false` outside once the inner
/// run passed; panics with its output if it did not (or did not end in time:
/// it is killed then).
fn in_own_process(test: &str, timeout: Duration) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains("test result: ok. 1 passed"),
        "{test} in its own process: {status:?}\n{stdout}\n{stderr}"
    );
    false
}

/// Removes every `/dev/shm` entry whose name starts with `prefix` when
/// dropped, however the test ends.
struct PrefixCleanup(String);

impl PrefixCleanup {
    fn names(&self) -> Vec<String> {
        let start = self.0.trim_start_matches('/');
        std::fs::read_dir("/dev/shm")
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| name.starts_with(start))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        for name in self.names() {
            let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        }
    }
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
    if !in_own_process(
        "a_child_forked_while_the_pool_refills_can_create",
        Duration::from_secs(120),
    ) {
        return;
    }
    let prefix = format!("/h7fork{}_", run_id());
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
