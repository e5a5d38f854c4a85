//! Fresh segment names, PyTorch's shape: `<prefix><pid>_<random u32>_<counter>`.
//!
//! The random part is fresh for every name, as PyTorch's is: a keyed hash
//! (SipHash, with keys drawn from the system) of the counter. A name seen in
//! `/dev/shm` then tells nobody the next one, so another local user cannot
//! create our next names first; and a recycled pid never reproduces an old
//! name.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libshm_core::name::{NameError, NamePrefix, SegmentName};

static COUNTER: AtomicU64 = AtomicU64::new(0);
/// The keys of the hash that makes each name's random part.
static KEYS: OnceLock<RandomState> = OnceLock::new();

pub(crate) use crate::process::current_pid;

/// The next unused name with `prefix`.
pub(crate) fn next_name(prefix: &NamePrefix) -> Result<SegmentName, NameError> {
    let pid = current_pid();
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = KEYS.get_or_init(RandomState::new).hash_one((pid, counter)) as u32;
    SegmentName::generate(prefix, pid, random, counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_carry_our_pid() {
        let prefix = NamePrefix::torch();
        let a = next_name(&prefix).unwrap();
        let b = next_name(&prefix).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.creator_pid(&prefix), Some(current_pid()));
        let fields: Vec<&str> = a
            .as_str()
            .trim_start_matches("/torch_")
            .split('_')
            .collect();
        assert_eq!(fields.len(), 3);
        assert!(fields.iter().all(|f| f.parse::<u64>().is_ok()));
        let random = |name: &SegmentName| name.as_str().split('_').nth(2).map(str::to_owned);
        assert_ne!(random(&a), random(&b), "each name draws its own");
    }
}
