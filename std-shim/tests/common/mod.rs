//! Real processes for the integration tests: manager daemons, processes that
//! hold segments, and raw PyTorch-style clients speaking bytes on the socket.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod torch;

/// `name` as a segment name; test names are valid.
pub fn segment_name(name: &str) -> libshm::SegmentName {
    libshm::SegmentName::new(name.as_bytes()).unwrap()
}

/// Serializes the tests of one binary that must not overlap: a manager held
/// still by one test must not be taken for slowness in another's, nor for a
/// live manager by another's gc.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod attack;
pub mod foreign_ns;
#[allow(dead_code)]
pub mod handed;
pub mod hold;
pub mod journal_client;
pub mod measure;
pub mod pid_reuse;
pub mod signals;

pub const SHM_MANAGER: &str = env!("CARGO_BIN_EXE_shm-manager");
pub const SHMCTL: &str = env!("CARGO_BIN_EXE_shmctl");

/// Set (CI sets it) to make a test that needs root fail instead of skip.
pub const REQUIRE_ROOT: &str = "LIBSHM_REQUIRE_ROOT";

/// Whether a test that needs `what` (root, or something only root may do)
/// can go on: `false` (skip) after saying why, unless `LIBSHM_REQUIRE_ROOT`
/// is set, where the test fails instead.
pub fn may_skip(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var_os(REQUIRE_ROOT).is_none(),
        "{REQUIRE_ROOT} is set but this test cannot run: it needs {what}"
    );
    eprintln!("skipped: needs {what}");
    false
}

/// Whether the test runs as root; see [`may_skip`].
pub fn is_root_or_skip(what: &str) -> bool {
    may_skip(rustix::process::geteuid().is_root(), what)
}

/// Set in a test run inside [`in_private_pid_namespace`]: the outer run's pid.
const OUTER_RUN: &str = "LIBSHM_TEST_OUTER_RUN";

/// An id for this test run, to keep names apart from other runs sharing
/// `/dev/shm`: our pid, or the outer run's inside a private pid namespace
/// (where our own pid is 1, as in every other such namespace).
pub fn run_id() -> u32 {
    std::env::var(OUTER_RUN)
        .ok()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(std::process::id)
}

/// Runs the test named `test` (its function name; integration tests have no
/// module path) again inside a new pid namespace with its own `/proc`, where
/// every process is the test's own and root can inspect them all, which is
/// not so on every machine (a VM's init may hide even from root). Returns
/// `true` inside, where the test goes on, and `false` outside once the inner
/// run passed; panics if it did not. Needs root; see [`is_root_or_skip`].
pub fn in_private_pid_namespace(test: &str) -> bool {
    if std::env::var_os(OUTER_RUN).is_some() {
        return true;
    }
    if !is_root_or_skip("root, to run in a private pid namespace") {
        return false;
    }
    // A container with a /dev/shm of its own: every process that can reach
    // it is inside, so its managers may trust what they see (and say so).
    let output = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "--mount-proc",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs -o mode=1777 tmpfs /dev/shm && exec \"$@\"",
            "sh",
        ])
        .arg(std::env::current_exe().unwrap())
        // An ignored test (an open finding) runs inside when run outside.
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(OUTER_RUN, std::process::id().to_string())
        .env("LIBSHM_SHM_PRIVATE", "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} in a private pid namespace: {}\n{stdout}\n{stderr}",
        output.status
    );
    false
}

/// Polls `done` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` has exited: it is gone, or a zombie nobody has
/// reaped yet (an orphaned manager's new parent may be slow to).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// The pid in a pipe manager's handle, `pipe:<pid>`.
pub fn pipe_manager_pid(handle: &str) -> u32 {
    handle
        .strip_prefix("pipe:")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{handle:?} is not a pipe manager's handle"))
}

/// Environment for a `shmctl` that reaches its managers over pipes.
pub const PIPE_ENV: &[(&str, &str)] = &[
    ("LIBSHM_TRANSPORT", "pipe"),
    ("LIBSHM_MANAGER", SHM_MANAGER),
];

/// Whether a segment exists in /dev/shm.
pub fn shm_exists(name: &str) -> bool {
    Path::new("/dev/shm")
        .join(name.trim_start_matches('/'))
        .exists()
}

