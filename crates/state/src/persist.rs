//! The version of what managers keep on disk: snapshots, the Raft store and backups.
//!
//! Version 1 is what main wrote up to commit a85ac81: a snapshot was the bare JSON of a
//! [`ClusterState`], and neither the store nor the snapshot said which version wrote it.
//! From version 2 on, a snapshot is the same object with a `"format"` member, and the
//! store records its version in its metadata table (the `raft` crate keeps that record).
//! A reader takes every version up to its own, converting as it goes, and refuses a
//! newer one by name: a manager must never guess at a file a later build wrote.
//!
//! The `"format"` member sits beside the state's own fields rather than around them, so
//! that a version-1 reader (main at a85ac81, which knows no versions) parsing a newer
//! snapshot sees a cluster state, not an unknown wrapper. Builds from version 2 on refuse
//! a newer snapshot outright: accepting it because it happens to parse would drop the
//! fields they do not know at the next snapshot. That is why a rolling upgrade goes
//! followers first and the leader last (README, "Upgrading a running cluster"): an old
//! follower is never sent a snapshot or a change from a newer leader while the leader is
//! still old.
//!
//! What the bytes hold is defined by the records in [`crate::records`], not by the
//! domain types: `Change` and `ClusterState` serialize through `ChangeRecord` and
//! `ClusterStateRecord`, and the types in `hoist_types` serialize as themselves only in
//! the API. The rule:
//!
//! - the records are the format; any change to a record's serialized form (a field
//!   added, removed, renamed or retyped, an enum spelled otherwise, a default changed)
//!   bumps [`FORMAT_VERSION`], keeps reading every older version (converted here or by
//!   serde defaults in the records), and adds golden files of the new version beside the
//!   old ones in `crates/state/tests/golden/`;
//! - a rename or a new type in the domain (`hoist_types`, the state's tables) changes a
//!   conversion in `records/` and nothing stored: the golden files of the current
//!   version must still be written byte for byte.
//!
//! This module owns the version number and the conversions between versions. It does not
//! know where the bytes are stored or how they travel.

use serde::Serialize;

use crate::ClusterState;

/// The persisted format this build writes. Every change to what a snapshot, a log entry
/// or a backup holds (to a record in [`crate::records`]) bumps it, and
/// [`decode_snapshot`] learns to read the old one.
///
/// - 1: main up to a85ac81 (no version anywhere).
/// - 2: snapshots and stores carry their version.
/// - 3: cluster settings gain `max_replicas`, `join_rate_limit` and
///   `task_history_limit` (serde defaults fill them in older files), and the log gains
///   `Change::UpdateSettings`.
/// - 4: CA history: `CaMaterial::rotation` and `retired` (serde defaults, so nothing
///   converts), and the changes `RotateCa` and `NoteCaRenewal`. Since then written from
///   records of their own (`records/`), in the same form.
/// - 5: `Change::SetNodeDescription` carries the node's `resources` (CPUs and memory
///   from its kernel; left out when not reported, so older entries read as before).
/// - 6: job modes: a spec's `mode` may be `replicated_job` (with `max_concurrent` and
///   `total_completions`) or `global_job`; a spec may hold `health_timeout_ms`,
///   `health_start_period_ms`, `no_healthcheck`, `hostname` and `entrypoint` (left out
///   when unset, so older specs are written as before); nodes and
///   `SetNodeDescription` may hold `port_faults` (left out when empty).
pub const FORMAT_VERSION: u32 = 6;

/// The version files without one were written in.
pub const UNVERSIONED: u32 = 1;

