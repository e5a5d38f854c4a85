//! Runs the window check on pseudo-random inputs, so a plain `cargo test`
//! opens the successor window thousands of times without the fuzzer.

use libshm_fuzz::window_check::{Coverage, check_window, check_window_counting};

/// xorshift64*: deterministic, so a failure names its input.
fn inputs(count: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut state = seed;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..count).map(move |_| {
        let len = 16 + (next() % 600) as usize;
        (0..len).map(|_| next() as u8).collect()
    })
}

#[test]
fn random_scripts_never_unlink_a_name_in_use() {
    let runs: usize = std::env::var("WINDOW_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(20_000);
    let seed = std::env::var("WINDOW_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let mut total = Coverage::default();
    for (i, input) in inputs(runs, seed).enumerate() {
        match std::panic::catch_unwind(|| check_window_counting(&input)) {
            Ok(seen) => {
                total.successors += seen.successors;
                total.promoted += seen.promoted;
                total.dropped += seen.dropped;
                total.unlinks += seen.unlinks;
            }
            Err(_) => panic!("input {i} failed; shrunk: {:?}", shrink(input)),
        }
    }
    eprintln!("{runs} inputs: {total:?}");
    // The window is reached, not just the manager's other paths.
    assert!(
        total.successors > 0 && total.promoted > 0 && total.dropped > 0 && total.unlinks > 0,
        "{total:?}"
    );
}

fn fails(input: &[u8]) -> bool {
    std::panic::catch_unwind(|| check_window(input)).is_err()
}

/// A shorter input that fails too: runs of bytes dropped while it does.
fn shrink(mut input: Vec<u8>) -> Vec<u8> {
    std::panic::set_hook(Box::new(|_| {}));
    let mut run = input.len() / 2;
    while run > 0 {
        let mut at = 1;
        while at + run <= input.len() {
            let mut shorter = input.clone();
            shorter.drain(at..at + run);
            if fails(&shorter) {
                input = shorter;
            } else {
                at += 1;
            }
        }
        run /= 2;
    }
    let _ = std::panic::take_hook();
    input
}

/// Replays the input in `WINDOW_INPUT` (a Rust byte list, as a failure
/// prints it), `WINDOW_TRACE=1` to see what happens.
#[test]
fn replay() {
    let Ok(text) = std::env::var("WINDOW_INPUT") else {
        return;
    };
    let input: Vec<u8> = text
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|byte| byte.trim().parse().unwrap())
        .collect();
    check_window(&input);
}
