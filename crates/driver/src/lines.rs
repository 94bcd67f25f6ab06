//! Task output cut into lines of bounded length, for both drivers' log readers.
//!
//! A workload may print anything, including one line of gigabytes with no newline; a
//! reader that buffered until the newline would hold it all. Lines longer than
//! [`MAX_LINE_BYTES`] are cut there: the first `MAX_LINE_BYTES` are sent as the line,
//! and the rest up to the next newline is dropped. The splitting is tokio-util's
//! [`AnyDelimiterCodec`] (bytes, so invalid UTF-8 is replaced rather than refused).
//!
//! Knows nothing of files, containers or tasks.

use bytes::BytesMut;
use tokio_util::codec::{AnyDelimiterCodec, Decoder};

/// The longest line a log reader hands on; longer ones are cut. 64 KiB is four times
/// Docker's json-file line split (16 KiB), so ordinary long lines (stack traces, JSON
/// logs) pass whole.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Bytes in, lines out, holding at most one cut line plus one read's worth of bytes.
pub(crate) struct LineCutter {
    codec: AnyDelimiterCodec,
    buffer: BytesMut,
    max_line: usize,
}

impl Default for LineCutter {
    fn default() -> Self {
        LineCutter::with_max(MAX_LINE_BYTES)
    }
}

impl LineCutter {
    pub(crate) fn with_max(max_line: usize) -> Self {
        LineCutter {
            codec: AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max_line),
            buffer: BytesMut::new(),
            max_line,
        }
    }

    /// Adds `bytes` and returns the lines they complete (or cut).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(line)) => lines.push(to_line(&line)),
                Ok(None) => break,
                Err(_over_long) => {
                    // The codec leaves the line's first bytes in the buffer and drops
                    // them, with the rest of the line, on the next call.
                    let cut = self.max_line.min(self.buffer.len());
                    lines.push(to_line(&self.buffer[..cut]));
                }
            }
        }
        lines
    }

    /// What is left when the output ends: an unterminated last line, if any.
    pub(crate) fn finish(mut self) -> Option<String> {
        match self.codec.decode_eof(&mut self.buffer) {
            Ok(Some(line)) if !line.is_empty() => Some(to_line(&line)),
            _ => None,
        }
    }
}

/// A line without its `\r` (the `\n` is gone already), invalid UTF-8 replaced.
fn to_line(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_over_long_ones_cut_at_the_cap() {
        let mut cutter = LineCutter::with_max(8);
        assert_eq!(cutter.push(b"one\r\ntw"), ["one"]);
        assert_eq!(cutter.push(b"o\n"), ["two"]);
        // 8 bytes and a newline is a whole line; 20 bytes is cut to 8, and the rest of
        // it never shows up as a line of its own.
        assert_eq!(cutter.push(b"12345678\n"), ["12345678"]);
        assert_eq!(cutter.push(b"abcdefghijkl"), ["abcdefgh"]);
        assert!(cutter.push(b"mnopqrst").is_empty());
        assert_eq!(cutter.push(b"\nafter\n\xff\n"), ["after", "\u{fffd}"]);
        assert!(cutter.push(b"tail").is_empty());
        assert_eq!(cutter.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn a_huge_line_never_grows_the_buffer_past_the_cap_and_a_read() {
        let mut cutter = LineCutter::with_max(1024);
        let chunk = vec![b'x'; 4096];
        let mut lines = Vec::new();
        for _ in 0..1000 {
            lines.extend(cutter.push(&chunk));
            assert!(
                cutter.buffer.len() <= 1024 + 4096,
                "{}",
                cutter.buffer.len()
            );
        }
        lines.extend(cutter.push(b"\nnext\n"));
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0].len(), 1024);
        assert_eq!(lines[1], "next");
    }
}
