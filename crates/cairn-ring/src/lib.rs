//! Cairn's ring: membership, Raft state, placement and replication sets.
//!
//! Ingesters form a Raft group (openraft) whose replicated state machine is
//! the ring: every member's address, zone, tokens, lifecycle state and last
//! heartbeat. Any role that needs owners for its keys reads it: the
//! distributor places series ([`replication::BatchPlan`]), the querier asks
//! the members a complete read needs ([`replication::ReadSet`]). See
//! `docs/design/ring.md` and `docs/design/cluster-path.md`.

pub mod config;
pub mod format;
pub mod http;
pub mod network;
pub mod node;
pub mod replication;
#[cfg(test)]
pub mod sandbox;
pub mod state;
pub mod store;
pub mod view;
pub mod watcher;

use std::io::Cursor;

pub use config::RingConfig;
pub use node::RingNode;
pub use replication::{BatchPlan, ReadSet, quorum};
pub use state::{Command, CommandResult, Member, MemberState, RingState};
pub use view::{RingSnapshot, RingView, shard_key};
pub use watcher::{RingWatcher, RingWatcherService};

openraft::declare_raft_types!(
    /// The ring's Raft types: ring commands in the log, JSON snapshots.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Why a ring operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// No node could be reached, or none knows a leader yet.
    #[error("ring unavailable: {0}")]
    Unavailable(String),
    /// The state machine refused the command (for example, forgetting an
    /// unknown member).
    #[error("{0}")]
    Rejected(String),
    /// The ring's storage or Raft node could not be opened, or this member
    /// could not join; the message says which step and why.
    #[error("{0}")]
    Setup(String),
}

impl cairn_common::status::CodedError for RingError {
    fn error_code(&self) -> cairn_common::ErrorCode {
        match self {
            RingError::Unavailable(_) => cairn_common::ErrorCode::Unavailable,
            // A command the ring's rules refuse (forgetting an unknown
            // member) is the caller's mistake.
            RingError::Rejected(_) => cairn_common::ErrorCode::BadData,
            RingError::Setup(_) => cairn_common::ErrorCode::Internal,
        }
    }
}

/// What the ring page and its actions need, whether the process is a ring
/// member (an ingester) or only watches the ring.
#[async_trait::async_trait]
pub trait RingAccess: Send + Sync + 'static {
    fn view(&self) -> &RingView;
    /// Proposes a command to the leader.
    async fn propose(&self, cmd: Command) -> Result<(), RingError>;
}
