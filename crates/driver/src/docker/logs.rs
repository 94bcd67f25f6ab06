//! A container's output as lines: the engine's log stream (stdout and stderr
//! frames, kept by its log driver) cut into lines and sent through [`LogLines`].
//!
//! Knows nothing of tasks: it is given a container id and the request. The
//! engine ends a followed stream when the container stops, which is exactly the
//! end [`LogLines`] promises.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions as EngineLogsOptions;
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::mpsc;

use bollard::errors::Error as EngineError;

use crate::lines::LineCutter;
use crate::{LogLines, LogOptions};

/// Lines buffered between the reader task and a slow consumer; beyond this the
/// reader waits (back-pressure) and the engine's stream with it.
const CHANNEL_LINES: usize = 1024;

/// Starts a reader of `container_id`'s output and returns its lines. The first
/// frame (or the end) is awaited here so that an engine refusal (a removed
/// container) is an error of `logs`, not an empty channel.
pub(crate) async fn open(
    docker: &Docker,
    container_id: &str,
    options: LogOptions,
) -> Result<LogLines, EngineError> {
    let request = EngineLogsOptions {
        follow: options.follow,
        stdout: true,
        stderr: true,
        since: 0,
        until: 0,
        timestamps: false,
        tail: options
            .tail
            .map_or_else(|| "all".to_owned(), |n_lines| n_lines.to_string()),
    };
    let mut frames = docker.logs(container_id, Some(request)).boxed();
    let first = frames.next().await;
    let first = match first {
        Some(Err(err)) => return Err(err),
        other => other,
    };
    let (tx, rx) = mpsc::channel(CHANNEL_LINES);
    let container_id = container_id.to_owned();
    tokio::spawn(async move {
        let mut splitter = LineSplitter::default();
        let mut frame = first;
        loop {
            let output = match frame {
                None => break,
                Some(Ok(output)) => output,
                Some(Err(err)) => {
                    tracing::debug!(container_id, error = %err, "container output stream broke");
                    break;
                }
            };
            for line in splitter.push(&output) {
                if tx.send(line).await.is_err() {
                    return; // the reader is gone
                }
            }
            // Waiting for the next frame also ends when the receiver is dropped,
            // so an idle followed container does not keep this task alive.
            frame = tokio::select! {
                frame = frames.next() => frame,
                () = tx.closed() => return,
            };
        }
        for line in splitter.finish() {
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Cuts frames into lines (each at most [`crate::lines::MAX_LINE_BYTES`]). Stdout and
/// stderr each keep their own unfinished line, so a partial write on one cannot be
/// glued to the other's.
#[derive(Default)]
struct LineSplitter {
    stdout: LineCutter,
    stderr: LineCutter,
}

impl LineSplitter {
    fn push(&mut self, output: &LogOutput) -> Vec<String> {
        match output {
            LogOutput::StdErr { message } => self.stderr.push(message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                self.stdout.push(message)
            }
            LogOutput::StdIn { .. } => Vec::new(),
        }
    }

    /// What is left when the stream ends: unterminated last lines.
    fn finish(self) -> Vec<String> {
        [self.stdout.finish(), self.stderr.finish()]
            .into_iter()
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn out(text: &str) -> LogOutput {
        LogOutput::StdOut {
            message: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    fn err(text: &str) -> LogOutput {
        LogOutput::StdErr {
            message: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    #[test]
    fn frames_become_lines_per_stream() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(&out("one\ntw")), vec!["one"]);
        assert_eq!(splitter.push(&err("oops\r\n")), vec!["oops"]);
        assert_eq!(splitter.push(&out("o\nthree\n")), vec!["two", "three"]);
        assert_eq!(splitter.push(&out("tail")), Vec::<String>::new());
        assert_eq!(splitter.finish(), vec!["tail"]);
    }
}
