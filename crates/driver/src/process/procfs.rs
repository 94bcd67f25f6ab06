//! What the process driver reads from `/proc` and asks of pidfds: is a recorded
//! process still the same one, and when does a process that is not our child end.
//!
//! Knows nothing of tasks or records; it speaks in pids and start times only.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How often we look at `/proc` for a process we cannot get a pidfd for
/// (kernels before 5.3). Short enough that a stopped task is seen quickly,
/// long enough to cost nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What we need from `/proc/PID/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 22: when the process started, in clock ticks since boot. Together
    /// with the pid it names one process for the life of the machine, which is
    /// how a record guards against the pid having been reused by a stranger.
    pub start_ticks: u64,
}

/// Reads `/proc/PID/stat`; `Ok(None)` when there is no such process.
pub(crate) fn read_stat(pid: u32) -> io::Result<Option<ProcStat>> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ESRCH shows up when the process vanishes between open and read.
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(err) => return Err(err),
    };
    parse_stat(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat format"),
        )
    })
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so we split after the
/// last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // `fields` starts at field 3 (state); field 22 is 19 further.
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// The live processes whose environment, as they were started with it, holds
/// `name=value`. Processes we may not read (another user's) are skipped.
pub(crate) fn pids_with_env(name: &str, value: &str) -> Vec<u32> {
    let wanted = format!("{name}={value}");
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|byte| *byte == 0)
                    .any(|entry| entry == wanted.as_bytes())
            })
        })
        .filter(|pid| matches!(read_stat(*pid), Ok(Some(stat)) if stat.state != 'Z'))
        .collect()
}

/// True when `pid` is still the process that started at `start_ticks` and has
/// not exited (a zombie has exited; it only waits for its parent to reap it).
pub(crate) fn is_alive(pid: u32, start_ticks: u64) -> bool {
    match read_stat(pid) {
        Ok(Some(stat)) => stat.start_ticks == start_ticks && !matches!(stat.state, 'Z' | 'X'),
        Ok(None) => false,
        Err(err) => {
            // Unreadable /proc is a node problem; saying "alive" keeps us from
            // forgetting a task that may well still run.
            tracing::warn!(pid, error = %err, "cannot read process state; assuming alive");
            true
        }
    }
}

/// Resolves when the process `pid` (started at `start_ticks`) has exited, for a
/// process that is not our child, so `waitpid` cannot be used. Prefers a pidfd,
/// which becomes readable when the process exits; falls back to polling `/proc`.
pub(crate) async fn wait_for_exit(pid: u32, start_ticks: u64) {
    match pidfd_open(pid) {
        Ok(pidfd) => {
            // The pidfd pins the process we opened; checking the start time only
            // now makes sure that process is the recorded one, not a reuse.
            if !is_alive(pid, start_ticks) {
                return;
            }
            // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and the
            // same for the AsyncFd's whole life.
            match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
                Ok(async_fd) => {
                    // Readable means exited; an error means the same fd cannot
                    // be polled, and we fall through to polling /proc.
                    if async_fd.readable().await.is_ok() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::debug!(pid, error = %std::io::Error::from(err), "cannot poll pidfd; polling /proc")
                }
            }
        }
        Err(err) => tracing::debug!(pid, error = %err, "pidfd_open failed; polling /proc"),
    }
    while is_alive(pid, start_ticks) {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just gave us this fd and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_tricky_command_name() {
        let text =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 50";
        let stat = parse_stat(text).expect("parse");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.start_ticks, 987654);
    }

    #[test]
    fn own_process_is_alive_and_start_time_guards_reuse() {
        let pid = std::process::id();
        let stat = read_stat(pid).expect("read").expect("exists");
        assert!(is_alive(pid, stat.start_ticks));
        assert!(!is_alive(pid, stat.start_ticks + 1));
    }
}
