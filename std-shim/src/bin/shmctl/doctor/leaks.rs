//! Leaked segments: creator dead and nobody maps or holds them, judged by
//! `libshm::inspect`, as `shmctl ls` shows them.

use crate::units::format_size;
use libshm::NamePrefix;
use libshm::inspect::{self, Status};

use super::finding::{Finding, Severity};
use crate::error_chain::Chain;

pub(crate) fn check(prefix: &NamePrefix) -> Finding {
    let finding = |severity, found| {
        Finding::new("leaks", "leaked segments", severity, found).detail("prefix", prefix.as_str())
    };
    let scan = match inspect::scan(prefix) {
        Ok(scan) => scan,
        Err(err) => {
            return finding(
                Severity::Warning,
                format!("cannot scan /dev/shm: {}", Chain(&err)),
            );
        }
    };
    let count = |status| scan.segments.iter().filter(|s| s.status == status).count();
    let leaked_bytes: u64 = scan
        .segments
        .iter()
        .filter(|s| s.status == Status::Leaked)
        .map(|s| s.size)
        .sum();
    let (leaked, orphaned, in_use) = (
        count(Status::Leaked),
        count(Status::Orphaned),
        count(Status::InUse),
    );
    let others = format!("{in_use} in use, {orphaned} orphaned (creator dead, still mapped)");
    let finding = |severity, found| {
        finding(severity, found)
            .detail("leaked", leaked)
            .detail("leaked_bytes", leaked_bytes)
            .detail("orphaned", orphaned)
            .detail("in_use", in_use)
            .detail("uninspected_processes", scan.uninspected)
    };
    if leaked == 0 {
        return finding(Severity::Ok, format!("none under {prefix}; {others}"));
    }
    let with_prefix = if *prefix == NamePrefix::torch() {
        String::new()
    } else {
        format!(" --prefix {prefix}")
    };
    finding(
        Severity::Warning,
        format!(
            "{leaked} under {prefix}, {} (creator dead, nobody maps them); {others}",
            format_size(leaked_bytes)
        ),
    )
    .fix(format!(
        "`shmctl gc{with_prefix} --yes` removes the ones unchanged for a minute \
         (`shmctl ls{with_prefix}` lists them)"
    ))
}
