//! The ring's state machine: members, their tokens and lifecycle states, and
//! the commands that change them. Applying a command is deterministic (every
//! timestamp travels in the command), so every node derives the same ring
//! from the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a member is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MemberState {
    /// Registered, replaying or catching up; takes no writes yet.
    Joining,
    /// Takes writes for its tokens and answers reads.
    Active,
    /// Shutting down: flushing its head to object storage; answers reads,
    /// takes no new writes.
    Leaving,
    /// Gone after a clean shutdown; its data is in object storage.
    Left,
}

impl MemberState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Joining => "JOINING",
            MemberState::Active => "ACTIVE",
            MemberState::Leaving => "LEAVING",
            MemberState::Left => "LEFT",
        }
    }
}

/// One ingester in the ring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The instance id (`--ring.instance-id`), unique in the ring.
    pub id: String,
    /// Its gRPC address (`--ring.advertise-address`).
    pub addr: String,
    pub zone: String,
    /// Sorted.
    pub tokens: Vec<u32>,
    pub state: MemberState,
    /// Wall-clock milliseconds of the last heartbeat the leader recorded.
    pub heartbeat_ms: i64,
    /// When the member (re)joined, in milliseconds.
    pub registered_ms: i64,
    /// When the member last came back without the data it had acknowledged
    /// (it re-registered with empty storage: its disk was lost), in
    /// milliseconds; 0 if never. Reads of samples older than this cannot
    /// count on it holding its copy.
    #[serde(default)]
    pub lost_data_ms: i64,
}

/// A change to the ring, proposed through Raft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Adds a member, or re-registers one that restarted (same id): its
    /// address, zone and tokens are replaced and it becomes JOINING.
    /// `fresh`: its Raft storage was empty (new, or its disk was lost); the
    /// leader then makes sure it is not a voter until it has caught up.
    Join {
        member: Member,
        #[serde(default)]
        fresh: bool,
    },
    /// Moves a member to another state.
    SetState { id: String, state: MemberState, at_ms: i64 },
    /// Heartbeats the leader collected since its last batch.
    Heartbeats { beats: Vec<(String, i64)> },
    /// Removes a member from the ring altogether.
    Forget { id: String },
}

impl Command {
    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Join { .. } => "join",
            Command::SetState { .. } => "set-state",
            Command::Heartbeats { .. } => "heartbeats",
            Command::Forget { .. } => "forget",
        }
    }
}

/// What applying a command answered; an error means the command was
/// rejected (the ring is unchanged), not that the log failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub error: Option<String>,
}

/// The ring: every member by instance id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RingState {
    pub members: BTreeMap<String, Member>,
}

impl RingState {
    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        let error = match cmd {
            Command::Join { mut member, fresh } => {
                member.tokens.sort_unstable();
                member.tokens.dedup();
                // A token another member holds stays with that member: the
                // joiner loses it (rare with random 32-bit tokens).
                let taken: std::collections::HashSet<u32> = self
                    .members
                    .values()
                    .filter(|m| m.id != member.id)
                    .flat_map(|m| m.tokens.iter().copied())
                    .collect();
                member.tokens.retain(|t| !taken.contains(t));
                member.state = MemberState::Joining;
                member.heartbeat_ms = member.heartbeat_ms.max(member.registered_ms);
                // Empty storage under a known id: what it held is gone.
                member.lost_data_ms = match self.members.get(&member.id) {
                    Some(_) if fresh => member.registered_ms,
                    Some(old) => old.lost_data_ms,
                    None => 0,
                };
                self.members.insert(member.id.clone(), member);
                None
            }
            Command::SetState { id, state, at_ms } => match self.members.get_mut(&id) {
                Some(m) => {
                    m.state = state;
                    m.heartbeat_ms = m.heartbeat_ms.max(at_ms);
                    None
                }
                None => Some(format!("no ring member {id:?}")),
            },
            Command::Heartbeats { beats } => {
                for (id, at) in beats {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.heartbeat_ms = m.heartbeat_ms.max(at);
                    }
                }
                None
            }
            Command::Forget { id } => match self.members.remove(&id) {
                Some(_) => None,
                None => Some(format!("no ring member {id:?}")),
            },
        };
        CommandResult { error }
    }
}

/// The Raft node id of an instance: a hash of its id, stable across
/// restarts, so no allocator is needed.
pub fn node_id(instance_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(instance_id.as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn member(id: &str, zone: &str, tokens: &[u32]) -> Member {
        Member {
            id: id.into(),
            addr: format!("{id}:9095"),
            zone: zone.into(),
            tokens: tokens.to_vec(),
            state: MemberState::Active,
            heartbeat_ms: 0,
            registered_ms: 0,
            lost_data_ms: 0,
        }
    }

    #[test]
    fn join_takes_free_tokens_and_rejoin_replaces() {
        let mut ring = RingState::default();
        assert_eq!(ring.apply(Command::Join { member: member("a", "", &[30, 10, 20]), fresh: false }).error, None);
        ring.apply(Command::Join { member: member("b", "", &[20, 40]), fresh: false });
        assert_eq!(ring.members["a"].tokens, vec![10, 20, 30]);
        assert_eq!(ring.members["b"].tokens, vec![40], "a token held by another member stays with it");
        assert_eq!(ring.members["b"].state, MemberState::Joining);
        ring.apply(Command::SetState { id: "b".into(), state: MemberState::Active, at_ms: 5 });
        assert_eq!(ring.members["b"].state, MemberState::Active);
        assert_eq!(ring.members["b"].heartbeat_ms, 5);
        // A restart re-registers with the same id.
        let mut again = member("b", "z", &[40, 50]);
        again.registered_ms = 9;
        ring.apply(Command::Join { member: again, fresh: false });
        assert_eq!(ring.members["b"].tokens, vec![40, 50]);
        assert_eq!(ring.members["b"].state, MemberState::Joining);
        assert_eq!(ring.members["b"].heartbeat_ms, 9);
    }

    #[test]
    fn heartbeats_only_move_forward_and_forget_removes() {
        let mut ring = RingState::default();
        ring.apply(Command::Join { member: member("a", "", &[1]), fresh: false });
        ring.apply(Command::Heartbeats { beats: vec![("a".into(), 100), ("ghost".into(), 100)] });
        ring.apply(Command::Heartbeats { beats: vec![("a".into(), 50)] });
        assert_eq!(ring.members["a"].heartbeat_ms, 100);
        assert!(ring.apply(Command::SetState { id: "x".into(), state: MemberState::Left, at_ms: 1 }).error.is_some());
        assert_eq!(ring.apply(Command::Forget { id: "a".into() }).error, None);
        assert!(ring.members.is_empty());
        assert!(ring.apply(Command::Forget { id: "a".into() }).error.is_some());
    }
}
