//! Fork safety: a forked child never uses its parent's manager connection, and
//! never releases the parent's references. One test per binary, so no other
//! test thread holds a lock when we fork.

mod common;

use std::time::Duration;

use common::{shm_exists, wait_until};
use libshm::ManagerLink;

#[test]
fn a_forked_child_gets_its_own_connection_and_leaves_the_parents_references_alone() {
    let manager = ManagerLink::default_for_process().unwrap();
    let parent_segment = manager.create(64).unwrap();
    manager.settle().unwrap();
    let (notify_read, notify_write) = rustix::pipe::pipe().unwrap();

    // SAFETY: the child only runs this crate's code and then `_exit`s; the
    // test harness's other threads are idle (this binary has one test).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Child: its own segment through a fresh connection, then a drop of
        // the copy of the parent's segment, then death without cleanup.
        let code = (|| {
            let own = ManagerLink::default_for_process().ok()?.create(64).ok()?;
            ManagerLink::default_for_process().ok()?.settle().ok()?;
            drop(parent_segment);
            rustix::io::write(&notify_write, own.name().as_str().as_bytes()).ok()?;
            std::mem::forget(own);
            Some(())
        })()
        .map_or(1, |()| 0);
        // SAFETY: `_exit` skips atexit handlers and destructors on purpose.
        unsafe { libc::_exit(code) };
    }
    drop(notify_write);
    let mut name = [0u8; 64];
    let n = rustix::io::read(&notify_read, &mut name).unwrap();
    let child_name = std::str::from_utf8(&name[..n]).unwrap().to_owned();
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );

    assert_eq!(
        parent_segment.refcount_now(),
        1,
        "the child's drop did not touch our reference"
    );
    let more = manager.create(64).unwrap();
    manager.settle().unwrap(); // our connection is intact: every reply arrives in order
    assert_eq!(manager.held(), 2);

    // The child's segment was registered on the child's own connection: that
    // connection died with the child, so the manager reaps it while our
    // connection, and our segments, live on.
    assert!(shm_exists(&child_name));
    assert!(
        wait_until(Duration::from_secs(4), || !shm_exists(&child_name)),
        "child's segment reaped"
    );
    assert!(shm_exists(parent_segment.name().as_str()) && shm_exists(more.name().as_str()));
}
