//! How `shm-manager` says what it is without being run: an ELF section of its
//! own, read by `shmctl torch status` and `shmctl doctor`.
//!
//! Running an unknown `torch_shm_manager` to ask for `--version` would start a
//! manager (PyTorch's ignores arguments), so identification only reads the
//! file. A section is exact where a byte pattern is not: `shmctl` itself
//! contains the text it looks for, but only `shm-manager` has the section.
//! `readelf -p .libshm_manager <file>` shows it too.

/// The section's name.
pub(crate) const SECTION: &str = ".libshm_manager";

/// What the section holds, before the version.
pub(crate) const TEXT_PREFIX: &str = "libshm-rs shm-manager ";

/// The section's contents for this build: [`TEXT_PREFIX`] and the version.
pub(crate) const TEXT: &str = concat!("libshm-rs shm-manager ", env!("CARGO_PKG_VERSION"));

/// [`TEXT`] as bytes of a fixed length, for the static that goes in the section.
pub(crate) const fn text_bytes<const N: usize>() -> [u8; N] {
    let text = TEXT.as_bytes();
    let mut bytes = [0u8; N];
    let mut i = 0;
    while i < N && i < text.len() {
        bytes[i] = text[i];
        i += 1;
    }
    bytes
}

/// The version in a section's contents, if they are an `shm-manager`'s.
pub(crate) fn version_in(contents: &[u8]) -> Option<&str> {
    let text = contents.split(|&b| b == 0).next()?;
    let version = std::str::from_utf8(text).ok()?.strip_prefix(TEXT_PREFIX)?;
    let plausible = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b));
    plausible.then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_carries_the_version() {
        let bytes: [u8; TEXT.len()] = text_bytes();
        assert_eq!(version_in(&bytes), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(
            version_in(b"libshm-rs shm-manager 1.2.3\0\0"),
            Some("1.2.3")
        );
        assert_eq!(version_in(b"libshm-rs shm-manager "), None);
        assert_eq!(version_in(b"libshm-rs shm-manager 1 2"), None);
        assert_eq!(version_in(b"something else"), None);
    }
}
