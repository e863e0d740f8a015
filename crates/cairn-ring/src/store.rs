//! Durable Raft storage for the ring.
//!
//! - The log, vote and commit index live in one redb file
//!   (`<data.dir>/ring/raft.redb`); every append is one fsynced transaction,
//!   acknowledged to openraft only after the commit returns.
//! - The state machine is in memory (a ring is a few kilobytes). Snapshots
//!   are written to `<data.dir>/ring/snapshot.json` (temporary file, fsync,
//!   rename) and loaded at start; openraft re-applies the committed log
//!   entries after the snapshot.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::format;
use crate::state::{CommandResult, RingState};

type NodeId = u64;
type Node = openraft::BasicNode;
type SErr = StorageError<NodeId>;

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

fn logs_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write_logs(openraft::AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::read_logs(openraft::AnyError::new(&e)).into()
}

fn sm_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write_state_machine(openraft::AnyError::new(&e)).into()
}

/// The Raft log in redb. Clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<redb::Database>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

impl LogStore {
    pub fn open(path: &Path) -> Result<Self, SErr> {
        let db = redb::Database::create(path).map_err(logs_err)?;
        // Create the tables, so that readers never find them missing.
        let txn = db.begin_write().map_err(logs_err)?;
        txn.open_table(LOG).map_err(logs_err)?;
        txn.open_table(META).map_err(logs_err)?;
        txn.commit().map_err(logs_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn get_meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, SErr> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(format::decode_stored(key_name(key), v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), SErr> {
        let bytes = format::encode_stored(value).map_err(logs_err)?;
        let txn = self.db.begin_write().map_err(logs_err)?;
        txn.open_table(META).map_err(logs_err)?.insert(key, bytes.as_slice()).map_err(logs_err)?;
        txn.commit().map_err(logs_err)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, SErr> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        match table.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = format::decode_stored("a ring log entry", v.value()).map_err(read_err)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }

    /// Runs `f` (redb transactions, each commit an fsync) on the blocking
    /// pool, never on an async worker.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LogStore) -> Result<T, SErr> + Send + 'static,
    ) -> Result<T, SErr> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| logs_err(std::io::Error::other(e.to_string())))?
    }

