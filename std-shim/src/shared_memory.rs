//! Reading and writing memory that other processes may write at any time.
//!
//! Rust's memory model makes two unsynchronized accesses to the same bytes a
//! data race, which is undefined behaviour, unless both are atomic. A
//! segment's data is exactly such memory: every process that maps it may
//! write any byte at any moment. So nothing here makes a `&[u8]` over it or
//! copies it with `memcpy`; every access is a Relaxed atomic one: aligned
//! 8-byte words through `AtomicU64`, the unaligned ends byte by byte through
//! `AtomicU8`. Relaxed loads and stores compile to plain moves, so a copy
//! runs at word-at-a-time speed. This is vm-memory's `VolatileSlice` idea,
//! with atomics instead of volatile accesses, which also rules out a race
//! with another thread of this process.
//!
//! A copy is not a snapshot: a concurrent writer may be seen half done, and
//! only each aligned word is read or written whole. Processes that need
//! more agree on their own synchronization, for instance through the
//! [`SharedAtomic`] views.
//!
//! Overlapping atomic accesses of different sizes (a byte copy over a range
//! another thread uses as an `AtomicU32`) are outside Rust's model even when
//! both are atomic; keep ranges used as atomics apart from ranges copied.

use std::mem::size_of;
use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64,
    Ordering::Relaxed,
};

/// Bytes per word of a copy.
const WORD: usize = size_of::<u64>();

/// Copies `out.len()` bytes starting at `src` into `out`.
///
/// # Safety
/// `src..src + out.len()` is valid for reads and writes for the whole call,
/// and is accessed only atomically by this process meanwhile (other
/// processes are not ours to rule).
pub(crate) unsafe fn copy_out(src: *const u8, out: &mut [u8]) {
    let src = src.cast_mut();
    let head = head_len(src, out.len());
    let (head_out, rest) = out.split_at_mut(head);
    for (i, byte) in head_out.iter_mut().enumerate() {
        // SAFETY: i < head <= out.len(): inside the caller's range.
        *byte = unsafe { byte_at(src.add(i)) }.load(Relaxed);
    }
    let mut words = rest.chunks_exact_mut(WORD);
    let mut at = head;
    for chunk in &mut words {
        // SAFETY: `src + at` is 8-aligned (head_len) and the 8 bytes lie in
        // the caller's range, since `chunk` does in `out`.
        let word = unsafe { word_at(src.add(at)) }.load(Relaxed);
        chunk.copy_from_slice(&word.to_ne_bytes());
        at += WORD;
    }
    for byte in words.into_remainder() {
        // SAFETY: at < out.len(): inside the caller's range.
        *byte = unsafe { byte_at(src.add(at)) }.load(Relaxed);
        at += 1;
    }
}

/// Copies `data` into memory starting at `dst`.
///
/// # Safety
/// As for [`copy_out`], for `dst..dst + data.len()`.
pub(crate) unsafe fn copy_in(dst: *mut u8, data: &[u8]) {
    let head = head_len(dst, data.len());
    let (head_data, rest) = data.split_at(head);
    for (i, &byte) in head_data.iter().enumerate() {
        // SAFETY: i < head <= data.len(): inside the caller's range.
        unsafe { byte_at(dst.add(i)) }.store(byte, Relaxed);
    }
    let mut words = rest.chunks_exact(WORD);
    let mut at = head;
    for chunk in &mut words {
        let mut word = [0u8; WORD];
        word.copy_from_slice(chunk);
        // SAFETY: `dst + at` is 8-aligned and the word is in range, as in copy_out.
        unsafe { word_at(dst.add(at)) }.store(u64::from_ne_bytes(word), Relaxed);
        at += WORD;
    }
    for &byte in words.remainder() {
        // SAFETY: at < data.len(): inside the caller's range.
        unsafe { byte_at(dst.add(at)) }.store(byte, Relaxed);
        at += 1;
    }
}

/// Sets `len` bytes starting at `dst` to `byte`.
///
/// # Safety
/// As for [`copy_out`], for `dst..dst + len`.
pub(crate) unsafe fn fill(dst: *mut u8, len: usize, byte: u8) {
    let head = head_len(dst, len);
    let word = u64::from_ne_bytes([byte; WORD]);
    let words_end = head + (len - head) / WORD * WORD;
    for i in (0..head).chain(words_end..len) {
        // SAFETY: i < len: inside the caller's range.
        unsafe { byte_at(dst.add(i)) }.store(byte, Relaxed);
    }
    for at in (head..words_end).step_by(WORD) {
        // SAFETY: `dst + at` is 8-aligned and at + 8 <= words_end <= len.
        unsafe { word_at(dst.add(at)) }.store(word, Relaxed);
    }
}

/// Makes the page holding `at` present and writable in this process without
/// changing its contents: a compare-exchange of a byte with itself writes
/// (so the kernel backs the page for writing) but never changes a byte
/// another process wrote meanwhile.
///
/// # Safety
/// As for [`copy_out`], for the one byte at `at`.
pub(crate) unsafe fn touch(at: *mut u8) {
    // SAFETY: the caller's contract.
    let cell = unsafe { byte_at(at) };
    let seen = cell.load(Relaxed);
    // A failure means someone wrote the byte meanwhile: the page is backed.
    let _ = cell.compare_exchange(seen, seen, Relaxed, Relaxed);
}

