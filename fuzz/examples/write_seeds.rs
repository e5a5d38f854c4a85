//! Writes the seed corpora in `corpus/<target>/`, one file per scenario,
//! named for what it exercises.
//!
//! Run `cargo run --example write_seeds` from `fuzz/` after changing a script
//! format; the files are committed. The seeds give libFuzzer well-formed
//! starting points (a PyTorch frame, a handshake line, a crash followed by
//! reaping) that it would take long to find from nothing.
//!
//! Names must not both start and end with a hex digit: the repository ignores
//! such names, which is how libFuzzer names the inputs it finds.

use std::fs;
use std::path::Path;

use libshm_core::client::AckMode;
use libshm_core::frame::{FRAME_LEN, Frame};
use libshm_core::journal;
use libshm_core::name::SegmentName;
use libshm_fuzz::client_script::{ClientEvent, ClientScript};
use libshm_fuzz::handshake_check::HandshakeInput;
use libshm_fuzz::manager_script::{
    Event, ManagerScript, NsChange, PeerUid, Piece, Setup, StorageChoice,
};
use libshm_fuzz::name_pool;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let targets: [(&str, Seeds); 5] = [
        ("frame", frame_seeds()),
        ("handshake", handshake_seeds()),
        ("manager", manager_seeds()),
        ("client", client_seeds()),
        ("window", window_seeds()),
    ];
    for (target, seeds) in targets {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            let hex = |c: Option<char>| c.is_some_and(|c| c.is_ascii_hexdigit());
            assert!(
                !(hex(name.chars().next()) && hex(name.chars().last())),
                "git ignores {name}: it looks like a name libFuzzer generates"
            );
            fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}

