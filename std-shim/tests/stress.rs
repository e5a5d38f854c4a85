//! The stress test: workers create, share, open and drop segments at random
//! and are SIGKILLed at random moments; the manager is SIGKILLed once in the
//! middle. While it runs, a segment whose last live holder went away is gone
//! within the grace period plus 1 s (a name created before the revived
//! manager started may carry references of holders that died unseen, which
//! that manager cannot tell from a pickle's: it keeps such a name until it
//! shuts down); afterwards, nothing with the test's prefix is left.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, SHMCTL, shm_exists, wait_until};

/// Seconds of reaping latency allowed: the 2 s grace period plus 1 s.
const GRACE_PLUS_ONE: Duration = Duration::from_secs(3);
/// Extra room for a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(750);

#[derive(Default)]
struct Ledger {
    /// What each worker holds right now (as far as its log says), by pid.
    held: BTreeMap<u32, BTreeSet<String>>,
    /// When each name last had a live holder: now, if it has one.
    last_held: BTreeMap<String, Instant>,
    alive: BTreeSet<u32>,
    /// When each name was created.
    created_at: BTreeMap<String, Instant>,
    /// Everything that happened to each name, for the failure message.
    history: BTreeMap<String, Vec<String>>,
    start: Option<Instant>,
}

impl Ledger {
    fn event(&mut self, pid: u32, line: &str) {
        let Some((what, name)) = line.split_once(' ') else {
            return;
        };
        if what == "create" {
            self.created_at.insert(name.to_owned(), Instant::now());
        }
        let held = self.held.entry(pid).or_default();
        match what {
            "create" | "open" => {
                held.insert(name.to_owned());
            }
            "close" => {
                held.remove(name);
            }
            _ => return,
        }
        self.last_held.insert(name.to_owned(), Instant::now());
        let at = self.start.map(|s| s.elapsed()).unwrap_or_default();
        self.history
            .entry(name.to_owned())
            .or_default()
            .push(format!("{at:.3?} {pid} {what}"));
    }

    fn died(&mut self, pid: u32) {
        self.alive.remove(&pid);
        let at = self.start.map(|s| s.elapsed()).unwrap_or_default();
        for name in self.held.remove(&pid).unwrap_or_default() {
            self.history
                .entry(name.clone())
                .or_default()
                .push(format!("{at:.3?} {pid} killed holding it"));
            self.last_held.insert(name, Instant::now());
        }
    }

    /// Names nobody alive holds whose last holder went away before `before`.
    fn orphaned_before(&self, before: Instant) -> Vec<String> {
        let held_now: BTreeSet<&String> = self.held.values().flatten().collect();
        self.last_held
            .iter()
            .filter(|(name, at)| !held_now.contains(name) && **at < before)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

struct Worker {
    child: Child,
}

fn spawn(
    handle: &str,
    board: &std::path::Path,
    prefix: &str,
    seed: u64,
    ledger: &Arc<Mutex<Ledger>>,
) -> Worker {
    let mut child = Command::new(SHMCTL)
        .args([
            "stress-worker",
            "--manager",
            handle,
            "--seed",
            &seed.to_string(),
        ])
        .arg("--board")
        .arg(board)
        .env("LIBSHM_NAME_PREFIX", prefix)
        // Beside the board, not on it: everything on the board is a name.
        .env(
            "LIBSHM_MANAGER",
            common::short_linger_manager(&board.with_extension("logs")),
        )
        .env("SHM_MANAGER_LOG", "debug")
        .stdout(Stdio::piped())
        .arg("-vv")
        .stderr(
            std::fs::File::create(board.with_extension("logs").join(format!("log-{seed}")))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let pid = child.id();
    ledger.lock().unwrap().alive.insert(pid);
    let stdout = child.stdout.take().unwrap();
    let ledger = Arc::clone(ledger);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            ledger.lock().unwrap().event(pid, &line);
        }
    });
    Worker { child }
}

/// Warnings and errors from the daemon's and the workers' logs, for a failure
/// message.
fn diagnostics(logs: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("log-") || name == "daemon.log") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("serving"))
        {
            out.push_str(&format!("{name}: {line}\n"));
        }
    }
    out
}

fn ours(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix[1..]))
        .map(|n| format!("/{n}"))
        .collect()
}

