//! Segments made ahead of time (issue 12): a pooled segment is one like any
//! other (zeroed, its own name, refcount 1), reaped if its process dies,
//! and what is left on the shelves is unlinked when the process exits.

mod common;

use std::time::Duration;

use common::{Daemon, Holder, SHM_MANAGER, shm_exists, wait_until};
use libshm::{Config, ManagerLink, NamePrefix, PoolSizes};

/// Names in /dev/shm that `pid` created under `prefix` (`<prefix><pid>_…`).
fn names_of(prefix: &str, pid: u32) -> Vec<String> {
    let start = format!("{}{pid}_", prefix.trim_start_matches('/'));
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&start))
        .map(|name| format!("/{name}"))
        .collect()
}

#[test]
fn a_pooled_segment_is_like_a_fresh_one_and_never_reused() {
    let prefix = format!("/poolA{}_", std::process::id());
    let config = Config::default()
        .manager_executable(SHM_MANAGER)
        .name_prefix(NamePrefix::new(prefix.as_bytes()).unwrap())
        .pool(Some("4KiB:4".parse::<PoolSizes>().unwrap()))
        .quiet_manager(true);
    let manager = ManagerLink::launch(&config).unwrap();
    let pid = std::process::id();
    assert!(
        wait_until(Duration::from_secs(5), || names_of(&prefix, pid).len() >= 4),
        "the shelf fills up ahead of any create"
    );
    let mut seen = Vec::new();
    for round in 0..12u8 {
        let segment = manager.create(4096).unwrap();
        assert_eq!(segment.refcount_now(), 1);
        let mut data = vec![0xffu8; 4096];
        segment.read_at(0, &mut data).unwrap();
        assert!(data.iter().all(|&b| b == 0), "zeroed, round {round}");
        assert!(shm_exists(segment.name().as_str()));
        assert!(!seen.contains(segment.name()), "a name of its own");
        seen.push(*segment.name());
        segment.fill(round + 1); // dirty it: it must never come back
    }
    // Sizes outside the pool are created as usual.
    let odd = manager.create(12_345).unwrap();
    assert_eq!(odd.refcount_now(), 1);
    drop(odd);
    manager.settle().unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || seen
            .iter()
            .all(|name| !shm_exists(name.as_str()))),
        "dropped pooled segments are unlinked (by the pool's thread)"
    );
}

#[test]
fn a_process_that_dies_has_its_pool_reaped_and_one_that_exits_unlinks_its_own() {
    let prefix = format!("/poolB{}_", std::process::id());
    let daemon = Daemon::start(&["--reap-grace", "500ms", "--name-prefix", &prefix]);
    let _bystander = {
        let mut client = daemon.connect();
        assert!(client.answers_registration(&format!("{prefix}bystander")));
        client
    };
    let envs = [
        ("LIBSHM_POOL", "4KiB:6"),
        ("LIBSHM_NAME_PREFIX", prefix.as_str()),
    ];

    let holder = Holder::spawn(&["create", "--manager", &daemon.handle], 1, &envs);
    let pid = holder.child.id();
    assert!(
        wait_until(Duration::from_secs(5), || names_of(&prefix, pid).len() >= 7),
        "one created, six on the shelf: {:?}",
        names_of(&prefix, pid)
    );
    holder.kill();
    assert!(
        wait_until(Duration::from_secs(3), || names_of(&prefix, pid).is_empty()),
        "reaped with the rest: {:?}",
        names_of(&prefix, pid)
    );

    let leaver = Holder::spawn(&["create", "--manager", &daemon.handle], 1, &envs);
    let pid = leaver.child.id();
    assert!(wait_until(Duration::from_secs(5), || names_of(
        &prefix, pid
    )
    .len()
        >= 7));
    assert!(leaver.finish().success());
    assert!(
        names_of(&prefix, pid).is_empty(),
        "unlinked at exit, not left for the manager: {:?}",
        names_of(&prefix, pid)
    );
}
