//! `shmctl doctor` on real inputs: a long or missing `TMPDIR`, a low
//! `ulimit -n`, a small and a full `/dev/shm` (a tmpfs in a private mount
//! namespace), a logind configuration with `RemoveIPC=yes`, a leaked
//! segment, a live manager and a dead one's directory, and real torch.
//!
//! The mount namespace needs root, and so does running as another user;
//! those parts fail under `LIBSHM_REQUIRE_TORCH` (CI) if they cannot run.

mod common;
mod torch_venv;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::{Daemon, SHMCTL, unique_name};
use serde_json::Value;
use torch_venv::{REQUIRE, Venv, peer_python};

const CHECKS: [&str; 7] = [
    "dev_shm",
    "leaks",
    "open_files",
    "tmpdir",
    "remove_ipc",
    "torch_manager",
    "managers",
];

/// `shmctl doctor --json`, parsed, with its exit code checked against the
/// document's and the worst check's.
struct Doctor {
    json: Value,
    code: i32,
    stderr: String,
}

impl Doctor {
    fn of(out: Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {stdout}\n{stderr}"));
        let code = out.status.code().expect("exited");
        let worst = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| match c["status"].as_str().unwrap() {
                "ok" => 0,
                "warning" => 1,
                "error" => 2,
                other => panic!("status {other}"),
            })
            .max()
            .unwrap();
        assert_eq!(code, worst, "exit code is the worst check's: {json}");
        assert_eq!(json["exit_code"].as_i64(), Some(i64::from(code)));
        Self { json, code, stderr }
    }

    fn check(&self, id: &str) -> &Value {
        self.json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id} in {}", self.json))
    }

    fn status(&self, id: &str) -> &str {
        self.check(id)["status"].as_str().unwrap()
    }

    fn found(&self, id: &str) -> &str {
        self.check(id)["found"].as_str().unwrap()
    }

    fn fix(&self, id: &str) -> &str {
        self.check(id)["fix"].as_str().unwrap_or("")
    }
}

/// `shmctl doctor --json` with `envs`, and no python on PATH (the torch
/// check then has nothing to look at and costs nothing).
fn doctor(envs: &[(&str, &str)]) -> Doctor {
    Doctor::of(doctor_command(envs).output().unwrap())
}

fn doctor_command(envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(SHMCTL);
    command
        .args(["doctor", "--json"])
        .env("PATH", no_python_dir())
        .envs(envs.iter().copied());
    command
}

/// An empty directory, as a PATH without python.
fn no_python_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-path");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh directory whose path is at least `len` bytes long, removed on drop.
struct LongDir(PathBuf);

impl LongDir {
    fn new(len: usize) -> Self {
        let mut path = std::env::temp_dir()
            .join(unique_name("doctor").trim_start_matches('/'))
            .to_string_lossy()
            .into_owned();
        while path.len() < len {
            path.push('x');
        }
        std::fs::create_dir_all(&path).unwrap();
        Self(PathBuf::from(path))
    }
}

impl Drop for LongDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A program on this process's PATH (the children get another).
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn every_check_reports_and_the_text_screen_matches_the_json() {
    let report = doctor(&[]);
    let ids: Vec<&str> = report.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, CHECKS);
    for id in CHECKS {
        assert!(!report.found(id).is_empty(), "{id}");
        if report.status(id) != "ok" {
            assert!(
                !report.fix(id).is_empty(),
                "a problem comes with its fix: {id}"
            );
        }
    }
    assert_eq!(
        report.status("torch_manager"),
        "ok",
        "no python: nothing to check"
    );
    let screen = Command::new(SHMCTL)
        .arg("doctor")
        .env("PATH", no_python_dir())
        .output()
        .unwrap();
    let screen_text = String::from_utf8_lossy(&screen.stdout);
    assert_eq!(screen.status.code(), Some(report.code), "{screen_text}");
    for title in [
        "/dev/shm",
        "leaked segments",
        "open files",
        "TMPDIR",
        "RemoveIPC",
        "managers",
    ] {
        assert!(screen_text.contains(title), "{title} in\n{screen_text}");
    }
    assert!(
        screen_text.contains("healthy") || screen_text.contains("warning"),
        "{screen_text}"
    );
    assert!(report.stderr.is_empty(), "{}", report.stderr);
}

