//! The Raft log and the state machine, persisted in one redb database.
//!
//! The log, the vote and the commit index are written with redb's immediate durability
//! (fsync) before openraft is told they are stored, so an acknowledged write survives a
//! SIGKILL. The state machine lives in memory and is persisted through snapshots: on
//! restart it is rebuilt from the last snapshot and openraft re-applies the committed log
//! after it, which is cheaper than writing the whole state on every change.

// openraft's storage traits fix the error type (`StorageError`, a large enum); the
// helpers here return what those traits return.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hoist_state::{persist, ClusterState};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{ApplyResult, TypeConfig};

type NodeId = u64;

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_PURGED: &str = "last_purged";
/// The persisted format version of the store (absent: version 1, before it was kept).
pub(crate) const KEY_FORMAT: &str = "format";
pub(crate) const KEY_SNAPSHOT_META: &str = "meta";
pub(crate) const KEY_SNAPSHOT_DATA: &str = "data";
/// Present while this store began blank and no leader has confirmed its node as a new
/// voter: such a node neither votes nor stands for election, even after a restart.
pub(crate) const KEY_UNCONFIRMED: &str = "unconfirmed_voter";

/// Automatic snapshots kept on disk beside the store, newest last: a manager can be
/// inspected or rebuilt from a recent one even if its store is damaged.
pub const SNAPSHOTS_KEPT: usize = 3;

/// Writes the snapshot of `index` as `snapshot-<index>.json` and keeps the newest
/// [`SNAPSHOTS_KEPT`].
fn archive_snapshot(dir: &Path, index: u64, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("snapshot-{index:020}.json"));
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // The state holds the CA key and the join secrets: owner only, whatever the
        // umask of the process that embeds the store.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    let mut archived: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    archived.sort();
    let excess = archived.len().saturating_sub(SNAPSHOTS_KEPT);
    for old in &archived[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

/// The store holds the CA key and the join secrets (in its snapshot): owner only,
/// whatever the umask of the process that embeds it, and whatever an older version left.
pub(crate) fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the Raft store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the Raft store is corrupt: {0}")]
    Corrupt(String),
    #[error("the Raft store at {path}: {source}")]
    Format {
        path: String,
        source: persist::PersistError,
    },
    #[error("the Raft store {path} is missing")]
    Missing { path: String },
    /// The file is there but holds no vote, no log and no snapshot (or is zero bytes
    /// long): whatever this node promised before is forgotten.
    #[error("the Raft store {path} is empty")]
    Empty { path: String },
}

/// The store's file in `dir`.
pub fn store_file(dir: &Path) -> PathBuf {
    dir.join("raft.redb")
}

/// Checks that `dir` holds a store this node has used: the file is there, redb opens it,
/// and it holds a vote, a log entry or a snapshot. A manager that was a voter and finds
/// anything less must not start Raft: it could vote a second time in a term it voted
/// in before. Opens the database and closes it again.
pub fn check_store(dir: &Path) -> Result<(), StoreError> {
    let path = store_file(dir);
    let shown = path.display().to_string();
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == 0 => return Err(StoreError::Empty { path: shown }),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Missing { path: shown })
        }
        Err(err) => {
            return Err(StoreError::Open {
                path: shown,
                reason: err.to_string(),
            })
        }
    }
    let db = Database::open(&path).map_err(|err| StoreError::Open {
        path: shown.clone(),
        reason: err.to_string(),
    })?;
    let blank = store_is_blank(&db).map_err(|err| StoreError::Open {
        path: shown.clone(),
        reason: err.to_string(),
    })?;
    if blank {
        return Err(StoreError::Empty { path: shown });
    }
    Ok(())
}

