//! The benches' ceiling, `answer-only-manager`, must speak the protocol as a
//! manager does, or the figures beside it mean nothing: one `OK` per
//! registration however the frames are split, none for a release, and it
//! exits with its directory once no client has been connected for two
//! seconds.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use libshm_core::frame::Frame;
use libshm_core::name::SegmentName;
use libshm_unix::Launcher;

const CEILING: &str = env!("CARGO_BIN_EXE_answer-only-manager");

fn frames(pid: i32) -> Vec<u8> {
    let name = |n: u32| -> SegmentName { format!("/answer_only_{pid}_{n}").parse().unwrap() };
    [
        Frame::register(pid, name(1)),
        Frame::release(pid, name(1)),
        Frame::register(pid, name(2)),
        Frame::register(pid, name(3)),
        Frame::release(pid, name(2)),
    ]
    .iter()
    .flat_map(|frame| frame.encode())
    .collect()
}

fn answers_each_registration(args: &[&str]) {
    let launched = Launcher::new(CEILING)
        .args(args.iter().copied())
        .launch()
        .expect("launch answer-only-manager");
    let socket = Path::new(launched.handle.as_str()).to_path_buf();
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let bytes = frames(std::process::id() as i32);
    // Split mid-frame, and across the `free` byte of the second frame.
    for piece in [&bytes[..3], &bytes[3..72], &bytes[72..150], &bytes[150..]] {
        stream.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut answers = [0u8; 6];
    stream.read_exact(&mut answers).expect("three answers");
    assert_eq!(&answers, b"OKOKOK");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut more = [0u8; 1];
    assert!(
        stream.read(&mut more).is_err(),
        "an answer to a release, or a fourth answer"
    );
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while socket.exists() {
        assert!(
            Instant::now() < deadline,
            "still there 10 s after its last client left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!socket.parent().unwrap().exists(), "its directory stayed");
}

#[test]
fn answers_each_registration_once_and_exits_when_lonely() {
    answers_each_registration(&[]);
}

#[test]
fn answers_each_registration_once_while_spinning() {
    answers_each_registration(&["--spin", "200"]);
}
