//! Processes running an executable from a given path, read from
//! `/proc/<pid>/exe`: a manager torch started from its `bin/` shows that
//! path there, with ` (deleted)` once the file was replaced under it.

use std::path::Path;

/// Pids whose executable was loaded from `path`, ascending. Processes we may
/// not inspect (other users', without privilege) are not seen.
pub(crate) fn processes_running(path: &Path) -> Vec<u32> {
    let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let wanted = wanted.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                let exe = exe.as_os_str().as_encoded_bytes();
                exe == wanted || exe.strip_suffix(b" (deleted)") == Some(wanted)
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_test_process_by_its_executable() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(processes_running(&me).contains(&std::process::id()));
        assert!(processes_running(Path::new("/nonexistent/binary")).is_empty());
    }
}