/// Bytes before the first 8-aligned address at or after `ptr`, at most `len`.
fn head_len(ptr: *const u8, len: usize) -> usize {
    ((WORD - ptr.addr() % WORD) % WORD).min(len)
}

/// # Safety
/// `ptr` is valid for reads and writes while the result is used, and only
/// accessed atomically meanwhile.
unsafe fn byte_at<'a>(ptr: *mut u8) -> &'a AtomicU8 {
    // SAFETY: the caller's contract is AtomicU8::from_ptr's (any address is
    // aligned for a byte).
    unsafe { AtomicU8::from_ptr(ptr) }
}

/// # Safety
/// As for [`byte_at`], for 8 bytes at an 8-aligned `ptr`.
unsafe fn word_at<'a>(ptr: *mut u8) -> &'a AtomicU64 {
    debug_assert!(ptr.addr().is_multiple_of(WORD));
    // SAFETY: the caller guarantees alignment, validity and atomic-only access.
    unsafe { AtomicU64::from_ptr(ptr.cast::<u64>()) }
}

/// An atomic integer that may be laid over shared memory: every bit pattern
/// is a valid value, and its size equals its alignment, so a run of them
/// tiles a range with no gaps. Implemented for the fixed-width atomic
/// integers (not `AtomicUsize`, whose width differs between a 32-bit and a
/// 64-bit process sharing the segment).
pub trait SharedAtomic: sealed::Sealed + Sync {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! shared_atomic {
    ($($atomic:ty),*) => {$(
        impl sealed::Sealed for $atomic {}
        impl SharedAtomic for $atomic {}
        const _: () = assert!(size_of::<$atomic>() == align_of::<$atomic>());
    )*};
}

shared_atomic!(
    AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicI8, AtomicI16, AtomicI32, AtomicI64
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer whose start is 8-aligned, so offsets into it control alignment.
    #[repr(C, align(8))]
    struct Aligned([u8; 64]);

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn copies_round_trip_at_every_alignment_and_length() {
        let mut memory = Aligned([0; 64]);
        let base = memory.0.as_mut_ptr();
        for start in 0..9 {
            for len in 0..(64 - start).min(40) {
                let data = pattern(len);
                // SAFETY: start + len <= 64, inside `memory`, which nothing
                // else touches meanwhile.
                unsafe { copy_in(base.add(start), &data) };
                let mut out = vec![0xee; len];
                // SAFETY: as above.
                unsafe { copy_out(base.add(start), &mut out) };
                assert_eq!(out, data, "start {start}, len {len}");
            }
        }
    }

    #[test]
    fn writes_touch_only_their_range() {
        for start in 0..9 {
            for len in 0..30 {
                let mut memory = Aligned([0xaa; 64]);
                let base = memory.0.as_mut_ptr();
                // SAFETY: start + len < 64, inside `memory`.
                unsafe { copy_in(base.add(start), &vec![1; len]) };
                let mut filled = Aligned([0xaa; 64]);
                // SAFETY: as above.
                unsafe { fill(filled.0.as_mut_ptr().add(start), len, 1) };
                for (i, (&copied, &set)) in memory.0.iter().zip(&filled.0).enumerate() {
                    let inside = (start..start + len).contains(&i);
                    let want = if inside { 1 } else { 0xaa };
                    assert_eq!((copied, set), (want, want), "byte {i}, range {start}+{len}");
                }
            }
        }
    }

    #[test]
    fn touching_keeps_the_byte() {
        let mut memory = Aligned([9; 64]);
        // SAFETY: byte 13 of `memory`.
        unsafe { touch(memory.0.as_mut_ptr().add(13)) };
        assert_eq!(memory.0, [9; 64]);
    }

    #[test]
    fn concurrent_copies_see_whole_words() {
        // Another thread plays the other process: it writes whole words of
        // one repeated byte; every aligned word we copy out is one of them.
        use std::sync::Arc;
        let memory = Arc::new([const { AtomicU64::new(0) }; 8]);
        let writer = {
            let memory = Arc::clone(&memory);
            std::thread::spawn(move || {
                for round in 0..if cfg!(miri) { 50 } else { 20_000 } {
                    let byte = (round % 251) as u8;
                    // SAFETY: the 64 bytes of `memory`, accessed only atomically.
                    unsafe { fill(memory.as_ptr().cast::<u8>().cast_mut(), 64, byte) };
                }
            })
        };
        let mut out = [0u8; 64];
        for _ in 0..if cfg!(miri) { 50 } else { 20_000 } {
            // SAFETY: as above.
            unsafe { copy_out(memory.as_ptr().cast::<u8>(), &mut out) };
            for word in out.chunks_exact(8) {
                assert!(word.iter().all(|&b| b == word[0]), "torn word {word:?}");
            }
        }
        writer.join().unwrap();
    }
}
