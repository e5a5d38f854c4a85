//! `shmctl ls`, `shmctl gc` and `libshm::inspect` against real leaks: holders
//! SIGKILLed after their manager was SIGKILLed too, so nothing reaps what they
//! leave. Each test uses its own name prefix, so parallel tests never see each
//! other's segments.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, Holder, SHMCTL, create_object, shm_exists};
use libshm::NamePrefix;
use libshm::inspect::{self, Collected, GcPolicy, Spared, Status};

/// One of each kind of segment, all of 4096 data bytes, under one prefix:
/// - `leaked`: three segments of a SIGKILLed holder;
/// - `in_use`: a segment whose creator is alive;
/// - `orphaned`: a segment whose creator was SIGKILLed while another process
///   still holds it open;
/// - `unknown`: an object whose name carries no pid, which nobody uses.
///
/// Dropping it kills the live holders and unlinks everything with the prefix.
struct Scene {
    prefix: String,
    holders: Vec<Holder>,
    leaked: Vec<String>,
    leaker_pid: u32,
    in_use: String,
    user_pid: u32,
    orphaned: String,
    opener_pid: u32,
    unknown: String,
}

impl Scene {
    fn build(tag: &str) -> Self {
        let prefix = format!("/lsT{}{tag}_", common::run_id());
        // Made first so that a failed build still cleans up (it drops last).
        let mut scene = Self {
            prefix: prefix.clone(),
            holders: Vec::new(),
            leaked: Vec::new(),
            leaker_pid: 0,
            in_use: String::new(),
            user_pid: 0,
            orphaned: String::new(),
            opener_pid: 0,
            unknown: format!("{prefix}notapid"),
        };
        let env = [(libshm::ENV_PREFIX, prefix.as_str())];
        let mut daemon = Daemon::start(&["--reap-grace", "off", "--name-prefix", &prefix]);
        let handle = daemon.handle.clone();
        let create = |count: usize| {
            Holder::spawn(
                &[
                    "create",
                    "--manager",
                    &handle,
                    "--count",
                    &count.to_string(),
                ],
                count,
                &env,
            )
        };
        let leaker = create(3);
        let user = create(1);
        let orphan_creator = create(1);
        let orphaned = orphan_creator.segments[0].name.clone();
        let opener = Holder::spawn(
            &[
                "open",
                "--manager",
                &handle,
                "--name",
                &orphaned,
                "--size",
                "4096",
            ],
            1,
            &env,
        );

        // The manager goes first: with it alive, it would unlink the dead
        // holders' segments, and no leak would remain to inspect.
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        let _ = std::fs::remove_file(&handle);
        if let Some(dir) = Path::new(&handle).parent() {
            let _ = std::fs::remove_dir(dir);
        }

        scene.leaked = leaker.names();
        scene.leaker_pid = leaker.pid();
        scene.in_use = user.segments[0].name.clone();
        scene.user_pid = user.pid();
        scene.orphaned = orphaned;
        scene.opener_pid = opener.pid();
        assert!(scene.all().iter().all(|n| n.starts_with(&prefix)));
        leaker.kill();
        orphan_creator.kill();
        scene.holders = vec![user, opener];
        create_object(&scene.unknown);
        scene
    }

    fn all(&self) -> Vec<String> {
        let mut all = self.leaked.clone();
        all.extend([
            self.in_use.clone(),
            self.orphaned.clone(),
            self.unknown.clone(),
        ]);
        all
    }