/// Why persisted bytes cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(
        "{what} is in format version {found}, newer than the {supported} this build reads: \
         run a hoist build at least as new as the one that wrote it"
    )]
    FutureVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{what} has a format version that is not a positive number: {value}")]
    BadVersion { what: &'static str, value: String },
    #[error("{what} is not a cluster state: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// Checks that `found`, a version read from `what`, is one this build reads.
pub fn check_version(what: &'static str, found: u32) -> Result<(), PersistError> {
    if found == 0 {
        return Err(PersistError::BadVersion {
            what,
            value: "0".into(),
        });
    }
    if found > FORMAT_VERSION {
        return Err(PersistError::FutureVersion {
            what,
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

#[derive(Serialize)]
struct VersionedRef<'a> {
    format: u32,
    #[serde(flatten)]
    state: &'a ClusterState,
}

/// The bytes of a snapshot of `state`, in [`FORMAT_VERSION`].
pub fn encode_snapshot(state: &ClusterState) -> Result<Vec<u8>, PersistError> {
    serde_json::to_vec(&VersionedRef {
        format: FORMAT_VERSION,
        state,
    })
    .map_err(|err| PersistError::Malformed {
        what: "the snapshot",
        reason: err.to_string(),
    })
}

/// Reads a snapshot of any version up to [`FORMAT_VERSION`].
pub fn decode_snapshot(bytes: &[u8]) -> Result<ClusterState, PersistError> {
    const WHAT: &str = "the snapshot";
    let malformed = |err: serde_json::Error| PersistError::Malformed {
        what: WHAT,
        reason: err.to_string(),
    };
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    let object = value.as_object_mut().ok_or(PersistError::Malformed {
        what: WHAT,
        reason: "not a JSON object".into(),
    })?;
    let version = match object.remove("format") {
        None => UNVERSIONED,
        Some(found) => found
            .as_u64()
            .and_then(|version| u32::try_from(version).ok())
            .ok_or_else(|| PersistError::BadVersion {
                what: WHAT,
                value: found.to_string(),
            })?,
    };
    check_version(WHAT, version)?;
    // Versions 1 to 3 changed nothing in the state's shape; fields added since carry
    // serde defaults. A later version that renames or moves a field converts here.
    serde_json::from_value(value).map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE_SNAPSHOT: &[u8] = include_bytes!(
        "../../hoist/tests/fixtures/a85ac81/n1/raft/snapshots/snapshot-00000000000000000039.json"
    );

    #[test]
    fn a_snapshot_written_at_a85ac81_loads() {
        let state = decode_snapshot(FIXTURE_SNAPSHOT).expect("the fixture loads");
        assert_eq!(state.cluster_id, "1560c103ec6a6c33");
        assert_eq!(state.nodes.len(), 4);
        let mut names: Vec<&str> = state
            .services
            .values()
            .map(|service| service.spec.name.as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["batch", "cache", "web"]);
        assert!(state.ca.is_some());
    }

    #[test]
    fn a_snapshot_round_trips_with_its_version() {
        let state = decode_snapshot(FIXTURE_SNAPSHOT).expect("the fixture loads");
        let bytes = encode_snapshot(&state).expect("encodes");
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["format"], FORMAT_VERSION);
        assert_eq!(decode_snapshot(&bytes).expect("decodes"), state);
    }

    #[test]
    fn a_future_snapshot_is_refused_naming_both_versions() {
        let state = decode_snapshot(FIXTURE_SNAPSHOT).expect("the fixture loads");
        let mut value = serde_json::to_value(&state).expect("json");
        value["format"] = serde_json::json!(FORMAT_VERSION + 1);
        let bytes = serde_json::to_vec(&value).expect("json");
        let err = decode_snapshot(&bytes).expect_err("a future version is refused");
        let message = err.to_string();
        assert!(
            message.contains(&format!("format version {}", FORMAT_VERSION + 1))
                && message.contains(&format!("the {FORMAT_VERSION} this build reads")),
            "{message}"
        );
    }

    #[test]
    fn a_version_that_is_not_a_number_is_refused() {
        for bad in [r#"{"format":"two"}"#, r#"{"format":-1}"#, r#"{"format":0}"#] {
            let err = decode_snapshot(bad.as_bytes()).expect_err(bad);
            assert!(
                matches!(err, PersistError::BadVersion { .. }),
                "{bad}: {err}"
            );
        }
        assert!(matches!(
            decode_snapshot(b"[1,2]"),
            Err(PersistError::Malformed { .. })
        ));
    }
}
