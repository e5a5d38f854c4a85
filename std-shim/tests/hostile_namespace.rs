//! What other local users can put in `/dev/shm`, and what the manager, `gc`
//! and the recovery sweep make of it: a FIFO or a symlink under a name the
//! manager knows must neither block it nor be removed; another user's file is
//! left alone; a segment some process we cannot inspect may map is never
//! collected unless forced; a manager started without arguments takes on only
//! names under its prefix.
//!
//! Everything here is real: `/dev/shm`, `shm-manager` and `shmctl` processes,
//! a non-dumpable process of uid 65534. Tests that need root (to act as
//! another user) skip without it, and fail under `LIBSHM_REQUIRE_ROOT=1`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    Daemon, Holder, SHM_MANAGER, SHMCTL, create_object, frame, is_root_or_skip,
    remove_if_abandoned, run_id, segment_name, shm_exists, unique_name, wait_until,
};
use libshm::inspect;
use libshm::protocol::namespace::{Namespace, Observed, Unlinked};
use libshm::{Config, ENV_PREFIX, ManagerLink, NamePrefix, SegmentName, ShmNamespace};

/// The unprivileged user the tests act as.
const NOBODY: u32 = 65534;

fn path_of(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name.trim_start_matches('/'))
}

/// Removes what a test put in `/dev/shm`, however the test ends.
#[derive(Default)]
struct Cleanup(Vec<PathBuf>);

impl Cleanup {
    fn add(&mut self, name: &str) -> PathBuf {
        let path = path_of(name);
        self.0.push(path.clone());
        path
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
    }
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
}

fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_fifo())
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink())
}

/// A file of `len` bytes whose first four hold `refcount`, as a segment's header would.
fn write_segment(path: &Path, len: usize, refcount: i32) {
    let mut bytes = vec![0u8; len];
    let head = refcount.to_ne_bytes();
    let n = len.min(4);
    bytes[..n].copy_from_slice(&head[..n]);
    std::fs::write(path, bytes).unwrap();
}

/// Runs `look` on a namespace of our own on another thread and returns its
/// answer, failing if it takes longer than `limit`: a look that blocks would
/// otherwise hang the test instead of failing it.
fn promptly<T: Send + 'static>(
    limit: Duration,
    look: impl FnOnce(&mut ShmNamespace) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut namespace = ShmNamespace::for_current_user().expect("/dev/shm opens");
        let _ = tx.send(look(&mut namespace));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("a look into /dev/shm took longer than {limit:?}"))
}

/// Asserts that `namespace` sees `name` as foreign and will not unlink it.
fn assert_foreign(namespace: &mut ShmNamespace, name: &str) {
    let segment = segment_name(name);
    assert_eq!(namespace.observe(&segment).unwrap(), Observed::Foreign);
    assert_eq!(namespace.unlink(&segment).unwrap(), Unlinked::Foreign);
}

// --- ShmNamespace, one kind of entry at a time --------------------------------

#[test]
fn a_fifo_is_foreign_at_once_and_is_never_unlinked() {
    let mut cleanup = Cleanup::default();
    let name = unique_name("fifo");
    let path = cleanup.add(&name);
    mkfifo(&path);
    let segment = segment_name(&name);
    let started = Instant::now();
    let (observed, unlinked) = promptly(Duration::from_secs(2), move |namespace| {
        (namespace.observe(&segment), namespace.unlink(&segment))
    });
    assert_eq!(observed.unwrap(), Observed::Foreign);
    assert_eq!(unlinked.unwrap(), Unlinked::Foreign);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "no waiting for a writer: {:?}",
        started.elapsed()
    );
    assert!(is_fifo(&path), "the FIFO is still there");
}