/// A name no other test (or run) uses, under the prefix a manager started
/// without arguments accepts (`/torch_`). It carries no creator pid where
/// `shmctl gc` looks for one, so no parallel gc ever takes it for a leak.
pub fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "/torch_test_{tag}_{}_{}",
        run_id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a plain shared-memory object, as any process could.
pub fn create_object(name: &str) {
    std::fs::write(
        Path::new("/dev/shm").join(name.trim_start_matches('/')),
        [0u8; 64],
    )
    .unwrap();
}

/// A `shm-manager` process started by the test, with its handshake read.
pub struct Daemon {
    pub child: Child,
    pub handle: String,
}

impl Daemon {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_stderr(args, Stdio::inherit())
    }

    /// Like `start`, with the daemon's log going to `stderr`.
    pub fn start_with_stderr(args: &[&str], stderr: Stdio) -> Self {
        let mut command = Command::new(SHM_MANAGER);
        command.args(args).stderr(stderr);
        Self::spawn(&mut command)
    }

    /// Starts a manager from a command line the caller prepared (limits,
    /// environment, where its log goes) and reads its handshake.
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn shm-manager");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.ends_with('\n'), "handshake line {line:?}");
        assert!(!line.starts_with("ERROR"), "{line}");
        Self {
            child,
            handle: line.trim_end().to_owned(),
        }
    }

    /// A manager that accepts only names under `prefix`, its log discarded.
    pub fn quiet_under(prefix: &str) -> Self {
        Self::start_with_stderr(&["--name-prefix", prefix], Stdio::null())
    }

    /// The manager, stopped (`SIGSTOP`) while `during` runs and continued
    /// after it, so that everything `during` does (commits, kills) is seen
    /// by it at once.
    pub fn while_stopped(&self, during: impl FnOnce()) {
        use rustix::process::{Pid, Signal, kill_process};
        let pid = Pid::from_raw(self.child.id() as i32).expect("a manager's pid");
        kill_process(pid, Signal::STOP).expect("stop the manager");
        during();
        kill_process(pid, Signal::CONT).expect("continue the manager");
    }

    /// SIGKILLs the manager and reaps it, as the OOM killer would. Its socket
    /// and directory stay, for a manager that adopts them, until this drops.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A manager that adopts this killed one's handle, as a client of the
    /// family revives it: it accepts names under `accept` and its recovery
    /// sweep looks at those under `sweep`. Its log is discarded.
    pub fn revive(&self, accept: &str, sweep: &str) -> Self {
        Self::start_with_stderr(
            &[
                "--name-prefix",
                accept,
                "--adopt",
                &self.handle,
                "--sweep-prefix",
                sweep,
            ],
            Stdio::null(),
        )
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn connect(&self) -> RawClient {
        RawClient::connect(&self.handle)
    }

    /// `clients` connections that registered `names` names each (named
    /// after `tag`), every one answered, and stay connected: a manager
    /// holding many names.
    pub fn holders(&self, tag: &str, clients: usize, names: usize) -> Vec<RawClient> {
        (0..clients)
            .map(|holder| {
                let mut client = self.connect();
                let bytes: Vec<u8> = (0..names)
                    .flat_map(|i| frame(0, &format!("{tag}_{holder}_{i}")))
                    .collect();
                let mut reader = client.stream.try_clone().unwrap();
                // Read while writing: the answers would fill the socket.
                let replies = std::thread::spawn(move || {
                    let mut replies = vec![0u8; 2 * names];
                    std::io::Read::read_exact(&mut reader, &mut replies).map(|()| replies)
                });
                client.send(&bytes);
                replies.join().unwrap().expect("replies");
                client
            })
            .collect()
    }

    /// A client that stays connected (keeping the manager from shutting
    /// down) and has said something, so it is not closed as a connection
    /// that never speaks.
    pub fn bystander(&self) -> RawClient {
        let mut client = self.connect();
        assert!(client.answers_registration(&unique_name("bystander")));
        client
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_if_abandoned(&self.handle);
    }
}

/// Removes a killed manager's socket and directory, unless a live manager
/// (one that adopted them) holds the directory's lock.
pub fn remove_if_abandoned(handle: &str) {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let socket = Path::new(handle);
    let Some(dir) = socket.parent() else { return };
    let Ok(fd) = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok() {
        let _ = std::fs::remove_file(socket);
        let _ = std::fs::remove_dir(dir);
    }
}

