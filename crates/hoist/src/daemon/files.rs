//! Who may read the daemon's files: the umask it runs under, the data directory's mode,
//! and tightening what an older version left readable.
//!
//! The data directory holds the node's key, the Raft store and its snapshots (which
//! carry the cluster CA's key and both join secrets) and every task's output, so
//! nothing under it is for group or others. The umask makes every file the daemon
//! creates private without each writer having to remember; the tasks the process driver
//! starts get the usual 022 back in the child (`hoist_driver::process`). This module
//! does not know which file holds what: everything under the directory is treated alike.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// The daemon's umask: files 0600, directories 0700.
const DAEMON_UMASK: libc::mode_t = 0o077;

/// Sets the process umask for everything the daemon creates from now on.
pub fn restrict_umask() {
    // SAFETY: umask only swaps a process attribute; it cannot fail.
    unsafe {
        libc::umask(DAEMON_UMASK);
    }
}

/// Creates the data directory (0700), or tightens an existing one and everything under
/// it that group or others could read, write or enter (left by an older version, or
/// created before the daemon ran, as a test harness does). Symbolic links are neither
/// followed nor changed. Returns how many entries were tightened.
pub fn secure_data_dir(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let top = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading the data directory {}", dir.display()))?;
    if !top.is_dir() {
        // A symbolic link chosen by the operator is fine: only its target is tightened.
        let target = std::fs::metadata(dir)
            .with_context(|| format!("reading the data directory {}", dir.display()))?;
        if !target.is_dir() {
            anyhow::bail!("the data directory {} is not a directory", dir.display());
        }
    }
    let mut tightened = 0;
    if tighten(dir, &std::fs::metadata(dir)?)? {
        tightened += 1;
    }
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("reading {}", current.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", current.display()))?;
            let path = entry.path();
            // Gone meanwhile (a task's file removed while we walk): nothing to tighten.
            let Ok(metadata) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if metadata.file_type().is_symlink() {
                continue;
            }
            if tighten(&path, &metadata)? {
                tightened += 1;
            }
            if metadata.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(tightened)
}

/// Removes the group and other bits of one entry; returns whether it had any.
fn tighten(path: &Path, metadata: &std::fs::Metadata) -> anyhow::Result<bool> {
    let mode = metadata.permissions().mode() & 0o7777;
    let private = mode & !0o077;
    if mode == private {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))
        .with_context(|| format!("making {} private (mode {private:o})", path.display()))?;
    Ok(true)
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
    fn a_data_directory_that_is_a_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("data");
        std::fs::write(&file, "").unwrap();
        let err = secure_data_dir(&file).unwrap_err();
        assert!(format!("{err:#}").contains("data"), "{err:#}");
    }
}
