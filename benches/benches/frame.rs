//! Encoding and parsing the 68-byte frame, beside a plain 68-byte copy (the
//! least any implementation does with a frame).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use libshm_core::frame::{FRAME_LEN, Frame};
use libshm_core::name::SegmentName;

fn frames(c: &mut Criterion) {
    let name = SegmentName::new(b"/torch_123456_2818733214_42").expect("valid name");
    let frame = Frame::register(123_456, name);
    let bytes = frame.encode();
    let mut garbage = bytes;
    garbage[4] = 9;
    let mut group = c.benchmark_group("frame");
    group.bench_function("copy 68 bytes (baseline)", |b| {
        b.iter(|| black_box(*black_box(&bytes)))
    });
    group.bench_function("encode", |b| {
        b.iter(|| black_box(black_box(&frame).encode()))
    });
    group.bench_function("parse valid", |b| {
        b.iter(|| black_box(Frame::parse(black_box(&bytes))))
    });
    group.bench_function("parse invalid", |b| {
        b.iter(|| black_box(Frame::parse(black_box(&garbage))))
    });
    group.finish();
    assert_eq!(bytes.len(), FRAME_LEN);
}

criterion_group!(benches, frames);
criterion_main!(benches);
