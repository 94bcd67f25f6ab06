//! The Raft store's persisted format: a store written by main at a85ac81 (before the
//! format had a version) opens and is marked as this build's; a store a newer build
//! wrote is refused by name.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use hoist_raft::{open_store, read_full_state, StoreError};
use hoist_state::persist::FORMAT_VERSION;
use redb::{ReadableDatabase, ReadableTable};

fn fixture_raft_dir(node: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hoist/tests/fixtures/a85ac81")
        .join(node)
        .join("raft")
}

/// A private copy, so the test never writes into the fixture.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating the copy");
    for entry in std::fs::read_dir(from).expect("reading the fixture") {
        let entry = entry.expect("a fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copying a fixture file");
        }
    }
}

fn set_store_format(dir: &Path, version: u32) {
    let db = redb::Database::open(dir.join("raft.redb")).expect("opening the store");
    let txn = db.begin_write().expect("write transaction");
    {
        let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        let mut table = txn.open_table(meta).expect("meta table");
        let bytes = serde_json::to_vec(&version).expect("json");
        table.insert("format", bytes.as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn a_store_written_at_a85ac81_opens_with_its_whole_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft = dir.path().join("raft");
    copy_dir(&fixture_raft_dir("n1"), &raft);

    // The snapshot at index 39 plus the log after it: every scale of `web` is in.
    let recovered = read_full_state(&raft).expect("the old store reads whole");
    assert_eq!(recovered.state.nodes.len(), 4);
    let web = recovered
        .state
        .services
        .values()
        .find(|service| service.spec.name == "web")
        .expect("web is in the fixture");
    assert_eq!(web.spec.replicas(), Some(3), "{:?}", web.spec.mode);

    let (_log, _machine, shared) = open_store(&raft).expect("the old store opens");
    assert_eq!(
        shared.read(|state| state.cluster_id.clone()),
        "1560c103ec6a6c33"
    );
    drop((_log, _machine, shared));

    // Marked as this build's, so that a newer build can tell.
    let db = redb::Database::open(raft.join("raft.redb")).expect("reopen");
    let txn = db.begin_read().expect("read");
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let table = txn.open_table(meta).expect("meta");
    let format = table.get("format").expect("get").expect("a format record");
    assert_eq!(
        serde_json::from_slice::<u32>(format.value()).expect("u32"),
        FORMAT_VERSION
    );
}

#[test]
fn a_store_from_a_future_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft = dir.path().join("raft");
    copy_dir(&fixture_raft_dir("n2"), &raft);
    set_store_format(&raft, FORMAT_VERSION + 1);
    let before = read_full_state(&raft).expect("readable").state;

    let err = match open_store(&raft) {
        Ok(_) => panic!("a store from a future version opened"),
        Err(err) => err,
    };
    assert!(matches!(err, StoreError::Format { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("raft.redb")
            && message.contains(&format!("format version {}", FORMAT_VERSION + 1))
            && message.contains(&format!("the {FORMAT_VERSION} this build reads")),
        "{message}"
    );
    // Nothing stored changed: the same state, still marked as the newer build's.
    assert!(
        read_full_state(&raft).expect("readable").state == before,
        "a refused store's state changed"
    );
    assert!(matches!(open_store(&raft), Err(StoreError::Format { .. })));
}

/// Every log entry the a85ac81 managers stored reads and writes back as the same bytes:
/// the persisted records reproduce the stored form exactly.
#[test]
fn the_log_entries_written_at_a85ac81_write_back_unchanged() {
    let mut entries = 0;
    for node in ["n1", "n2", "n3"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let raft = dir.path().join("raft");
        copy_dir(&fixture_raft_dir(node), &raft);
        let db = redb::Database::open(raft.join("raft.redb")).expect("opening the store");
        let txn = db.begin_read().expect("read");
        let log: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");
        let table = txn.open_table(log).expect("log table");
        for item in table.iter().expect("iterating the log") {
            let (index, value) = item.expect("an entry");
            let stored = value.value();
            let entry: openraft::Entry<hoist_raft::TypeConfig> =
                serde_json::from_slice(stored).expect("the entry reads");
            let written = serde_json::to_vec(&entry).expect("the entry writes");
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(stored),
                "{node}: entry {}",
                index.value()
            );
            entries += 1;
        }
    }
    assert!(entries > 10, "only {entries} entries in the fixture's logs");
}