#[test]
fn a_symlink_is_foreign_and_neither_it_nor_its_target_is_removed() {
    let mut cleanup = Cleanup::default();
    let target = unique_name("target");
    let link = unique_name("link");
    let target_path = cleanup.add(&target);
    let link_path = cleanup.add(&link);
    write_segment(&target_path, 64, 1);
    std::os::unix::fs::symlink(&target_path, &link_path).unwrap();
    let mut namespace = ShmNamespace::for_current_user().unwrap();
    assert_foreign(&mut namespace, &link);
    assert!(is_symlink(&link_path), "the link is still there");
    assert!(target_path.is_file(), "and so is its target");
    assert_eq!(
        namespace.observe(&segment_name(&target)).unwrap(),
        Observed::Segment { refcount: 1 },
        "the target itself is ours"
    );
}

#[test]
fn a_directory_is_foreign() {
    let mut cleanup = Cleanup::default();
    let name = unique_name("dir");
    std::fs::create_dir(cleanup.add(&name)).unwrap();
    let mut namespace = ShmNamespace::for_current_user().unwrap();
    assert_foreign(&mut namespace, &name);
    assert!(path_of(&name).is_dir());
}

#[test]
fn another_users_file_is_foreign_and_not_removed() {
    if !is_root_or_skip("root, to give a file to another user") {
        return;
    }
    let mut cleanup = Cleanup::default();
    let name = unique_name("theirs");
    let path = cleanup.add(&name);
    write_segment(&path, 64, 1);
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut namespace = ShmNamespace::for_current_user().unwrap();
    assert_foreign(&mut namespace, &name);
    assert!(
        path.is_file(),
        "root's manager left uid {NOBODY}'s file alone"
    );
    // Acting for that user, it is a segment.
    let mut theirs = ShmNamespace::for_user(NOBODY).unwrap();
    assert_eq!(
        theirs.observe(&segment_name(&name)).unwrap(),
        Observed::Segment { refcount: 1 }
    );
}

#[test]
fn a_file_shorter_than_a_refcount_counts_zero() {
    let mut cleanup = Cleanup::default();
    let mut namespace = ShmNamespace::for_current_user().unwrap();
    for len in [0, 3] {
        let name = unique_name("short");
        write_segment(&cleanup.add(&name), len, 7);
        assert_eq!(
            namespace.observe(&segment_name(&name)).unwrap(),
            Observed::Segment { refcount: 0 },
            "{len} bytes"
        );
    }
}

#[test]
fn a_segment_is_read_then_removed_then_absent() {
    let mut cleanup = Cleanup::default();
    let name = unique_name("proper");
    let path = cleanup.add(&name);
    write_segment(&path, 64 + 4096, 3);
    let segment = segment_name(&name);
    let mut namespace = ShmNamespace::for_current_user().unwrap();
    assert_eq!(
        namespace.observe(&segment).unwrap(),
        Observed::Segment { refcount: 3 }
    );
    assert_eq!(namespace.unlink(&segment).unwrap(), Unlinked::Removed);
    assert!(!path.exists());
    assert_eq!(namespace.observe(&segment).unwrap(), Observed::Absent);
    assert_eq!(namespace.unlink(&segment).unwrap(), Unlinked::Absent);
}

// --- the manager, with a name swapped under it -------------------------------

/// What a hostile user puts under a name the manager knows.
#[derive(Clone, Copy, Debug)]
enum Swap {
    Fifo,
    Symlink,
}

