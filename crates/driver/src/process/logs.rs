//! Reading a task's captured output file as lines: the last N, then (when
//! following) new ones as they are appended, until the task has exited.
//!
//! The workload writes the file directly (not through a pipe to the worker), so
//! the output survives a worker restart and no worker has to be up for the task
//! to make progress. The price is that following means polling the file size.
//! Knows nothing of tasks beyond "has it exited yet" ([`ExitWatch`]).

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::lines::LineCutter;
use crate::{DriverError, ExitWatch, LogLines, LogOptions};

/// How often a follower looks for new output; the delay a `logs -f` reader sees.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Lines buffered between the reader task and a slow consumer; beyond this the
/// reader waits (back-pressure) instead of growing memory.
const CHANNEL_LINES: usize = 1024;

/// Read size, and the step when scanning backwards for the last N lines.
const CHUNK: usize = 64 * 1024;

/// Starts a task that sends the requested lines of `path` and returns their
/// receiver. Fails early only when the file cannot be opened.
pub(crate) async fn open(
    task_id: &str,
    path: &Path,
    options: LogOptions,
    exit: ExitWatch,
) -> Result<LogLines, DriverError> {
    let mut file = match File::open(path).await {
        Ok(file) => file,
        // A task that has not written anything yet may have no file only if
        // someone deleted it; treat it as empty rather than failing `logs`.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let (tx, rx) = mpsc::channel(1);
            drop(tx);
            return Ok(rx);
        }
        Err(err) => return Err(DriverError::io("cannot open task output", path, err)),
    };
    let start = match options.tail {
        None => 0,
        Some(n_lines) => tail_offset(&mut file, n_lines)
            .await
            .map_err(|err| DriverError::io("cannot read task output", path, err))?,
    };
    let (tx, rx) = mpsc::channel(CHANNEL_LINES);
    let reader = Reader {
        task_id: task_id.to_owned(),
        path: path.to_owned(),
        file,
        offset: start,
        lines: LineCutter::default(),
        tx,
    };
    tokio::spawn(reader.run(options.follow, exit));
    Ok(rx)
}

/// The byte offset where the last `n_lines` lines of the file begin. A final
/// newline ends the last line; it does not start an empty one.
async fn tail_offset(file: &mut File, n_lines: usize) -> std::io::Result<u64> {
    let len = file.seek(SeekFrom::End(0)).await?;
    if n_lines == 0 || len == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; CHUNK];
    // `end` is the exclusive end of the region still to scan.
    let mut end = len;
    let mut newlines_seen = 0usize;
    let mut skip_final_newline = true;
    while end > 0 {
        let chunk_len = CHUNK.min(usize::try_from(end).unwrap_or(CHUNK));
        let chunk_start = end - chunk_len as u64;
        file.seek(SeekFrom::Start(chunk_start)).await?;
        file.read_exact(&mut buf[..chunk_len]).await?;
        for idx in (0..chunk_len).rev() {
            if buf[idx] != b'\n' {
                skip_final_newline = false;
                continue;
            }
            if skip_final_newline {
                skip_final_newline = false;
                continue;
            }
            newlines_seen += 1;
            if newlines_seen == n_lines {
                return Ok(chunk_start + idx as u64 + 1);
            }
        }
        end = chunk_start;
    }
    Ok(0)
}

struct Reader {
    task_id: String,
    path: PathBuf,
    file: File,
    /// Next byte of the file to read.
    offset: u64,
    /// Bytes after the last newline, held until the line is complete (or cut).
    lines: LineCutter,
    tx: mpsc::Sender<String>,
}

impl Reader {
    async fn run(mut self, follow: bool, exit: ExitWatch) {
        loop {
            // Look at the exit *before* reading: if the task had exited then,
            // this read sees everything it ever wrote, and we can end after it.
            let exited_before_read = exit.current().is_some();
            let got_data = match self.read_available().await {
                Ok(got_data) => got_data,
                Err(err) => {
                    tracing::warn!(task_id = %self.task_id, path = %self.path.display(), error = %err, "reading task output failed");
                    return;
                }
            };
            if self.tx.is_closed() {
                return;
            }
            if !follow || (exited_before_read && !got_data) {
                break;
            }
            if !got_data {
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = self.tx.closed() => return,
                }
            }
        }
        // A last line without newline is still a line.
        if let Some(line) = self.lines.finish() {
            let _ = self.tx.send(line).await;
        }
    }

    /// Reads from `offset` to the current end of file, sending complete lines.
    /// Returns whether anything was read.
    async fn read_available(&mut self) -> std::io::Result<bool> {
        let len = self.file.metadata().await?.len();
        if len < self.offset {
            // Truncated under us (an operator emptied it): start over.
            self.offset = 0;
            self.lines = LineCutter::default();
        }
        if len == self.offset {
            return Ok(false);
        }
        self.file.seek(SeekFrom::Start(self.offset)).await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n_read = self.file.read(&mut buf).await?;
            if n_read == 0 {
                break;
            }
            self.offset += n_read as u64;
            for line in self.lines.push(&buf[..n_read]) {
                if self.tx.send(line).await.is_err() {
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(content: &[u8], options: LogOptions) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        std::fs::write(&path, content).expect("write");
        let (tx, exit) = ExitWatch::channel();
        tx.send_replace(Some(crate::TaskExit::Exited { code: 0 }));
        let mut rx = open("t1", &path, options, exit).await.expect("open");
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    }

    #[tokio::test]
    async fn tail_counts_lines_from_the_end() {
        let all = LogOptions::default();
        let tail = |n| LogOptions {
            tail: Some(n),
            follow: false,
        };
        assert_eq!(lines_of(b"a\nb\nc\n", all).await, ["a", "b", "c"]);
        assert_eq!(lines_of(b"a\nb\nc\n", tail(2)).await, ["b", "c"]);
        assert_eq!(lines_of(b"a\nb\nc", tail(2)).await, ["b", "c"]);
        assert_eq!(lines_of(b"a\nb\nc\n", tail(5)).await, ["a", "b", "c"]);
        assert!(lines_of(b"a\nb\n", tail(0)).await.is_empty());
        assert_eq!(lines_of(b"a\r\n\nb\n", tail(3)).await, ["a", "", "b"]);
    }

    #[tokio::test]
    async fn an_over_long_output_line_is_cut_at_the_cap() {
        let max = crate::lines::MAX_LINE_BYTES;
        let mut content = b"before\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', max * 3));
        content.extend_from_slice(b"\nafter\n");
        let lines = lines_of(&content, LogOptions::default()).await;
        assert_eq!(
            lines.len(),
            3,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], "before");
        assert_eq!(lines[1], "x".repeat(max));
        assert_eq!(lines[2], "after");
    }

    #[tokio::test]
    async fn tail_works_across_chunks() {
        let mut content = Vec::new();
        for idx in 0..20_000 {
            content.extend_from_slice(format!("line {idx}\n").as_bytes());
        }
        let lines = lines_of(
            &content,
            LogOptions {
                tail: Some(15_000),
                follow: true,
            },
        )
        .await;
        assert_eq!(lines.len(), 15_000);
        assert_eq!(lines[0], "line 5000");
        assert_eq!(lines[14_999], "line 19999");
    }
}
