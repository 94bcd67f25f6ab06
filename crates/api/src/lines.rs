//! Streamed response bodies read as lines of bounded length: the NDJSON streams between
//! nodes (assignment sets) and task output relayed from another node.
//!
//! A peer that sends one endless line would otherwise make the reader buffer it all.
//! tokio-util's [`LinesCodec`] stops at the cap: the stream then yields
//! [`LineError::TooLong`] and ends, having held at most `max_len` bytes of the line.

use futures::{Stream, StreamExt, TryStreamExt};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

/// The longest assignment set line a worker reads. A set carries every task of the
/// node and every published route (about 1-2 KiB each), so 8 MiB is thousands of
/// tasks; the manager's body limits are far below what would need more.
pub const MAX_ASSIGNMENT_LINE: usize = 8 * 1024 * 1024;

/// The longest relayed task output line: the driver cuts lines at 64 KiB, and the
/// manager adds a short prefix.
pub const MAX_LOG_LINE: usize = 128 * 1024;

/// Why a line stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("a line longer than {max_len} bytes: the stream was cut there")]
    TooLong { max_len: usize },
    #[error("reading the stream: {0}")]
    Io(#[from] std::io::Error),
}

/// The lines of `response`'s body, without their `\n` (or `\r\n`), each at most
/// `max_len` bytes. Invalid UTF-8 is an error: these streams are JSON or text the
/// daemon produced.
pub fn body_lines(
    response: reqwest::Response,
    max_len: usize,
) -> impl Stream<Item = Result<String, LineError>> + Send + Unpin {
    let bytes = response.bytes_stream().map_err(std::io::Error::other);
    FramedRead::new(
        StreamReader::new(bytes),
        LinesCodec::new_with_max_length(max_len),
    )
    .map(move |line| {
        line.map_err(|err| match err {
            LinesCodecError::MaxLineLengthExceeded => LineError::TooLong { max_len },
            LinesCodecError::Io(err) => LineError::Io(err),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(chunks: Vec<Vec<u8>>) -> reqwest::Response {
        let stream = futures::stream::iter(chunks.into_iter().map(Ok::<Vec<u8>, std::io::Error>));
        reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(stream)))
    }

    #[tokio::test]
    async fn lines_arrive_across_chunks_and_an_over_long_one_ends_the_stream_at_the_cap() {
        let mut chunks = vec![b"{\"a\":1}\n{\"b\"".to_vec(), b":2}\r\n".to_vec()];
        // A 1 MiB line in 4 KiB pieces, then a line that never arrives.
        chunks.extend((0..256).map(|_| vec![b'x'; 4096]));
        chunks.push(b"\n{\"c\":3}\n".to_vec());
        let lines: Vec<_> = body_lines(response(chunks), 64 * 1024).collect().await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0].as_deref().ok(), Some("{\"a\":1}"));
        assert_eq!(lines[1].as_deref().ok(), Some("{\"b\":2}"));
        let err = lines[2].as_ref().expect_err("the long line");
        assert!(
            matches!(err, LineError::TooLong { max_len: 65536 }),
            "{err}"
        );
    }
}
