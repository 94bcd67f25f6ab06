//! CPU and memory limits for process-driver tasks, through the kernel's control groups
//! (v1, as on this project's CI machines, or the unified v2 hierarchy).
//!
//! Owns: finding which layout the node mounts, making one group per limited task
//! (`hoist/<task id>` under each controller used), writing its limits, putting the
//! task's first process in it before `exec` (see [`TaskCgroup::procs_files`]), telling
//! whether the kernel's OOM killer fired in it, and removing it once the task is gone.
//! Does not touch groups it did not make, and makes none for a task without limits.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::Limits;

/// Where cgroups are mounted on a Linux node.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The parent of every task's group, under each controller.
const PARENT: &str = "hoist";

/// The scheduling period a CPU quota is a share of (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// The control-group layout a node mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One directory per controller (`memory/`, `cpu/`).
    V1 { memory: PathBuf, cpu: PathBuf },
    /// The unified hierarchy: one tree, controllers enabled per subtree.
    V2 { root: PathBuf },
}

/// Why a task's limits could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("this node has no cgroup hierarchy at {root} with a memory and a cpu controller, so CPU and memory limits cannot be enforced by the process driver")]
    Unavailable { root: String },
    #[error("cannot set up the task's cgroup: {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The layout mounted at `root`: v2 when the root lists its controllers
/// (`cgroup.controllers` exists only in the unified hierarchy), v1 when the memory and
/// cpu controllers have directories of their own.
pub(crate) fn detect(root: &Path) -> Option<Layout> {
    if root.join("cgroup.controllers").is_file() {
        return Some(Layout::V2 {
            root: root.to_path_buf(),
        });
    }
    let memory = root.join("memory");
    let cpu = root.join("cpu");
    (memory.join("cgroup.procs").is_file() && cpu.join("cgroup.procs").is_file())
        .then_some(Layout::V1 { memory, cpu })
}