/// Registers a name, lets go of it (released, or its holder dies), and
/// within the same second, before the manager looks at the name again,
/// replaces the object with `swap`. Three seconds later (past the manager's
/// first look, and past the orphan's grace period) a new client must still be
/// answered within a second, and the swapped-in entry must survive that and
/// the manager's shutdown.
fn survives_a_swap(swap: Swap, holder_dies: bool) {
    let mut cleanup = Cleanup::default();
    let mut daemon = Daemon::start(&["--reap-grace", "500ms"]);
    let mut keeper = daemon.connect();
    keeper.register(&unique_name("keeper"));

    let name = unique_name("swapped");
    let path = cleanup.add(&name);
    let target = unique_name("swap-target");
    let target_path = cleanup.add(&target);
    create_object(&name);
    let mut holder = daemon.connect();
    holder.register(&name);
    if !holder_dies {
        holder.release(&name);
        // The release has no answer; a round trip after it says it arrived.
        holder.register(&unique_name("after-release"));
    }
    drop(holder);
    std::fs::remove_file(&path).unwrap();
    match swap {
        Swap::Fifo => mkfifo(&path),
        Swap::Symlink => {
            write_segment(&target_path, 64, 0);
            std::os::unix::fs::symlink(&target_path, &path).unwrap();
        }
    }

    std::thread::sleep(Duration::from_secs(3));
    let mut newcomer = daemon.connect();
    newcomer
        .stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    newcomer.send(&frame(0, &unique_name("newcomer")));
    let mut reply = [0u8; 2];
    let answered = newcomer.stream.read_exact(&mut reply);
    assert!(
        answered.is_ok(),
        "{swap:?}: the manager did not answer a new client within 1 s: {answered:?}"
    );
    assert_eq!(&reply, b"OK");

    drop((keeper, newcomer));
    assert!(
        daemon.wait_exit(Duration::from_secs(5)).is_some(),
        "{swap:?}: the manager shut down"
    );
    match swap {
        Swap::Fifo => assert!(is_fifo(&path), "the FIFO is still there"),
        Swap::Symlink => {
            assert!(is_symlink(&path), "the symlink is still there");
            assert!(target_path.is_file(), "and so is its target");
        }
    }
}

#[test]
fn a_fifo_under_a_released_name_does_not_freeze_the_manager() {
    survives_a_swap(Swap::Fifo, false);
}

#[test]
fn a_symlink_under_a_released_name_does_not_freeze_the_manager() {
    survives_a_swap(Swap::Symlink, false);
}

#[test]
fn a_fifo_under_an_orphaned_name_is_not_reaped_and_does_not_freeze_the_manager() {
    survives_a_swap(Swap::Fifo, true);
}

#[test]
fn a_symlink_under_an_orphaned_name_is_not_reaped() {
    survives_a_swap(Swap::Symlink, true);
}

// --- names a manager takes on ------------------------------------------------

/// `shm-manager <args>` as PyTorch starts it: no prefix in the environment.
fn default_daemon(args: &[&str]) -> Daemon {
    let mut command = Command::new(SHM_MANAGER);
    command.args(args).env_remove(ENV_PREFIX);
    Daemon::spawn(&mut command)
}

#[test]
fn started_without_arguments_it_refuses_names_outside_torch_and_never_unlinks_them() {
    let mut cleanup = Cleanup::default();
    let mut daemon = default_daemon(&["--reap-grace", "200ms"]);
    let semaphore = format!("/sem.libshmT{}", run_id());
    let other = format!("/other_{}_2_3", run_id());
    for name in [&semaphore, &other] {
        cleanup.add(name);
        create_object(name);
        let mut client = daemon.connect();
        client.send(&frame(0, name));
        assert_eq!(client.reply(), Some(*b"NO"), "{name} is refused");
    }
    // Under the prefix, the same steps are accepted, and reaped once the
    // holder is gone: it is the name that was refused above.
    let accepted = unique_name("accepted");
    cleanup.add(&accepted);
    create_object(&accepted);
    let mut client = daemon.connect();
    client.register(&accepted);
    drop(client);
    assert!(wait_until(Duration::from_secs(3), || !shm_exists(
        &accepted
    )));
    assert!(daemon.wait_exit(Duration::from_secs(5)).is_some());
    assert!(shm_exists(&semaphore), "{semaphore} survives the manager");
    assert!(shm_exists(&other), "{other} survives the manager");
}

#[test]
fn the_journal_offer_is_answered_under_the_default_prefix() {
    let daemon = default_daemon(&[]);
    let mut client = daemon.connect();
    // A raw client offers no memory with it, so the answer is a refusal; the
    // point is that it is answered, not cut off as a foreign name.
    client.send(&frame(0, "/libshm_journal_v1"));
    assert_eq!(client.reply(), Some(*b"NO"));
    client.register(&unique_name("after-offer"));
}

