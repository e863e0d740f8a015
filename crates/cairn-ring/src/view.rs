//! A read-only view of the ring and replica placement.
//!
//! Every process holds one: ingesters update it from their own state
//! machine, distributors and queriers from the members they poll. Lookups
//! take the current snapshot (an `Arc`), so they never wait on an update.

use std::sync::Arc;

use cairn_common::{Labels, TenantId};
use parking_lot::{Mutex, RwLock};

use crate::state::{Member, MemberState, RingState};

/// The ring at one applied log index, with its token table.
#[derive(Debug, Default)]
pub struct RingSnapshot {
    /// The last placement computed on this snapshot (see [`Placement`]).
    placement: Mutex<Option<Arc<Placement>>>,
    pub state: RingState,
    /// Log index the state reflects; views only move forward.
    pub applied: u64,
    /// The leader's instance id, as the source of this snapshot knew it.
    pub leader: Option<String>,
    /// Members in id order, indexed by the token table.
    members: Vec<Member>,
    /// (token, member index), sorted by token.
    tokens: Vec<(u32, usize)>,
}

impl RingSnapshot {
    pub fn new(state: RingState, applied: u64, leader: Option<String>) -> Self {
        let members: Vec<Member> = state.members.values().cloned().collect();
        let mut tokens: Vec<(u32, usize)> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state != MemberState::Left)
            .flat_map(|(i, m)| m.tokens.iter().map(move |&t| (t, i)))
            .collect();
        tokens.sort_unstable();
        Self { placement: Mutex::new(None), state, applied, leader, members, tokens }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The members that take a write for `key`:
    /// see [`RingSnapshot::placement`].
    pub fn write_replicas(&self, key: u32, rf: usize, health: &Health) -> Vec<&Member> {
        self.placement(rf, health).replicas(key).iter().map(|&i| &self.members[i as usize]).collect()
    }

    /// Replica placement for `rf` under the members' present health: for
    /// each key, walking the ring clockwise from it, the first `rf`
    /// distinct members that are ACTIVE and healthy, in distinct zones
    /// while there are zones left to use. A member that cannot take the
    /// write is passed over for the next one, so the data keeps `rf` copies
    /// while a member is down, leaving or joining.
    ///
    /// The walk is done once per token and kept until the eligible members
    /// or `rf` change, so placing a key is one binary search.
    pub fn placement(&self, rf: usize, health: &Health) -> Arc<Placement> {
        let eligible: Vec<bool> =
            self.members.iter().map(|m| m.state == MemberState::Active && health.is_healthy(m)).collect();
        let mut cached = self.placement.lock();
        if let Some(p) = cached.as_ref()
            && p.rf == rf
            && p.eligible == eligible
        {
            return p.clone();
        }
        let p = Arc::new(self.compute_placement(rf, eligible));
        *cached = Some(p.clone());
        p
    }

    fn compute_placement(&self, rf: usize, eligible: Vec<bool>) -> Placement {
        let zone_aware = self.members.iter().any(|m| !m.zone.is_empty());
        let n = self.tokens.len();
        // Never more replicas than members.
        let width = rf.min(self.members.len()).min(usize::from(u8::MAX));
        let mut sets = Vec::with_capacity(n * width);
        let mut counts = Vec::with_capacity(n);
        let mut chosen: Vec<usize> = Vec::with_capacity(rf);
        for start in 0..n {
            chosen.clear();
            // First pass: distinct zones (when zones are set); second: any member.
            for distinct_zones in [zone_aware, false] {
                for i in 0..n {
                    if chosen.len() == width {
                        break;
                    }
                    let idx = self.tokens[(start + i) % n].1;
                    if chosen.contains(&idx) || !eligible[idx] {
                        continue;
                    }
                    if distinct_zones && chosen.iter().any(|&c| self.members[c].zone == self.members[idx].zone) {
                        continue;
                    }
                    chosen.push(idx);
                }
                if !zone_aware {
                    break;
                }
            }
            counts.push(chosen.len() as u8);
            sets.extend(chosen.iter().map(|&c| c as u32));
            sets.resize(sets.len() + width - chosen.len(), 0);
        }
        Placement { rf, width, eligible, tokens: self.tokens.iter().map(|t| t.0).collect(), sets, counts }
    }

    /// The members a read must ask: every member that may hold recent data
    /// (JOINING after a restart, ACTIVE, LEAVING) and is healthy; and how
    /// many such members are not healthy and count as failed from the start.
    pub fn read_members(&self, health: &Health) -> (Vec<&Member>, usize) {
        let mut unhealthy = 0;
        let mut out = Vec::new();
        for m in &self.members {
            if m.state == MemberState::Left {
                continue;
            }
            if health.is_healthy(m) {
                out.push(m);
            } else {
                unhealthy += 1;
            }
        }
        (out, unhealthy)
    }

