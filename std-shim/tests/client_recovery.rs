//! A client that outlives its managers keeps them told about everything it
//! holds (issue 9): however often its manager dies, and however its way back
//! goes, whichever manager serves the handle when the client dies reaps all
//! its segments.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Daemon, Holder, RawClient, SHM_MANAGER, process_gone, shm_exists, wait_until};

/// A manager that took over a dead one's handle looks for leaked segments for
/// 10 s (`RECOVERY_SWEEPS`), and would reap a dead client's segments even if
/// it was never told of them. Waiting this long after the last takeover
/// leaves only what the client registered to decide.
const SWEEP_WINDOW: Duration = Duration::from_secs(11);
/// A revived manager's grace period (the clients' default) plus 1 s, plus
/// 1 s for a busy machine.
const REAP_BOUND: Duration = Duration::from_secs(4);

/// A name prefix of this test process's own: a manager that takes over a
/// handle sweeps its clients' prefix for leaked segments, and must not
/// reach into other tests' (or take what they leak for ours).
fn private_prefix() -> String {
    format!("/recovT{}_", std::process::id())
}

/// Pids of the managers started with `--adopt <handle>`.
fn adopting(handle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--adopt" && w[1] == handle.as_bytes())
        })
        .filter(|pid| !process_gone(*pid))
        .collect()
}

fn sigkill(pid: u32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || process_gone(pid)),
        "manager {pid} survived SIGKILL"
    );
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_owned()
}

/// Kills the holder and waits for every one of `groups`' names to be reaped,
/// naming the ones left by when they were created.
fn assert_all_reaped_after_sigkill(holder: Holder, groups: &[(&str, Vec<String>)]) {
    holder.kill();
    let killed = Instant::now();
    let all: Vec<&String> = groups.iter().flat_map(|(_, names)| names).collect();
    let reaped = wait_until(REAP_BOUND, || all.iter().all(|n| !shm_exists(n)));
    let left: Vec<String> = groups
        .iter()
        .filter_map(|(when, names)| {
            let left: Vec<&String> = names.iter().filter(|n| shm_exists(n)).collect();
            (!left.is_empty()).then(|| format!("{} created {when}: {left:?}", left.len()))
        })
        .collect();
    all.iter().for_each(|n| common::remove_segment(n));
    assert!(
        reaped,
        "{:.1} s after the holder's SIGKILL, the manager at its handle has not reaped {}",
        killed.elapsed().as_secs_f64(),
        left.join("; ")
    );
    eprintln!(
        "all reaped {:.2} s after the holder's SIGKILL",
        killed.elapsed().as_secs_f64()
    );
}

#[test]
fn a_client_whose_manager_was_sigkilled_twice_has_every_segment_reaped_when_it_dies() {
    let prefix = private_prefix();
    let mut daemon = Daemon::start(&["--name-prefix", &prefix]);
    let handle = daemon.handle.clone();
    let mut holder = Holder::spawn(
        &["create", "--manager", &handle, "--count", "2"],
        2,
        &[("LIBSHM_NAME_PREFIX", &prefix)],
    );
    let before_first = holder.names();

    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let reply = holder.ask("create 4096");
    assert_eq!(
        field(&reply, "handle"),
        handle,
        "recovered at the old handle: {reply}"
    );
    let between = vec![field(&reply, "name")];

    let revived = adopting(&handle);
    assert_eq!(
        revived.len(),
        1,
        "one manager revived the handle: {revived:?}"
    );
    sigkill(revived[0]);
    let reply = holder.ask("create 4096");
    assert_eq!(
        field(&reply, "handle"),
        handle,
        "recovered at the old handle again: {reply}"
    );
    let revived_again = Instant::now();
    let after_second = vec![field(&reply, "name")];
    assert_eq!(
        holder.ask("refcount"),
        "refcount=1,1,1,1",
        "every segment is still the holder's alone"
    );

    // A live client keeps the third manager from shutting down: what it
    // unlinks now, it reaps. (It says something, or it would be closed as
    // a connection that never speaks.)
    let mut bystander = RawClient::connect(&handle);
    assert!(bystander.answers_registration(&format!("{prefix}bystander")));
    std::thread::sleep(SWEEP_WINDOW.saturating_sub(revived_again.elapsed()));
    assert_all_reaped_after_sigkill(
        holder,
        &[
            ("before the first kill", before_first),
            ("between the kills", between),
            ("after the second kill", after_second),
        ],
    );
    assert!(bystander.answers_registration(&format!("{prefix}bystander_again")));
}

/// A manager executable that only runs while the test allows it: it stands
/// for a moment in which no manager can be started (the binary replaced
/// mid-upgrade, no file descriptors left, a full disk).
struct Gate {
    dir: PathBuf,
}

impl Gate {
    fn closed() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "libshm-gate-{}-{}",
            std::process::id(),
            common::torch::rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "#!/bin/sh\n\
             [ -e '{open}' ] && exec '{manager}' \"$@\"\n\
             echo 'ERROR: the test keeps this manager from starting'\n\
             exit 1\n",
            open = dir.join("open").display(),
            manager = SHM_MANAGER,
        );
        let path = dir.join("shm-manager");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn executable(&self) -> PathBuf {
        self.dir.join("shm-manager")
    }

    fn open(&self) {
        std::fs::write(self.dir.join("open"), b"").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_client_whose_recovery_failed_re_registers_everything_with_the_next_manager_it_reaches() {
    let gate = Gate::closed();
    let executable = gate.executable();
    let prefix = private_prefix();
    let envs = [
        ("LIBSHM_MANAGER", executable.to_str().unwrap()),
        ("LIBSHM_NAME_PREFIX", &prefix),
    ];
    let mut first = Daemon::start(&["--name-prefix", &prefix]);
    let handle = first.handle.clone();
    let mut holder = Holder::spawn(&["create", "--manager", &handle, "--count", "2"], 2, &envs);
    let before_kill = holder.names();

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // No manager can be started: this recovery fails.
    let reply = holder.ask("create 4096");
    assert!(
        reply.starts_with("error"),
        "no manager could serve this: {reply}"
    );

    // Another process of the family brings a manager back at the handle.
    gate.open();
    let second = Daemon::start(&[
        "--adopt",
        &handle,
        "--sweep-prefix",
        &prefix,
        "--name-prefix",
        &prefix,
    ]);
    assert_eq!(second.handle, handle);
    let revived = Instant::now();
    let reply = holder.ask("create 4096");
    assert_eq!(field(&reply, "handle"), handle, "{reply}");
    let after = vec![field(&reply, "name")];

    let mut bystander = RawClient::connect(&handle);
    assert!(bystander.answers_registration(&format!("{prefix}bystander")));
    std::thread::sleep(SWEEP_WINDOW.saturating_sub(revived.elapsed()));
    assert_all_reaped_after_sigkill(
        holder,
        &[
            ("before the failed recovery", before_kill),
            ("after it", after),
        ],
    );
    assert!(bystander.answers_registration(&format!("{prefix}bystander_again")));
}
