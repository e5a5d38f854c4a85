//! Reading fuzz input as a script, one byte at a time.
//!
//! The targets decode their input with this instead of derived `Arbitrary`
//! impls so that the byte format is ours: documented next to each script,
//! written by `examples/write_seeds.rs`, and stable across versions of the
//! `arbitrary` crate. A committed seed therefore keeps meaning what its file
//! name says.

/// Reads bytes from the front of the fuzz input. Running out is not an error:
/// a missing byte reads as 0 and a missing run of bytes is cut short, so every
/// input decodes to some script.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next byte, or 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&first, rest)) => {
                self.rest = rest;
                first
            }
            None => 0,
        }
    }

    /// The next `len` bytes, fewer if the input ends first.
    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_reads_zero_and_short_runs() {
        let mut cursor = Cursor::new(&[7, 8, 9]);
        assert_eq!(cursor.byte(), 7);
        assert_eq!(cursor.take(5), &[8, 9]);
        assert!(cursor.is_empty());
        assert_eq!(cursor.byte(), 0);
        assert_eq!(cursor.take(2), &[] as &[u8]);
    }
}