    /// The share of the token space each member owns (the range from the
    /// previous token up to each of its tokens), by member index.
    pub fn ownership(&self) -> Vec<f64> {
        let mut share = vec![0.0; self.members.len()];
        if self.tokens.is_empty() {
            return share;
        }
        let space = (u32::MAX as f64) + 1.0;
        for (i, &(t, idx)) in self.tokens.iter().enumerate() {
            let prev = if i == 0 { self.tokens[self.tokens.len() - 1].0 } else { self.tokens[i - 1].0 };
            let width = t.wrapping_sub(prev) as f64;
            share[idx] += if self.tokens.len() == 1 { space } else { width } / space;
        }
        share
    }
}

/// Replica sets of every token of a snapshot, for one replication factor
/// and one set of eligible members (see [`RingSnapshot::placement`]).
#[derive(Debug)]
pub struct Placement {
    rf: usize,
    /// Member indices kept per token: `rf`, or fewer when there are fewer members.
    width: usize,
    eligible: Vec<bool>,
    /// Sorted tokens.
    tokens: Vec<u32>,
    /// `width` member indices per token; the first `counts[i]` are valid.
    sets: Vec<u32>,
    counts: Vec<u8>,
}

impl Placement {
    /// Indices (into [`RingSnapshot::members`]) of the members that take a
    /// write for `key`, in ring order; fewer than `rf` when too few members
    /// are eligible.
    pub fn replicas(&self, key: u32) -> &[u32] {
        if self.tokens.is_empty() || self.width == 0 {
            return &[];
        }
        let i = self.tokens.partition_point(|&t| t < key) % self.tokens.len();
        &self.sets[i * self.width..i * self.width + usize::from(self.counts[i])]
    }
}

/// Decides whether a member's heartbeat is recent enough.
#[derive(Clone, Copy, Debug)]
pub struct Health {
    pub now_ms: i64,
    pub timeout_ms: i64,
}

impl Health {
    pub fn now(timeout_ms: i64) -> Self {
        Self { now_ms: cairn_common::time::now_ms(), timeout_ms }
    }

    pub fn is_healthy(&self, m: &Member) -> bool {
        m.state != MemberState::Left && self.now_ms - m.heartbeat_ms <= self.timeout_ms
    }

    /// How long ago the member's last recorded heartbeat was.
    pub fn age_ms(&self, m: &Member) -> i64 {
        (self.now_ms - m.heartbeat_ms).max(0)
    }
}

/// Where a series lives on the ring: a hash of its tenant and sorted labels.
pub fn shard_key(tenant: &TenantId, labels: &Labels) -> u32 {
    // XXH3 of `tenant 0xff name 0xfe value 0xff ...`, hashed in one call.
    let hash = cairn_common::labels::with_scratch(|buf| {
        buf.extend_from_slice(tenant.as_str().as_bytes());
        buf.push(0xff);
        for l in labels.iter() {
            buf.extend_from_slice(l.name.as_bytes());
            buf.push(0xfe);
            buf.extend_from_slice(l.value.as_bytes());
            buf.push(0xff);
        }
        xxhash_rust::xxh3::xxh3_64(buf)
    });
    (hash >> 32) as u32
}

/// The current ring snapshot, shared by everything in a process.
#[derive(Clone, Debug)]
pub struct RingView {
    current: Arc<RwLock<Arc<RingSnapshot>>>,
    /// `--ring.heartbeat-timeout` in milliseconds.
    pub heartbeat_timeout_ms: i64,
}

impl RingView {
    pub fn new(heartbeat_timeout_ms: i64) -> Self {
        Self { current: Default::default(), heartbeat_timeout_ms }
    }

    pub fn snapshot(&self) -> Arc<RingSnapshot> {
        self.current.read().clone()
    }

    pub fn health(&self) -> Health {
        Health::now(self.heartbeat_timeout_ms)
    }

