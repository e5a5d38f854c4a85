//! Giving memory back to the system after a big drop in names.
//!
//! A manager that held a million names and reaped them has freed its tables,
//! but glibc keeps freed small blocks (the holds table's nodes) in its heap
//! unless the top of the heap is free. `malloc_trim` returns the free pages
//! in the middle too. It walks the heap, so it runs only after the names
//! fell to a quarter of their peak since the last trim.

/// Trim only after a drop from at least this many names.
const MIN_PEAK: usize = 10_000;

/// The names seen since the heap was last trimmed back to nothing.
#[derive(Debug, Default)]
pub(crate) struct HeapTrimmer {
    /// Most names since the cycle began.
    peak: usize,
    /// Names at the last trim of this cycle.
    trimmed_at: Option<usize>,
}

impl HeapTrimmer {
    /// The manager now knows `names` names; after a large peak, trims each
    /// time they fall to a quarter of the last trim (a handful of trims
    /// down to nothing), and once more when none is left.
    pub(crate) fn observe(&mut self, names: usize) {
        self.peak = self.peak.max(names);
        if self.peak < MIN_PEAK {
            return;
        }
        let reference = self.trimmed_at.unwrap_or(self.peak);
        let fell = names <= reference / 4;
        let emptied = names == 0 && reference > 0;
        if fell || emptied {
            trim();
            self.trimmed_at = Some(names);
        }
        if names == 0 {
            *self = Self::default();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim has no preconditions and is thread-safe;
    // it only returns free heap pages to the kernel.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_falling_to_a_quarter_and_once_more_when_empty() {
        let mut trimmer = HeapTrimmer::default();
        trimmer.observe(1_000_000);
        trimmer.observe(300_000);
        assert_eq!(trimmer.trimmed_at, None);
        trimmer.observe(250_000);
        assert_eq!(trimmer.trimmed_at, Some(250_000));
        trimmer.observe(62_000);
        assert_eq!(trimmer.trimmed_at, Some(62_000));
        trimmer.observe(20_000);
        assert_eq!(trimmer.trimmed_at, Some(62_000), "not a quarter yet");
        trimmer.observe(3_000);
        assert_eq!(trimmer.trimmed_at, Some(3_000));
        trimmer.observe(1);
        assert_eq!(trimmer.trimmed_at, Some(1), "one long-lived name left");
        trimmer.observe(0);
        assert_eq!(trimmer.peak, 0, "trimmed at empty; a new cycle");
        trimmer.observe(5_000);
        trimmer.observe(0);
        assert_eq!(trimmer.trimmed_at, None, "a small peak is never trimmed");
    }
}