/// What the limit files of one group must say, as `(file name, content)`, per
/// layout. Pure, so both layouts are tested without a kernel.
pub(crate) fn limit_files(layout: &Layout, limits: &Limits) -> Vec<(&'static str, String)> {
    let quota_us = limits
        .nano_cpus
        .map(|nano| (nano.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(1000));
    let mut files = Vec::new();
    match layout {
        Layout::V1 { .. } => {
            if let Some(bytes) = limits.memory_bytes {
                files.push(("memory.limit_in_bytes", bytes.to_string()));
            }
            if let Some(quota) = quota_us {
                files.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                files.push(("cpu.cfs_quota_us", quota.to_string()));
            }
        }
        Layout::V2 { .. } => {
            if let Some(bytes) = limits.memory_bytes {
                files.push(("memory.max", bytes.to_string()));
                // No swap: over the limit is over the limit, as with Docker's default
                // when swap is not asked for.
                files.push(("memory.swap.max", "0".to_owned()));
            }
            if let Some(quota) = quota_us {
                files.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            }
        }
    }
    files
}

/// One task's group, made before the task starts.
#[derive(Debug, Clone)]
pub(crate) struct TaskCgroup {
    /// The group's directory under each controller (one for v2).
    dirs: Vec<PathBuf>,
    /// The file whose `oom_kill` count tells whether the OOM killer fired here.
    oom_file: PathBuf,
}

impl TaskCgroup {
    /// Makes `hoist/<task_id>` under each controller the limits need and writes the
    /// limits. On v2 the controllers are first enabled for the children of the root
    /// and of `hoist`.
    pub(crate) fn create(
        layout: &Layout,
        task_id: &str,
        limits: &Limits,
    ) -> Result<TaskCgroup, CgroupError> {
        let (dirs, oom_file) = match layout {
            Layout::V1 { memory, cpu } => {
                let memory_dir = memory.join(PARENT).join(task_id);
                let mut dirs = vec![memory_dir.clone()];
                if limits.nano_cpus.is_some() {
                    dirs.push(cpu.join(PARENT).join(task_id));
                }
                (dirs, memory_dir.join("memory.oom_control"))
            }
            Layout::V2 { root } => {
                let parent = root.join(PARENT);
                std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
                for dir in [root.as_path(), parent.as_path()] {
                    let control = dir.join("cgroup.subtree_control");
                    std::fs::write(&control, "+memory +cpu").map_err(io_error(&control))?;
                }
                let dir = parent.join(task_id);
                (vec![dir.clone()], dir.join("memory.events"))
            }
        };
        let group = TaskCgroup { dirs, oom_file };
        for dir in &group.dirs {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        for (name, content) in limit_files(layout, limits) {
            let Some(dir) = group.dirs.iter().find(|dir| owns(layout, dir, name)) else {
                continue;
            };
            let path = dir.join(name);
            if let Err(err) = std::fs::write(&path, &content) {
                // Without swap accounting the kernel has no memory.swap.max: nothing to
                // limit there.
                if name == "memory.swap.max" && err.kind() == io::ErrorKind::NotFound {
                    continue;
                }
                group.remove();
                return Err(io_error(&path)(err));
            }
        }
        Ok(group)
    }

    /// The `cgroup.procs` files the task's first process writes `0` to (itself) in the
    /// forked child before `exec`, so nothing it runs escapes the limits.
    pub(crate) fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|dir| CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect()
    }

    /// Whether the kernel's OOM killer killed a process of this group.
    pub(crate) fn oom_killed(&self) -> bool {
        std::fs::read_to_string(&self.oom_file)
            .map(|text| oom_kills(&text) > 0)
            .unwrap_or(false)
    }

    /// The group a task of this driver would have, whether or not it was made (for a
    /// task adopted from an earlier instance, which kept no handle on it).
    pub(crate) fn existing(layout: &Layout, task_id: &str) -> TaskCgroup {
        match layout {
            Layout::V1 { memory, cpu } => {
                let memory_dir = memory.join(PARENT).join(task_id);
                TaskCgroup {
                    oom_file: memory_dir.join("memory.oom_control"),
                    dirs: vec![memory_dir, cpu.join(PARENT).join(task_id)],
                }
            }
            Layout::V2 { root } => {
                let dir = root.join(PARENT).join(task_id);
                TaskCgroup {
                    oom_file: dir.join("memory.events"),
                    dirs: vec![dir],
                }
            }
        }
    }

    /// Removes what is left of the group; false while the kernel still refuses (a
    /// process is still in it).
    pub(crate) fn try_remove(&self) -> bool {
        self.dirs.iter().all(|dir| match std::fs::remove_dir(dir) {
            Ok(()) => true,
            Err(err) => err.kind() == io::ErrorKind::NotFound,
        })
    }

    /// Removes the group (the kernel refuses while a process is still in it).
    pub(crate) fn remove(&self) {
        for dir in &self.dirs {
            if let Err(err) = std::fs::remove_dir(dir) {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %dir.display(), error = %err, "cannot remove a task's cgroup");
                }
            }
        }
    }
}

