//! `SharedSegment` across real processes: refcounts, sizes, data, failures.

mod common;

use std::time::Duration;

use common::{Holder, shm_exists, unique_name, wait_until};
use libshm::protocol::header::SizeError;
use libshm::{Error, MapFlags, SharedSegment};

#[test]
fn refcount_follows_every_process_and_the_last_one_unlinks() {
    let segment = SharedSegment::create(8192).unwrap();
    assert_eq!(segment.refcount_now(), 1);
    assert_eq!(segment.len(), 8192);
    let name = segment.name().to_string();
    let handle = segment.manager_handle().to_string();
    assert!(name.starts_with("/torch_"));
    assert_eq!(
        std::fs::metadata(format!("/dev/shm{name}")).unwrap().len(),
        8192 + 64
    );

    let mut other = Holder::spawn(
        &[
            "open",
            "--manager",
            &handle,
            "--name",
            &name,
            "--size",
            "8192",
        ],
        1,
        &[],
    );
    assert_eq!(other.segments[0].refcount, 2);
    assert_eq!(segment.refcount_now(), 2);
    segment.fill(0x5a);
    assert_eq!(other.ask("check 90"), "ok refcount=2");
    assert!(other.finish().success());
    assert_eq!(segment.refcount_now(), 1);

    let closed = segment.close();
    assert!(closed.unlinked);
    assert!(!shm_exists(&name));
}

#[test]
fn the_creator_may_leave_first_and_the_opener_unlinks() {
    let mut creator = Holder::spawn(&["create", "--size", "4096", "--fill", "3"], 1, &[]);
    let report = creator.segments[0].clone();
    let opened = SharedSegment::open(
        &report.manager_handle(),
        &report.segment_name(),
        report.size,
    )
    .unwrap();
    assert_eq!(creator.ask("refcount"), "refcount=2");
    assert!(creator.finish().success());
    assert!(shm_exists(&report.name), "still referenced by us");
    let mut byte = [0u8; 1];
    opened.read_at(4095, &mut byte).unwrap();
    assert_eq!(byte, [3]);
    assert!(opened.close().unlinked);
    assert!(!shm_exists(&report.name));
}

#[test]
fn opening_with_a_larger_size_is_refused_without_touching_the_segment() {
    let segment = SharedSegment::create(100).unwrap();
    let handle = segment.manager_handle();
    let err = SharedSegment::open(&handle, segment.name(), 101).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Size {
                source: SizeError::ObjectTooSmall {
                    wanted: 165,
                    actual: 164
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(segment.refcount_now(), 1, "header untouched");
    assert_eq!(
        std::fs::metadata(format!("/dev/shm{}", segment.name()))
            .unwrap()
            .len(),
        164,
        "not grown"
    );
    let smaller = SharedSegment::open(&handle, segment.name(), 10).unwrap();
    assert_eq!(smaller.len(), 10);
    assert_eq!(segment.refcount_now(), 2);
}

#[test]
fn opening_a_missing_segment_is_not_found() {
    let segment = SharedSegment::create(16).unwrap();
    let missing = unique_name("missing");
    let err =
        SharedSegment::open(&segment.manager_handle(), &missing.parse().unwrap(), 16).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!shm_exists(&missing));
}

#[test]
fn dropping_after_someone_unlinked_the_name_is_fine() {
    let segment = SharedSegment::create(16).unwrap();
    std::fs::remove_file(format!("/dev/shm{}", segment.name())).unwrap();
    segment.write_at(0, b"still mapped").unwrap();
    drop(segment);
}

#[test]
fn bounds_are_checked() {
    let segment = SharedSegment::create(16).unwrap();
    assert!(segment.write_at(10, &[0; 6]).is_ok());
    let err = segment.write_at(10, &[0; 7]).unwrap_err();
    assert_eq!((err.start, err.end, err.len), (10, 17, 16));
    assert!(segment.read_at(usize::MAX, &mut [0; 2]).is_err());
}

#[test]
fn aten_flags_choose_create_or_open() {
    let manager = libshm::ManagerLink::default_for_process().unwrap();
    let name = unique_name("flags").parse().unwrap();
    let created = manager
        .map_with_flags(&name, MapFlags::SHAREDMEM | MapFlags::EXCLUSIVE, 64)
        .unwrap();
    let opened = manager
        .map_with_flags(&name, MapFlags::SHAREDMEM | MapFlags::NOCREATE, 64)
        .unwrap();
    assert_eq!(created.refcount_now(), 2);
    let err = manager
        .map_with_flags(
            &name,
            MapFlags::SHAREDMEM | MapFlags::KEEPFD | MapFlags::NOCREATE,
            64,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Flags(_)), "{err}");
    let err = manager
        .map_with_flags(&name, MapFlags::SHAREDMEM | MapFlags::EXCLUSIVE, 64)
        .unwrap_err();
    assert!(matches!(err, Error::Exists { .. }), "{err}");
    drop((created, opened));
    assert!(!shm_exists(name.as_str()));
}

#[test]
fn a_segment_survives_in_transit_after_its_creator_let_go() {
    // PyTorch's queue protocol: the sender takes an extra reference for the
    // message, drops its own, and the receiver opens it and drops the extra.
    let sender = Holder::spawn(&["create", "--size", "64", "--fill", "1"], 1, &[]);
    let report = sender.segments[0].clone();
    let in_flight =
        SharedSegment::open(&report.manager_handle(), &report.segment_name(), 64).unwrap();
    assert!(sender.finish().success());
    std::thread::sleep(Duration::from_millis(2_500)); // longer than any grace period
    let receiver =
        SharedSegment::open(&report.manager_handle(), &report.segment_name(), 64).unwrap();
    drop(in_flight);
    let mut byte = [0];
    receiver.read_at(0, &mut byte).unwrap();
    assert_eq!(byte, [1]);
    drop(receiver);
    assert!(wait_until(Duration::from_secs(1), || !shm_exists(
        &report.name
    )));
}

#[test]
fn exec_d_children_inherit_no_manager_socket() {
    let segment = SharedSegment::create(64).unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", "ls -l /proc/$$/fd"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listing.contains("socket:"),
        "a socket leaked into the child:\n{listing}"
    );
    drop(segment);
}