    fn name_prefix(&self) -> NamePrefix {
        NamePrefix::new(self.prefix.as_bytes()).unwrap()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for holder in &mut self.holders {
            let _ = holder.child.kill();
            let _ = holder.child.wait();
        }
        let file_prefix = self.prefix.trim_start_matches('/');
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(file_prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Runs `shmctl <args>`, expects success, returns stdout.
fn shmctl(args: &[&str]) -> String {
    let output = Command::new(SHMCTL).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "shmctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `shmctl ls --json` parsed: one object per segment.
fn ls_json(prefix: &str) -> Vec<json::Value> {
    match json::parse(&shmctl(&["ls", "--json", "--prefix", prefix])) {
        json::Value::Array(rows) => rows,
        other => panic!("ls --json printed {other:?}"),
    }
}

fn row<'a>(rows: &'a [json::Value], name: &str) -> &'a json::Value {
    rows.iter()
        .find(|r| r.get("name").as_str() == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed in {rows:?}"))
}

/// The segment names on lines of `text` that start with `word`.
fn names_after(text: &str, word: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix(word))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| name.starts_with('/'))
        .map(|name| name.trim_end_matches(':').to_owned())
        .collect()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

#[test]
fn ls_tells_leaked_orphaned_in_use_and_unknown_apart() {
    let scene = Scene::build("ls");
    let rows = ls_json(&scene.prefix);
    assert_eq!(rows.len(), 6, "{rows:?}");
    let uid = f64::from(rustix::process::geteuid().as_raw());

    for name in &scene.leaked {
        let r = row(&rows, name);
        assert_eq!(r.get("status").as_str(), Some("leaked"), "{r:?}");
        assert_eq!(
            r.get("creator_pid").as_num(),
            Some(f64::from(scene.leaker_pid))
        );
        assert_eq!(r.get("creator_alive"), &json::Value::Bool(false));
        assert_eq!(r.get("users"), &json::Value::Array(vec![]));
        assert_eq!(r.get("refcount").as_num(), Some(1.0));
        assert_eq!(r.get("size").as_num(), Some(4096.0 + 64.0));
        assert_eq!(r.get("owner_uid").as_num(), Some(uid));
        assert!(r.get("age_seconds").as_num().is_some());
    }

    let r = row(&rows, &scene.in_use);
    assert_eq!(r.get("status").as_str(), Some("in use"), "{r:?}");
    assert_eq!(r.get("creator_alive"), &json::Value::Bool(true));
    assert_eq!(r.get("users").pids(), vec![scene.user_pid]);

    let r = row(&rows, &scene.orphaned);
    assert_eq!(r.get("status").as_str(), Some("orphaned"), "{r:?}");
    assert_eq!(r.get("creator_alive"), &json::Value::Bool(false));
    assert_eq!(r.get("users").pids(), vec![scene.opener_pid]);
    assert_eq!(
        r.get("refcount").as_num(),
        Some(2.0),
        "the dead creator's reference is never dropped"
    );

    let r = row(&rows, &scene.unknown);
    assert_eq!(r.get("status").as_str(), Some("unknown"), "{r:?}");
    assert_eq!(r.get("creator_pid"), &json::Value::Null);
    assert_eq!(r.get("creator_alive"), &json::Value::Null);
    assert_eq!(r.get("refcount").as_num(), Some(0.0), "64 zero bytes");

    // The table says the same, one row per segment under a header.
    let table = shmctl(&["ls", "--prefix", &scene.prefix]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].ends_with("STATUS"));
    let status_of = |name: &str| {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{table}"));
        line[lines[0].find("STATUS").unwrap()..].to_owned()
    };
    assert!(scene.leaked.iter().all(|n| status_of(n) == "leaked"));
    assert_eq!(status_of(&scene.in_use), "in use");
    assert_eq!(status_of(&scene.orphaned), "orphaned");
    assert_eq!(status_of(&scene.unknown), "unknown");
    assert!(table.contains("6 segments"), "{table}");
}

#[test]
fn gc_lists_then_removes_exactly_the_leaked_segments() {
    // Collection needs every process inspected (see `hostile_namespace.rs`
    // for what happens when some cannot be).
    if !common::in_private_pid_namespace("gc_lists_then_removes_exactly_the_leaked_segments") {
        return;
    }
    let scene = Scene::build("gc");
    let all = scene.all();

    let dry = shmctl(&["gc", "--prefix", &scene.prefix, "--older-than", "0"]);
    assert_eq!(
        names_after(&dry, "would remove "),
        set(&scene.leaked),
        "{dry}"
    );
    assert!(
        dry.contains("would remove 3 segments, freeing 12.2 KiB"),
        "3 x 4160 bytes: {dry}"
    );
    assert!(
        all.iter().all(|n| shm_exists(n)),
        "a dry run deletes nothing"
    );

    let fresh = shmctl(&["gc", "--prefix", &scene.prefix, "--yes"]);
    assert!(fresh.contains("removed 0 segments"), "{fresh}");
    assert!(
        fresh.contains("3 leaked segments changed less than 1m ago"),
        "{fresh}"
    );
    assert!(
        all.iter().all(|n| shm_exists(n)),
        "fresh leaks are kept by the default --older-than 1m"
    );

    let done = shmctl(&[
        "gc",
        "--prefix",
        &scene.prefix,
        "--older-than",
        "0",
        "--yes",
    ]);
    assert_eq!(names_after(&done, "removed "), set(&scene.leaked), "{done}");
    assert!(
        done.contains("removed 3 segments, freed 12.2 KiB"),
        "{done}"
    );
    assert!(scene.leaked.iter().all(|n| !shm_exists(n)));
    assert!(shm_exists(&scene.in_use));
    assert!(shm_exists(&scene.orphaned));
    assert!(shm_exists(&scene.unknown));

    let rows = ls_json(&scene.prefix);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.get("status").as_str() != Some("leaked"))
    );
}