/// File names and contents of one target's seeds.
type Seeds = Vec<(&'static str, Vec<u8>)>;

fn name(text: &str) -> SegmentName {
    SegmentName::new(text.as_bytes()).expect("seed names are valid")
}

fn frame_seeds() -> Seeds {
    let torch = name("/torch_4242_1808412233_0");
    let register = Frame::register(4242, torch).encode();
    let with = |edit: &dyn Fn(&mut [u8; FRAME_LEN])| {
        let mut bytes = register;
        edit(&mut bytes);
        bytes.to_vec()
    };
    vec![
        ("pytorch_register", register.to_vec()),
        (
            "pytorch_release",
            Frame::release(4242, torch).encode().to_vec(),
        ),
        ("free_flag_two", with(&|b| b[4] = 2)),
        ("negative_pid", Frame::register(-1, torch).encode().to_vec()),
        (
            "stack_garbage_after_nul_and_in_padding",
            with(&|b| b[30..].fill(0xcc)),
        ),
        ("name_without_nul", with(&|b| b[5..65].fill(b'a'))),
        ("name_empty", with(&|b| b[5] = 0)),
        (
            "name_inner_slash",
            with(&|b| b[5..10].copy_from_slice(b"/a/b\0")),
        ),
        ("name_dot_dot", with(&|b| b[5..9].copy_from_slice(b"/..\0"))),
        ("name_non_ascii", with(&|b| b[6] = 0xc3)),
        (
            "name_longest_allowed",
            Frame::register(1, name_pool::pick(7)).encode().to_vec(),
        ),
        ("short_by_one_byte", register[..FRAME_LEN - 1].to_vec()),
        ("two_frames_at_once", [register, register].concat()),
    ]
}

fn handshake_seeds() -> Seeds {
    let line = b"/tmp/torch-shm-dir-abc123/manager.sock\n";
    let mut too_long_handle = vec![b'/'];
    too_long_handle.extend([b'a'; 107]);
    too_long_handle.push(b'\n');
    vec![
        ("ready_in_one_read", HandshakeInput::encode(0, false, line)),
        (
            "ready_in_three_byte_reads_with_empty_reads",
            HandshakeInput::encode(3, true, line),
        ),
        (
            "ready_then_more_output",
            HandshakeInput::encode(
                16,
                false,
                b"/tmp/torch-shm-dir-abc123/manager.sock\nlog line\n",
            ),
        ),
        (
            "manager_error_with_message",
            HandshakeInput::encode(0, false, b"ERROR: x\n"),
        ),
        (
            "manager_error_bare",
            HandshakeInput::encode(1, false, b"ERROR\n"),
        ),
        (
            "truncated_without_newline",
            HandshakeInput::encode(0, false, &line[..20]),
        ),
        ("no_output", HandshakeInput::encode(0, false, b"")),
        (
            "handle_one_byte_too_long",
            HandshakeInput::encode(0, false, &too_long_handle),
        ),
        (
            "handle_with_tab",
            HandshakeInput::encode(0, false, b"/tmp/a\tb\n"),
        ),
        (
            "handle_with_carriage_return",
            HandshakeInput::encode(0, false, b"/tmp/x.sock\r\n"),
        ),
        (
            "handle_not_utf8",
            HandshakeInput::encode(0, false, b"/tmp/\xff.sock\n"),
        ),
        (
            "handle_utf8_split_across_reads",
            HandshakeInput::encode(6, false, "/tmp/é.sock\n".as_bytes()),
        ),
        (
            "line_past_line_max",
            HandshakeInput::encode(64, false, &[b'a'; 1100]),
        ),
    ]
}

/// Like `shm-manager` started by PyTorch: growable tables, 2 s timeouts, a
/// minute's linger, `/torch_` names and the owner's uid only, every pid
/// watchable.
fn daemon_setup() -> Setup {
    Setup {
        storage: StorageChoice::Growable,
        shutdown_after_ms: 2_000,
        reap_grace_ms: Some(2_000),
        frame_timeout_ms: Some(5_000),
        silence_timeout_ms: Some(5_000),
        torch_prefix_only: true,
        owner_uid_only: true,
        max_connections: None,
        max_names: None,
        linger_ms: 60_000,
        batch: 64,
        watchable: 0xff,
        journals: false,
    }
}

/// Pid of the owner's client processes; every `connects` client is one.
const PARENT: u8 = 42;
/// Pid of a child forked by a [`PARENT`]: it sends on its parent's connection.
const CHILD: u8 = 43;

/// A registration sent by [`PARENT`].
fn register(name: SegmentName) -> Piece {
    Piece::Register { name, pid: PARENT }
}

/// A registration whose free flag (byte 4) reads `value`.
fn bad_free_flag(name: SegmentName, value: u8) -> Piece {
    Piece::Mangled { name, at: 4, value }
}

/// A manager script told step by step: each method adds the events its name
/// says, in order.
struct Story {
    setup: Setup,
    events: Vec<Event>,
}

impl Story {
    /// A manager set up as `setup`, to which `clients` clients connect.
    fn new(setup: Setup, clients: usize) -> Self {
        let story = Story {
            setup,
            events: Vec::new(),
        };
        story.connects(clients)
    }

    /// [`Story::new`] with [`daemon_setup`].
    fn daemon(clients: usize) -> Self {
        Self::new(daemon_setup(), clients)
    }

    fn then(mut self, event: Event) -> Self {
        self.events.push(event);
        self
    }

    /// `count` clients of the owner's, pid [`PARENT`], connect.
    fn connects(self, count: usize) -> Self {
        let connect = Event::Connect {
            uid: PeerUid::Owner,
            pid: PARENT,
        };
        (0..count).fold(self, |story, _| story.then(connect.clone()))
    }

    fn sends(self, conn: u8, piece: Piece) -> Self {
        self.then(Event::Send {
            conn,
            piece,
            hold_back: false,
        })
    }

    /// Writes `piece` without the manager reading it yet.
    fn holds(self, conn: u8, piece: Piece) -> Self {
        self.then(Event::Send {
            conn,
            piece,
            hold_back: true,
        })
    }

    fn delivers(self, conn: u8, max_bytes: u8) -> Self {
        self.then(Event::Deliver { conn, max_bytes })
    }

    fn registers(self, conn: u8, names: &[SegmentName]) -> Self {
        self.registers_as(conn, PARENT, names)
    }

    fn registers_as(self, conn: u8, pid: u8, names: &[SegmentName]) -> Self {
        names.iter().fold(self, |story, &name| {
            story.sends(conn, Piece::Register { name, pid })
        })
    }

    fn releases(self, conn: u8, names: &[SegmentName]) -> Self {
        self.releases_as(conn, PARENT, names)
    }

    fn releases_as(self, conn: u8, pid: u8, names: &[SegmentName]) -> Self {
        names.iter().fold(self, |story, &name| {
            story.sends(conn, Piece::Release { name, pid })
        })
    }

    fn ns(self, name: SegmentName, change: NsChange) -> Self {
        self.then(Event::Namespace { name, change })
    }

    fn creates(self, names: &[SegmentName]) -> Self {
        names
            .iter()
            .fold(self, |story, &name| story.ns(name, NsChange::Create))
    }

    /// The segments appear, then `conn` registers them.
    fn creates_then_registers(self, conn: u8, names: &[SegmentName]) -> Self {
        self.creates(names).registers(conn, names)
    }

    fn adopts(self, name: SegmentName) -> Self {
        self.then(Event::Adopt { name })
    }

    fn disconnects(self, conn: u8) -> Self {
        self.then(Event::Disconnect { conn })
    }

    fn dies(self, pid: u8) -> Self {
        self.then(Event::PidExited { pid })
    }

    /// The manager ticks at its next wake-up, `times` times over.
    fn wakes(self, times: usize) -> Self {
        (0..times).fold(self, |story, _| story.then(Event::TickAtWakeup))
    }

    /// `seconds` pass, then the manager ticks.
    fn waits(self, seconds: u8) -> Self {
        self.then(Event::Tick {
            advance: 128 + seconds * 4,
        })
    }

    fn performs(self, pick: u8, fail: bool) -> Self {
        self.then(Event::Perform { pick, fail })
    }

    /// The sockets' writer starts, or stops, using `pid` without speaking
    /// for it (a worker in a pid namespace of its own).
    fn foreign_writer(self, pid: u8) -> Self {
        self.then(Event::ForeignWriter { pid })
    }

    fn encode(self) -> Vec<u8> {
        ManagerScript {
            setup: self.setup,
            events: self.events,
        }
        .encode()
    }
}

fn manager_seeds() -> Seeds {
    let a = name_pool::pick(0);
    let b = name_pool::pick(1);
    let c = name_pool::pick(2);
    let small = Setup {
        storage: StorageChoice::Small,
        ..daemon_setup()
    };
    let lenient = Setup {
        torch_prefix_only: false,
        owner_uid_only: false,
        ..daemon_setup()
    };
    let setup_name = SegmentName::new(journal::SETUP_NAME.as_bytes());
    let setup_name = setup_name.expect("reserved names are valid");
    let journaled = |piece: Piece| Event::Journaled { conn: 0, piece };

    let stories = [
        (
            "our_client_unlinks_then_releases_then_idle_shutdown",
            Story::daemon(1)
                .creates_then_registers(0, &[a])
                .ns(a, NsChange::Remove)
                .releases(0, &[a])
                .disconnects(0)
                .wakes(2),
        ),
        (
            "pytorch_client_releases_then_unlinks_so_a_look_forgets",
            Story::daemon(1)
                .creates_then_registers(0, &[a])
                .releases(0, &[a])
                .ns(a, NsChange::LastClose)
                .wakes(2),
        ),
        (
            "crash_while_holding_then_reaped_when_grace_runs_out",
            Story::daemon(2)
                .creates_then_registers(0, &[a, b])
                .registers(1, &[b])
                .ns(b, NsChange::Incref)
                .disconnects(0)
                .wakes(1)
                .waits(1)
                .wakes(2)
                .releases(1, &[b])
                .ns(b, NsChange::Decref)
                .wakes(3),
        ),
        (
            "orphan_registered_again_is_not_reaped",
            Story::daemon(2)
                .creates_then_registers(0, &[a])
                .disconnects(0)
                .wakes(1)
                .then(Event::Tick { advance: 50 })
                .registers(1, &[a])
                .ns(a, NsChange::Incref)
                .wakes(1)
                .waits(20),
        ),
        (
            "two_pids_on_one_connection_one_killed_only_its_names_reaped",
            Story::daemon(1)
                .creates_then_registers(0, &[a])
                .creates(&[b])
                .registers_as(0, CHILD, &[b])
                .creates(&[c])
                .registers_as(0, CHILD, &[c])
                .registers(0, &[c])
                .ns(c, NsChange::Incref)
                .dies(CHILD)
                .wakes(2)
                .waits(2)
                .wakes(1)
                .registers(0, &[a]),
        ),
        (
            "a_forked_child_drops_its_parents_name_on_the_shared_connection",
            Story::daemon(1)
                .creates_then_registers(0, &[a])
                .registers_as(0, CHILD, &[b])
                .releases_as(0, CHILD, &[a, a])
                .dies(CHILD)
                .wakes(1)
                .waits(3),
        ),
        (
            "unwatchable_pids_are_held_as_long_as_their_connection",
            Story::new(
                Setup {
                    watchable: 1 << (PARENT % 8),
                    ..daemon_setup()
                },
                2,
            )
            .registers(1, &[b])
            .creates(&[a])
            .registers_as(0, CHILD, &[a])
            .registers_as(0, CHILD + 8, &[a])
            .ns(a, NsChange::Incref)
            .dies(CHILD)
            .waits(10)
            .releases_as(0, CHILD + 16, &[a])
            .disconnects(0)
            .wakes(1)
            .waits(3)
            .wakes(1),
        ),
        (
            "in_transit_after_its_sender_died_then_received_and_reaped",
            Story::daemon(2)
                .creates(&[a])
                .registers_as(0, CHILD, &[a])
                .ns(a, NsChange::Incref)
                .dies(CHILD)
                .wakes(1)
                .waits(30)
                .wakes(1)
                .waits(30)
                .registers(1, &[a])
                .ns(a, NsChange::Incref)
                .ns(a, NsChange::Decref)
                .releases(1, &[a])
                .ns(a, NsChange::Decref)
                .wakes(1)
                .waits(3)
                .wakes(1),
        ),
        (
            "in_transit_after_a_co_holder_died_survives_the_queue",
            Story::daemon(1)
                .creates_then_registers(0, &[a])
                .registers_as(0, CHILD, &[a])
                .ns(a, NsChange::Incref)
                .dies(CHILD)
                .ns(a, NsChange::Incref)
                .ns(a, NsChange::Decref)
                .releases(0, &[a])
                .wakes(1)
                .waits(30)
                .wakes(1)
                .registers_as(0, CHILD + 1, &[a])
                .ns(a, NsChange::Incref)
                .ns(a, NsChange::Decref)
                .waits(30)
                .ns(a, NsChange::Decref)
                .releases_as(0, CHILD + 1, &[a])
                .wakes(1)
                .waits(3)
                .wakes(1),
        ),
        (
            "a_nested_workers_frames_with_a_siblings_pid_are_the_connections",
            Story::daemon(1)
                .creates_then_registers(0, &[a])
                .creates(&[b])
                .registers_as(0, CHILD, &[b])
                .foreign_writer(CHILD)
                .creates(&[c])
                .registers_as(0, CHILD, &[c])
                .foreign_writer(CHILD)
                .dies(CHILD)
                .wakes(1)
                .waits(3)
                .foreign_writer(CHILD)
                .releases_as(0, CHILD, &[c])
                .wakes(1),
        ),
        (
            "a_nested_workers_release_of_a_mapping_it_inherited_spares_its_pids_process",
            Story::daemon(2)
                .registers(1, &[c])
                .creates_then_registers(0, &[a])
                .registers_as(0, CHILD, &[a])
                .ns(a, NsChange::Incref)
                .foreign_writer(CHILD)
                .releases_as(0, CHILD, &[a])
                .ns(a, NsChange::Decref)
                .foreign_writer(CHILD)
                .dies(PARENT)
                .wakes(1)
                .waits(3)
                .wakes(1),
        ),
        (
            "a_foreign_writer_leaves_a_closed_connections_holds_to_their_process",
            Story::daemon(3)
                .registers(2, &[c])
                .creates_then_registers(0, &[a])
                .sends(0, bad_free_flag(b, 2))
                .foreign_writer(PARENT)
                .ns(a, NsChange::Incref)
                .registers(1, &[a])
                .releases(1, &[a])
                .ns(a, NsChange::Decref)
                .foreign_writer(PARENT)
                .dies(PARENT)
                .wakes(1)
                .waits(3)
                .wakes(1),
        ),
        (
            "a_fifo_under_a_name_is_never_unlinked_only_forgotten",
            Story::daemon(2)
                .creates_then_registers(0, &[a, b])
                .releases(0, &[a])
                .ns(a, NsChange::Foreign)
                .ns(b, NsChange::Foreign)
                .disconnects(0)
                .wakes(1)
                .waits(2)
                .wakes(2),
        ),
        (
            "failed_unlinks_keep_the_name_and_are_retried_later",
            Story::daemon(2)
                .creates_then_registers(0, &[a])
                .ns(a, NsChange::FailUnlinks(3))
                .disconnects(0)
                .wakes(1)
                .waits(2)
                .wakes(7),
        ),
        (
            "held_chores_done_late_out_of_order_and_failing",
            Story::daemon(2)
                .creates_then_registers(0, &[a, b, c])
                .then(Event::DeferChores { on: true })
                .disconnects(0)
                .wakes(2)
                .performs(2, false)
                .performs(0, true)
                .registers(1, &[b])
                .then(Event::PerformAll)
                .waits(2)
                .wakes(2)
                .performs(1, false)
                .wakes(1)
                .performs(0, false)
                .performs(0, true)
                .then(Event::DeferChores { on: false })
                .wakes(1),
        ),
        (
            "shutdown_lingers_for_a_name_in_transit_and_its_receiver_comes",
            Story::daemon(1)
                .creates_then_registers(0, &[a, b])
                .ns(a, NsChange::Incref)
                .disconnects(0)
                .wakes(3)
                .waits(20)
                .connects(1)
                .registers(1, &[a])
                .ns(a, NsChange::Incref)
                .ns(a, NsChange::Decref)
                .ns(a, NsChange::Decref)
                .releases(1, &[a])
                .disconnects(1)
                .wakes(3),
        ),
        (
            "the_linger_is_bounded",
            Story::new(
                Setup {
                    linger_ms: 5_000,
                    ..daemon_setup()
                },
                1,
            )
            .creates_then_registers(0, &[a])
            .ns(a, NsChange::SetRefcount(5))
            .disconnects(0)
            .wakes(1)
            .waits(4)
            .wakes(1)
            .waits(4)
            .wakes(2),
        ),
        (
            "a_connection_closed_for_cause_spares_names_of_live_processes",
            Story::new(
                Setup {
                    watchable: 1 << (PARENT % 8) | 1 << (CHILD % 8),
                    ..daemon_setup()
                },
                2,
            )
            .registers(1, &[c])
            .creates(&[a, b])
            .registers_as(0, CHILD, &[a])
            .registers_as(0, CHILD + 1, &[b])
            .sends(0, bad_free_flag(a, 9))
            .waits(10)
            .dies(CHILD)
            .wakes(1)
            .waits(3)
            .dies(PARENT)
            .wakes(1)
            .waits(3),
        ),
        (
            "a_closed_connections_untrusted_holds_pass_to_the_next_writer_when_theirs_ends",
            Story::new(
                Setup {
                    watchable: 1 << (PARENT % 8) | 1 << (CHILD % 8),
                    ..daemon_setup()
                },
                2,
            )
            .registers(1, &[c])
            .creates(&[a, b])
            .registers_as(0, CHILD, &[a])
            .registers_as(0, CHILD + 1, &[b])
            .sends(0, bad_free_flag(a, 9))
            .dies(PARENT)
            .wakes(1)
            .waits(10)
            .dies(CHILD)
            .wakes(1)
            .waits(3)
            .wakes(1),
        ),
        (
            "untrusted_holds_passed_on_move_with_their_new_process",
            Story::new(
                Setup {
                    watchable: 1 << (PARENT % 8) | 1 << (CHILD % 8),
                    ..daemon_setup()
                },
                3,
            )
            .registers(1, &[c])
            .creates(&[b])
            .registers_as(0, CHILD + 1, &[b])
            .releases_as(0, CHILD, &[a])
            .sends(0, bad_free_flag(a, 9))
            .dies(PARENT)
            .registers_as(2, CHILD, &[b])
            .releases_as(2, CHILD, &[b])
            .wakes(1)
            .waits(3)
            .wakes(1),
        ),
        (
            "a_silent_connection_is_closed_and_a_half_frame_stalls",
            Story::daemon(3)
                .registers(1, &[a])
                .holds(2, register(b))
                .delivers(2, 30)
                .waits(4)
                .wakes(2),
        ),
        (
            "frames_split_across_reads_then_a_stall_times_out",
            Story::daemon(2)
                .creates(&[a])
                .holds(0, register(a))
                .holds(0, register(b))
                .delivers(0, 100)
                .delivers(0, 30)
                .registers(1, &[c])
                .then(Event::Tick { advance: 100 })
                .wakes(1),
        ),
        (
            "pipelined_registrations_and_release_in_one_read",
            Story::daemon(1)
                .holds(0, register(a))
                .holds(0, register(b))
                .holds(
                    0,
                    Piece::Release {
                        name: a,
                        pid: PARENT,
                    },
                )
                .holds(0, register(c))
                .delivers(0, 0),
        ),
        (
            "bad_free_flag_closes_only_its_connection",
            Story::daemon(2)
                .registers(0, &[a])
                .holds(0, bad_free_flag(b, 2))
                .holds(0, register(c))
                .delivers(0, 0)
                .registers(1, &[b])
                .wakes(1),
        ),
        (
            "garbage_bytes_close_the_connection",
            Story::new(lenient, 1).sends(
                0,
                Piece::Raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3)),
            ),
        ),
        (
            "stray_and_double_releases_are_ignored",
            Story::daemon(2)
                .creates_then_registers(0, &[a])
                .releases(1, &[a, b])
                .registers(0, &[b])
                .releases(0, &[b, b])
                .waits(10)
                .releases(0, &[a]),
        ),
        (
            "repeated_registration_needs_as_many_releases",
            Story::daemon(1)
                .creates(&[a])
                .registers(0, &[a, a])
                .releases(0, &[a, a, a]),
        ),
        (
            "small_tables_refuse_registrations_and_connections",
            Story::new(small, 3)
                .registers(0, &[a, b, c])
                .registers(1, &[name_pool::pick(3), name_pool::pick(4)])
                .registers_as(1, CHILD, &[a])
                .registers_as(0, CHILD, &[a])
                .disconnects(0)
                .wakes(1),
        ),
        (
            "batch_of_one_works_off_a_big_disconnect",
            Story::new(
                Setup {
                    batch: 1,
                    ..daemon_setup()
                },
                2,
            )
            .creates_then_registers(0, &[a, b, c])
            .registers_as(0, CHILD, &[b])
            .disconnects(0)
            .wakes(1)
            .registers(1, &[b])
            .wakes(3)
            .waits(3)
            .wakes(1),
        ),
        (
            "foreign_uid_rejected_and_names_outside_the_prefix_get_no",
            Story::daemon(0)
                .then(Event::Connect {
                    uid: PeerUid::Foreign,
                    pid: 1,
                })
                .then(Event::Connect {
                    uid: PeerUid::Unknown,
                    pid: 2,
                })
                .connects(1)
                .registers(0, &[a, name_pool::pick(5), b]),
        ),
        (
            "adopted_orphans_are_reaped_unless_registered_first",
            Story::daemon(1)
                .registers(0, &[c])
                .ns(a, NsChange::SetRefcount(3))
                .ns(b, NsChange::SetRefcount(3))
                .adopts(a)
                .adopts(b)
                .registers(0, &[b])
                .adopts(b)
                .wakes(1)
                .adopts(a)
                .waits(3)
                .wakes(1),
        ),
        (
            "journal_frames_are_silent_and_misuse_closes",
            Story::new(
                Setup {
                    journals: true,
                    ..daemon_setup()
                },
                2,
            )
            .registers(0, &[setup_name])
            .then(journaled(register(a)))
            .then(journaled(Piece::Release {
                name: a,
                pid: PARENT,
            }))
            .then(journaled(register(b)))
            .then(journaled(bad_free_flag(c, 3)))
            .registers(1, &[c])
            .then(Event::Evict { conn: 1 })
            .wakes(1),
        ),
        (
            "idle_shutdown_unlinks_every_known_name",
            Story::new(
                Setup {
                    reap_grace_ms: None,
                    linger_ms: 0,
                    ..daemon_setup()
                },
                2,
            )
            .creates_then_registers(0, &[a, b])
            .releases(0, &[b])
            .disconnects(0)
            .waits(30)
            .disconnects(1)
            .wakes(2),
        ),
        (
            "bytes_to_closed_and_never_issued_connections_vanish",
            Story::daemon(1)
                .disconnects(0)
                .connects(1)
                .registers(1, &[a])
                .registers(0, &[b])
                .registers(2, &[c])
                .disconnects(2)
                .then(Event::Evict { conn: 2 })
                .releases(1, &[a]),
        ),
    ];
    stories
        .into_iter()
        .map(|(name, story)| (name, story.encode()))
        .collect()
}

