//! systemd-logind's `RemoveIPC`: when a regular user's last session ends (an
//! ssh logout, even with the job still running under nohup or tmux), logind
//! deletes every POSIX shared-memory object that user owns, under the running
//! job ("unable to open shared memory object"). systemd's default is `yes`;
//! root and system users are spared.
//!
//! The configuration is read as logind reads it: the first of
//! `logind.conf` in /etc, /run, /usr/local/lib and /usr/lib (under
//! `systemd/`), then the `logind.conf.d/*.conf` drop-ins of those
//! directories in file-name order (a name in an earlier directory hides the
//! same name in a later one); the last `RemoveIPC=` in a `[Login]` section
//! wins. `LIBSHM_LOGIND_CONF` names another main file (drop-ins then come
//! from `<it>.d/`), for tests and unusual layouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::finding::{Finding, Severity};

/// Overrides where the main configuration file is.
pub(crate) const ENV_CONF: &str = "LIBSHM_LOGIND_CONF";

const DIRS: [&str; 4] = [
    "/etc/systemd",
    "/run/systemd",
    "/usr/local/lib/systemd",
    "/usr/lib/systemd",
];

/// Where the value came from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    File(PathBuf),
    Default,
}

pub(crate) fn check() -> Finding {
    let (main, dropin_dirs) = match std::env::var_os(ENV_CONF).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            let mut dropins = path.clone().into_os_string();
            dropins.push(".d");
            (vec![path], vec![PathBuf::from(dropins)])
        }
        None => (
            DIRS.iter()
                .map(|d| Path::new(d).join("logind.conf"))
                .collect(),
            DIRS.iter()
                .map(|d| Path::new(d).join("logind.conf.d"))
                .collect(),
        ),
    };
    let files: Vec<PathBuf> = main
        .into_iter()
        .find(|path| path.is_file())
        .into_iter()
        .chain(dropins(&dropin_dirs))
        .collect();
    let logind_here = !files.is_empty()
        || Path::new("/run/systemd/seats").exists()
        || [
            "/usr/lib/systemd/systemd-logind",
            "/lib/systemd/systemd-logind",
        ]
        .iter()
        .any(|p| Path::new(p).exists());
    let (remove_ipc, source) = effective(&files);
    let uid = rustix::process::geteuid().as_raw();
    let sys_uid_max = sys_uid_max();
    let finding = |severity, found| {
        Finding::new("remove_ipc", "RemoveIPC", severity, found)
            .detail("logind", logind_here)
            .detail("remove_ipc", remove_ipc)
            .detail(
                "source",
                match &source {
                    Source::File(path) => path.display().to_string(),
                    Source::Default => "systemd's default".to_owned(),
                },
            )
            .detail("uid", uid)
            .detail("sys_uid_max", sys_uid_max)
    };
    if !logind_here {
        return finding(
            Severity::Ok,
            "no systemd-logind here: nothing removes /dev/shm files at logout".into(),
        );
    }
    let from = match &source {
        Source::File(path) => format!("in {}", path.display()),
        Source::Default => "systemd's default".to_owned(),
    };
    if !remove_ipc {
        return finding(Severity::Ok, format!("RemoveIPC=no ({from})"));
    }
    if uid <= sys_uid_max {
        return finding(
            Severity::Ok,
            format!(
                "RemoveIPC=yes ({from}), but it spares root and system users (uid ≤ \
                 {sys_uid_max}), and this is uid {uid}"
            ),
        );
    }
    finding(
        Severity::Warning,
        format!(
            "RemoveIPC=yes ({from}): when uid {uid}'s last session ends, logind deletes its \
             /dev/shm files under running jobs (\"unable to open shared memory object\")"
        ),
    )
    .fix(
        "printf '[Login]\\nRemoveIPC=no\\n' | sudo tee /etc/systemd/logind.conf.d/libshm.conf \
         && sudo systemctl restart systemd-logind; or keep the user logged in for good: \
         `sudo loginctl enable-linger $USER`",
    )
}

/// The drop-ins, in the order logind applies them.
fn dropins(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut by_name = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".conf") {
                by_name.entry(name).or_insert_with(|| entry.path());
            }
        }
    }
    by_name.into_values().collect()
}

/// The value the last `RemoveIPC=` in `[Login]` gives, else systemd's `yes`.
fn effective(files: &[PathBuf]) -> (bool, Source) {
    let mut value = (true, Source::Default);
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if let Some(set) = remove_ipc_in(&text) {
            value = (set, Source::File(file.clone()));
        }
    }
    value
}

/// The last `RemoveIPC=` of a `[Login]` section in one file.
fn remove_ipc_in(text: &str) -> Option<bool> {
    let mut in_login = false;
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_login = line == "[Login]";
            continue;
        }
        if !in_login || line.starts_with(['#', ';']) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "RemoveIPC" {
            found = match value.trim().to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" | "1" | "y" | "t" => Some(true),
                "no" | "false" | "off" | "0" | "n" | "f" => Some(false),
                _ => found,
            };
        }
    }
    found
}

/// The highest system uid: `SYS_UID_MAX` in /etc/login.defs, else 999
/// (systemd's own build default).
fn sys_uid_max() -> u32 {
    std::fs::read_to_string("/etc/login.defs")
        .ok()
        .and_then(|defs| {
            defs.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == "SYS_UID_MAX").then(|| words.next()?.parse().ok())?
            })
        })
        .unwrap_or(999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_setting_in_a_login_section_wins() {
        assert_eq!(remove_ipc_in("[Login]\n#RemoveIPC=no\n"), None);
        assert_eq!(remove_ipc_in("[Login]\nRemoveIPC=no\n"), Some(false));
        assert_eq!(
            remove_ipc_in("[Login]\nRemoveIPC=no\nRemoveIPC = yes\n"),
            Some(true)
        );
        assert_eq!(remove_ipc_in("[Other]\nRemoveIPC=no\n"), None);
        assert_eq!(
            remove_ipc_in("[Login]\nRemoveIPC=no\n[Other]\nRemoveIPC=yes\n"),
            Some(false)
        );
    }
}