#[test]
fn a_client_of_the_same_environment_gets_its_journal_from_a_manager_started_bare() {
    // Both sides read the same (absent or not) LIBSHM_NAME_PREFIX.
    let daemon = Daemon::start(&[]);
    let manager = ManagerLink::connect(&daemon.handle.parse().unwrap()).unwrap();
    let segments: Vec<_> = (0..8).map(|_| manager.create(64).unwrap()).collect();
    manager.settle().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", daemon.child.id())).unwrap();
    assert!(
        maps.contains("memfd:libshm-journal"),
        "the manager mapped the client's journal"
    );
    drop(segments);
}

#[test]
fn our_launcher_tells_the_manager_the_clients_prefix() {
    // The launched manager's environment says nothing of this prefix (and
    // would default to /torch_): only the launcher's argument lets it accept.
    let prefix = format!("/launchT{}_", run_id());
    let config = Config::default()
        .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
        .manager_executable(SHM_MANAGER);
    let manager = ManagerLink::launch(&config).unwrap();
    let segment = manager.create(64).unwrap();
    assert!(segment.name().as_str().starts_with(&prefix));
    manager.settle().unwrap();
    drop(segment);
}

#[test]
fn a_foreign_name_is_refused_on_the_socket_beside_a_journal_and_what_follows_still_counts() {
    // A journaled registration gets no answer, so a manager cannot refuse a
    // foreign one there; it can only skip it, and the client would create
    // what nobody reaps. So the manager advertises its prefix in the journal,
    // and our client sends a foreign name through the socket, where it is
    // refused before the client relies on it, and the connection goes on.
    // (A client that journals a foreign name anyway is skipped without
    // closing its connection: hostile3's
    // foreign_names_interleaved_in_a_journal_neither_fill_the_registry_nor_cost_the_real_ones.)
    let prefix = format!("/skipT{}_", run_id());
    let foreign = unique_name("journaled-foreign");
    common::create_segment(&foreign, 1, 64);
    let mut cleanup = common::Cleanup(vec![foreign.clone()]);
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("skip-{}.log", run_id()));
    let mut daemon = Daemon::start_with_stderr(
        &["--reap-grace", "1s", "--name-prefix", &prefix, "-v"],
        std::fs::File::create(&log).unwrap().into(),
    );
    // The defaults: pipelined, with a journal.
    let manager = ManagerLink::connect(&daemon.handle.parse().unwrap()).unwrap();
    let foreign_name = SegmentName::new(foreign.as_bytes()).unwrap();
    let opened = manager
        .open(&foreign_name, 64)
        .and_then(|segment| manager.settle().map(|()| segment));
    // Pipelined, the refusal comes with the settle.
    use libshm::protocol::client::{ClientError, ClientFault};
    let refused = match &opened {
        Err(libshm::Error::Refused { name, .. }) => Some(*name),
        Err(libshm::Error::Manager {
            source: ClientError::Fault(ClientFault::Refused(name)),
            ..
        }) => Some(*name),
        _ => None,
    };
    assert_eq!(
        refused,
        Some(foreign_name),
        "{:?}",
        opened.map(|segment| segment.name().to_string())
    );
    let own_name = SegmentName::new(format!("{prefix}own_{}", run_id()).as_bytes()).unwrap();
    cleanup.0.push(own_name.to_string());
    let own = manager.create_named(&own_name, 64).unwrap();
    manager.settle().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", daemon.child.id())).unwrap();
    assert!(
        maps.contains("memfd:libshm-journal"),
        "the refusal came with a journal attached"
    );
    drop(own);
    // A journaled create under the prefix still outlives nothing.
    let holder = Holder::spawn(
        &["create", "--manager", &daemon.handle, "--size", "64"],
        1,
        &[(ENV_PREFIX, &prefix)],
    );
    let created = holder.segments[0].name.clone();
    assert!(created.starts_with(&prefix), "{created}");
    cleanup.0.push(created.clone());
    holder.kill();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(4), || !shm_exists(&created)),
        "{created} outlived its crashed creator"
    );
    assert!(killed.elapsed() < Duration::from_secs(2) + Duration::from_millis(500));
    assert!(
        shm_exists(&foreign),
        "the foreign name is not the manager's"
    );
    assert!(daemon.is_running());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("closing connection"), "{log}");
    assert!(
        !log.contains("outside the accepted prefix"),
        "our client journaled a foreign name: {log}"
    );
}

