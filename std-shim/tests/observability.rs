//! What the manager says while it runs (issue 11, parts 4 and 5): warnings on
//! stderr when /dev/shm fills up or a registered name is removed from
//! outside, and what `shmctl ls --managers` and `shmctl why` show of a live
//! manager, its clients and a segment's story.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, Holder, SHMCTL, shm_exists, wait_until};

/// A file the test's manager writes its stderr to.
struct Log(PathBuf);

impl Log {
    fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "libshm-observe-{tag}-{}-{}",
            std::process::id(),
            common::torch::rand_suffix()
        )))
    }
    fn stdio(&self) -> Stdio {
        std::fs::File::create(&self.0).unwrap().into()
    }
    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn shmctl(args: &[&str]) -> String {
    let out = Command::new(SHMCTL).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "shmctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_name_removed_from_outside_while_registered_is_reported_with_its_likely_causes() {
    let log = Log::new("vanished");
    let daemon = Daemon::start_with_stderr(&[], log.stdio());
    let mut holder = Holder::spawn(&["create", "--manager", &daemon.handle], 1, &[]);
    let name = holder.names().remove(0);
    std::fs::remove_file(format!("/dev/shm{name}")).unwrap(); // an outside `rm`
    assert!(
        wait_until(Duration::from_secs(6), || log
            .text()
            .contains("was removed from /dev/shm while")),
        "no warning on stderr: {}",
        log.text()
    );
    let text = log.text();
    assert!(text.contains(&name), "{text}");
    assert!(
        text.contains("RemoveIPC"),
        "the likely cause is named: {text}"
    );
    let story = shmctl(&["why", &name]);
    assert!(story.contains("removed from outside"), "{story}");
    assert!(story.contains("registered by pid"), "{story}");
    assert_eq!(
        holder.ask("refcount"),
        "refcount=1",
        "the holder's mapping is intact"
    );

    // Someone puts a FIFO under the name: `why` says so without blocking
    // on it, and still tells the story.
    let path = format!("/dev/shm{name}");
    let _fifo = common::Cleanup(vec![name.clone()]);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path.as_str(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
    let story = shmctl(&["why", &name]);
    assert!(story.contains("in /dev/shm now, but a FIFO"), "{story}");
    assert!(story.contains("removed from outside"), "{story}");
}

#[test]
fn a_filling_dev_shm_is_warned_about_once_per_threshold_with_the_fix() {
    // A 4 MiB tmpfs over /dev/shm in a private mount namespace: the
    // machine's own /dev/shm is untouched.
    let script = r#"
        mount -t tmpfs -o size=4m tmpfs /dev/shm || exit 90
        exec 3< <("$MANAGER" 2>"$LOG")
        read -r handle <&3
        sleep 8 | "$SHMCTL" create --manager "$handle" --size 3400K --hold >/dev/null &
        sleep 3
        sleep 5 | "$SHMCTL" create --manager "$handle" --size 600K --hold >/dev/null &
        sleep 3
    "#;
    let log = Log::new("pressure");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", script])
        .env("MANAGER", common::SHM_MANAGER)
        .env("SHMCTL", SHMCTL)
        .env("LOG", &log.0)
        .output()
        .unwrap();
    if !common::may_skip(
        out.status.code() != Some(90) && out.status.success(),
        "root and mount namespaces, to mount a small tmpfs",
    ) {
        return;
    }
    let text = log.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("% full")).collect();
    assert_eq!(warnings.len(), 2, "one per threshold: {text}");
    assert!(warnings[0].contains("soon fail"), "{}", warnings[0]);
    assert!(
        warnings[1].contains("next shared tensors will fail"),
        "{}",
        warnings[1]
    );
    for warning in warnings {
        assert!(
            warning.contains("--shm-size") && warning.contains("emptyDir"),
            "the fix is given: {warning}"
        );
    }
}

#[test]
fn ls_managers_shows_each_client_with_its_names_and_bytes() {
    let daemon = Daemon::start(&[]);
    let small = Holder::spawn(
        &["create", "--manager", &daemon.handle, "--count", "2"],
        2,
        &[],
    );
    let big = Holder::spawn(
        &["create", "--manager", &daemon.handle, "--size", "1M"],
        1,
        &[],
    );
    let json = shmctl(&["ls", "--managers", "--json"]);
    let managers: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ours = managers
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["handle"] == daemon.handle.as_str())
        .unwrap_or_else(|| panic!("{} not listed: {json}", daemon.handle));
    assert_eq!(ours["reports_status"], true);
    assert_eq!(ours["names"], 3);
    let clients = ours["clients"].as_array().unwrap();
    let client = |pid: u32| {
        clients
            .iter()
            .find(|c| c["pid"] == pid)
            .unwrap_or_else(|| panic!("pid {pid} not among {clients:?}"))
    };
    assert_eq!(client(small.child.id())["names"], 2);
    assert_eq!(client(small.child.id())["bytes"], 2 * (4096 + 64));
    assert_eq!(client(big.child.id())["names"], 1);
    assert_eq!(client(big.child.id())["bytes"], (1 << 20) + 64);

    let text = shmctl(&["ls", "--managers"]);
    assert!(text.contains(&daemon.handle), "{text}");
    assert!(
        text.contains(&format!("pid {}: 1 name(s), 1.0 MiB", big.child.id())),
        "{text}"
    );
    // Let go cleanly: killed holders' names would outlive the manager, which
    // the test kills before it could reap them.
    assert!(small.finish().success());
    assert!(big.finish().success());
}

#[test]
fn why_tells_a_reaped_segments_story() {
    let daemon = Daemon::start(&["--reap-grace", "500ms"]);
    let _bystander = daemon.bystander();
    let holder = Holder::spawn(&["create", "--manager", &daemon.handle], 1, &[]);
    let name = holder.names().remove(0);
    let pid = holder.child.id();
    holder.kill();
    assert!(wait_until(Duration::from_secs(4), || !shm_exists(&name)));
    let story = shmctl(&["why", &name]);
    let expected = [
        format!("registered by pid {pid}"),
        format!("pid {pid}"),
        "orphaned: refcount 1 <= 1".to_owned(),
        "reaped (orphaned)".to_owned(),
    ];
    let mut rest = story.as_str();
    for line in &expected {
        let at = rest
            .find(line.as_str())
            .unwrap_or_else(|| panic!("{line:?} missing, or out of order, in:\n{story}"));
        rest = &rest[at + line.len()..];
    }
    assert!(story.contains("not in /dev/shm now"), "{story}");
}
