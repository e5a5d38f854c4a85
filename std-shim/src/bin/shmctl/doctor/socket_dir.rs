//! `TMPDIR` against the socket path: a manager's handle is
//! `$TMPDIR/torch-shm-dir-XXXXXX/manager.sock`, and a socket address holds
//! 107 bytes (PyTorch's `sun_path` buffer is 108 with the NUL). Past that, or
//! in a directory that cannot be written, PyTorch's manager fails to start;
//! ours falls back to `/tmp` and says so.

use std::path::Path;

use libshm_core::handshake::HANDLE_MAX;
use libshm_unix::{BASE_MAX, FALLBACK_BASES, RunDir};

use super::finding::{Finding, Severity};

/// `torch_runs_ours`: whether the torch found runs our manager (`None`: no
/// torch found), which decides whether a bad `TMPDIR` is fatal or not.
pub(crate) fn check(torch_runs_ours: Option<bool>) -> Finding {
    let (base, var) = RunDir::default_base_and_var();
    let source = var.map_or_else(|| "the default".to_owned(), |v| format!("${v}"));
    let len = RunDir::socket_path_len(&base);
    let writable = probe_write(&base);
    let finding = |severity, found| {
        Finding::new("tmpdir", "TMPDIR", severity, found)
            .detail("dir", base.display().to_string())
            .detail("from", var)
            .detail("socket_path_bytes", len)
            .detail("socket_path_max", HANDLE_MAX)
            .detail("writable", writable.is_ok())
            .detail(
                "write_error",
                writable.as_ref().err().map(ToString::to_string),
            )
    };
    let dir = format!("{} ({source})", base.display());
    if len <= HANDLE_MAX && writable.is_ok() {
        return finding(
            Severity::Ok,
            format!("{dir}: writable, socket paths {len} of {HANDLE_MAX} bytes"),
        );
    }
    let problem = if len > HANDLE_MAX {
        format!(
            "{dir} makes manager socket paths {len} bytes, over the {HANDLE_MAX} a socket \
             address holds"
        )
    } else {
        let why = writable
            .as_ref()
            .err()
            .map_or_else(String::new, ToString::to_string);
        format!("{dir} cannot hold a manager's directory: {why}")
    };
    let (severity, consequence) = match torch_runs_ours {
        Some(false) => (
            Severity::Error,
            "torch's manager (PyTorch's) fails to start here".to_owned(),
        ),
        _ => (
            Severity::Warning,
            format!(
                "PyTorch's manager fails to start here; ours falls back to {}",
                FALLBACK_BASES[0]
            ),
        ),
    };
    finding(severity, format!("{problem}: {consequence}")).fix(format!(
        "`export {}=/tmp` (or any writable directory of at most {BASE_MAX} bytes) before \
         starting Python",
        var.unwrap_or("TMPDIR")
    ))
}

/// Whether a directory can be made there, by making (and removing) one.
fn probe_write(base: &Path) -> std::io::Result<()> {
    let probe = base.join(format!(".libshm-doctor-{}", std::process::id()));
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}