/// PyTorch's `AllocInfo` built by hand: pid i32 at 0, free at 4, the name at
/// 5..65 NUL-terminated, 3 padding bytes. Deliberately not the crate's encoder.
pub fn frame(free: u8, name: &str) -> [u8; 68] {
    frame_from(std::process::id() as i32, free, name)
}

/// [`frame`] with an explicit sender pid, as a forked child sends on the
/// connection it inherited.
pub fn frame_from(pid: i32, free: u8, name: &str) -> [u8; 68] {
    let mut bytes = [0u8; 68];
    bytes[..4].copy_from_slice(&pid.to_ne_bytes());
    bytes[4] = free;
    bytes[5..5 + name.len()].copy_from_slice(name.as_bytes());
    bytes
}

/// Creates `name` as PyTorch's creator does, after registering it: a 64-byte
/// header whose first four bytes are `refcount`, then `data` bytes.
pub fn create_segment(name: &str, refcount: i32, data: usize) {
    let mut bytes = vec![0u8; 64 + data];
    bytes[..4].copy_from_slice(&refcount.to_ne_bytes());
    std::fs::write(
        Path::new("/dev/shm").join(name.trim_start_matches('/')),
        bytes,
    )
    .unwrap();
}

/// Overwrites the refcount in `name`'s header, as openers and closers do.
pub fn set_refcount(name: &str, refcount: i32) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(Path::new("/dev/shm").join(name.trim_start_matches('/')))
        .unwrap()
        .write_all_at(&refcount.to_ne_bytes(), 0)
        .unwrap();
}

/// Removes `name` if it is still there.
pub fn remove_segment(name: &str) {
    let _ = std::fs::remove_file(Path::new("/dev/shm").join(name.trim_start_matches('/')));
}

/// A client speaking raw bytes.
pub struct RawClient {
    pub stream: UnixStream,
}

