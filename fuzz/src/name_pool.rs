//! A small, fixed set of segment names for scripts to pick from.
//!
//! Scripts choose names by index into this pool rather than spelling them out,
//! so registrations, releases and namespace changes collide on the same few
//! names often, which is where the manager's bookkeeping can go wrong. The pool
//! has more names than the small fixed-capacity tables hold, so "table full"
//! is reached too.

use libshm_core::journal;
use libshm_core::name::SegmentName;

/// The names, in index order.
///
/// Five carry PyTorch's `/torch_` prefix; two do not, so a manager restricted to
/// that prefix has foreign names to refuse; one is as long as a frame allows.
pub const NAME_POOL: [&str; 8] = [
    "/torch_100_1_0",
    "/torch_100_1_1",
    "/torch_200_2_0",
    "/torch_200_2_1",
    "/torch_300_3_0",
    "/other_1",
    "/x",
    "/torch_4294967295_4294967295_184467440737095516_12345678901",
];

/// The journal's reserved names, which an input byte of [`RESERVED_FROM`] or
/// more picks: the manager answers them without entering them in its tables.
pub const RESERVED: [&str; 2] = [journal::SETUP_NAME, journal::DOORBELL_NAME];

/// Bytes from here on pick a reserved name; smaller ones the pool (so the
/// committed seeds, which use small indexes, keep their meaning).
pub const RESERVED_FROM: u8 = 0xF8;

/// The pool entry an input byte picks (any byte picks one).
pub fn pick(choice: u8) -> SegmentName {
    let text = if choice >= RESERVED_FROM {
        RESERVED[usize::from(choice - RESERVED_FROM) % RESERVED.len()]
    } else {
        NAME_POOL[usize::from(choice) % NAME_POOL.len()]
    };
    // Every pool entry is a valid name; `every_pool_name_is_valid` pins it.
    SegmentName::new(text.as_bytes()).unwrap_or_else(|err| panic!("pool name {text}: {err}"))
}

/// Every pool name, in index order.
pub fn all() -> impl Iterator<Item = SegmentName> {
    (0..NAME_POOL.len()).map(|index| pick(index as u8))
}

/// The byte that picks `name`, for encoding scripts.
pub fn index_of(name: &str) -> u8 {
    if let Some(index) = RESERVED.iter().position(|entry| *entry == name) {
        return RESERVED_FROM + index as u8;
    }
    let index = NAME_POOL
        .iter()
        .position(|entry| *entry == name)
        .unwrap_or_else(|| panic!("{name} is not in the name pool"));
    index as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use libshm_core::name::NAME_MAX;

    #[test]
    fn every_pool_name_is_valid_and_one_is_as_long_as_a_frame_allows() {
        for text in NAME_POOL {
            assert!(SegmentName::new(text.as_bytes()).is_ok(), "{text}");
        }
        assert!(NAME_POOL.iter().any(|text| text.len() == NAME_MAX));
        assert_eq!(all().count(), NAME_POOL.len());
        assert_eq!(pick(index_of("/x")).as_str(), "/x");
        assert_eq!(pick(index_of(journal::SETUP_NAME)), journal::SETUP);
    }
}