/// No vote, no log entry, no purge point and no snapshot: a store that never took
/// part in an election or held an entry (a missing table counts as empty).
fn store_is_blank(db: &Database) -> Result<bool, StorageError<NodeId>> {
    use redb::{ReadableTableMetadata, TableError};
    let txn = db.begin_read().map_err(read_err)?;
    match txn.open_table(LOG) {
        Ok(table) if !table.is_empty().map_err(read_err)? => return Ok(false),
        Ok(_) | Err(TableError::TableDoesNotExist(_)) => {}
        Err(err) => return Err(read_err(err)),
    }
    // The unconfirmed marker alone is not something this node promised anyone.
    for (definition, keys) in [
        (META, &[KEY_VOTE, KEY_COMMITTED, KEY_PURGED][..]),
        (SNAPSHOT, &[KEY_SNAPSHOT_META][..]),
    ] {
        match txn.open_table(definition) {
            Ok(table) => {
                for key in keys {
                    if table.get(*key).map_err(read_err)?.is_some() {
                        return Ok(false);
                    }
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(err) => return Err(read_err(err)),
        }
    }
    Ok(true)
}

/// The cluster state as applied so far, readable by every part of the manager, with a
/// version channel that wakes whoever waits for a change.
#[derive(Clone)]
pub struct SharedState {
    state: Arc<RwLock<ClusterState>>,
    version: watch::Sender<u64>,
}

impl SharedState {
    fn new(state: ClusterState) -> Self {
        let (version, _) = watch::channel(state.version);
        SharedState {
            state: Arc::new(RwLock::new(state)),
            version,
        }
    }

    /// Runs `read` over the current state. Keep it short: appliers wait on the lock.
    pub fn read<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> T {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        read(&state)
    }

    pub fn snapshot(&self) -> ClusterState {
        self.read(ClusterState::clone)
    }

    /// A receiver that changes whenever a change is applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Applies `edit` under the write lock, then wakes the watchers once.
    fn modify<T>(&self, edit: impl FnOnce(&mut ClusterState) -> T) -> T {
        let (result, version) = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let result = edit(&mut state);
            (result, state.version)
        };
        self.version.send_replace(version);
        result
    }

    fn replace(&self, state: ClusterState) {
        let version = state.version;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        self.version.send_replace(version);
    }
}

fn io_err(source: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write(&source),
    }
}

fn read_err(source: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::read(&source),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError<NodeId>> {
    serde_json::to_vec(value).map_err(io_err)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StorageError<NodeId>> {
    serde_json::from_slice(bytes).map_err(read_err)
}

/// Opens the store in `dir`, or creates it when there is no file yet, and returns the
/// log store, the state machine and the shared view of the state. An existing file is
/// only ever opened: a zero-length one is refused ([`StoreError::Empty`]) rather than
/// initialized afresh, since a node that forgets its vote can vote twice in one term.
/// Whether a missing store is acceptable is the caller's to decide ([`check_store`]).
pub fn open_store(dir: &Path) -> Result<(LogStore, StateMachine, SharedState), StoreError> {
    let path = store_file(dir);
    let open_err = |reason: String| StoreError::Open {
        path: path.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|err| open_err(err.to_string()))?;
    let db = match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == 0 => {
            return Err(StoreError::Empty {
                path: path.display().to_string(),
            })
        }
        Ok(_) => Database::open(&path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Database::create(&path),
        Err(err) => return Err(open_err(err.to_string())),
    }
    .map_err(|err| open_err(err.to_string()))?;
    make_private(&path).map_err(|err| open_err(err.to_string()))?;
    // Before anything is written: a store a newer build wrote is left as it is.
    check_and_record_format(&db, &path)?;
    let txn = db.begin_write().map_err(|err| open_err(err.to_string()))?;
    for table in [META, SNAPSHOT] {
        txn.open_table(table)
            .map_err(|err| open_err(err.to_string()))?;
    }
    txn.open_table(LOG)
        .map_err(|err| open_err(err.to_string()))?;
    txn.commit().map_err(|err| open_err(err.to_string()))?;
    let db = Arc::new(db);

    let snapshot = read_snapshot(&db).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    let (state, applied, membership) = match &snapshot {
        Some((meta, data)) => {
            let state = persist::decode_snapshot(data).map_err(|source| StoreError::Format {
                path: path.display().to_string(),
                source,
            })?;
            (state, meta.last_log_id, meta.last_membership.clone())
        }
        None => (ClusterState::default(), None, StoredMembership::default()),
    };
    let shared = SharedState::new(state);
    let machine = StateMachine {
        db: db.clone(),
        archive_dir: dir.join("snapshots"),
        shared: shared.clone(),
        last_applied: applied,
        membership,
        snapshot_index: 0,
    };
    Ok((LogStore { db }, machine, shared))
}

/// Refuses a store a newer build wrote, and marks an older one as this build's: from
/// here on this build writes entries and snapshots in its own format.
fn check_and_record_format(db: &Database, path: &Path) -> Result<(), StoreError> {
    let format_err = |source| StoreError::Format {
        path: path.display().to_string(),
        source,
    };
    let corrupt = |err: &dyn std::fmt::Display| StoreError::Corrupt(err.to_string());
    let txn = db.begin_write().map_err(|err| corrupt(&err))?;
    {
        let mut meta = txn.open_table(META).map_err(|err| corrupt(&err))?;
        let found = match meta.get(KEY_FORMAT).map_err(|err| corrupt(&err))? {
            Some(bytes) => serde_json::from_slice::<u32>(bytes.value()).map_err(|_| {
                format_err(persist::PersistError::BadVersion {
                    what: "the store",
                    value: String::from_utf8_lossy(bytes.value()).into_owned(),
                })
            })?,
            None => persist::UNVERSIONED,
        };
        persist::check_version("the store", found).map_err(format_err)?;
        if found != persist::FORMAT_VERSION {
            tracing::info!(
                from = found,
                to = persist::FORMAT_VERSION,
                "upgrading the Raft store's format"
            );
            let bytes =
                serde_json::to_vec(&persist::FORMAT_VERSION).map_err(|err| corrupt(&err))?;
            meta.insert(KEY_FORMAT, bytes.as_slice())
                .map_err(|err| corrupt(&err))?;
        }
    }
    txn.commit().map_err(|err| corrupt(&err))
}

impl LogStore {
    /// Whether the store holds no vote, no log and no snapshot (see [`check_store`]).
    pub fn is_blank(&self) -> Result<bool, StoreError> {
        store_is_blank(&self.db).map_err(|err| StoreError::Corrupt(err.to_string()))
    }

    /// Whether this node waits for a leader to confirm it as a new voter: its store was
    /// blank when Raft started (now or at an earlier start), and nobody has confirmed
    /// it since. Marks a blank store so that a restart does not forget it.
    pub fn needs_confirmation(&self) -> Result<bool, StoreError> {
        let corrupt = |err: StorageError<NodeId>| StoreError::Corrupt(err.to_string());
        if self.get_meta::<bool>(KEY_UNCONFIRMED).map_err(corrupt)? == Some(true) {
            return Ok(true);
        }
        if !self.is_blank()? {
            return Ok(false);
        }
        self.put_meta(KEY_UNCONFIRMED, &true).map_err(corrupt)?;
        Ok(true)
    }

    /// A handle that records a leader's confirmation later, without keeping the
    /// database open: once Raft shuts down the file must be free for recovery to open.
    pub(crate) fn confirmer(&self) -> VoterConfirmer {
        VoterConfirmer {
            db: Arc::downgrade(&self.db),
        }
    }
}

/// Clears the "unconfirmed" marker of a store that Raft still has open.
pub(crate) struct VoterConfirmer {
    db: std::sync::Weak<Database>,
}

impl VoterConfirmer {
    /// Records that a leader confirmed this node as a voter (or that it founded the
    /// group).
    pub(crate) fn confirm(&self) -> Result<(), String> {
        let db = self
            .db
            .upgrade()
            .ok_or_else(|| "raft has stopped on this node".to_string())?;
        let txn = db.begin_write().map_err(|err| err.to_string())?;
        {
            let mut table = txn.open_table(META).map_err(|err| err.to_string())?;
            table
                .remove(KEY_UNCONFIRMED)
                .map_err(|err| err.to_string())?;
        }
        txn.commit().map_err(|err| err.to_string())
    }
}

type StoredSnapshot = (SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>);

fn read_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
    let txn = db.begin_read().map_err(read_err)?;
    let table = txn.open_table(SNAPSHOT).map_err(read_err)?;
    let meta = table.get(KEY_SNAPSHOT_META).map_err(read_err)?;
    let data = table.get(KEY_SNAPSHOT_DATA).map_err(read_err)?;
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some((decode(meta.value())?, data.value().to_vec()))),
        _ => Ok(None),
    }
}