#[test]
fn collect_checks_again_and_spares_a_segment_someone_picked_up() {
    // Collection needs every process inspected (see `hostile_namespace.rs`
    // for what happens when some cannot be).
    if !common::in_private_pid_namespace(
        "collect_checks_again_and_spares_a_segment_someone_picked_up",
    ) {
        return;
    }
    let scene = Scene::build("re");
    let prefix = scene.name_prefix();
    let scan = inspect::scan(&prefix).unwrap();
    assert_eq!(scan.segments.len(), 6);
    let leaked: Vec<_> = scan
        .segments
        .iter()
        .filter(|s| s.status == Status::Leaked)
        .map(|s| s.name)
        .collect();
    assert_eq!(leaked.len(), 3);
    let policy = GcPolicy::for_current_user(Duration::ZERO);
    let path = |name: &libshm::SegmentName| {
        Path::new("/dev/shm").join(name.as_str().trim_start_matches('/'))
    };

    // After the scan, this process opens one: a descriptor makes it a user.
    let victim = leaked[0];
    let file = std::fs::File::open(path(&victim)).unwrap();
    assert_eq!(
        inspect::collect(&victim, &prefix, &policy).unwrap(),
        Collected::Spared(Spared::NotLeaked(Status::Orphaned))
    );
    // A mapping without a descriptor counts as well.
    let mapping = memmap2::MmapOptions::new()
        .map_raw_read_only(&file)
        .unwrap();
    drop(file);
    assert_eq!(
        inspect::collect(&victim, &prefix, &policy).unwrap(),
        Collected::Spared(Spared::NotLeaked(Status::Orphaned))
    );
    assert!(shm_exists(victim.as_str()));
    drop(mapping);

    assert_eq!(
        inspect::collect(&victim, &prefix, &policy).unwrap(),
        Collected::Removed { bytes: 4160 }
    );
    assert!(!shm_exists(victim.as_str()));
    assert_eq!(
        inspect::collect(&victim, &prefix, &policy).unwrap(),
        Collected::Gone
    );

    // Nothing else is ever collected, whatever the policy's age.
    for (name, status) in [
        (&scene.in_use, Status::InUse),
        (&scene.orphaned, Status::Orphaned),
        (&scene.unknown, Status::Unknown),
    ] {
        let name = libshm::SegmentName::new(name.as_bytes()).unwrap();
        assert_eq!(
            inspect::collect(&name, &prefix, &policy).unwrap(),
            Collected::Spared(Spared::NotLeaked(status))
        );
        assert!(shm_exists(name.as_str()));
    }
    // A leak that is too young is kept too.
    let young = GcPolicy::for_current_user(Duration::from_secs(3600));
    assert!(matches!(
        inspect::collect(&leaked[1], &prefix, &young).unwrap(),
        Collected::Spared(Spared::TooYoung { .. })
    ));
    assert!(shm_exists(leaked[1].as_str()));
}

