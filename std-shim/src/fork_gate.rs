//! Keeping `fork` out of the pool thread's time on a link.
//!
//! The pool's thread registers segments through a link, holding the link's
//! lock while it does. A `fork` in that window would hand the child the lock
//! held by a thread the child does not have, and the child's first use of
//! the link would wait for ever. So the thread takes the link's lock only
//! inside this gate, never waits for it there, and a `fork` (through
//! `pthread_atfork`'s prepare handler) closes the gate and waits until
//! nobody is inside.
//!
//! Forks made to `exec` at once (our own launcher's) skip the wait: their
//! child never touches a lock, and the forking thread may hold one the
//! thread inside needs.

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Threads inside, in the low 16 bits; forks being prepared, above.
static STATE: AtomicU32 = AtomicU32::new(0);
const INSIDE: u32 = 0xffff;
const ONE_FORK: u32 = 1 << 16;
/// Most a fork waits for the threads inside (a registration waits at most
/// its reply timeout, 10 s by default; a manager that never answers and no
/// timeout must not stop the fork for good).
const MOST_WAIT: Duration = Duration::from_secs(15);

static HOOKS: Once = Once::new();

thread_local! {
    /// Set while this thread starts a process that execs at once.
    static EXECS_AT_ONCE: Cell<bool> = const { Cell::new(false) };
}

/// Being inside the gate; leaving is dropping it.
pub(crate) struct Inside(());

impl Drop for Inside {
    fn drop(&mut self) {
        STATE.fetch_sub(1, Ordering::Release);
    }
}

/// Enters the gate, first waiting for any fork being prepared.
pub(crate) fn enter() -> Inside {
    install();
    loop {
        let state = STATE.load(Ordering::Acquire);
        if state & !INSIDE == 0
            && state & INSIDE < INSIDE
            && STATE
                .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Inside(());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Runs `spawn`, which forks only to exec, without waiting at the gate.
pub(crate) fn exec_at_once<T>(spawn: impl FnOnce() -> T) -> T {
    /// Puts the flag back however `spawn` ends.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            EXECS_AT_ONCE.set(self.0);
        }
    }
    let _restore = Restore(EXECS_AT_ONCE.replace(true));
    spawn()
}

fn install() {
    HOOKS.call_once(|| {
        unsafe extern "C" {
            fn pthread_atfork(
                prepare: Option<extern "C" fn()>,
                parent: Option<extern "C" fn()>,
                child: Option<extern "C" fn()>,
            ) -> i32;
        }
        // SAFETY: the three are plain functions that never unwind and live
        // for the whole program; pthread_atfork only stores them.
        if unsafe { pthread_atfork(Some(prepare), Some(parent), Some(child)) } != 0 {
            tracing::warn!("a process forked while the segment pool refills may hang");
        }
    });
}

extern "C" fn prepare() {
    if EXECS_AT_ONCE.get() {
        return;
    }
    STATE.fetch_add(ONE_FORK, Ordering::AcqRel);
    let deadline = Instant::now() + MOST_WAIT;
    while STATE.load(Ordering::Acquire) & INSIDE != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(20));
    }
}

extern "C" fn parent() {
    if !EXECS_AT_ONCE.get() {
        STATE.fetch_sub(ONE_FORK, Ordering::AcqRel);
    }
}

extern "C" fn child() {
    // The child has one thread, outside the gate, and forks nothing yet.
    STATE.store(0, Ordering::Release);
}
