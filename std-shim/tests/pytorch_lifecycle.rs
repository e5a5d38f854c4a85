//! Reaping under PyTorch's real use, for each start method (`fork`, `spawn`,
//! `forkserver`), with our manager installed as torch's (issue 9). The
//! scenarios live in `tests/python/lifecycle.py`; each run is one PyTorch
//! program whose parent shares a tensor before it starts any child, so under
//! `fork` every child inherits the parent's connection to the manager.
//!
//! Each test runs its scenario under every start method at once, and checks
//! what the script checks while the parent lives (dead processes' segments
//! gone within the grace period plus 1 s, tensors in transit intact), and
//! then, once the parent has exited and the managers have shut down, that no
//! `/torch_<pid>_*` name of any of its processes is left. A failure names the
//! start method, what went wrong and the names involved.
//! `LIBSHM_START_METHODS=fork` (comma-separated) runs only those methods.
//! `pytorchs_manager` runs the in-transit scenarios with PyTorch's own
//! manager, to show what they catch there.
//!
//! Needs the PyTorch peer (see `common::torch`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::torch::{Overlay, Peer, peer, rand_suffix, torch_segments_of};
use common::wait_until;

/// How long a manager with no client left waits before it shuts down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack on top of it for a busy machine. Every scenario lets all it put in
/// transit arrive, so no manager has a reason to linger.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(4);
/// Bound on one PyTorch program (spawned children import torch, seconds each).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Which manager torch starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    Ours,
    Pytorchs,
}

/// One finished PyTorch program, with what its managers left behind.
struct Run {
    scenario: &'static str,
    method: &'static str,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// Every process that may have created segments.
    pids: Vec<u32>,
    /// Managers still running once the shutdown bound had passed.
    stuck_managers: Vec<u32>,
    /// How long after the program's exit its managers were all gone.
    managers_gone_after: Duration,
    /// `/torch_<pid>_*` names of `pids` left after that.
    left: Vec<String>,
}

impl Run {
    fn passed(&self) -> bool {
        self.status.success() && self.stdout.lines().any(|l| l == "PASS")
    }

    /// The script's own account of what went wrong.
    fn failure(&self) -> Option<&str> {
        self.stdout.lines().find_map(|l| l.strip_prefix("FAIL: "))
    }

    fn transcript(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            self.stdout,
            tail(&self.stderr, 60)
        )
    }

    /// What went wrong while the program ran, or after it exited: `None`
    /// when it passed, its managers shut down on time, and nothing of its
    /// processes is left in /dev/shm.
    fn problem(&self) -> Option<String> {
        if !self.passed() {
            return Some(
                self.failure()
                    .unwrap_or("the script failed without saying why (see its output)")
                    .to_owned(),
            );
        }
        self.problem_after_exit()
    }

    fn problem_after_exit(&self) -> Option<String> {
        if !self.stuck_managers.is_empty() {
            return Some(format!(
                "manager(s) {:?} still running {:.1} s after the program exited \
                 (is a name wrongly counted in transit?)",
                self.stuck_managers,
                self.managers_gone_after.as_secs_f64()
            ));
        }
        if !self.left.is_empty() {
            return Some(format!(
                "{} segment(s) of the program's processes left after it exited and its \
                 managers shut down: {:?}",
                self.left.len(),
                &self.left[..self.left.len().min(6)]
            ));
        }
        None
    }
}

/// Fails with the problem of every run that has one (as `problem` sees
/// it), each followed by its transcript.
fn assert_no_problems(runs: &[Run], problem: impl Fn(&Run) -> Option<String>) {
    let failed: Vec<(&Run, String)> = runs
        .iter()
        .filter_map(|run| Some((run, problem(run)?)))
        .collect();
    if failed.is_empty() {
        return;
    }
    let summary: Vec<String> = failed
        .iter()
        .map(|(run, p)| format!("{} under {}: {p}", run.scenario, run.method))
        .collect();
    let transcripts: Vec<String> = failed
        .iter()
        .map(|(run, _)| format!("=== {}\n{}", run.method, run.transcript()))
        .collect();
    panic!("{}\n\n{}", summary.join("\n"), transcripts.join("\n"));
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = all[start..].join("\n");
    out.push('\n');
    out
}

/// A scratch directory for one run's pid file and marks.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "libshm-lifecycle-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/lifecycle.py")
}