#[test]
fn a_tmpdir_too_long_for_the_socket_is_flagged_with_the_fix() {
    // 80 bytes: socket paths of 114, over 107.
    let long = LongDir::new(80);
    let report = doctor(&[("TMPDIR", long.0.to_str().unwrap())]);
    assert_eq!(report.status("tmpdir"), "warning", "{}", report.json);
    assert!(
        report.found("tmpdir").contains("114 bytes, over the 107")
            && report.found("tmpdir").contains("ours falls back to /tmp"),
        "{}",
        report.found("tmpdir")
    );
    assert!(report.fix("tmpdir").contains("export TMPDIR=/tmp"));
    assert_eq!(report.check("tmpdir")["details"]["socket_path_bytes"], 114);
    assert!(report.code >= 1);

    // 73 bytes fits exactly.
    let fits = LongDir::new(73);
    let report = doctor(&[("TMPDIR", fits.0.to_str().unwrap())]);
    assert_eq!(report.status("tmpdir"), "ok", "{}", report.found("tmpdir"));
}

#[test]
fn a_missing_tmpdir_is_flagged() {
    let report = doctor(&[("TMPDIR", "/nonexistent-libshm-tmpdir")]);
    assert_eq!(report.status("tmpdir"), "warning");
    assert!(
        report.found("tmpdir").contains("No such file"),
        "{}",
        report.found("tmpdir")
    );
    assert_eq!(report.check("tmpdir")["details"]["writable"], false);
}

#[test]
fn a_low_descriptor_limit_is_flagged_with_the_fix_that_fits_the_hard_limit() {
    let shell = |limits: &str| {
        let script = format!("{limits} && exec \"$SHMCTL\" doctor --json");
        Doctor::of(
            Command::new("sh")
                .args(["-c", &script])
                .env("SHMCTL", SHMCTL)
                .env(
                    "PATH",
                    format!("{}:/usr/bin:/bin", no_python_dir().display()),
                )
                .output()
                .unwrap(),
        )
    };
    // Only the soft limit is low: raising it is enough.
    let report = shell("ulimit -Sn 512 && ulimit -Hn 8192");
    assert_eq!(report.status("open_files"), "warning");
    assert_eq!(report.check("open_files")["details"]["soft"], 512);
    assert!(
        report.found("open_files").contains("Too many open files"),
        "{}",
        report.found("open_files")
    );
    assert!(
        report.fix("open_files").contains("ulimit -n 8192"),
        "{}",
        report.fix("open_files")
    );
    assert!(report.fix("open_files").contains("file_system"));
    // Both are low: the hard limit has to go up first.
    let report = shell("ulimit -Sn 1024 && ulimit -Hn 1024");
    assert_eq!(report.status("open_files"), "warning");
    assert!(
        report
            .fix("open_files")
            .contains("--ulimit nofile=65536:65536"),
        "{}",
        report.fix("open_files")
    );
    // Plenty.
    let report = shell("ulimit -Sn 8192 && ulimit -Hn 8192");
    assert_eq!(report.status("open_files"), "ok");
}

/// Runs `script` in a private mount namespace with a `size` tmpfs over
/// /dev/shm; `None` (skip) where that is impossible and not required.
fn in_small_shm(size: &str, script: &str, envs: &[(&str, &str)]) -> Option<Output> {
    let full = format!("mount -t tmpfs -o size={size} tmpfs /dev/shm && {script}");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &full])
        .env("SHMCTL", SHMCTL)
        .env(
            "PATH",
            format!(
                "{}:/usr/bin:/bin:/usr/sbin:/sbin",
                no_python_dir().display()
            ),
        )
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unshare failed") || stderr.contains("mount:") {
        assert!(
            std::env::var_os(REQUIRE).is_none(),
            "{REQUIRE} is set but a private tmpfs cannot be mounted here: {stderr}"
        );
        eprintln!("skipped: cannot mount a private tmpfs (needs root): {stderr}");
        return None;
    }
    Some(out)
}

