//! A full /dev/shm: allocation fails up front with a clear error, leaves
//! nothing behind, and never turns into a SIGBUS on first touch.
//!
//! Runs in a private mount namespace with a 1 MiB tmpfs over /dev/shm, so the
//! machine's real /dev/shm is untouched. Skips where namespaces or mounts are
//! not allowed (not root, or a restrictive sandbox), and fails there instead
//! under `LIBSHM_REQUIRE_ROOT=1` (CI).

mod common;

use std::process::Command;

fn in_small_shm(script: &str) -> Option<std::process::Output> {
    in_shm_of("1m", script)
}

/// Runs `script` with a private tmpfs of `size` (as `mount -o size=`) over
/// /dev/shm.
fn in_shm_of(size: &str, script: &str) -> Option<std::process::Output> {
    let probe = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m tmpfs /dev/shm",
        ])
        .output();
    if !common::may_skip(
        probe.is_ok_and(|out| out.status.success()),
        "root and mount namespaces, to mount a private tmpfs",
    ) {
        return None;
    }
    let full = format!("mount -t tmpfs -o size={size} tmpfs /dev/shm && {script}");
    Some(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &full])
            .env("SHMCTL", common::SHMCTL)
            .output()
            .unwrap(),
    )
}

#[test]
fn allocating_more_than_fits_is_a_clear_error_and_leaves_nothing() {
    let Some(out) = in_small_shm(
        r#""$SHMCTL" create --size 2M; echo "exit=$?"; echo "left=$(ls /dev/shm | wc -l)""#,
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("exit=1"),
        "a plain failure, not a signal: {stdout} {stderr}"
    );
    assert!(stdout.contains("left=0"), "nothing left behind: {stdout}");
    assert!(
        stderr.contains("no space in /dev/shm"),
        "the error says why: {stderr}"
    );
}

#[test]
fn filling_up_segment_by_segment_stops_cleanly_at_the_limit() {
    // Four 256 KiB segments (plus headers) cannot all fit in 1 MiB: the last
    // one fails at creation; the ones that fit are usable to their last byte.
    let Some(out) = in_small_shm(
        r#""$SHMCTL" create --size 256K --count 4 --fill 7; echo "exit=$?"; echo "left=$(ls /dev/shm | wc -l)""#,
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("exit=1"), "{stdout} {stderr}");
    assert!(stderr.contains("no space in /dev/shm"), "{stderr}");
    assert!(
        stdout.contains("left=0"),
        "the segments that fit were dropped on exit: {stdout}"
    );
}

#[test]
fn a_pool_deeper_than_dev_shm_leaves_an_eighth_free_for_others() {
    // 64 segments of 256 KiB wanted ahead, in 4 MiB: the pool stops while an
    // eighth (512 KiB) is free, so another process's 256 KiB still fits.
    let Some(out) = in_shm_of(
        "4m",
        r#"(sleep 3) | LIBSHM_POOL=256KiB:64 "$SHMCTL" create --size 4K --hold > /dev/null &
           sleep 2
           echo "free_kib=$(df -k --output=avail /dev/shm | tail -1 | tr -d ' ')"
           echo "pooled=$(ls /dev/shm | wc -l)"
           "$SHMCTL" create --size 256K > /dev/null; echo "other=$?"
           wait
           echo "left=$(ls /dev/shm | wc -l)""#,
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let field = |key: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {stdout} {stderr}"))
    };
    assert!(
        field("pooled") >= 8,
        "the pool did fill what it may: {stdout} {stderr}"
    );
    assert!(
        field("free_kib") >= 512,
        "the pool took more than 7/8 of /dev/shm: {stdout} {stderr}"
    );
    assert_eq!(
        field("other"),
        0,
        "another allocation fit: {stdout} {stderr}"
    );
    assert_eq!(field("left"), 0, "the pool unlinked at exit: {stdout}");
}