/// Runs `scenario` under `method` with `served`'s manager as torch's, waits
/// for the managers it started to shut down, and looks at what is left.
fn run(
    peer: &Peer,
    scenario: &'static str,
    method: &'static str,
    served: Served,
    envs: &[(&str, &str)],
) -> Run {
    let overlay = match served {
        Served::Ours => Overlay::new(peer),
        Served::Pytorchs => Overlay::with_manager(peer, &peer.torch_shm_manager()),
    };
    let scratch = Scratch::new();
    let pids_file = scratch.0.join("pids");
    let out_path = scratch.0.join("stdout");
    let err_path = scratch.0.join("stderr");
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(&peer.python)
            .arg(script())
            .args([scenario, method])
            .env("PYTHONPATH", &overlay.0)
            .env("PIDS_FILE", &pids_file)
            .env(
                "EXPECT_REAPING",
                if served == Served::Ours { "1" } else { "0" },
            )
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            // Its own group, so a run that hangs can be ended whole.
            .process_group(0)
            .spawn()
            .expect("run python")
    };
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let group = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            panic!(
                "{scenario} under {method}: still running after {RUN_TIMEOUT:?}; killed\n\
                 --- stdout\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let exited = Instant::now();
    let ran_for = exited - started;
    wait_until(SHUTDOWN_TIMEOUT + SHUTDOWN_SLACK, || {
        overlay.running_managers().is_empty()
    });
    let managers_gone_after = exited.elapsed();
    let stuck_managers = overlay.running_managers();
    for pid in &stuck_managers {
        // Not left running for an hour: the verdict is already in.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(*pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    let noted: Vec<(u32, u64)> = std::fs::read_to_string(&pids_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, started) = l.trim().split_once(' ')?;
            Some((pid.parse().ok()?, started.parse().ok()?))
        })
        .collect();
    let pids: Vec<u32> = noted.iter().map(|&(pid, _)| pid).collect();
    // A pid a new process has taken since (other tests churn through the
    // 32,768 pids in seconds) names that process's segments, not ours.
    let ours: Vec<u32> = noted
        .iter()
        .filter(|&&(pid, started)| started_at(pid).is_none_or(|now| now == started))
        .map(|&(pid, _)| pid)
        .collect();
    if ours.len() < pids.len() {
        eprintln!(
            "{scenario} under {method}: pids taken by new processes since, not searched: {:?}",
            pids.iter()
                .filter(|p| !ours.contains(p))
                .collect::<Vec<_>>()
        );
    }
    let (left, older): (Vec<_>, Vec<_>) = torch_segments_of(&ours)
        .into_iter()
        .partition(|name| created(name).is_none_or(|at| at >= started_wall));
    if !older.is_empty() {
        // A process of an earlier pid cycle (since exited) left these.
        eprintln!(
            "{scenario} under {method}: names of its pids created before it started, \
             not its own: {older:?}"
        );
    }
    let left: Vec<String> = left
        .into_iter()
        .map(|name| describe_leftover(name, started_wall))
        .collect();
    // Recorded; the next run should not trip over them.
    left.iter()
        .filter_map(|n| n.split(' ').next())
        .for_each(common::remove_segment);
    let run = Run {
        scenario,
        method,
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        pids,
        stuck_managers,
        managers_gone_after,
        left,
    };
    eprintln!(
        "{scenario} under {method}: ran {:.1} s, {} pids, managers gone {:.1} s after exit\n{}",
        ran_for.as_secs_f64(),
        run.pids.len(),
        run.managers_gone_after.as_secs_f64(),
        run.stdout
    );
    run
}

/// When `/dev/shm/<name>` was created (its change time where the file
/// system keeps no birth time; nothing changes a segment's inode after
/// `ftruncate`).
fn created(name: &str) -> Option<SystemTime> {
    let meta = std::fs::metadata(Path::new("/dev/shm").join(name)).ok()?;
    meta.created().ok().or_else(|| {
        use std::os::unix::fs::MetadataExt;
        let secs = u64::try_from(meta.ctime()).ok()?;
        let nanos = u32::try_from(meta.ctime_nsec()).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
    })
}