/// Just enough JSON to read `ls --json` back, and to fail on anything that is
/// not well-formed.
mod json {
    #[derive(Clone, Debug, PartialEq)]
    pub(crate) enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        pub(crate) fn get(&self, key: &str) -> &Value {
            match self {
                Value::Object(fields) => fields
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v)
                    .unwrap_or_else(|| panic!("no key {key} in {self:?}")),
                _ => panic!("{self:?} is not an object"),
            }
        }

        pub(crate) fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(s) => Some(s),
                _ => None,
            }
        }

        pub(crate) fn as_num(&self) -> Option<f64> {
            match self {
                Value::Number(n) => Some(*n),
                _ => None,
            }
        }

        pub(crate) fn pids(&self) -> Vec<u32> {
            match self {
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_num().expect("a pid") as u32)
                    .collect(),
                _ => panic!("{self:?} is not an array"),
            }
        }
    }

    pub(crate) fn parse(text: &str) -> Value {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value();
        parser.space();
        assert_eq!(parser.at, text.len(), "trailing text in {text:?}");
        value
    }

    struct Parser<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl Parser<'_> {
        fn space(&mut self) {
            while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
                self.at += 1;
            }
        }

        fn next(&mut self) -> u8 {
            let byte = self.bytes[self.at];
            self.at += 1;
            byte
        }

        fn expect(&mut self, word: &str) {
            assert!(self.bytes[self.at..].starts_with(word.as_bytes()));
            self.at += word.len();
        }

        fn value(&mut self) -> Value {
            self.space();
            match self.bytes[self.at] {
                b'n' => {
                    self.expect("null");
                    Value::Null
                }
                b't' => {
                    self.expect("true");
                    Value::Bool(true)
                }
                b'f' => {
                    self.expect("false");
                    Value::Bool(false)
                }
                b'"' => Value::String(self.string()),
                b'[' => {
                    self.at += 1;
                    let mut items = Vec::new();
                    self.space();
                    if self.bytes[self.at] == b']' {
                        self.at += 1;
                        return Value::Array(items);
                    }
                    loop {
                        items.push(self.value());
                        self.space();
                        match self.next() {
                            b',' => continue,
                            b']' => return Value::Array(items),
                            other => panic!("unexpected {:?} in array", other as char),
                        }
                    }
                }
                b'{' => {
                    self.at += 1;
                    let mut fields = Vec::new();
                    self.space();
                    if self.bytes[self.at] == b'}' {
                        self.at += 1;
                        return Value::Object(fields);
                    }
                    loop {
                        self.space();
                        let key = self.string();
                        self.space();
                        assert_eq!(self.next(), b':');
                        fields.push((key, self.value()));
                        self.space();
                        match self.next() {
                            b',' => continue,
                            b'}' => return Value::Object(fields),
                            other => panic!("unexpected {:?} in object", other as char),
                        }
                    }
                }
                _ => {
                    let start = self.at;
                    while self
                        .bytes
                        .get(self.at)
                        .is_some_and(|b| b.is_ascii_digit() || b"-+.eE".contains(b))
                    {
                        self.at += 1;
                    }
                    let text = std::str::from_utf8(&self.bytes[start..self.at]).unwrap();
                    Value::Number(
                        text.parse()
                            .unwrap_or_else(|_| panic!("bad number {text:?}")),
                    )
                }
            }
        }

        fn string(&mut self) -> String {
            assert_eq!(self.next(), b'"');
            let mut out = String::new();
            loop {
                match self.next() {
                    b'"' => return out,
                    b'\\' => match self.next() {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hex =
                                std::str::from_utf8(&self.bytes[self.at..self.at + 4]).unwrap();
                            self.at += 4;
                            let code = u32::from_str_radix(hex, 16).unwrap();
                            out.push(char::from_u32(code).unwrap());
                        }
                        other => panic!("bad escape \\{}", other as char),
                    },
                    byte if byte < 0x20 => panic!("raw control byte {byte:#x} in a string"),
                    byte => out.push(byte as char),
                }
            }
        }
    }
}