fn client_seeds() -> Seeds {
    let n = name_pool::pick;
    let script = |mode: AckMode, events: Vec<ClientEvent>| ClientScript { mode, events }.encode();
    let ok = |count: u8| ClientEvent::Replies { count, refusals: 0 };
    let release = |i: u8, deferrable: bool| ClientEvent::Release {
        name: n(i),
        deferrable,
    };
    let pipelined = AckMode::Pipelined { max_in_flight: 4 };
    vec![
        (
            "strict_register_and_ok",
            script(
                AckMode::Strict,
                vec![
                    ClientEvent::Register(n(0)),
                    ok(1),
                    ClientEvent::Register(n(1)),
                    ok(1),
                    release(0, false),
                ],
            ),
        ),
        (
            "pipelined_window_with_one_refusal",
            script(
                pipelined,
                vec![
                    ClientEvent::Register(n(0)),
                    ClientEvent::Register(n(1)),
                    ClientEvent::Register(n(2)),
                    ClientEvent::Register(n(3)),
                    ClientEvent::Register(n(4)),
                    ClientEvent::Replies {
                        count: 4,
                        refusals: 0b0100,
                    },
                    ClientEvent::TakeRefusal,
                ],
            ),
        ),
        (
            "deferred_releases_ride_with_the_next_registration",
            script(
                pipelined,
                vec![
                    release(0, true),
                    release(1, true),
                    release(2, true),
                    ClientEvent::Register(n(3)),
                    ok(1),
                    release(3, true),
                    ClientEvent::Flush,
                ],
            ),
        ),
        (
            "reply_split_across_reads",
            script(
                AckMode::Strict,
                vec![
                    ClientEvent::Register(n(0)),
                    ClientEvent::RawReply(b"O".to_vec()),
                    ClientEvent::RawReply(b"K".to_vec()),
                ],
            ),
        ),
        (
            "reply_that_is_not_ok",
            script(
                AckMode::Strict,
                vec![
                    ClientEvent::Register(n(0)),
                    ClientEvent::RawReply(b"OX".to_vec()),
                ],
            ),
        ),
        (
            "unsolicited_reply",
            script(pipelined, vec![ClientEvent::Register(n(0)), ok(2)]),
        ),
        (
            "manager_closed_with_registrations_unanswered",
            script(
                pipelined,
                vec![
                    ClientEvent::Register(n(0)),
                    ClientEvent::Register(n(1)),
                    ClientEvent::ManagerClosed,
                ],
            ),
        ),
        (
            "window_zero_is_clamped_to_one",
            script(
                AckMode::Pipelined { max_in_flight: 0 },
                vec![
                    ClientEvent::Register(n(0)),
                    ClientEvent::Register(n(1)),
                    ok(1),
                    ClientEvent::Register(n(1)),
                ],
            ),
        ),
    ]
}

