//! Hostile round 6: the manager's spinning (5fbe816) against CPU limits.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::measure::cpu_time;
use common::{Daemon, RawClient, SHM_MANAGER, is_root_or_skip, may_skip, run_id, unique_name};

/// A CPU cgroup made for the test, with a quota, removed when dropped (its
/// processes must have exited by then).
struct QuotaCgroup {
    dir: PathBuf,
}

impl QuotaCgroup {
    /// A cgroup allowed `percent` of one CPU, cgroup v2 or v1; `None` where
    /// neither CPU controller can be used.
    fn new(percent: u64) -> Option<Self> {
        let name = format!("libshm-hostile6-{}", run_id());
        let period = 100_000;
        let quota = period * percent / 100;
        let v2 = Path::new("/sys/fs/cgroup");
        if v2.join("cgroup.controllers").exists() {
            // The root's children get the CPU controller.
            std::fs::write(v2.join("cgroup.subtree_control"), "+cpu").ok()?;
            let dir = v2.join(&name);
            std::fs::create_dir(&dir).ok()?;
            let cgroup = Self { dir };
            std::fs::write(cgroup.dir.join("cpu.max"), format!("{quota} {period}")).ok()?;
            return Some(cgroup);
        }
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let dir = v1.join(&name);
        std::fs::create_dir(&dir).ok()?;
        let cgroup = Self { dir };
        std::fs::write(cgroup.dir.join("cpu.cfs_period_us"), period.to_string()).ok()?;
        std::fs::write(cgroup.dir.join("cpu.cfs_quota_us"), quota.to_string()).ok()?;
        Some(cgroup)
    }

    /// `sh -c script`, moved into this cgroup before `script` runs.
    fn command(&self, script: &str) -> Command {
        let procs = self.dir.join("cgroup.procs");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("echo $$ > '{}' && {script}", procs.display()));
        command
    }
}

impl Drop for QuotaCgroup {
    fn drop(&mut self) {
        // A cgroup is removable once its last process has been reaped.
        common::wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// In a cgroup allowed half a CPU: a manager spinning `spin` beside a busy
/// process (a training loop), while a client outside registers and releases
/// a name every ~100 us. Returns the busy process's CPU time, and how many
/// registrations the client got answered.
fn neighbour_cpu_beside(spin: &str, cgroup: &QuotaCgroup, how_long: Duration) -> (Duration, usize) {
    let mut daemon = Daemon::spawn(
        cgroup
            .command(&format!(
                "exec {SHM_MANAGER} --name-prefix /torch_test_ --spin {spin}"
            ))
            .stderr(Stdio::null()),
    );
    let busy = Killed(
        cgroup
            .command("while :; do :; done")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a busy loop"),
    );
    let mut client = RawClient::connect(&daemon.handle);
    let before = cpu_time(busy.0.id());
    let answered = client.strict_traffic("h6quota", how_long, Duration::from_micros(100));
    let used = cpu_time(busy.0.id()) - before;
    drop(busy);
    daemon.kill();
    (used, answered)
}

/// Found: in a container with a CPU limit, a spinning manager burnt the
/// limit its neighbours needed: with half a CPU, a busy process got 0.82 to
/// 0.91 s of CPU in 3 s beside a spinning manager against 1.41 s beside one
/// that never spins, and the manager's own client got 40 % fewer answers
/// (the manager throttled, some replies 75 ms late). The pressure rest never
/// noticed: once the quota runs out every task in the cgroup waits at once,
/// the manager too, and the kernel counts that time once, so subtracting the
/// manager's own waits left nothing. Fixed: a quota that ran out while
/// spinning rests the spinning (`throttle`).
#[test]
fn in_a_cpu_limited_cgroup_a_spinning_manager_leaves_the_quota_to_its_neighbours() {
    if !is_root_or_skip("creating a CPU cgroup") {
        return;
    }
    let Some(cgroup) = QuotaCgroup::new(50) else {
        may_skip(
            false,
            "a cgroup CPU controller (v2 cpu.max or v1 cpu.cfs_quota_us)",
        );
        return;
    };
    let how_long = Duration::from_secs(3);
    let (quiet, quiet_answered) = neighbour_cpu_beside("0", &cgroup, how_long);
    let (spinning, spinning_answered) = neighbour_cpu_beside("200us", &cgroup, how_long);
    eprintln!(
        "busy neighbour's CPU in {how_long:?}: {quiet:?} beside a manager that never spins \
         ({quiet_answered} answers), {spinning:?} beside a spinning one ({spinning_answered} answers)"
    );
    assert!(
        quiet > Duration::from_millis(500),
        "the quota allows 1.5 s; the busy process got only {quiet:?}"
    );
    assert!(
        spinning.as_secs_f64() >= quiet.as_secs_f64() * 0.8,
        "spinning took the cgroup's CPU: its neighbour got {spinning:?} against {quiet:?}"
    );
}

/// One byte of a release frame (never answered) every 150 us, inside the
/// 200 us window: before answers alone restarted the window, it held an
/// otherwise idle manager at about 80 % of a CPU for the attacker's 10 %.
#[test]
fn bytes_that_are_never_answered_do_not_keep_the_manager_spinning() {
    let daemon = Daemon::quiet_under("/torch_test_");
    let mut attacker = RawClient::connect(&daemon.handle);
    // One answered registration first, so the manager is spinning when the
    // drip begins.
    let held = unique_name("drip-held");
    attacker.register(&held);
    let stray = common::frame(1, &unique_name("drip"));
    let pid = daemon.child.id();
    let before = cpu_time(pid);
    let how_long = Duration::from_secs(2);
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0usize;
    while start.elapsed() < how_long {
        // Paced by the clock, not by sleeping: a sleep here overshoots the
        // window by itself.
        while Instant::now() < next {
            std::hint::spin_loop();
        }
        next += Duration::from_micros(150);
        attacker.send(&stray[sent % stray.len()..][..1]);
        sent += 1;
    }
    let used = cpu_time(pid) - before;
    eprintln!("{sent} bytes in {how_long:?}: the manager used {used:?} of CPU");
    assert!(
        used < how_long / 4,
        "the manager used {used:?} of CPU in {how_long:?} for {sent} unanswered bytes"
    );
}
