//! Streaming IO over a segment's data, for code written against
//! `io::Read`/`io::Write` (serializers, compressors, `io::copy`).

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::SharedSegment;

/// A position in a segment's data with `io::Read`, `io::Write` and
/// `io::Seek`, like `io::Cursor` over a fixed-size buffer: reads stop at the
/// end of the data, writes there write nothing (so `write_all` fails with
/// `WriteZero`), and seeking past the end is allowed. Copies are atomic, as
/// [`SharedSegment::read_at`]'s are.
#[derive(Debug)]
pub struct SegmentCursor<'a> {
    segment: &'a SharedSegment,
    position: u64,
}

impl<'a> SegmentCursor<'a> {
    pub(super) fn new(segment: &'a SharedSegment) -> Self {
        Self {
            segment,
            position: 0,
        }
    }

    /// The offset the next read or write starts at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves to `position` (which may lie past the end).
    pub fn set_position(&mut self, position: u64) {
        self.position = position;
    }

    /// The segment.
    pub fn segment(&self) -> &'a SharedSegment {
        self.segment
    }

    /// The offset to start at and how many of `want` bytes fit from there.
    fn span(&self, want: usize) -> (usize, usize) {
        let len = self.segment.len();
        let start = usize::try_from(self.position).map_or(len, |p| p.min(len));
        (start, want.min(len - start))
    }
}

impl Read for SegmentCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (start, n) = self.span(buf.len());
        self.segment
            .read_at(start, &mut buf[..n])
            .map_err(io::Error::other)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Write for SegmentCursor<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let (start, n) = self.span(data.len());
        self.segment
            .write_at(start, &data[..n])
            .map_err(io::Error::other)?;
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SegmentCursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(position) => {
                self.position = position;
                return Ok(position);
            }
            SeekFrom::End(delta) => (self.segment.len() as u64, delta),
            SeekFrom::Current(delta) => (self.position, delta),
        };
        match base.checked_add_signed(delta) {
            Some(position) => {
                self.position = position;
                Ok(position)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}