impl RawClient {
    pub fn connect(handle: &str) -> Self {
        let stream = UnixStream::connect(handle).expect("connect to manager");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Self { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn register(&mut self, name: &str) {
        self.send(&frame(0, name));
        assert_eq!(self.reply(), Some(*b"OK"), "registration of {name}");
    }

    pub fn release(&mut self, name: &str) {
        self.send(&frame(1, name));
    }

    /// A strict client's traffic for `how_long`: registrations of fresh
    /// names, each answered and then released, `pause` apart. Returns how
    /// many were answered.
    pub fn strict_traffic(&mut self, tag: &str, how_long: Duration, pause: Duration) -> usize {
        let start = Instant::now();
        let mut answered = 0;
        while start.elapsed() < how_long {
            let name = unique_name(tag);
            self.register(&name);
            self.release(&name);
            answered += 1;
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        answered
    }

    /// Registers `name` on behalf of `pid`, as a forked child would.
    pub fn register_as(&mut self, pid: i32, name: &str) {
        self.send(&frame_from(pid, 0, name));
        assert_eq!(
            self.reply(),
            Some(*b"OK"),
            "registration of {name} for pid {pid}"
        );
    }

    /// Has a forked child, sharing this connection, write registrations of
    /// `names` under its own pid and exit at once; returns its pid, reaped
    /// (free for reuse). The manager reads them from their real writer,
    /// alive or already gone, as it would a worker's last frames. The `OK`s
    /// are left for the caller to read.
    pub fn register_from_exited_child(&mut self, names: &[&str]) -> i32 {
        use std::os::fd::AsRawFd;
        let mut bytes = Vec::new();
        for name in names {
            bytes.extend_from_slice(&frame_from(0, 0, name));
        }
        let frame_len = bytes.len() / names.len().max(1);
        let fd = self.stream.as_raw_fd();
        // SAFETY: the child only calls `getpid`, writes into its own copy of
        // `bytes` (no allocation), `write`s and `_exit`s: all
        // async-signal-safe, as a fork of a threaded process requires.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            // SAFETY: as above; `bytes` is this process's own copy.
            unsafe {
                let pid = libc::getpid().to_ne_bytes();
                let base = bytes.as_ptr().cast_mut();
                for at in (0..bytes.len()).step_by(frame_len.max(1)) {
                    std::ptr::copy_nonoverlapping(pid.as_ptr(), base.add(at), pid.len());
                }
                let wrote = libc::write(fd, base.cast(), bytes.len());
                libc::_exit(i32::from(wrote != bytes.len() as isize));
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        let waited = unsafe { libc::waitpid(child, &raw mut status, 0) };
        assert_eq!(waited, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child's write failed: {status}"
        );
        child
    }

    /// Whether a registration of `name` is still answered `OK` (rather than
    /// the connection being closed).
    pub fn answers_registration(&mut self, name: &str) -> bool {
        self.stream.write_all(&frame(0, name)).is_ok() && self.reply() == Some(*b"OK")
    }

    /// The next two reply bytes, or None at end of file.
    pub fn reply(&mut self) -> Option<[u8; 2]> {
        let mut reply = [0u8; 2];
        match self.stream.read_exact(&mut reply) {
            Ok(()) => Some(reply),
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(err) => panic!("reading a reply: {err}"),
        }
    }

    /// Whether the manager closed this connection (end of file within `timeout`).
    pub fn is_closed_by_peer(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
            || matches!(self.stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// What `shmctl create`/`open` print per segment.
#[derive(Clone, Debug)]
pub struct Report {
    pub handle: String,
    pub name: String,
    pub size: usize,
    pub refcount: i32,
}

impl Report {
    /// The manager handle, typed.
    pub fn manager_handle(&self) -> libshm::ManagerHandle {
        self.handle.parse().unwrap()
    }

    /// The segment name, typed.
    pub fn segment_name(&self) -> libshm::SegmentName {
        self.name.parse().unwrap()
    }

    pub fn parse(line: &str) -> Self {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .to_owned()
        };
        Self {
            handle: field("handle"),
            name: field("name"),
            size: field("size").parse().unwrap(),
            refcount: field("refcount").parse().unwrap(),
        }
    }
}

/// A `shmctl create|open --hold` process: it keeps its segments until told.
pub struct Holder {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub segments: Vec<Report>,
}

impl Holder {
    /// `shmctl <args> --hold`, reading `count` segment lines.
    pub fn spawn(args: &[&str], count: usize, envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(SHMCTL)
            .args(args)
            .arg("--hold")
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shmctl");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut segments = Vec::new();
        for _ in 0..count {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "shmctl {args:?} exited early");
            segments.push(Report::parse(&line));
        }
        Self {
            child,
            stdin,
            stdout,
            segments,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command line and returns the reply line.
    pub fn ask(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// Closes stdin so it drops its segments and exits cleanly.
    pub fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }

    /// SIGKILL: a crash with segments held.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn names(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.name.clone()).collect()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manager executable (a script in `dir`) that a client's launcher starts
/// as `shm-manager --linger 1s`: what a revived manager keeps for a refcount
/// surplus or a guessed orphan goes within a test's wait, not a minute.
#[allow(dead_code)]
pub fn short_linger_manager(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("shm-manager-short-linger");
    if !path.exists() {
        let script = format!("#!/bin/sh\nexec {SHM_MANAGER} --linger 1s \"$@\"\n");
        let temporary = dir.join(format!("shm-manager-short-linger.{}", std::process::id()));
        std::fs::write(&temporary, script).unwrap();
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
    }
    path
}

/// Removes names from `/dev/shm` however the test ends.
#[derive(Default)]
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            remove_segment(name);
        }
    }
}

/// Removes every `/dev/shm` entry whose name starts with `prefix` when
/// dropped, however the test ends.
pub struct PrefixCleanup(pub String);

impl PrefixCleanup {
    pub fn names(&self) -> Vec<String> {
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

/// A `sleep` process: a live process of ours whose pid a frame can carry,
/// killed when the test ends.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn spawn() -> Self {
        Self(
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// SIGKILL, and reaped: its pid is free for the next process.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    pub fn is_alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `pid - 1` to `ns_last_pid` and starts a `sleep`, until it gets
/// `pid` (in a private pid namespace nobody else forks, so the first try
/// does; elsewhere, other processes forking meanwhile make a try miss).
/// Panics if it never gets it: the test needs root.
pub fn sleeper_with_pid(pid: i32) -> Sleeper {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("write ns_last_pid (root, in our own pid namespace)");
        let mut sleeper = Sleeper::spawn();
        if sleeper.pid() == pid {
            return sleeper;
        }
        sleeper.kill();
    }
    panic!("could not start a process with pid {pid}");
}

/// A segment registered for a live process of ours (a [`Sleeper`]) on a
/// connection of its own, as a PyTorch worker's would be, then created with
/// `refcount` in its header. Its name, `<prefix><pid>_4242_0`, has the shape
/// of PyTorch's, so a recovery sweep reads its creator from it.
pub struct SleepersSegment {
    pub name: String,
    pub creator: Sleeper,
    pub connection: RawClient,
    _cleanup: Cleanup,
}

impl SleepersSegment {
    pub fn create(daemon: &Daemon, prefix: &str, refcount: i32) -> Self {
        let creator = Sleeper::spawn();
        let name = format!("{prefix}{}_4242_0", creator.pid());
        let cleanup = Cleanup(vec![name.clone()]);
        let mut connection = daemon.connect();
        connection.register_as(creator.pid(), &name);
        create_segment(&name, refcount, 64);
        Self {
            name,
            creator,
            connection,
            _cleanup: cleanup,
        }
    }
}

/// The history lines of the manager at `handle` that mention `name`, for
/// failure messages.
pub fn story(handle: &str, name: &str) -> String {
    let Ok(mut stream) = UnixStream::connect(handle) else {
        return String::from("(no manager answers)");
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.write_all(&frame(0, "/libshm_history_v1"));
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .filter(|line| line.contains(&format!("name={name} ")) || line.ends_with(name))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// A client that stays connected to a manager that accepts only `prefix`.
pub fn bystander_under(daemon: &Daemon, prefix: &str) -> RawClient {
    let mut client = daemon.connect();
    client.register(&format!("{prefix}bystander"));
    client
}

/// Run by a process in a pid namespace of its own that inherited its
/// family's connection as descriptor 3, as a `torch.multiprocessing` worker
/// does: registers `argv[1]` under its own `getpid()`, creates and maps the
/// segment (refcount 1), prints its pid; at a line on stdin puts it in a
/// queue (refcount 2), drops its own reference (unmaps, refcount 1) and
/// releases it, and prints `released`; waits for stdin to close.
pub const NESTED_WORKER: &str = r#"
import mmap, os, struct, sys
name, pid = sys.argv[1], os.getpid()
def frame(free):
    b = name.encode()
    return struct.pack("=iB", pid, free) + b + b"\0" * (60 - len(b)) + b"\0" * 3
os.write(3, frame(0))
assert os.read(3, 2) == b"OK"
fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.ftruncate(fd, 128)
m = mmap.mmap(fd, 128)
m[0:4] = struct.pack("=i", 1)
print(pid, flush=True)
sys.stdin.readline()
m[0:4] = struct.pack("=i", 2)
m[0:4] = struct.pack("=i", 1)
m.close()
os.close(fd)
try:
    os.write(3, frame(1))
except BrokenPipeError:
    pass  # the connection was closed: the worker lives on
print("released", flush=True)
sys.stdin.read()
"#;

/// Has the process `command` starts share `conn` as its descriptor 3.
pub fn share_as_fd3(command: &mut std::process::Command, conn: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only `dup2`, async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(conn, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A worker in a pid namespace of its own whose own pid there is `pid`,
/// sharing the family's connection `conn` as descriptor 3 and running
/// [`NESTED_WORKER`] on `name`.
pub struct NestedWorker {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl NestedWorker {
    pub fn spawn(conn: std::os::fd::RawFd, pid: i32, name: &str) -> Self {
        let mut command = std::process::Command::new("unshare");
        command
            .args(["--pid", "--fork", "sh", "-c"])
            .arg(format!(
                "echo {} > /proc/sys/kernel/ns_last_pid && python3 -c \"$0\" \"$1\"",
                pid - 1
            ))
            .args([NESTED_WORKER, name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        share_as_fd3(&mut command, conn);
        let mut child = command.spawn().expect("unshare");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut worker = Self {
            child,
            stdin,
            lines,
        };
        let said: i32 = worker.line().trim().parse().unwrap();
        assert_eq!(said, pid, "the worker's own pid in its namespace");
        worker
    }

    fn line(&mut self) -> String {
        self.lines.next().expect("a line").expect("a line")
    }

    /// Puts its segment in a queue and drops its own reference (unmaps):
    /// refcount 1, in transit. Its release follows, unanswered, and may
    /// find the connection closed (the worker lives on).
    pub fn queue(&mut self) {
        writeln!(self.stdin.as_mut().unwrap()).unwrap();
    }

    /// Puts its segment in a queue and releases it.
    pub fn queue_and_release(&mut self) {
        writeln!(self.stdin.as_mut().unwrap()).unwrap();
        assert_eq!(self.line(), "released");
    }
}

impl Drop for NestedWorker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
