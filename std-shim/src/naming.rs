//! Fresh segment names, PyTorch's shape: `<prefix><pid>_<random u32>_<counter>`.
//!
//! The random part is drawn once per process (again after a fork, since the
//! pid changes), so a recycled pid never reproduces an old name.

use std::sync::atomic::{AtomicU64, Ordering};

use libshm_core::name::{NameError, NamePrefix, SegmentName};

static COUNTER: AtomicU64 = AtomicU64::new(0);
/// `pid << 32 | random`, for the process that drew it.
static PROCESS_RANDOM: AtomicU64 = AtomicU64::new(0);

pub(crate) use crate::process::current_pid;

/// The next unused name with `prefix`.
pub(crate) fn next_name(prefix: &NamePrefix) -> Result<SegmentName, NameError> {
    let pid = current_pid();
    let random = process_random(pid);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    SegmentName::generate(prefix, pid, random, counter)
}

fn process_random(pid: u32) -> u32 {
    let cached = PROCESS_RANDOM.load(Ordering::Relaxed);
    if cached != 0 && (cached >> 32) as u32 == pid {
        return cached as u32;
    }
    let mut bytes = [0u8; 4];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // No entropy source: fall back to the clock, which still differs
        // between a pid's successive owners.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = nanos.to_ne_bytes();
    }
    let random = u32::from_ne_bytes(bytes);
    PROCESS_RANDOM.store(u64::from(pid) << 32 | u64::from(random), Ordering::Relaxed);
    random
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
    }
}
