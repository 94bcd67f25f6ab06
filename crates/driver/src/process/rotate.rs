//! Keeping a task's output file under its size cap while the task runs.
//!
//! The workload writes `output.log` itself (its stdout and stderr are the file, opened
//! with `O_APPEND`), so the file cannot be renamed away from under it: the process
//! would go on writing to the renamed file. Instead, once a second, a file over the cap
//! is copied to `output.log.1` (older copies shifted to `.2`, ... and the oldest
//! dropped) and truncated to zero; the workload's next append lands at the new end.
//! This is logrotate's `copytruncate`: output written between the copy and the
//! truncation (microseconds) is lost, and the file may pass the cap by what the task
//! writes in one second; the copy keeps only the newest `max_size` bytes of it.
//!
//! Knows nothing of tasks beyond "has it exited yet" ([`ExitWatch`]).

use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{ExitWatch, LogLimits};

/// How often a running task's output file size is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The `index`th rotated copy of `path` (`output.log.1`, ...).
pub(crate) fn rotated_path(path: &Path, index: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// Checks `path` every second until the task exits, rotating it when over the cap.
pub(crate) async fn rotate_while_running(
    task_id: String,
    path: PathBuf,
    limits: LogLimits,
    exit: ExitWatch,
) {
    loop {
        tokio::select! {
            _ = exit.wait() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let path = path.clone();
        let rotated = tokio::task::spawn_blocking(move || rotate_if_over(&path, limits)).await;
        match rotated {
            Ok(Ok(true)) => tracing::debug!(task_id, "task output rotated"),
            Ok(Ok(false)) => {}
            Ok(Err(err)) => {
                tracing::warn!(task_id, error = %err, "cannot rotate task output");
            }
            Err(err) => tracing::warn!(task_id, error = %err, "task output rotation panicked"),
        }
    }
}

/// Rotates `path` if it is larger than `limits.max_size`; says whether it did.
pub(crate) fn rotate_if_over(path: &Path, limits: LogLimits) -> std::io::Result<bool> {
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    if size <= limits.max_size {
        return Ok(false);
    }
    let kept = limits.max_files.saturating_sub(1);
    if kept > 0 {
        // Shift older copies up: .1 -> .2 and so on; the one at `kept` is overwritten.
        for index in (1..kept).rev() {
            let from = rotated_path(path, index);
            if from.exists() {
                std::fs::rename(&from, rotated_path(path, index + 1))?;
            }
        }
        // Owner only, like the file it copies (task output is for the operator).
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(rotated_path(path, 1))?;
        // Only the newest `max_size` bytes are kept (the first line may be a fragment):
        // a task that wrote far more within one check cannot make the copy larger.
        let mut current = std::fs::File::open(path)?;
        current.seek(SeekFrom::Start(size - limits.max_size))?;
        std::io::copy(&mut current, &mut copy)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)?;
    Ok(true)
}

/// Removes the rotated copies of `path` (what `rotate_if_over` may have made).
pub(crate) fn remove_rotated(path: &Path, limits: LogLimits) {
    for index in 1..=limits.max_files.max(10) {
        let _ = std::fs::remove_file(rotated_path(path, index));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_cap_keeps_its_newest_bytes_and_old_copies_shift() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        let limits = LogLimits {
            max_size: 8,
            max_files: 3,
        };
        let read = |index| std::fs::read(rotated_path(&path, index)).expect("read");
        std::fs::write(&path, b"1234567\n").expect("write");
        assert!(!rotate_if_over(&path, limits).expect("rotate"));
        std::fs::write(&path, b"first\nsecond\n").expect("write");
        assert!(rotate_if_over(&path, limits).expect("rotate"));
        assert_eq!(std::fs::read(&path).expect("read"), b"");
        assert_eq!(read(1), b"\nsecond\n");
        std::fs::write(&path, b"third-x\n\n").expect("write");
        assert!(rotate_if_over(&path, limits).expect("rotate"));
        std::fs::write(&path, b"fourth-x\n").expect("write");
        assert!(rotate_if_over(&path, limits).expect("rotate"));
        // Three files in all: the current one and two copies; the first is gone.
        assert_eq!(read(1), b"ourth-x\n");
        assert_eq!(read(2), b"hird-x\n\n");
        assert!(!rotated_path(&path, 3).exists());
        remove_rotated(&path, limits);
        assert!(!rotated_path(&path, 1).exists() && !rotated_path(&path, 2).exists());
    }

    #[test]
    fn one_file_means_truncate_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        let limits = LogLimits {
            max_size: 4,
            max_files: 1,
        };
        std::fs::write(&path, b"too long").expect("write");
        assert!(rotate_if_over(&path, limits).expect("rotate"));
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
        assert!(!rotated_path(&path, 1).exists());
    }
}