#[test]
fn a_small_dev_shm_is_a_warning_and_a_full_one_an_error() {
    let Some(out) = in_small_shm("1m", r#"exec "$SHMCTL" doctor --json"#, &[]) else {
        return;
    };
    let report = Doctor::of(out);
    assert_eq!(report.status("dev_shm"), "warning", "{}", report.json);
    assert!(
        report.found("dev_shm").starts_with("1 MiB with"),
        "{}",
        report.found("dev_shm")
    );
    assert!(
        report
            .found("dev_shm")
            .contains("Docker's default is 64 MiB")
    );
    assert!(!report.fix("dev_shm").is_empty());

    // Full: an error, and the fix starts with freeing leaks.
    let Some(out) = in_small_shm(
        "1m",
        r#"head -c 1000000 /dev/zero > /dev/shm/fill && exec "$SHMCTL" doctor --json"#,
        &[],
    ) else {
        return;
    };
    let report = Doctor::of(out);
    assert_eq!(report.status("dev_shm"), "error", "{}", report.json);
    assert_eq!(report.code, 2);
    assert!(report.fix("dev_shm").starts_with("`shmctl gc --yes`"));
    let used = report.check("dev_shm")["details"]["used_percent"]
        .as_u64()
        .unwrap();
    assert!(used >= 95, "{used}");

    // In a Kubernetes pod the fix is a memory-backed emptyDir.
    let Some(out) = in_small_shm(
        "1m",
        r#"exec "$SHMCTL" doctor --json"#,
        &[("KUBERNETES_SERVICE_HOST", "10.96.0.1")],
    ) else {
        return;
    };
    let report = Doctor::of(out);
    assert_eq!(
        report.check("dev_shm")["details"]["container"],
        "Kubernetes"
    );
    assert!(
        report.fix("dev_shm").contains("emptyDir: {medium: Memory"),
        "{}",
        report.fix("dev_shm")
    );
}

