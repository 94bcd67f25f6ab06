//! Who may read the daemon's files: the umask it runs under, the data directory's mode,
//! and tightening what an older version left readable.
//!
//! The data directory holds the node's key, the Raft store and its snapshots (which
//! carry the cluster CA's key and both join secrets) and every task's output, so
//! nothing the daemon keeps there is for group or others. The umask makes every file the daemon
//! creates private without each writer having to remember; the tasks the process driver
//! starts get the usual 022 back in the child (`hoist_driver::process`). This module
//! knows one thing of the layout: workloads run in `tasks/<task id>`, whose files
//! (other than the task's output) are theirs and are not touched.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// The daemon's umask: files 0600, directories 0700.
const DAEMON_UMASK: libc::mode_t = 0o077;

/// Sets the process umask for everything the daemon creates from now on.
pub fn restrict_umask() {
    // SAFETY: umask only swaps a process attribute; it cannot fail.
    unsafe {
        libc::umask(DAEMON_UMASK);
    }
}

/// Where the daemon's tasks run (`data_dir/tasks/<task id>`, see `member.rs`): the
/// workload may write anything there, so only the daemon's own entries are tightened.
const TASKS_DIR: &str = "tasks";

/// The process driver's output file in a task directory, and its rotated copies
/// `output.log.1`, ... (`hoist_driver::process`).
const OUTPUT_FILE: &str = "output.log";

