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
    let targets: [(&str, Seeds); 4] = [
        ("frame", frame_seeds()),
        ("handshake", handshake_seeds()),
        ("manager", manager_seeds()),
        ("client", client_seeds()),
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

fn manager_seeds() -> Seeds {
    let a = name_pool::pick(0);
    let b = name_pool::pick(1);
    let c = name_pool::pick(2);
    const PARENT: u8 = 42;
    const CHILD: u8 = 43;
    const CONNECT: Event = Event::Connect {
        uid: PeerUid::Owner,
        pid: PARENT,
    };
    let send = |conn: u8, piece: Piece| Event::Send {
        conn,
        piece,
        hold_back: false,
    };
    let hold = |conn: u8, piece: Piece| Event::Send {
        conn,
        piece,
        hold_back: true,
    };
    let register = |name: SegmentName| Piece::Register { name, pid: PARENT };
    let release = |name: SegmentName| Piece::Release { name, pid: PARENT };
    let register_as = |pid: u8, name: SegmentName| Piece::Register { name, pid };
    let release_as = |pid: u8, name: SegmentName| Piece::Release { name, pid };
    let ns = |name: SegmentName, change: NsChange| Event::Namespace { name, change };
    let created = |name: SegmentName| ns(name, NsChange::Create);
    let unlinked = |name: SegmentName| ns(name, NsChange::Remove);
    let died = |pid: u8| Event::PidExited { pid };
    let wait = |seconds: u8| Event::Tick {
        advance: 128 + seconds * 4,
    };
    let script = |setup: Setup, events: Vec<Event>| ManagerScript { setup, events }.encode();
    let small = Setup {
        storage: StorageChoice::Small,
        ..daemon_setup()
    };
    let lenient = Setup {
        torch_prefix_only: false,
        owner_uid_only: false,
        ..daemon_setup()
    };

    vec![
        (
            "our_client_unlinks_then_releases_then_idle_shutdown",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    unlinked(a),
                    send(0, release(a)),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "pytorch_client_releases_then_unlinks_so_a_look_forgets",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    send(0, release(a)),
                    ns(a, NsChange::LastClose),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "crash_while_holding_then_reaped_when_grace_runs_out",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    created(b),
                    send(0, register(a)),
                    send(0, register(b)),
                    send(1, register(b)),
                    ns(b, NsChange::Incref),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    wait(1),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    send(1, release(b)),
                    ns(b, NsChange::Decref),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "orphan_registered_again_is_not_reaped",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    Event::Tick { advance: 50 },
                    send(1, register(a)),
                    ns(a, NsChange::Incref),
                    Event::TickAtWakeup,
                    wait(20),
                ],
            ),
        ),
        (
            "two_pids_on_one_connection_one_killed_only_its_names_reaped",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    created(b),
                    send(0, register_as(CHILD, b)),
                    created(c),
                    send(0, register_as(CHILD, c)),
                    send(0, register(c)),
                    ns(c, NsChange::Incref),
                    died(CHILD),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    wait(2),
                    Event::TickAtWakeup,
                    send(0, register(a)),
                ],
            ),
        ),
        (
            "a_forked_child_drops_its_parents_name_on_the_shared_connection",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    send(0, register_as(CHILD, b)),
                    send(0, release_as(CHILD, a)),
                    send(0, release_as(CHILD, a)),
                    died(CHILD),
                    Event::TickAtWakeup,
                    wait(3),
                ],
            ),
        ),
        (
            "unwatchable_pids_are_held_as_long_as_their_connection",
            script(
                Setup {
                    watchable: 1 << (PARENT % 8),
                    ..daemon_setup()
                },
                vec![
                    CONNECT,
                    CONNECT,
                    send(1, register(b)),
                    created(a),
                    send(0, register_as(CHILD, a)),
                    send(0, register_as(CHILD + 8, a)),
                    ns(a, NsChange::Incref),
                    died(CHILD),
                    wait(10),
                    send(0, release_as(CHILD + 16, a)),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    wait(3),
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "in_transit_after_its_sender_died_then_received_and_reaped",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    send(0, register_as(CHILD, a)),
                    ns(a, NsChange::Incref),
                    died(CHILD),
                    Event::TickAtWakeup,
                    wait(30),
                    Event::TickAtWakeup,
                    wait(30),
                    send(1, register(a)),
                    ns(a, NsChange::Incref),
                    ns(a, NsChange::Decref),
                    send(1, release(a)),
                    ns(a, NsChange::Decref),
                    Event::TickAtWakeup,
                    wait(3),
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "in_transit_after_a_co_holder_died_survives_the_queue",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    send(0, register_as(CHILD, a)),
                    ns(a, NsChange::Incref),
                    died(CHILD),
                    ns(a, NsChange::Incref),
                    ns(a, NsChange::Decref),
                    send(0, release(a)),
                    Event::TickAtWakeup,
                    wait(30),
                    Event::TickAtWakeup,
                    send(0, register_as(CHILD + 1, a)),
                    ns(a, NsChange::Incref),
                    ns(a, NsChange::Decref),
                    wait(30),
                    ns(a, NsChange::Decref),
                    send(0, release_as(CHILD + 1, a)),
                    Event::TickAtWakeup,
                    wait(3),
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "a_fifo_under_a_name_is_never_unlinked_only_forgotten",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    created(b),
                    send(0, register(a)),
                    send(0, register(b)),
                    send(0, release(a)),
                    ns(a, NsChange::Foreign),
                    ns(b, NsChange::Foreign),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    wait(2),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "failed_unlinks_keep_the_name_and_are_retried_later",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    ns(a, NsChange::FailUnlinks(3)),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    wait(2),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "held_chores_done_late_out_of_order_and_failing",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    created(b),
                    created(c),
                    send(0, register(a)),
                    send(0, register(b)),
                    send(0, register(c)),
                    Event::DeferChores { on: true },
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::Perform {
                        pick: 2,
                        fail: false,
                    },
                    Event::Perform {
                        pick: 0,
                        fail: true,
                    },
                    send(1, register(b)),
                    Event::PerformAll,
                    wait(2),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::Perform {
                        pick: 1,
                        fail: false,
                    },
                    Event::TickAtWakeup,
                    Event::Perform {
                        pick: 0,
                        fail: false,
                    },
                    Event::Perform {
                        pick: 0,
                        fail: true,
                    },
                    Event::DeferChores { on: false },
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "shutdown_lingers_for_a_name_in_transit_and_its_receiver_comes",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    created(a),
                    created(b),
                    send(0, register(a)),
                    send(0, register(b)),
                    ns(a, NsChange::Incref),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    wait(20),
                    CONNECT,
                    send(1, register(a)),
                    ns(a, NsChange::Incref),
                    ns(a, NsChange::Decref),
                    ns(a, NsChange::Decref),
                    send(1, release(a)),
                    Event::Disconnect { conn: 1 },
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "the_linger_is_bounded",
            script(
                Setup {
                    linger_ms: 5_000,
                    ..daemon_setup()
                },
                vec![
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    ns(a, NsChange::SetRefcount(5)),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    wait(4),
                    Event::TickAtWakeup,
                    wait(4),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "a_connection_closed_for_cause_spares_names_of_live_processes",
            script(
                Setup {
                    watchable: 1 << (PARENT % 8) | 1 << (CHILD % 8),
                    ..daemon_setup()
                },
                vec![
                    CONNECT,
                    CONNECT,
                    send(1, register(c)),
                    created(a),
                    created(b),
                    send(0, register_as(CHILD, a)),
                    send(0, register_as(CHILD + 1, b)),
                    send(
                        0,
                        Piece::Mangled {
                            name: a,
                            at: 4,
                            value: 9,
                        },
                    ),
                    wait(10),
                    died(CHILD),
                    Event::TickAtWakeup,
                    wait(3),
                    died(PARENT),
                    Event::TickAtWakeup,
                    wait(3),
                ],
            ),
        ),
        (
            "a_silent_connection_is_closed_and_a_half_frame_stalls",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    CONNECT,
                    send(1, register(a)),
                    hold(2, register(b)),
                    Event::Deliver {
                        conn: 2,
                        max_bytes: 30,
                    },
                    wait(4),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "frames_split_across_reads_then_a_stall_times_out",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    hold(0, register(a)),
                    hold(0, register(b)),
                    Event::Deliver {
                        conn: 0,
                        max_bytes: 100,
                    },
                    Event::Deliver {
                        conn: 0,
                        max_bytes: 30,
                    },
                    send(1, register(c)),
                    Event::Tick { advance: 100 },
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "pipelined_registrations_and_release_in_one_read",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    hold(0, register(a)),
                    hold(0, register(b)),
                    hold(0, release(a)),
                    hold(0, register(c)),
                    Event::Deliver {
                        conn: 0,
                        max_bytes: 0,
                    },
                ],
            ),
        ),
        (
            "bad_free_flag_closes_only_its_connection",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    send(0, register(a)),
                    hold(
                        0,
                        Piece::Mangled {
                            name: b,
                            at: 4,
                            value: 2,
                        },
                    ),
                    hold(0, register(c)),
                    Event::Deliver {
                        conn: 0,
                        max_bytes: 0,
                    },
                    send(1, register(b)),
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "garbage_bytes_close_the_connection",
            script(
                lenient,
                vec![
                    CONNECT,
                    send(
                        0,
                        Piece::Raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3)),
                    ),
                ],
            ),
        ),
        (
            "stray_and_double_releases_are_ignored",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    send(1, release(a)),
                    send(1, release(b)),
                    send(0, register(b)),
                    send(0, release(b)),
                    send(0, release(b)),
                    wait(10),
                    send(0, release(a)),
                ],
            ),
        ),
        (
            "repeated_registration_needs_as_many_releases",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    created(a),
                    send(0, register(a)),
                    send(0, register(a)),
                    send(0, release(a)),
                    send(0, release(a)),
                    send(0, release(a)),
                ],
            ),
        ),
        (
            "small_tables_refuse_registrations_and_connections",
            script(
                small,
                vec![
                    CONNECT,
                    CONNECT,
                    CONNECT,
                    send(0, register(a)),
                    send(0, register(b)),
                    send(0, register(c)),
                    send(1, register(name_pool::pick(3))),
                    send(1, register(name_pool::pick(4))),
                    send(1, register_as(CHILD, a)),
                    send(0, register_as(CHILD, a)),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "batch_of_one_works_off_a_big_disconnect",
            script(
                Setup {
                    batch: 1,
                    ..daemon_setup()
                },
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    created(b),
                    created(c),
                    send(0, register(a)),
                    send(0, register(b)),
                    send(0, register(c)),
                    send(0, register_as(CHILD, b)),
                    Event::Disconnect { conn: 0 },
                    Event::TickAtWakeup,
                    send(1, register(b)),
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                    wait(3),
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "foreign_uid_rejected_and_names_outside_the_prefix_get_no",
            script(
                daemon_setup(),
                vec![
                    Event::Connect {
                        uid: PeerUid::Foreign,
                        pid: 1,
                    },
                    Event::Connect {
                        uid: PeerUid::Unknown,
                        pid: 2,
                    },
                    CONNECT,
                    send(0, register(a)),
                    send(0, register(name_pool::pick(5))),
                    send(0, register(b)),
                ],
            ),
        ),
        (
            "adopted_orphans_are_reaped_unless_registered_first",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    send(0, register(c)),
                    ns(a, NsChange::SetRefcount(3)),
                    ns(b, NsChange::SetRefcount(3)),
                    Event::Adopt { name: a },
                    Event::Adopt { name: b },
                    send(0, register(b)),
                    Event::Adopt { name: b },
                    Event::TickAtWakeup,
                    Event::Adopt { name: a },
                    wait(3),
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "journal_frames_are_silent_and_misuse_closes",
            script(
                Setup {
                    journals: true,
                    ..daemon_setup()
                },
                vec![
                    CONNECT,
                    CONNECT,
                    send(
                        0,
                        Piece::Register {
                            name: SegmentName::new(journal::SETUP_NAME.as_bytes())
                                .expect("reserved names are valid"),
                            pid: PARENT,
                        },
                    ),
                    Event::Journaled {
                        conn: 0,
                        piece: register(a),
                    },
                    Event::Journaled {
                        conn: 0,
                        piece: release(a),
                    },
                    Event::Journaled {
                        conn: 0,
                        piece: register(b),
                    },
                    Event::Journaled {
                        conn: 0,
                        piece: Piece::Mangled {
                            name: c,
                            at: 4,
                            value: 3,
                        },
                    },
                    send(1, register(c)),
                    Event::Evict { conn: 1 },
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "idle_shutdown_unlinks_every_known_name",
            script(
                Setup {
                    reap_grace_ms: None,
                    linger_ms: 0,
                    ..daemon_setup()
                },
                vec![
                    CONNECT,
                    CONNECT,
                    created(a),
                    created(b),
                    send(0, register(a)),
                    send(0, register(b)),
                    send(0, release(b)),
                    Event::Disconnect { conn: 0 },
                    wait(30),
                    Event::Disconnect { conn: 1 },
                    Event::TickAtWakeup,
                    Event::TickAtWakeup,
                ],
            ),
        ),
        (
            "bytes_to_closed_and_never_issued_connections_vanish",
            script(
                daemon_setup(),
                vec![
                    CONNECT,
                    Event::Disconnect { conn: 0 },
                    CONNECT,
                    send(1, register(a)),
                    send(0, register(b)),
                    send(2, register(c)),
                    Event::Disconnect { conn: 2 },
                    Event::Evict { conn: 2 },
                    send(1, release(a)),
                ],
            ),
        ),
    ]
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