/// Scripts for `window_check` (its module doc has the format): pid 1's
/// process ends with its end not yet reported while a new process under
/// pid 1 registers, in the ways the successor holders are for.
fn window_seeds() -> Seeds {
    // Event kinds, as `check_window` decodes them.
    const SPAWN: u8 = 0;
    const DIE: u8 = 1;
    const CONNECT: u8 = 2;
    const REGISTER: u8 = 3;
    const RELEASE: u8 = 5;
    const PICKLE: u8 = 6;
    const UNPICKLE: u8 = 7;
    const GARBAGE: u8 = 8;
    const ROUND: u8 = 10;
    const TICK: u8 = 11;
    const BEGIN_ROUND: u8 = 12;
    const READ: u8 = 13;
    const END_ROUND: u8 = 14;
    const UNMAP: u8 = 15;
    // Pid 1 is picked by 0, pid 2 by 1; a round noticing every end and
    // reading every connection, up to 8 frames each.
    const ALL: u8 = 0xff;
    let script = |events: &[&[u8]]| -> Vec<u8> {
        let mut bytes = vec![10]; // a grace of 1 s
        for event in events {
            bytes.extend_from_slice(event);
        }
        // Seven seconds and a half of ticks: the grace and a closed
        // connection's linger pass, looks are made.
        for _ in 0..30 {
            bytes.extend_from_slice(&[TICK, 25]);
        }
        bytes
    };
    // Pid 1's first process registers name 0 and is watched; it dies, and a
    // second process under pid 1 connects.
    let first_dies_and_pid_is_reused: &[&[u8]] = &[
        &[SPAWN, 0, 0],
        &[CONNECT, 0],
        &[REGISTER, 0, 0],
        &[ROUND, 0, ALL, 7],
        &[DIE, 0],
        &[SPAWN, 0, 0],
        &[CONNECT, 0],
    ];
    let with = |tail: &[&[u8]]| {
        let mut events = first_dies_and_pid_is_reused.to_vec();
        events.extend_from_slice(tail);
        script(&events)
    };
    vec![
        (
            "successor_keeps_its_name_in_transit_past_the_old_end",
            with(&[
                &[REGISTER, 0, 1],
                &[PICKLE, 0, 1],
                &[RELEASE, 0, 1],
                &[ROUND, ALL, ALL, 7],
                &[TICK, 50],
                &[UNPICKLE, 1],
            ]),
        ),
        (
            "successor_dies_in_the_window_and_a_third_registers_there",
            with(&[
                &[REGISTER, 0, 1],
                &[DIE, 0],
                &[SPAWN, 0, 0],
                &[CONNECT, 0],
                &[REGISTER, 0, 2],
                &[PICKLE, 0, 2],
                &[ROUND, ALL, ALL, 7],
            ]),
        ),
        (
            "successor_closed_for_cause_keeps_what_it_holds",
            with(&[
                &[REGISTER, 0, 1],
                &[PICKLE, 0, 1],
                &[GARBAGE, 0],
                &[ROUND, ALL, ALL, 7],
            ]),
        ),
        (
            "a_worker_on_its_familys_connection_gets_the_pid_in_the_window",
            script(&[
                &[SPAWN, 1, 0],
                &[CONNECT, 1],
                &[SPAWN, 0, 1],
                &[REGISTER, 0, 0],
                &[ROUND, 0, ALL, 7],
                &[DIE, 0],
                &[SPAWN, 0, 1],
                &[REGISTER, 0, 1],
                &[PICKLE, 0, 1],
                &[ROUND, ALL, ALL, 7],
                &[DIE, 1],
            ]),
        ),
        (
            // hostile24's finding 2: the successor dies inside the round
            // that took it, and a third process under the pid, on a
            // connection whose other processes are gone, is closed for
            // cause there.
            "third_process_in_the_window_closed_for_cause_keeps_its_name",
            script(&[
                &[SPAWN, 1, 0],
                &[CONNECT, 1],
                &[SPAWN, 0, 1],
                &[REGISTER, 0, 0],
                &[DIE, 1],
                &[ROUND, 0, ALL, 7],
                &[DIE, 0],
                &[SPAWN, 0, 0],
                &[CONNECT, 0],
                &[REGISTER, 0, 1],
                &[BEGIN_ROUND, ALL],
                &[READ, 1, 7],
                &[DIE, 0],
                &[SPAWN, 0, 1],
                &[REGISTER, 0, 2],
                &[UNMAP, 0, 2],
                &[GARBAGE, 0],
                &[END_ROUND],
            ]),
        ),
        (
            // Found by CI's fuzzing: the old process's pidfd and a frame of
            // the successor, gone by then, both report pid 1 in one round;
            // reported twice, the second report ended the third process
            // the first had promoted.
            "pid_found_ended_twice_in_a_round_is_reported_once",
            vec![
                10, 0, 1, 11, 2, 1, 0, 0, 1, 3, 0, 0, 1, 1, 10, 0, 255, 7, 1, 0, 0, 0, 0, 2, 0, 3,
                0, 1, 244, 0, 242, 254, 248, 254, 165, 0, 0, 1, 3, 0, 2, 15, 0, 2, 255, 255, 255,
                255, 255, 255, 255, 0, 10, 0, 255, 7, 1, 4, 0, 0, 0, 2, 0, 3, 0, 1, 12, 255, 13, 1,
                7, 1, 91, 0, 0, 1, 3, 0, 2, 15, 0, 2, 8, 0, 14, 11, 25, 11, 25, 11, 1, 7, 1, 91, 0,
                0, 1, 3, 0, 2, 15, 0, 2, 8, 11, 236, 25,
            ],
        ),
        (
            "the_old_end_noticed_a_round_late",
            with(&[
                &[REGISTER, 0, 1],
                &[ROUND, 0, 0, 0],
                &[PICKLE, 0, 1],
                &[RELEASE, 0, 1],
                &[ROUND, ALL, ALL, 7],
                &[DIE, 0],
                &[ROUND, ALL, ALL, 7],
            ]),
        ),
    ]
}
