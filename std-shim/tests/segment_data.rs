//! A segment's data through the safe API: typed values, atomic views shared
//! by several processes, the `io` cursor, and the bounds and alignment
//! checks on each.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytemuck::{Pod, Zeroable};
use libshm::{OutOfBounds, ShareHandle, SharedSegment, ViewError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Header {
    magic: u32,
    version: u16,
    flags: u16,
    len: u64,
}

#[test]
fn pod_values_round_trip_at_any_offset() {
    let segment = SharedSegment::create(256).unwrap();
    let header = Header {
        magic: 0x5348_4d21,
        version: 3,
        flags: 0x8001,
        len: 1 << 40,
    };
    for offset in [0, 1, 7, 64, 256 - 16] {
        segment.write_obj(offset, header).unwrap();
        assert_eq!(segment.read_obj::<Header>(offset).unwrap(), header);
    }
    let mut raw = [0u8; 16];
    segment.read_at(256 - 16, &mut raw).unwrap();
    assert_eq!(
        raw,
        bytemuck::bytes_of(&header),
        "the bytes are the value's"
    );
    assert_eq!(
        segment.read_obj::<Header>(256 - 15),
        Err(OutOfBounds {
            start: 241,
            end: 257,
            len: 256
        })
    );
    assert!(segment.write_obj(usize::MAX, 1u8).is_err());
}

#[test]
fn atomic_views_check_bounds_and_alignment() {
    let segment = SharedSegment::create(64).unwrap();
    let words = segment.atomics::<AtomicU64>(8, 7).unwrap();
    assert_eq!(words.len(), 7);
    words[0].store(41, Ordering::Relaxed);
    words[0].fetch_add(1, Ordering::Relaxed);
    assert_eq!(segment.read_obj::<u64>(8).unwrap(), 42);
    assert_eq!(
        segment.atomics::<AtomicU64>(8, 8).unwrap_err(),
        ViewError::OutOfBounds(OutOfBounds {
            start: 8,
            end: 72,
            len: 64
        })
    );
    assert_eq!(
        segment.atomics::<AtomicU32>(2, 1).unwrap_err(),
        ViewError::Misaligned {
            offset: 2,
            align: 4
        }
    );
    assert!(matches!(
        segment.atomics::<AtomicU64>(0, usize::MAX),
        Err(ViewError::OutOfBounds(_))
    ));
    assert!(segment.atomics::<AtomicU32>(64, 0).unwrap().is_empty());
}

/// Set in the child processes of the next test: the share handle to open.
const COUNTER_CHILD: &str = "LIBSHM_TEST_COUNTER_SHARE";
const ADDS: u64 = 20_000;

#[test]
fn atomic_counters_add_up_across_processes() {
    if let Ok(text) = std::env::var(COUNTER_CHILD) {
        let segment = text.parse::<ShareHandle>().unwrap().open().unwrap();
        let counters = segment.atomics::<AtomicU64>(0, 2).unwrap();
        for _ in 0..ADDS {
            counters[0].fetch_add(1, Ordering::Relaxed);
            counters[1].fetch_add(2, Ordering::Relaxed);
        }
        return;
    }
    let segment = SharedSegment::create(4096).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "atomic_counters_add_up_across_processes"])
                .env(COUNTER_CHILD, segment.share().unwrap().to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let counters = segment.atomics::<AtomicU64>(0, 2).unwrap();
    for _ in 0..ADDS {
        counters[0].fetch_add(1, Ordering::Relaxed);
        counters[1].fetch_add(2, Ordering::Relaxed);
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(counters[0].load(Ordering::Relaxed), 3 * ADDS);
    assert_eq!(counters[1].load(Ordering::Relaxed), 6 * ADDS);
    assert_eq!(segment.refcount_now(), 1, "both children let go");
}

#[test]
fn the_cursor_reads_writes_and_seeks_like_io_cursor() {
    let segment = SharedSegment::create(100).unwrap();
    let mut cursor = segment.cursor();
    cursor.write_all(b"hello, ").unwrap();
    write!(cursor, "segment {}", 42).unwrap();
    assert_eq!(cursor.position(), 17);
    cursor.rewind().unwrap();
    let mut text = [0u8; 17];
    cursor.read_exact(&mut text).unwrap();
    assert_eq!(&text, b"hello, segment 42");

    assert_eq!(cursor.seek(SeekFrom::End(-3)).unwrap(), 97);
    assert_eq!(cursor.write(b"12345").unwrap(), 3, "stops at the end");
    assert_eq!(cursor.write(b"x").unwrap(), 0);
    assert_eq!(
        cursor.write_all(b"x").unwrap_err().kind(),
        std::io::ErrorKind::WriteZero
    );
    let mut rest = Vec::new();
    assert_eq!(cursor.read_to_end(&mut rest).unwrap(), 0);

    assert_eq!(cursor.seek(SeekFrom::Current(-5)).unwrap(), 95);
    cursor.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, [0, 0, b'1', b'2', b'3']);
    assert_eq!(cursor.seek(SeekFrom::Start(1_000)).unwrap(), 1_000);
    assert_eq!(
        cursor.read(&mut [0; 4]).unwrap(),
        0,
        "past the end reads nothing"
    );
    assert!(cursor.seek(SeekFrom::Current(-2_000)).is_err());

    // Streams in and out with io::copy.
    let mut source = std::io::repeat(9).take(100);
    let mut cursor = segment.cursor();
    assert_eq!(std::io::copy(&mut source, &mut cursor).unwrap(), 100);
    let mut sink = Vec::new();
    cursor.set_position(0);
    std::io::copy(&mut cursor, &mut sink).unwrap();
    assert_eq!(sink, [9; 100]);
}

#[test]
fn touch_keeps_every_byte_and_fill_sets_every_byte() {
    let segment = SharedSegment::create(3 * 4096 + 5).unwrap();
    segment.fill(0xa5);
    segment.write_at(4096, b"page two").unwrap();
    segment.touch();
    let mut all = vec![0u8; segment.len()];
    segment.read_at(0, &mut all).unwrap();
    assert_eq!(&all[4096..4104], b"page two");
    assert!(all[..4096].iter().chain(&all[4104..]).all(|&b| b == 0xa5));
}

#[test]
fn unsafe_slices_see_what_the_safe_api_wrote() {
    let mut segment = SharedSegment::create(16).unwrap();
    segment.write_at(0, b"0123456789abcdef").unwrap();
    // SAFETY: the segment is this test's alone; nothing writes it meanwhile.
    assert_eq!(unsafe { segment.as_slice() }, b"0123456789abcdef");
    // SAFETY: as above; `&mut` excludes this process's other users.
    let data = unsafe { segment.as_mut_slice() };
    data[..4].copy_from_slice(b"ABCD");
    assert_eq!(segment.read_obj::<[u8; 4]>(0).unwrap(), *b"ABCD");
}
