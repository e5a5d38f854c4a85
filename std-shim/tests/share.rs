//! Share handles and closing a manager link, with real processes: a segment
//! kept alive in transit after its sender let go, opened by another process
//! that then reaps it; an unopened handle reaped when its manager lingers
//! out; a launched manager that exits once its link is closed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Holder, SHM_MANAGER, shm_exists, wait_until};
use libshm::{Config, Error, ManagerLink, ShareHandle, SharedSegment};

/// A manager of the test's own that shuts down quickly, lingering `linger`
/// for names in transit.
fn quick_manager(linger: &str) -> ManagerLink {
    let config = Config::default()
        .manager_executable(SHM_MANAGER)
        .manager_args(["--shutdown-timeout", "300ms", "--linger", linger]);
    ManagerLink::launch(&config).unwrap()
}

fn socket_gone(handle: &libshm::ManagerHandle) -> bool {
    !Path::new(handle.as_str()).exists()
}

#[test]
fn a_share_handle_outlives_its_sender_and_the_receiver_reaps_it() {
    let segment = SharedSegment::create(4096).unwrap();
    segment.fill(7);
    let text = segment.share().unwrap().to_string();
    let name = segment.name().to_string();
    assert_eq!(segment.refcount_now(), 2, "ours and the one in transit");
    assert!(!segment.close().unlinked, "the handle keeps it");
    // Longer than any grace period: in transit is not orphaned.
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(shm_exists(&name));

    let mut receiver = Holder::spawn(&["open", "--share", &text, "--expect", "7"], 1, &[]);
    assert_eq!(
        receiver.segments[0].refcount, 1,
        "the receiver's reference replaced the one in transit"
    );
    assert_eq!(receiver.segments[0].name, name);
    assert_eq!(receiver.ask("check 7"), "ok refcount=1");
    assert!(receiver.finish().success());
    assert!(!shm_exists(&name), "the receiver held the last reference");
}

#[test]
fn a_share_handle_opens_in_the_sending_process_too() {
    let segment = SharedSegment::create(64).unwrap();
    segment.write_obj(8, 0xfeed_u64).unwrap();
    let handle: ShareHandle = segment.share().unwrap().to_string().parse().unwrap();
    assert_eq!((handle.name(), handle.len()), (segment.name(), 64));
    let opened = handle.open().unwrap();
    assert_eq!(segment.refcount_now(), 2, "two holders, nothing in transit");
    assert_eq!(opened.read_obj::<u64>(8).unwrap(), 0xfeed);
    drop(segment);
    assert!(opened.close().unlinked);
}

#[test]
fn an_unopened_share_handle_is_reaped_when_its_manager_lingers_out() {
    let manager = quick_manager("1s");
    let handle = manager.handle();
    let segment = manager.create(64).unwrap();
    let name = segment.name().to_string();
    let unsent = segment.share().unwrap();
    drop(segment);
    drop(unsent); // never opened: the reference in transit stays in the header
    manager.close().unwrap();
    // No client: the manager lingers for the name in transit, then unlinks
    // it and exits. Shutdown timeout, linger and a pass or two: seconds.
    assert!(shm_exists(&name), "in transit, kept at first");
    assert!(
        wait_until(Duration::from_secs(10), || !shm_exists(&name)),
        "{name} outlived its manager's linger"
    );
    assert!(wait_until(Duration::from_secs(5), || socket_gone(&handle)));
}

#[test]
fn a_closed_link_keeps_its_segments_until_they_go_then_its_manager_exits() {
    let manager = quick_manager("0s");
    let handle = manager.handle();
    let segment = manager.create(64).unwrap();
    manager.close().unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    assert!(
        !socket_gone(&handle),
        "the segment's connection keeps the manager serving"
    );
    segment.write_at(0, b"still fine").unwrap();
    let name = segment.name().to_string();
    assert!(segment.close().unlinked);
    assert!(!shm_exists(&name));
    assert!(
        wait_until(Duration::from_secs(5), || socket_gone(&handle)),
        "the manager exits once nobody is connected"
    );
}

#[test]
fn a_handle_whose_segment_is_gone_is_not_found() {
    let segment = SharedSegment::create(64).unwrap();
    let text = segment.share().unwrap().to_string();
    std::fs::remove_file(format!("/dev/shm{}", segment.name())).unwrap();
    let err = text.parse::<ShareHandle>().unwrap().open().unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}