// --- gc and the recovery sweep under doubt -----------------------------------

/// A pid that was just alive and is not any more.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A command run as uid/gid 65534 with no supplementary groups.
fn as_nobody(program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.args([
        "--reuid",
        &NOBODY.to_string(),
        "--regid",
        &NOBODY.to_string(),
        "--clear-groups",
        "--",
        program,
    ]);
    command
}

/// A python interpreter uid 65534 may run (a user's pyenv shim may not be).
fn system_python() -> &'static str {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .expect("these tests need python3 in /usr/bin, /usr/local/bin or /bin")
}

/// Makes itself non-dumpable (so only a privileged process may read its
/// `/proc` entries), maps the file, closes the descriptor, and waits for
/// end of file on stdin.
const NON_DUMPABLE_MAPPER: &str = r#"
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE = 4
if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
    sys.exit("prctl: errno %d" % ctypes.get_errno())
fd = os.open(sys.argv[1], os.O_RDWR)
mapping = mmap.mmap(fd, 0)
os.close(fd)
print("mapped", flush=True)
sys.stdin.read()
"#;

/// A non-dumpable process of uid 65534 that maps one segment.
struct HiddenMapper {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl HiddenMapper {
    fn spawn(path: &Path) -> Self {
        let mut child = as_nobody(system_python())
            .args(["-c", NON_DUMPABLE_MAPPER])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python as uid 65534");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim_end(), "mapped", "the mapper is ready");
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HiddenMapper {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A leaked-looking segment (its creator pid in the name is dead) of
/// 4096 data bytes, owned by uid 65534.
fn nobodys_leak(cleanup: &mut Cleanup, prefix: &str, tag: u32) -> (String, PathBuf) {
    let name = format!("{prefix}{}_{tag}_0", dead_pid());
    let path = cleanup.add(&name);
    write_segment(&path, 64 + 4096, 1);
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    (name, path)
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn gc_as_an_ordinary_user_keeps_what_processes_it_cannot_inspect_may_map() {
    if !is_root_or_skip("root, to act as uid 65534 beside root's processes") {
        return;
    }
    let mut cleanup = Cleanup::default();
    let prefix = format!("/doubtT{}_", run_id());
    let (hidden, hidden_path) = nobodys_leak(&mut cleanup, &prefix, 1);
    let (roots, roots_path) = nobodys_leak(&mut cleanup, &prefix, 2);
    let mapper = HiddenMapper::spawn(&hidden_path);
    let root_mapping = memmap2::MmapOptions::new()
        .map_raw_read_only(&std::fs::File::open(&roots_path).unwrap())
        .unwrap();

    // Root sees who maps them: both are in use, gc as 65534 would be wrong.
    let scan = inspect::scan(&NamePrefix::new(prefix.as_bytes()).unwrap()).unwrap();
    let users_of = |name: &str| {
        scan.segments
            .iter()
            .find(|s| s.name.as_str() == name)
            .map(|s| s.users.clone())
            .unwrap_or_default()
    };
    assert_eq!(users_of(&hidden), [mapper.pid()]);
    assert_eq!(users_of(&roots), [std::process::id()]);

    let ls = stdout_of(
        &as_nobody(SHMCTL)
            .args(["ls", "--prefix", &prefix])
            .output()
            .unwrap(),
    );
    assert!(ls.contains("2 look leaked, unsure"), "{ls}");
    assert!(ls.contains("could not be inspected"), "{ls}");

    let gc = |extra: &[&str]| {
        stdout_of(
            &as_nobody(SHMCTL)
                .args(["gc", "--prefix", &prefix, "--older-than", "0", "--yes"])
                .args(extra)
                .output()
                .unwrap(),
        )
    };
    // Root's manager of these names, stopped: it cannot answer gc, but it
    // serves root alone and knows nothing of 65534's segments, so it holds
    // nothing back and is not named.
    let roots_manager = common::Daemon::quiet_under(&prefix);
    let stopped = rustix::process::Pid::from_raw(roots_manager.child.id() as i32).unwrap();
    rustix::process::kill_process(stopped, rustix::process::Signal::STOP).unwrap();
    let kept = gc(&[]);
    rustix::process::kill_process(stopped, rustix::process::Signal::CONT).unwrap();
    assert!(
        !kept.contains(&roots_manager.handle),
        "root's manager held 65534's gc back: {kept}"
    );
    assert!(hidden_path.is_file(), "kept under doubt: {kept}");
    assert!(roots_path.is_file(), "kept under doubt: {kept}");
    assert!(kept.contains("removed nothing"), "{kept}");
    let note = kept
        .lines()
        .find(|line| line.contains("could not be inspected ("))
        .unwrap_or_else(|| panic!("no list of uninspected processes in {kept}"));
    let pids: Vec<u32> = note
        .split_once(": pid")
        .map(|(_, list)| list.trim_start_matches('s'))
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|pid| pid.parse().ok())
        .collect();
    assert!(
        pids.contains(&mapper.pid()),
        "the non-dumpable mapper is named: {note}"
    );
    assert!(
        pids.contains(&std::process::id()),
        "and so is this root process: {note}"
    );
    assert!(
        note.starts_with(&format!("note: {} process", pids.len())),
        "with how many: {note}"
    );

    let forced = gc(&["--force"]);
    assert!(forced.contains("removed 2 segments"), "{forced}");
    assert!(!hidden_path.exists() && !roots_path.exists(), "{forced}");
    drop(root_mapping);
}

#[test]
fn the_recovery_sweep_reaps_nothing_while_a_process_cannot_be_inspected() {
    if !is_root_or_skip("root, to run managers as uid 65534") {
        return;
    }
    let mut cleanup = Cleanup::default();
    let prefix = format!("/sweepT{}_", run_id());
    let manager = |args: &[&str]| {
        as_nobody(SHM_MANAGER)
            .args(["--name-prefix", &prefix])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let handshake = |child: &mut Child| {
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.starts_with("ERROR"), "{line}");
        line.trim_end().to_owned()
    };
    // A manager of uid 65534 dies, leaving its directory to adopt.
    let mut dead = manager(&["--run-dir", "/tmp"]);
    let handle = handshake(&mut dead);
    dead.kill().unwrap();
    dead.wait().unwrap();

    let (leaked, path) = nobodys_leak(&mut cleanup, &prefix, 3);
    let _mapper = HiddenMapper::spawn(&path);
    let mut adopter = manager(&[
        "--adopt",
        &handle,
        "--sweep-prefix",
        &prefix,
        "--reap-grace",
        "200ms",
        "--shutdown-timeout",
        "1s",
    ]);
    assert_eq!(
        handshake(&mut adopter),
        handle,
        "it serves at the old handle"
    );
    let exited = wait_until(Duration::from_secs(6), || {
        adopter.try_wait().unwrap().is_some()
    });
    let mut log = String::new();
    adopter
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    if !exited {
        let _ = adopter.kill();
        let _ = adopter.wait();
    }
    remove_if_abandoned(&handle);
    assert!(exited, "the adopting manager shut down: {log}");
    assert!(path.is_file(), "{leaked} was not reaped: {log}");
    assert!(
        log.contains("not reaping") && log.contains("could not be inspected"),
        "and the manager said why: {log}"
    );
}