/// Whether `name` is a file of the controller directory `dir` (v1 keeps memory and cpu
/// files apart; v2 has one directory).
fn owns(layout: &Layout, dir: &Path, name: &str) -> bool {
    match layout {
        Layout::V2 { .. } => true,
        Layout::V1 { memory, cpu } => {
            (name.starts_with("memory.") && dir.starts_with(memory))
                || (name.starts_with("cpu.") && dir.starts_with(cpu))
        }
    }
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `0` to each `cgroup.procs` file: moves the calling process into the group.
/// For the forked child before `exec`: only `open`, `write` and `close`, on strings
/// made before the fork.
pub(crate) fn join_in_child(procs_files: &[CString]) -> io::Result<()> {
    for file in procs_files {
        // SAFETY: plain syscalls on a valid NUL-terminated path and a static buffer.
        unsafe {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd == -1 {
                return Err(io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(error);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(nano_cpus: Option<u64>, memory_bytes: Option<u64>) -> Limits {
        Limits {
            nano_cpus,
            memory_bytes,
        }
    }

    #[test]
    fn limits_are_written_as_each_layout_spells_them() {
        let v1 = Layout::V1 {
            memory: "/m".into(),
            cpu: "/c".into(),
        };
        let v2 = Layout::V2 { root: "/r".into() };
        let both = limits(Some(500_000_000), Some(20 << 20));
        assert_eq!(
            limit_files(&v1, &both),
            vec![
                ("memory.limit_in_bytes", "20971520".to_owned()),
                ("cpu.cfs_period_us", "100000".to_owned()),
                ("cpu.cfs_quota_us", "50000".to_owned()),
            ]
        );
        assert_eq!(
            limit_files(&v2, &both),
            vec![
                ("memory.max", "20971520".to_owned()),
                ("memory.swap.max", "0".to_owned()),
                ("cpu.max", "50000 100000".to_owned()),
            ]
        );
        // The kernel refuses a quota under 1 ms.
        assert_eq!(
            limit_files(&v2, &limits(Some(1), None)),
            vec![("cpu.max", "1000 100000".to_owned())]
        );
        assert!(limit_files(&v1, &limits(None, None)).is_empty());
    }

    #[test]
    fn oom_kill_counts_are_read_from_either_file() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"), 1);
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
    }

    /// A v2 hierarchy laid out in a temporary directory: the files the kernel would
    /// provide are plain files, so what the driver writes can be read back.
    #[test]
    fn a_v2_tree_gets_controllers_enabled_limits_written_and_is_removed() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("controllers");
        let layout = detect(root.path()).expect("a v2 layout");
        assert_eq!(
            layout,
            Layout::V2 {
                root: root.path().to_path_buf()
            }
        );
        let group = TaskCgroup::create(
            &layout,
            "task-1",
            &limits(Some(2_000_000_000), Some(64 << 20)),
        )
        .expect("the group");
        let dir = root.path().join("hoist/task-1");
        let read = |path: &Path| std::fs::read_to_string(path).expect("written");
        assert_eq!(
            read(&root.path().join("cgroup.subtree_control")),
            "+memory +cpu"
        );
        assert_eq!(
            read(&root.path().join("hoist/cgroup.subtree_control")),
            "+memory +cpu"
        );
        assert_eq!(read(&dir.join("memory.max")), "67108864");
        assert_eq!(read(&dir.join("cpu.max")), "200000 100000");
        assert_eq!(
            group.procs_files(),
            vec![CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).expect("path")]
        );
        assert!(!group.oom_killed());
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").expect("events");
        assert!(group.oom_killed());
        // A real group directory holds only kernel files, which rmdir ignores.
        for file in ["memory.max", "memory.swap.max", "cpu.max", "memory.events"] {
            std::fs::remove_file(dir.join(file)).expect("cleanup");
        }
        group.remove();
        assert!(!dir.exists());
    }

    #[test]
    fn a_v1_tree_is_recognised_by_its_controller_directories() {
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(detect(root.path()), None);
        for controller in ["memory", "cpu"] {
            std::fs::create_dir(root.path().join(controller)).expect("dir");
            std::fs::write(root.path().join(controller).join("cgroup.procs"), "").expect("procs");
        }
        let layout = detect(root.path()).expect("a v1 layout");
        let group = TaskCgroup::create(&layout, "t", &limits(None, Some(1 << 20))).expect("group");
        let written =
            std::fs::read_to_string(root.path().join("memory/hoist/t/memory.limit_in_bytes"))
                .expect("limit");
        assert_eq!(written, "1048576");
        // Only the memory controller: no CPU limit was asked for.
        assert!(!root.path().join("cpu/hoist/t").exists());
        assert_eq!(group.procs_files().len(), 1);
    }
}
