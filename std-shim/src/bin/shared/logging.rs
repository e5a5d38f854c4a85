//! The binaries' log: plain lines on stderr, coloured only on a terminal.

use std::io::IsTerminal;

/// Logs at `level` and above to stderr. A line that cannot be written (a
/// full pipe nobody reads) is dropped, never reported on stderr again (that
/// report would panic).
pub(crate) fn to_stderr(level: tracing::Level) {
    tracing_subscriber::fmt()
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
