//! The process driver's on-disk record of one task: `<state>/tasks/<task_id>.json`.
//!
//! A record is what lets a restarted worker find its running tasks again
//! (adoption) instead of starting duplicates. It holds the pid *and* the
//! process's start time, because after a reboot or a long downtime the pid alone
//! may name an unrelated process. Written atomically (temp file, fsync, rename),
//! so a crash leaves either the old or the new record, never half of one.
//!
//! Knows the file format only; deciding what a record means is `super`'s job.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::{DriverError, Endpoint, TaskExit};

/// Bumped when the record changes incompatibly; a newer worker must still read
/// older records to adopt tasks across an upgrade.
pub(crate) const RECORD_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub format: u32,
    pub task_id: String,
    pub service_id: String,
    pub service_name: String,
    pub pid: u32,
    /// `/proc/PID/stat` field 22, see [`super::procfs::ProcStat::start_ticks`].
    pub proc_start_ticks: u64,
    pub endpoints: Vec<Endpoint>,
    /// The task's state directory (from its `RunSpec`).
    pub task_dir: PathBuf,
    /// Where stdout and stderr are appended.
    pub log_path: PathBuf,
    /// Set once the driver saw the task end; `None` while it may still run.
    pub exit: Option<TaskExit>,
}

impl TaskRecord {
    pub(crate) async fn load(path: &Path) -> Result<TaskRecord, DriverError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|err| DriverError::io("cannot read task record", path, err))?;
        let record: TaskRecord =
            serde_json::from_slice(&bytes).map_err(|source| DriverError::CorruptRecord {
                path: path.to_owned(),
                source,
            })?;
        if record.format > RECORD_FORMAT {
            // Written by a newer worker: guessing at its meaning could signal
            // the wrong process.
            return Err(DriverError::CorruptRecord {
                path: path.to_owned(),
                source: serde::de::Error::custom(format!(
                    "record format {} is newer than this driver's ({RECORD_FORMAT})",
                    record.format
                )),
            });
        }
        Ok(record)
    }

    pub(crate) async fn save(&self, path: &Path) -> Result<(), DriverError> {
        let json =
            serde_json::to_vec_pretty(self).map_err(|source| DriverError::CorruptRecord {
                path: path.to_owned(),
                source,
            })?;
        // A unique temp name: two writers of one record (a task's watcher and an
        // adopting instance) must not write into the same temp file.
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let n_save = SAVES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("json.{}.{n_save}.tmp", std::process::id()));
        let written = write_synced(&tmp, &json).await;
        let renamed = match written {
            Ok(()) => tokio::fs::rename(&tmp, path)
                .await
                .map_err(|err| DriverError::io("cannot rename task record", path, err)),
            Err(err) => Err(err),
        };
        if renamed.is_err() {
            // Best effort: do not leave temp files behind for every failed save.
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        renamed
    }
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DriverError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|err| DriverError::io("cannot create task record", path, err))?;
    file.write_all(bytes)
        .await
        .map_err(|err| DriverError::io("cannot write task record", path, err))?;
    // fsync before rename: otherwise a power loss can leave the new name
    // pointing at an empty file and the task would be forgotten.
    file.sync_all()
        .await
        .map_err(|err| DriverError::io("cannot sync task record", path, err))
}
