//! The manager spins after answering only while it pays: it goes quiet when
//! frames stop, and it stops spinning while the CPUs are busy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::measure::{LogFile, cpu_time};
use common::{Daemon, RawClient};

/// Set (CI sets it) where the kernel must report CPU pressure.
const REQUIRE_PSI: &str = "LIBSHM_REQUIRE_PSI";

#[test]
fn after_a_burst_of_strict_traffic_the_manager_goes_quiet() {
    let daemon = Daemon::quiet_under("/torch_test_");
    let mut client = RawClient::connect(&daemon.handle);
    let sent = client.strict_traffic("spin", Duration::from_millis(500), Duration::ZERO);
    let pid = daemon.child.id();
    // Its longest window is 200 us: well within this pause it sleeps.
    std::thread::sleep(Duration::from_millis(50));
    let before = cpu_time(pid);
    let quiet = Duration::from_secs(1);
    std::thread::sleep(quiet);
    let used = cpu_time(pid) - before;
    eprintln!("{sent} registrations, then {used:?} of CPU in {quiet:?} without frames");
    assert!(sent > 100, "only {sent} registrations in half a second");
    assert!(
        used < quiet / 20,
        "the manager used {used:?} of CPU in {quiet:?} with nothing to do"
    );
}

#[test]
fn while_every_cpu_is_busy_the_manager_stops_spinning() {
    if !std::path::Path::new("/proc/pressure/cpu").exists() {
        assert!(
            std::env::var_os(REQUIRE_PSI).is_none(),
            "{REQUIRE_PSI} is set but the kernel does not report CPU pressure"
        );
        eprintln!("skipped: the kernel does not report CPU pressure");
        return;
    }
    let log = LogFile::new("spin-busy");
    let daemon = Daemon::start_with_stderr(&["--name-prefix", "/torch_test_", "-vv"], log.stdio());
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let hogs: Vec<_> = (0..cpus)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut client = RawClient::connect(&daemon.handle);
    let sent = client.strict_traffic("spin", Duration::from_secs(2), Duration::ZERO);
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    let text = log.text();
    let rests = text
        .lines()
        .filter(|line| line.contains("waited for a CPU") && line.contains("resting"))
        .count();
    eprintln!("{sent} registrations beside {cpus} busy threads; spinning rested {rests} times");
    assert!(
        rests > 0,
        "the manager never noticed the busy CPUs; its log:\n{text}"
    );
}