    /// Removes entries with index in `range`.
    fn remove(&self, range: (Bound<u64>, Bound<u64>)) -> Result<(), SErr> {
        let txn = self.db.begin_write().map_err(logs_err)?;
        txn.open_table(LOG).map_err(logs_err)?.retain_in(range, |_, _| false).map_err(logs_err)?;
        txn.commit().map_err(logs_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        self.blocking(move |this| {
            let txn = this.db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let mut out = Vec::new();
            for item in table.range::<u64>(bounds).map_err(read_err)? {
                let (_, v) = item.map_err(read_err)?;
                out.push(format::decode_stored("a ring log entry", v.value()).map_err(read_err)?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        self.blocking(|this| {
            let last_purged_log_id: Option<LogId<NodeId>> = this.get_meta(PURGED)?;
            let last_log_id = this.last_entry_id()?.or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let vote = *vote;
        self.blocking(move |this| this.put_meta(VOTE, &vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        self.blocking(|this| this.get_meta(VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        self.blocking(move |this| this.put_meta(COMMITTED, &committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        self.blocking(|this| Ok(this.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let result = self
            .blocking(move |this| {
                let txn = this.db.begin_write().map_err(logs_err)?;
                {
                    let mut table = txn.open_table(LOG).map_err(logs_err)?;
                    for e in entries {
                        let bytes = format::encode_stored(&e).map_err(logs_err)?;
                        table.insert(e.log_id.index, bytes.as_slice()).map_err(logs_err)?;
                    }
                }
                txn.commit().map_err(logs_err)
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.blocking(move |this| this.remove((Bound::Included(log_id.index), Bound::Unbounded))).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        // Record the purge point first: a crash in between leaves entries
        // that are merely ignored.
        self.blocking(move |this| {
            this.put_meta(PURGED, &log_id)?;
            this.remove((Bound::Unbounded, Bound::Included(log_id.index)))
        })
        .await
    }
}

/// What a snapshot holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SnapshotFile {
    /// [`format::SNAPSHOT_FORMAT`] when written; 0 (absent) before
    /// snapshots were versioned.
    #[serde(default)]
    format: u32,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    ring: RingState,
    snapshot_id: String,
}

impl SnapshotFile {
    /// Reads a snapshot of any format this build knows.
    fn read(bytes: &[u8]) -> Result<Self, format::FormatError> {
        let what = "the ring snapshot";
        let snap: SnapshotFile =
            serde_json::from_slice(bytes).map_err(|source| format::FormatError::Json { what, source })?;
        if snap.format > format::SNAPSHOT_FORMAT {
            return Err(format::FormatError::TooNew { what, found: snap.format, supported: format::SNAPSHOT_FORMAT });
        }
        Ok(snap)
    }
}

/// The name of a metadata key in errors.
fn key_name(key: &str) -> &'static str {
    match key {
        VOTE => "the ring's stored vote",
        COMMITTED => "the ring's stored commit index",
        _ => "the ring's stored purge point",
    }
}

/// Called with the ring after every change a state machine applies.
pub type OnApply = Arc<dyn Fn(&RingState, u64) + Send + Sync>;

struct SmInner {
    current: SnapshotFile,
    snapshot: Option<(SnapshotFile, Vec<u8>)>,
}

/// The ring state machine. Clones share it.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
    /// Serialises snapshot writes: openraft may build one while another is
    /// being installed.
    saving: Arc<Mutex<()>>,
    /// Where snapshots are kept; `None` keeps them in memory (tests).
    path: Option<PathBuf>,
    on_apply: Option<OnApply>,
}

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMachine")
    }
}

impl StateMachine {
    /// Loads the last snapshot from `path` when there is one.
    pub fn open(path: Option<PathBuf>, on_apply: Option<OnApply>) -> Result<Self, SErr> {
        let mut inner = SmInner { current: SnapshotFile::default(), snapshot: None };
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(bytes) => {
                    let snap = SnapshotFile::read(&bytes).map_err(sm_err)?;
                    inner.current = snap.clone();
                    inner.snapshot = Some((snap, bytes));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(sm_err(e)),
            }
        }
        let sm = Self { inner: Arc::new(Mutex::new(inner)), saving: Default::default(), path, on_apply };
        sm.notify();
        Ok(sm)
    }

    /// The ring and the index of the last entry it reflects.
    pub fn ring(&self) -> (RingState, u64) {
        let inner = self.inner.lock();
        (inner.current.ring.clone(), inner.current.last_applied.map_or(0, |l| l.index))
    }

    fn notify(&self) {
        if let Some(f) = &self.on_apply {
            let inner = self.inner.lock();
            f(&inner.current.ring, inner.current.last_applied.map_or(0, |l| l.index));
        }
    }

    /// Writes `snap` (temporary file, fsync, rename) and makes it the
    /// current snapshot, unless a newer one is already kept. Returns its
    /// bytes either way.
    #[allow(clippy::disallowed_methods, reason = "called on the blocking pool (save_snapshot_off_runtime)")]
    fn save_snapshot(&self, snap: &SnapshotFile) -> Result<Vec<u8>, SErr> {
        let _saving = self.saving.lock();
        let bytes = serde_json::to_vec(snap).map_err(sm_err)?;
        let newer = self.inner.lock().snapshot.as_ref().is_none_or(|(kept, _)| snap.last_applied >= kept.last_applied);
        if !newer {
            return Ok(bytes);
        }
        if let Some(p) = &self.path {
            let tmp = p.with_extension("json.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, p)?;
                if let Some(dir) = p.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            };
            write().map_err(sm_err)?;
        }
        self.inner.lock().snapshot = Some((snap.clone(), bytes.clone()));
        Ok(bytes)
    }
}

impl StateMachine {
    /// [`StateMachine::save_snapshot`] (a file write and two fsyncs) on the
    /// blocking pool.
    async fn save_snapshot_off_runtime(&self, snap: SnapshotFile) -> Result<Vec<u8>, SErr> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.save_snapshot(&snap))
            .await
            .map_err(|e| sm_err(std::io::Error::other(e.to_string())))?
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let mut snap = self.inner.lock().current.clone();
        snap.format = format::SNAPSHOT_FORMAT;
        snap.snapshot_id = match snap.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, cairn_common::time::now_ms()),
            None => format!("empty-{}", cairn_common::time::now_ms()),
        };
        let bytes = self.save_snapshot_off_runtime(snap.clone()).await?;
        let meta = SnapshotMeta {
            last_log_id: snap.last_applied,
            last_membership: snap.membership.clone(),
            snapshot_id: snap.snapshot_id.clone(),
        };
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), SErr> {
        let inner = self.inner.lock();
        Ok((inner.current.last_applied, inner.current.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        {
            let mut inner = self.inner.lock();
            for e in entries {
                inner.current.last_applied = Some(e.log_id);
                out.push(match e.payload {
                    EntryPayload::Blank => CommandResult::default(),
                    EntryPayload::Normal(cmd) => inner.current.ring.apply(cmd),
                    EntryPayload::Membership(m) => {
                        inner.current.membership = StoredMembership::new(Some(e.log_id), m);
                        CommandResult::default()
                    }
                });
            }
        }
        self.notify();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let bytes = snapshot.into_inner();
        let mut snap = SnapshotFile::read(&bytes).map_err(sm_err)?;
        snap.format = format::SNAPSHOT_FORMAT;
        snap.last_applied = meta.last_log_id;
        snap.membership = meta.last_membership.clone();
        snap.snapshot_id = meta.snapshot_id.clone();
        self.save_snapshot_off_runtime(snap.clone()).await?;
        self.inner.lock().current = snap;
        self.notify();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let inner = self.inner.lock();
        Ok(inner.snapshot.as_ref().map(|(snap, bytes)| Snapshot {
            meta: SnapshotMeta {
                last_log_id: snap.last_applied,
                last_membership: snap.membership.clone(),
                snapshot_id: snap.snapshot_id.clone(),
            },
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    /// Fresh stores in temporary directories, kept alive by the guard.
    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), SErr> {
            let dir = tempfile::tempdir().map_err(logs_err)?;
            let log = LogStore::open(&dir.path().join("raft.redb"))?;
            let sm = StateMachine::open(Some(dir.path().join("snapshot.json")), None)?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_conformance_suite() {
        Suite::test_all(Builder).expect("openraft storage suite");
    }

    #[tokio::test]
    async fn log_vote_and_snapshot_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("raft.redb");
        let snap = dir.path().join("snapshot.json");
        {
            let mut log = LogStore::open(&db).expect("open");
            let vote = Vote::new(3, 7);
            log.save_vote(&vote).await.expect("vote");
            let mut sm = StateMachine::open(Some(snap.clone()), None).expect("sm");
            let id = LogId::new(openraft::CommittedLeaderId::new(3, 7), 1);
            let cmd = crate::state::Command::Forget { id: "x".into() };
            let entry = Entry::<TypeConfig> { log_id: id, payload: EntryPayload::Normal(cmd) };
            sm.apply(vec![entry]).await.expect("apply");
            sm.build_snapshot().await.expect("snapshot");
        }
        let mut log = LogStore::open(&db).expect("reopen");
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 7)));
        let mut sm = StateMachine::open(Some(snap), None).expect("sm");
        assert_eq!(sm.applied_state().await.expect("state").0.map(|l| l.index), Some(1));
        assert!(sm.get_current_snapshot().await.expect("snapshot").is_some());
    }

    /// Golden files: the log and the snapshot as each format version wrote
    /// them, which every later build must read. Version 0 is what builds
    /// before versioning wrote (plain JSON values).
    const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

    fn golden_entries() -> Vec<Entry<TypeConfig>> {
        let leader = openraft::CommittedLeaderId::new(2, 5);
        let member = crate::state::Member {
            id: "ingester-0".into(),
            addr: "10.0.0.1:9095".into(),
            zone: "a".into(),
            tokens: vec![1, 2, 3],
            state: crate::state::MemberState::Joining,
            heartbeat_ms: 1_700_000_000_000,
            registered_ms: 1_700_000_000_000,
            lost_data_ms: 0,
        };
        vec![
            Entry { log_id: LogId::new(leader, 1), payload: EntryPayload::Blank },
            Entry {
                log_id: LogId::new(leader, 2),
                payload: EntryPayload::Normal(crate::state::Command::Join { member, fresh: true }),
            },
            Entry {
                log_id: LogId::new(leader, 3),
                payload: EntryPayload::Normal(crate::state::Command::Heartbeats {
                    beats: vec![("ingester-0".into(), 1_700_000_001_000)],
                }),
            },
        ]
    }

    /// Writes the golden files of the current version (and of version 0,
    /// as builds before versioning wrote them).
    #[tokio::test]
    #[ignore = "writes testdata; run once per format version"]
    async fn write_golden_files() {
        std::fs::create_dir_all(GOLDEN).expect("testdata");
        for version in [0u8, format::LOG_FORMAT] {
            let path = std::path::Path::new(GOLDEN).join(format!("raft-v{version}.redb"));
            let _ = std::fs::remove_file(&path);
            let db = redb::Database::create(&path).expect("create");
            let enc = |v: &dyn erased::Value| if version == 0 { v.json() } else { v.stored() };
            let txn = db.begin_write().expect("txn");
            {
                let mut log = txn.open_table(LOG).expect("log");
                for e in golden_entries() {
                    log.insert(e.log_id.index, enc(&e).as_slice()).expect("insert");
                }
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(VOTE, enc(&Vote::<NodeId>::new(2, 5)).as_slice()).expect("vote");
                let committed = Some(LogId::new(openraft::CommittedLeaderId::new(2, 5), 3));
                meta.insert(COMMITTED, enc(&committed).as_slice()).expect("committed");
            }
            txn.commit().expect("commit");
        }
        let mut ring = RingState::default();
        for e in golden_entries() {
            if let EntryPayload::Normal(cmd) = e.payload {
                ring.apply(cmd);
            }
        }
        let snap = SnapshotFile {
            format: format::SNAPSHOT_FORMAT,
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(2, 5), 3)),
            membership: StoredMembership::default(),
            ring,
            snapshot_id: "golden".into(),
        };
        let v1 = serde_json::to_vec_pretty(&snap).expect("json");
        std::fs::write(format!("{GOLDEN}/snapshot-v1.json"), v1).expect("write");
        let mut v0 = serde_json::to_value(&snap).expect("json");
        if let Some(o) = v0.as_object_mut() {
            o.remove("format");
            if let Some(m) = o.get_mut("ring").and_then(|r| r.get_mut("members")).and_then(|m| m.as_object_mut()) {
                for member in m.values_mut() {
                    member.as_object_mut().map(|x| x.remove("lost_data_ms"));
                }
            }
        }
        std::fs::write(format!("{GOLDEN}/snapshot-v0.json"), serde_json::to_vec_pretty(&v0).expect("json"))
            .expect("write");
    }

    /// Encoding by version, for the generator above.
    mod erased {
        pub(super) trait Value {
            fn json(&self) -> Vec<u8>;
            fn stored(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Value for T {
            fn json(&self) -> Vec<u8> {
                serde_json::to_vec(self).expect("json")
            }
            fn stored(&self) -> Vec<u8> {
                crate::format::encode_stored(self).expect("stored")
            }
        }
    }

    #[tokio::test]
    async fn every_log_version_is_read() {
        for version in [0u8, format::LOG_FORMAT] {
            // redb may write to the file it opens: read a copy.
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("raft.redb");
            std::fs::copy(format!("{GOLDEN}/raft-v{version}.redb"), &path).expect("golden log is checked in");
            let mut log = LogStore::open(&path).expect("open");
            let entries = log.try_get_log_entries(0..10).await.expect("entries");
            assert_eq!(entries, golden_entries(), "version {version}");
            assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(2, 5)), "version {version}");
            let committed = log.read_committed().await.expect("committed");
            assert_eq!(committed.map(|c| c.index), Some(3), "version {version}");
            let state = log.get_log_state().await.expect("state");
            assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
        }
    }

    #[test]
    fn every_snapshot_version_is_read_and_newer_ones_refused() {
        for version in [0, format::SNAPSHOT_FORMAT] {
            let bytes = std::fs::read(format!("{GOLDEN}/snapshot-v{version}.json")).expect("golden snapshot");
            let snap = SnapshotFile::read(&bytes).expect("reads");
            assert_eq!(snap.format, version);
            let m = &snap.ring.members["ingester-0"];
            assert_eq!((m.addr.as_str(), m.tokens.as_slice(), m.lost_data_ms), ("10.0.0.1:9095", &[1, 2, 3][..], 0));
            assert_eq!(m.heartbeat_ms, 1_700_000_001_000);
        }
        let mut newer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{GOLDEN}/snapshot-v1.json")).expect("golden"))
                .expect("json");
        newer["format"] = serde_json::json!(format::SNAPSHOT_FORMAT + 1);
        let e = SnapshotFile::read(&serde_json::to_vec(&newer).expect("json")).expect_err("newer");
        assert!(e.to_string().contains("newer than this build reads"), "{e}");
    }
}