/// A leftover name with what tells whose it was: when it was created
/// relative to the program's start, its size and its header's refcount.
fn describe_leftover(name: String, started: SystemTime) -> String {
    let path = Path::new("/dev/shm").join(&name);
    let after = created(&name)
        .and_then(|at| at.duration_since(started).ok())
        .map_or("?".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    let refcount = std::fs::File::open(&path).ok().and_then(|mut file| {
        let mut header = [0u8; 4];
        std::io::Read::read_exact(&mut file, &mut header).ok()?;
        Some(i32::from_ne_bytes(header))
    });
    format!(
        "{name} (created {after} after the program started, {size} bytes, refcount {refcount:?})"
    )
}

/// When process `pid` started (field 22 of its `stat`), if it runs now.
fn started_at(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The start methods to run, `LIBSHM_START_METHODS` (comma-separated) or all.
fn start_methods() -> Vec<&'static str> {
    const ALL: [&str; 3] = ["fork", "spawn", "forkserver"];
    match std::env::var("LIBSHM_START_METHODS") {
        Ok(list) => ALL
            .into_iter()
            .filter(|m| list.split(',').any(|l| l.trim() == *m))
            .collect(),
        Err(_) => ALL.to_vec(),
    }
}

/// Runs `scenario` with our manager under every start method at once (the
/// programs mostly wait, on timers the manager keeps): each must pass and
/// leave nothing.
fn with_our_manager(scenario: &'static str) {
    let Some(peer) = peer() else { return };
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let peer = &peer;
        let running: Vec<_> = start_methods()
            .into_iter()
            .map(|method| scope.spawn(move || run(peer, scenario, method, Served::Ours, &[])))
            .collect();
        running.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_no_problems(&runs, Run::problem);
}

#[test]
fn a_sigkilled_child_is_reaped_with_the_twenty_tensors_it_sent_while_the_parent_lives() {
    with_our_manager("child-killed");
}

#[test]
fn five_pools_ended_by_terminate_leave_nothing_their_killed_workers_held() {
    with_our_manager("pool");
}

#[test]
fn a_dataloader_worker_sigkilled_mid_epoch_is_reaped_and_the_next_epoch_runs() {
    with_our_manager("dataloader");
}

#[test]
fn a_tensor_in_a_queue_outlives_its_sigkilled_co_holder_and_is_reaped_after_use() {
    with_our_manager("co-holder");
}

#[test]
fn tensors_in_a_queue_outlive_the_sigkilled_child_that_sent_them_and_are_reaped_after_use() {
    with_our_manager("child-killed-in-transit");
}

/// The in-transit scenarios with PyTorch's own `torch_shm_manager`, which
/// never reaps while a client is connected, and shuts down (unlinking
/// everything) 2 s after its last client is gone. The scenarios skip their
/// reaping checks there. One run per behaviour: `forkserver` behaves as
/// `spawn` does, and the co-holder scenario passes under every method.
mod pytorchs_manager {
    use super::*;

    fn in_transit(scenario: &'static str, method: &'static str) -> Option<Run> {
        let peer = peer()?;
        Some(run(&peer, scenario, method, Served::Pytorchs, &[]))
    }

    fn keeps(scenario: &'static str, method: &'static str) {
        if let Some(run) = in_transit(scenario, method) {
            assert_no_problems(&[run], Run::problem);
        }
    }

    /// Under spawn and forkserver the sending child started a manager of its
    /// own, and nobody else has connected to it yet when the child dies.
    fn loses_to_the_dead_senders_manager(method: &'static str) {
        let Some(run) = in_transit("child-killed-in-transit", method) else {
            return;
        };
        assert_no_problems(&[run], |run| {
            let lost = run
                .failure()
                .is_some_and(|f| f.contains("unlinked") && f.contains("in transit"));
            if lost {
                return run.problem_after_exit();
            }
            Some(format!(
                "PyTorch's manager was expected to unlink the tensors in transit once the \
                 child's manager lost its last client, but: {}",
                run.failure().unwrap_or("the scenario passed")
            ))
        });
    }

    #[test]
    fn spawn_keeps_a_tensor_in_transit_whose_co_holder_was_sigkilled() {
        keeps("co-holder", "spawn");
    }

    #[test]
    fn fork_keeps_tensors_in_transit_whose_sender_was_sigkilled() {
        keeps("child-killed-in-transit", "fork");
    }

    #[test]
    fn spawn_loses_tensors_in_transit_whose_sender_was_sigkilled() {
        loses_to_the_dead_senders_manager("spawn");
    }
}

/// The figure for issue 9's closing note: how long after a child's SIGKILL
/// under `fork` the 20 tensors it held are gone, median of 10. Run with
/// `cargo test -p libshm --test pytorch_lifecycle -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (10 rounds, about 40 s), not a check"]
fn reap_delay_after_sigkill_under_fork_median_of_10() {
    let Some(peer) = peer() else { return };
    let run = run(
        &peer,
        "child-killed",
        "fork",
        Served::Ours,
        &[("REPEAT", "10")],
    );
    assert_no_problems(std::slice::from_ref(&run), Run::problem);
    let median = run
        .stdout
        .lines()
        .find(|l| l.starts_with("median reap delay"))
        .expect("the script reports the median");
    println!("{median}");
}
