//! Acquiring and releasing a reference in the shared header (a
//! compare-and-swap loop that refuses to resurrect a released segment),
//! beside a bare `fetch_add`/`fetch_sub` pair, the floor any refcount pays.

use std::hint::black_box;
use std::sync::atomic::{AtomicI32, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use libshm_core::header::Refcount;

fn refcounts(c: &mut Criterion) {
    let mut group = c.benchmark_group("refcount");
    let bare = AtomicI32::new(1);
    group.bench_function("fetch_add + fetch_sub (floor)", |b| {
        b.iter(|| {
            black_box(bare.fetch_add(1, Ordering::SeqCst));
            black_box(bare.fetch_sub(1, Ordering::SeqCst));
        })
    });
    let cell = AtomicI32::new(1);
    let refcount = Refcount::from_atomic(&cell);
    group.bench_function("acquire + release", |b| {
        b.iter(|| {
            black_box(refcount.acquire().expect("acquire"));
            black_box(refcount.release().expect("release"));
        })
    });
    group.finish();
}

criterion_group!(benches, refcounts);
criterion_main!(benches);