fn write_snapshot(
    db: &Database,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    data: &[u8],
) -> Result<(), StorageError<NodeId>> {
    let txn = db.begin_write().map_err(io_err)?;
    {
        let mut table = txn.open_table(SNAPSHOT).map_err(io_err)?;
        table
            .insert(KEY_SNAPSHOT_META, encode(meta)?.as_slice())
            .map_err(io_err)?;
        table.insert(KEY_SNAPSHOT_DATA, data).map_err(io_err)?;
    }
    txn.commit().map_err(io_err)
}

/// The Raft log, vote and commit index.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    fn get_meta<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        let value = table.get(key).map_err(read_err)?;
        value.map(|bytes| decode(bytes.value())).transpose()
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError<NodeId>> {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(META).map_err(io_err)?;
            table
                .insert(key, encode(value)?.as_slice())
                .map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }

    fn remove_range(&self, range: (Bound<u64>, Bound<u64>)) -> Result<(), StorageError<NodeId>> {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            table.retain_in(range, |_, _| false).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let mut entries = Vec::new();
        for item in table.range::<u64>(bounds).map_err(read_err)? {
            let (_, value) = item.map_err(read_err)?;
            entries.push(decode(value.value())?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta(KEY_PURGED)?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let last = match table.last().map_err(read_err)? {
            Some((_, value)) => Some(decode::<Entry<TypeConfig>>(value.value())?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(KEY_VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            for entry in entries {
                table
                    .insert(entry.log_id.index, encode(&entry)?.as_slice())
                    .map_err(io_err)?;
            }
        }
        // Immediate durability: commit returns after fsync, so the entries are on disk
        // before openraft counts them towards a quorum.
        let result = txn.commit();
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                let message = err.to_string();
                callback.log_io_completed(Err(std::io::Error::other(message)));
                Err(io_err(err))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_range((Bound::Included(log_id.index), Bound::Unbounded))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: a crash between the two leaves extra entries,
        // which is harmless, never a gap that is not accounted for.
        self.put_meta(KEY_PURGED, &log_id)?;
        self.remove_range((Bound::Unbounded, Bound::Included(log_id.index)))
    }
}

/// The applied cluster state and its snapshots.
pub struct StateMachine {
    db: Arc<Database>,
    /// Where the last [`SNAPSHOTS_KEPT`] snapshots are kept as plain JSON files.
    archive_dir: PathBuf,
    shared: SharedState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    /// Distinguishes snapshots taken at the same log id.
    snapshot_index: u64,
}

/// Builds a snapshot from a copy of the state taken when it was asked for.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    archive_dir: PathBuf,
    state: ClusterState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    snapshot_index: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = persist::encode_snapshot(&self.state).map_err(io_err)?;
        let snapshot_id = match self.last_applied {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id, log_id.index, self.snapshot_index
            ),
            None => format!("none-{}", self.snapshot_index),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        write_snapshot(&self.db, &meta, &data)?;
        if let Some(index) = self.last_applied.map(|log_id| log_id.index) {
            if let Err(err) = archive_snapshot(&self.archive_dir, index, &data) {
                tracing::warn!(error = %err, "archiving the snapshot");
            }
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let shared = self.shared.clone();
        // Each change checks before it edits, so applying in place under the lock never
        // leaves a half-applied change for readers to see.
        let results = shared.modify(|state| {
            let mut results = Vec::new();
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => results.push(ApplyResult::default()),
                    EntryPayload::Normal(change) => {
                        let outcome = state.apply(change);
                        if let Err(err) = &outcome {
                            tracing::debug!(index = entry.log_id.index, error = %err, "change refused");
                        }
                        results.push(ApplyResult(outcome));
                    }
                    EntryPayload::Membership(membership) => {
                        self.membership =
                            StoredMembership::new(Some(entry.log_id), membership.clone());
                        results.push(ApplyResult::default());
                    }
                }
            }
            results
        });
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_index += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            archive_dir: self.archive_dir.clone(),
            state: self.shared.snapshot(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshot_index: self.snapshot_index,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state = persist::decode_snapshot(&data).map_err(|err| StorageError::IO {
            source: StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&err)),
        })?;
        write_snapshot(&self.db, meta, &data)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.shared.replace(state);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(read_snapshot(&self.db)?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, RaftLogReader};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// A store with a vote and a few entries, closed again.
    fn used_store(dir: &Path) {
        let (log, _, _) = open_store(dir).unwrap();
        log.put_meta(KEY_VOTE, &Vote::new(1, 1)).unwrap();
        let txn = log.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(LOG).unwrap();
            for index in 1..=200 {
                let bytes = encode(&entry(index)).unwrap();
                table.insert(index, bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[test]
    fn an_existing_store_is_opened_and_never_created_afresh() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            check_store(dir.path()),
            Err(StoreError::Missing { .. })
        ));
        used_store(dir.path());
        check_store(dir.path()).unwrap();
        let (mut log, _, _) = open_store(dir.path()).unwrap();
        assert!(!log.is_blank().unwrap());
        let entries = block_on(log.try_get_log_entries(1..=200)).unwrap();
        assert_eq!(entries.len(), 200);
    }

    #[test]
    fn an_empty_or_blank_store_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_file(dir.path());
        std::fs::write(&path, b"").unwrap();
        let err = open_store(dir.path())
            .err()
            .expect("a zero-length store is refused");
        assert!(matches!(err, StoreError::Empty { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(matches!(
            check_store(dir.path()),
            Err(StoreError::Empty { .. })
        ));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "not initialized"
        );
        // A valid database that holds nothing this node promised is empty too.
        std::fs::remove_file(&path).unwrap();
        let (log, _, _) = open_store(dir.path()).unwrap();
        assert!(log.is_blank().unwrap());
        drop(log);
        assert!(matches!(
            check_store(dir.path()),
            Err(StoreError::Empty { .. })
        ));
    }

    #[test]
    fn a_truncated_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        used_store(dir.path());
        let path = store_file(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        let err = check_store(dir.path()).expect_err("a truncated store is refused");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(open_store(dir.path()).is_err());
    }

    #[test]
    fn a_store_overwritten_with_garbage_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_file(dir.path());
        let garbage: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &garbage).unwrap();
        let err = check_store(dir.path()).expect_err("garbage is refused");
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(open_store(dir.path()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "not rewritten");
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }
}