/// Creates the data directory (0700), or tightens an existing one and what under it
/// group or others could read, write or enter (left by an older version, or created
/// before the daemon ran, as a test harness does). Returns how many entries were
/// tightened.
///
/// Everything is tightened except under `tasks/`, where the workloads run: there only
/// `tasks/` itself, each task's directory and its output files are the daemon's, and
/// the rest (what a workload writes, of any size) is left alone. Symbolic links are
/// neither followed nor changed: each entry is opened without following a link
/// (`O_PATH|O_NOFOLLOW`) and the mode is set on what was opened, so a task that swaps a
/// file for a link meanwhile cannot have the daemon change another path. An entry gone
/// meanwhile (an adopted task still runs during the sweep) is nothing to tighten.
pub fn secure_data_dir(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    // A symbolic link chosen by the operator is fine: only its target is tightened.
    let target = std::fs::metadata(dir)
        .with_context(|| format!("reading the data directory {}", dir.display()))?;
    if !target.is_dir() {
        anyhow::bail!("the data directory {} is not a directory", dir.display());
    }
    let top = openat(
        None,
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening the data directory {}", dir.display()))?;
    // SAFETY: openat returned a descriptor that nothing else owns.
    let top = unsafe { OwnedFd::from_raw_fd(top) };
    let mut tightened = 0;
    let stat = fstat(top.as_raw_fd()).with_context(|| format!("reading {}", dir.display()))?;
    if tighten(&top, &stat, dir)? {
        tightened += 1;
    }
    tightened += sweep(&top, dir, true)?;
    Ok(tightened)
}

/// Tightens every entry under the directory `dir` (opened as `O_PATH`) and below,
/// except the workloads' files under `tasks/` when `top` (see [`secure_data_dir`]).
fn sweep(dir: &OwnedFd, path: &Path, top: bool) -> anyhow::Result<usize> {
    let mut tightened = 0;
    for name in names(dir, path)? {
        let entry_path = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let Some((entry, stat)) = open_entry(dir, &name, &entry_path)? else {
            continue;
        };
        if tighten(&entry, &stat, &entry_path)? {
            tightened += 1;
        }
        if kind(&stat) != SFlag::S_IFDIR {
            continue;
        }
        if top && name.as_bytes() == TASKS_DIR.as_bytes() {
            tightened += sweep_tasks(&entry, &entry_path)?;
        } else {
            tightened += sweep(&entry, &entry_path, false)?;
        }
    }
    Ok(tightened)
}

/// `tasks/`: each task's directory and its output files, and nothing the task wrote.
/// The task directories are not listed: their output files are looked up by name.
fn sweep_tasks(tasks: &OwnedFd, path: &Path) -> anyhow::Result<usize> {
    let mut tightened = 0;
    for name in names(tasks, path)? {
        let task_path = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let Some((task, stat)) = open_entry(tasks, &name, &task_path)? else {
            continue;
        };
        if kind(&stat) != SFlag::S_IFDIR {
            continue;
        }
        if tighten(&task, &stat, &task_path)? {
            tightened += 1;
        }
        // output.log, then its rotated copies .1, .2, ... (consecutive, by rotation).
        for index in 0u32.. {
            let file = if index == 0 {
                OUTPUT_FILE.to_owned()
            } else {
                format!("{OUTPUT_FILE}.{index}")
            };
            let file_path = task_path.join(&file);
            let file = CString::new(file).context("an output file name")?;
            let Some((output, stat)) = open_entry(&task, &file, &file_path)? else {
                break;
            };
            if kind(&stat) == SFlag::S_IFREG && tighten(&output, &stat, &file_path)? {
                tightened += 1;
            }
        }
    }
    Ok(tightened)
}

fn kind(stat: &libc::stat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// The names in the directory `dir` (opened as `O_PATH`), without `.` and `..`; none
/// when it is gone.
fn names(dir: &OwnedFd, path: &Path) -> anyhow::Result<Vec<CString>> {
    let listing = match Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(listing) => listing,
        Err(Errno::ENOENT) => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let mut names = Vec::new();
    let mut listing = listing;
    for entry in listing.iter() {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Opens `name` in `dir` without following a link (a link is opened itself), as
/// `O_PATH`: nothing is read, and a device or FIFO is not opened for real. `None` when
/// it is gone.
fn open_entry(
    dir: &OwnedFd,
    name: &CStr,
    path: &Path,
) -> anyhow::Result<Option<(OwnedFd, libc::stat)>> {
    let fd = match openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("opening {}", path.display())),
    };
    // SAFETY: openat returned a descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let stat = fstat(fd.as_raw_fd()).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some((fd, stat)))
}

/// Removes the group and other bits of the entry opened as `fd`; returns whether it had
/// any. Links are never changed. The mode is set through `/proc/self/fd`, which names
/// the opened entry itself (`fchmod` refuses an `O_PATH` descriptor), so the path it was
/// found at may change meanwhile without effect.
fn tighten(fd: &OwnedFd, stat: &libc::stat, path: &Path) -> anyhow::Result<bool> {
    if kind(stat) == SFlag::S_IFLNK {
        return Ok(false);
    }
    let mode = stat.st_mode & 0o7777;
    let private = mode & !0o077;
    if mode == private {
        return Ok(false);
    }
    let opened = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::set_permissions(&opened, std::fs::Permissions::from_mode(private)) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err)
            .with_context(|| format!("making {} private (mode {private:o})", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn an_older_data_directory_is_tightened_and_links_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("raft/snapshots")).unwrap();
        let set = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let snapshot = dir.join("raft/snapshots/snapshot-1.json");
        std::fs::write(&snapshot, "{}").unwrap();
        set(&snapshot, 0o644);
        set(&dir.join("raft"), 0o755);
        set(&dir, 0o755);
        let outside = root.path().join("outside");
        std::fs::write(&outside, "").unwrap();
        set(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

        let tightened = secure_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("raft")), 0o700);
        assert_eq!(mode(&dir.join("raft/snapshots")) & 0o077, 0);
        assert_eq!(mode(&snapshot), 0o600);
        assert_eq!(
            mode(&outside),
            0o644,
            "a link's target is not ours to change"
        );
        assert!(tightened >= 3, "{tightened}");
        assert_eq!(
            secure_data_dir(&dir).unwrap(),
            0,
            "a second start changes nothing"
        );
    }

    #[test]
    fn only_the_daemons_files_under_tasks_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let task = dir.join("tasks/0123456789abcdef");
        std::fs::create_dir_all(task.join("work/deeper")).unwrap();
        let set = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for file in ["output.log", "output.log.1", "output.log.2", "served.html"] {
            std::fs::write(task.join(file), "x").unwrap();
            set(&task.join(file), 0o644);
        }
        std::fs::write(task.join("work/deeper/page.html"), "x").unwrap();
        set(&task.join("work/deeper/page.html"), 0o644);
        set(&task.join("work"), 0o755);
        set(&task, 0o755);
        set(&dir.join("tasks"), 0o755);
        // A task that made its rotated copy a link to a file of the operator's.
        let outside = root.path().join("outside");
        std::fs::write(&outside, "").unwrap();
        set(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, task.join("output.log.3")).unwrap();
        // The driver's records are the daemon's, all of them.
        std::fs::create_dir_all(dir.join("driver/tasks")).unwrap();
        std::fs::write(dir.join("driver/tasks/0123456789abcdef.json"), "{}").unwrap();
        set(&dir.join("driver/tasks/0123456789abcdef.json"), 0o644);

        secure_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir.join("tasks")), 0o700);
        assert_eq!(mode(&task), 0o700);
        assert_eq!(mode(&task.join("output.log")), 0o600);
        assert_eq!(mode(&task.join("output.log.1")), 0o600);
        assert_eq!(mode(&task.join("output.log.2")), 0o600);
        assert_eq!(mode(&dir.join("driver/tasks/0123456789abcdef.json")), 0o600);
        assert_eq!(
            mode(&outside),
            0o644,
            "a link's target is not ours to change"
        );
        assert_eq!(mode(&task.join("served.html")), 0o644, "the workload's");
        assert_eq!(mode(&task.join("work")), 0o755, "the workload's");
        assert_eq!(mode(&task.join("work/deeper/page.html")), 0o644);
    }

    #[test]
    fn an_entry_gone_meanwhile_is_nothing_to_do() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("gone");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dir = openat(
            None,
            root.path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let dir = unsafe { OwnedFd::from_raw_fd(dir) };
        let name = CString::new("gone").unwrap();
        let (opened, stat) = open_entry(&dir, &name, &file).unwrap().unwrap();
        std::fs::remove_file(&file).unwrap();
        // Removed between the look and the change: the change lands on what was opened.
        assert!(tighten(&opened, &stat, &file).unwrap());
        assert!(open_entry(&dir, &name, &file).unwrap().is_none());
        assert_eq!(names(&dir, root.path()).unwrap(), Vec::<CString>::new());
        // A link put in a file's place is opened as the link, and left alone.
        std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
        let (link, stat) = open_entry(&dir, &name, &file).unwrap().unwrap();
        assert!(!tighten(&link, &stat, &file).unwrap());
    }

    #[test]
    fn a_data_directory_that_is_a_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("data");
        std::fs::write(&file, "").unwrap();
        let err = secure_data_dir(&file).unwrap_err();
        assert!(format!("{err:#}").contains("data"), "{err:#}");
    }
}