#[test]
fn remove_ipc_yes_warns_regular_users_and_spares_system_ones() {
    let temp = LongDir::new(0);
    let dir = &temp.0;
    let conf = dir.join("logind.conf");
    std::fs::write(&conf, "[Login]\n#RemoveIPC=no\nRemoveIPC=yes\n").unwrap();
    let env = [("LIBSHM_LOGIND_CONF", conf.to_str().unwrap())];

    let me = doctor(&env);
    let found = me.found("remove_ipc");
    assert!(
        found.contains(&format!("RemoveIPC=yes (in {})", conf.display())),
        "{found}"
    );
    let expected = if is_root() { "ok" } else { "warning" };
    assert_eq!(me.status("remove_ipc"), expected, "{found}");
    if is_root() {
        assert!(found.contains("spares root and system users"), "{found}");
        // The same configuration, seen by a regular user (uid 1000).
        let as_user = Doctor::of(
            Command::new(which("setpriv"))
                .args(["--reuid=1000", "--regid=1000", "--clear-groups", SHMCTL])
                .args(["doctor", "--json"])
                .env("PATH", no_python_dir())
                .envs(env)
                .output()
                .unwrap(),
        );
        assert_eq!(as_user.status("remove_ipc"), "warning", "{}", as_user.json);
        assert!(
            as_user
                .found("remove_ipc")
                .contains("uid 1000's last session ends")
        );
        assert!(as_user.fix("remove_ipc").contains("RemoveIPC=no"));
    }

    // A drop-in turns it off, and says where.
    let dropins = dir.join("logind.conf.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(dropins.join("50-libshm.conf"), "[Login]\nRemoveIPC=no\n").unwrap();
    let report = doctor(&env);
    assert_eq!(report.status("remove_ipc"), "ok");
    assert!(
        report.found("remove_ipc").contains("RemoveIPC=no (in ")
            && report.found("remove_ipc").contains("50-libshm.conf"),
        "{}",
        report.found("remove_ipc")
    );
}

#[test]
fn leaked_segments_are_counted_with_their_bytes_and_the_gc_command() {
    let prefix = format!("/libshm_doctor_{}_", std::process::id());
    // A creator that is surely dead: a child we waited for.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let name = format!("{}{dead}_1_0", prefix.trim_start_matches('/'));
    let path = Path::new("/dev/shm").join(&name);
    std::fs::write(&path, vec![0u8; 64 + 4096]).unwrap();

    let report = doctor(&[("LIBSHM_NAME_PREFIX", &prefix)]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(report.status("leaks"), "warning", "{}", report.json);
    assert_eq!(report.check("leaks")["details"]["leaked"], 1);
    assert_eq!(report.check("leaks")["details"]["leaked_bytes"], 4160);
    assert!(
        report.found("leaks").contains("4.1 KiB"),
        "{}",
        report.found("leaks")
    );
    assert!(
        report
            .fix("leaks")
            .contains(&format!("shmctl gc --prefix {prefix} --yes")),
        "{}",
        report.fix("leaks")
    );

    let clean = doctor(&[("LIBSHM_NAME_PREFIX", &prefix)]);
    assert_eq!(clean.status("leaks"), "ok");
}

#[test]
fn live_managers_are_listed_and_dead_ones_directories_flagged() {
    let temp = LongDir::new(0);
    let base = &temp.0;
    let daemon = Daemon::start(&["--run-dir", base.to_str().unwrap()]);
    let mut client = daemon.connect();
    client.register(&common::unique_name("doctor"));
    let pid = daemon.child.id();
    // A directory a killed manager left behind, a minute old.
    let dead = base.join("torch-shm-dir-dead00");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::File::open(&dead)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();

    let report = doctor(&[("TMPDIR", base.to_str().unwrap())]);
    let found = report.found("managers");
    let line = found
        .lines()
        .find(|l| l.contains(&daemon.handle))
        .unwrap_or_else(|| panic!("{} not listed: {found}", daemon.handle));
    assert!(
        line.contains(&format!(
            "pid {pid}, ours (libshm-rs shm-manager {})",
            env!("CARGO_PKG_VERSION")
        )) && line.contains("1 connection"),
        "{line}"
    );
    let live = report.check("managers")["details"]["live"]
        .as_array()
        .unwrap()
        .clone();
    let entry = live
        .iter()
        .find(|m| m["handle"] == daemon.handle.as_str())
        .unwrap();
    assert_eq!(entry["pid"], pid);
    assert_eq!(
        entry["clients"],
        serde_json::json!([std::process::id()]),
        "the manager reports its clients by pid"
    );
    assert_eq!(report.status("managers"), "warning");
    assert!(found.contains(dead.to_str().unwrap()), "{found}");
    assert!(
        report
            .fix("managers")
            .contains(&format!("rm -r {}", dead.display()))
            || report
                .fix("managers")
                .contains(&format!(" {}", dead.display()))
    );
    assert!(
        !report
            .fix("managers")
            .contains(&daemon.handle.replace("/manager.sock", "")),
        "a live manager's directory is not stale"
    );
    drop(daemon);
}

#[test]
fn doctor_says_which_manager_torch_runs_and_how_bad_a_long_tmpdir_is_for_it() {
    let Some(peer) = peer_python() else { return };
    let venv = Venv::new(&peer, "doctor");
    let long = LongDir::new(80);
    let long_env = [("TMPDIR", long.0.to_str().unwrap())];

    let theirs = Doctor::of_run(venv.doctor(&long_env));
    assert_eq!(theirs.status("torch_manager"), "ok");
    assert!(
        theirs.found("torch_manager").contains("PyTorch's"),
        "{}",
        theirs.json
    );
    assert!(
        theirs
            .found("torch_manager")
            .contains("shmctl torch install --python")
    );
    assert_eq!(
        theirs.status("tmpdir"),
        "error",
        "PyTorch's manager cannot start there"
    );
    assert_eq!(theirs.code, 2);

    venv.torch(&["install"]).expect(0);
    let ours = Doctor::of_run(venv.doctor(&long_env));
    assert_eq!(ours.status("torch_manager"), "ok");
    assert_eq!(ours.check("torch_manager")["details"]["ours"], true);
    assert_eq!(ours.status("tmpdir"), "warning", "ours falls back");

    // An upgrade puts PyTorch's back: a warning with the fix.
    std::fs::write(venv.manager(), venv.pytorchs()).unwrap();
    let upgraded = Doctor::of_run(venv.doctor(&[]));
    assert_eq!(upgraded.status("torch_manager"), "warning");
    assert!(upgraded.found("torch_manager").contains("upgrade"));
    assert!(
        upgraded.fix("torch_manager").contains(&format!(
            "shmctl torch install --python {}",
            venv.python.display()
        )),
        "{}",
        upgraded.fix("torch_manager")
    );
}

impl Doctor {
    fn of_run(run: torch_venv::Run) -> Self {
        let json: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {run}"));
        let code = run.code.expect("exited");
        assert_eq!(json["exit_code"].as_i64(), Some(i64::from(code)));
        Self {
            json,
            code,
            stderr: run.stderr,
        }
    }
}