#[test]
fn random_work_random_kills_and_a_killed_manager_leave_nothing_behind() {
    // What dies around the manager's death is left to the revived manager's
    // sweep, which reaps only where it can inspect every process.
    if !common::in_private_pid_namespace(
        "random_work_random_kills_and_a_killed_manager_leave_nothing_behind",
    ) {
        return;
    }
    let prefix = format!("/stressT{}_", common::run_id());
    let board = std::env::temp_dir().join(format!("libshm-stress-{}", common::run_id()));
    std::fs::create_dir_all(&board).unwrap();
    let logs = board.with_extension("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let grace = std::env::var("STRESS_REAP_GRACE").unwrap_or_else(|_| "2s".into());
    let daemon_log = std::fs::File::create(logs.join("daemon.log")).unwrap();
    // Started as our launcher starts it: serving the clients' prefix.
    let mut daemon = Daemon::start_with_stderr(
        &["--reap-grace", &grace, "--name-prefix", &prefix, "-vv"],
        daemon_log.into(),
    );
    let handle = daemon.handle.clone();
    let ledger = Arc::new(Mutex::new(Ledger {
        start: Some(Instant::now()),
        ..Ledger::default()
    }));
    let mut workers: Vec<Worker> = (0..5)
        .map(|i| spawn(&handle, &board, &prefix, i + 1, &ledger))
        .collect();

    let start = Instant::now();
    let run_for = Duration::from_secs(11);
    let manager_dies_at = Duration::from_millis(5_000);
    let mut manager_killed_at = None;
    let mut seed = 100u64;
    let mut violations = Vec::new();
    while start.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(350));
        seed += 1;
        if manager_killed_at.is_none() && start.elapsed() >= manager_dies_at {
            daemon.child.kill().unwrap();
            daemon.child.wait().unwrap();
            manager_killed_at = Some(Instant::now());
        }
        // Kill a worker chosen by the seed, and start a fresh one.
        let victim = workers.swap_remove(seed as usize % workers.len());
        let mut child = victim.child;
        child.kill().unwrap();
        child.wait().unwrap();
        ledger.lock().unwrap().died(child.id());
        workers.push(spawn(&handle, &board, &prefix, seed, &ledger));

        // Orphans older than grace + 1 s must be gone. Those orphaned just
        // before the manager died, or while it was dead, wait for the revived
        // manager's sweep: they are checked at the end.
        let deadline = Instant::now() - GRACE_PLUS_ONE - SLACK;
        let near_manager_death = |at: Instant| {
            manager_killed_at
                .is_some_and(|k| at + GRACE_PLUS_ONE + SLACK > k && at < k + Duration::from_secs(1))
        };
        // One look at the ledger, so a worker's newer event cannot slip in
        // between deciding a name is an orphan and seeing it still exists.
        let ledger = ledger.lock().unwrap();
        // A name from before the revived manager may carry references of
        // holders that died where it could not see them (the ledger misses
        // some: a process that opens what it created holds it twice). The
        // revived manager cannot tell those from a pickle's once another
        // process has used the name, so it keeps such names until it shuts
        // down; the final check covers them.
        let from_before_revival = |name: &str| {
            let created = ledger.created_at.get(name);
            manager_killed_at
                .is_some_and(|k| created.is_some_and(|&at| at < k + Duration::from_secs(1)))
        };
        for name in ledger.orphaned_before(deadline) {
            let last = ledger.last_held[&name];
            let reported = violations.iter().any(|v: &String| v.starts_with(&name));
            if !reported
                && !near_manager_death(last)
                && !from_before_revival(&name)
                && shm_exists(&name)
            {
                violations.push(format!(
                    "{name} outlived its last holder by {:?} (manager killed at {:?}): {:?}",
                    last.elapsed(),
                    manager_killed_at.map(|k| k - start),
                    ledger.history.get(&name)
                ));
            }
        }
    }
    assert!(manager_killed_at.is_some());
    for worker in &mut workers {
        let _ = worker.child.kill();
        let _ = worker.child.wait();
    }
    let created = ledger.lock().unwrap().last_held.len();
    assert!(
        created > 100,
        "the workers did real work ({created} segments)"
    );
    assert!(
        violations.is_empty(),
        "orphans outlived grace + 1 s: {violations:#?}\n{}",
        diagnostics(&logs)
    );
    assert!(
        wait_until(Duration::from_secs(10), || ours(&prefix).is_empty()),
        "left behind: {:?}\n{}",
        ours(&prefix),
        diagnostics(&logs)
    );
    let _ = std::fs::remove_dir_all(&board);
    let _ = std::fs::remove_dir_all(&logs);
}