    /// Installs a newer snapshot; older or equal ones are ignored unless
    /// they come from the local state machine (`force`), so polling several
    /// members never moves a view backwards.
    pub fn update(&self, snap: RingSnapshot, force: bool) {
        let mut cur = self.current.write();
        if force || snap.applied > cur.applied || (snap.applied == cur.applied && snap.leader != cur.leader) {
            *cur = Arc::new(snap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;

    #[test]
    fn shard_keys_stay_what_they_were() {
        // Every series' owners depend on this value: it must never change.
        let tenant = TenantId::new("team-a").expect("tenant");
        let labels = Labels::from_pairs([("__name__", "up"), ("instance", "a:9100"), ("job", "node")]);
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"team-a\xff");
        for (n, v) in [("__name__", "up"), ("instance", "a:9100"), ("job", "node")] {
            h.update(n.as_bytes());
            h.update(&[0xfe]);
            h.update(v.as_bytes());
            h.update(&[0xff]);
        }
        assert_eq!(shard_key(&tenant, &labels), (h.digest() >> 32) as u32);
    }

    fn member(id: &str, zone: &str, tokens: &[u32]) -> Member {
        Member { heartbeat_ms: 1_000, ..crate::state::tests::member(id, zone, tokens) }
    }

    fn ring(members: Vec<Member>) -> RingSnapshot {
        let mut s = RingState::default();
        for m in members {
            let state = m.state;
            let id = m.id.clone();
            s.apply(Command::Join { member: m, fresh: false });
            s.apply(Command::SetState { id, state, at_ms: 1_000 });
        }
        RingSnapshot::new(s, 1, None)
    }

    fn ids(ms: Vec<&Member>) -> Vec<&str> {
        ms.into_iter().map(|m| m.id.as_str()).collect()
    }

    const OK: Health = Health { now_ms: 1_500, timeout_ms: 1_000 };

    #[test]
    fn replicas_walk_clockwise_over_distinct_members() {
        let r = ring(vec![member("a", "", &[100, 400]), member("b", "", &[200]), member("c", "", &[300])]);
        assert_eq!(ids(r.write_replicas(150, 3, &OK)), vec!["b", "c", "a"]);
        assert_eq!(ids(r.write_replicas(350, 2, &OK)), vec!["a", "b"]);
        // Past the last token the walk wraps around.
        assert_eq!(ids(r.write_replicas(500, 2, &OK)), vec!["a", "b"]);
        assert_eq!(ids(r.write_replicas(150, 5, &OK)).len(), 3, "never more replicas than members");
    }

    #[test]
    fn unhealthy_or_inactive_members_are_passed_over() {
        let mut leaving = member("b", "", &[200]);
        leaving.state = MemberState::Leaving;
        let r = ring(vec![member("a", "", &[100]), leaving, member("c", "", &[300]), member("d", "", &[400])]);
        assert_eq!(ids(r.write_replicas(150, 2, &OK)), vec!["c", "d"]);
        let (read, down) = r.read_members(&OK);
        assert_eq!((ids(read), down), (vec!["a", "b", "c", "d"], 0));
        let mut left = member("e", "", &[500]);
        left.state = MemberState::Left;
        let r2 = ring(vec![member("a", "", &[100]), left]);
        assert_eq!(ids(r2.read_members(&OK).0), vec!["a"], "LEFT members are not read");
        let late = Health { now_ms: 5_000, timeout_ms: 1_000 };
        assert!(r.write_replicas(150, 2, &late).is_empty());
        assert_eq!(r.read_members(&late).1, 4);
    }

    #[test]
    fn zones_are_spread_before_repeated() {
        let r = ring(vec![
            member("a1", "a", &[100]),
            member("a2", "a", &[200]),
            member("b1", "b", &[300]),
            member("c1", "c", &[400]),
        ]);
        assert_eq!(ids(r.write_replicas(50, 3, &OK)), vec!["a1", "b1", "c1"]);
        // Two zones for three replicas: the third repeats a zone.
        let r = ring(vec![member("a1", "a", &[100]), member("a2", "a", &[200]), member("b1", "b", &[300])]);
        assert_eq!(ids(r.write_replicas(50, 3, &OK)), vec!["a1", "b1", "a2"]);
    }

    #[test]
    fn ownership_sums_to_one() {
        let r = ring(vec![member("a", "", &[0, 1 << 31]), member("b", "", &[1 << 30])]);
        let own = r.ownership();
        assert!((own.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((own[0] - 0.75).abs() < 1e-9 && (own[1] - 0.25).abs() < 1e-9, "{own:?}");
    }

    #[test]
    fn keys_depend_on_tenant_and_labels() {
        let t1 = TenantId::new("t1").expect("tenant");
        let t2 = TenantId::new("t2").expect("tenant");
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        assert_eq!(shard_key(&t1, &a), shard_key(&t1, &a));
        assert_ne!(shard_key(&t1, &a), shard_key(&t1, &b));
        assert_ne!(shard_key(&t1, &a), shard_key(&t2, &a));
    }
}
