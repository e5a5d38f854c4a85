//! Signals as a profiler or a timer sends them.

/// Installs a handler for `SIGUSR2` that does nothing, with `SA_RESTART`
/// (the flag every runtime sets): a signal a profiler or a timer would
/// send, which interrupts what it may.
pub fn install_idle_handler() {
    extern "C" fn idle(_: libc::c_int) {}
    // SAFETY: a zeroed `sigaction` is valid; the handler is async-signal-
    // safe (it does nothing) and lives for the whole program.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = idle as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&raw mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &raw const action, std::ptr::null_mut()),
            0
        );
    }
}
