use std::time::Duration;

use super::*;
use crate::state::{Member, MemberState};
use crate::view::RingSnapshot;

/// A deterministic stream of tokens.
struct Tokens(u64);

impl Tokens {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    fn take(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn member(id: &str, tokens: Vec<u32>, at: i64) -> Member {
    Member {
        id: id.into(),
        addr: format!("{id}:9095"),
        zone: String::new(),
        tokens,
        state: MemberState::Joining,
        heartbeat_ms: at,
        registered_ms: at,
        lost_data_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_replaced_and_catches_up_when_healed() {
    let sb = Sandbox::start(3).await;
    let mut t = Tokens(1);
    sb.write(Command::Join { member: member("a", t.take(4), 1), fresh: true }).await;
    let old = sb.leader().await;
    sb.router.cut(old);
    let new = sb.leader().await;
    assert_ne!(new, old, "the two connected voters elect one of them");
    sb.write(Command::Join { member: member("b", t.take(4), 2), fresh: true }).await;
    assert!(!sb.ring(old).members.contains_key("b"), "a node cut off sees nothing new");
    sb.router.heal(old);
    sb.caught_up(old).await;
    let ring = sb.ring(old);
    assert!(ring.members.contains_key("a") && ring.members.contains_key("b"), "{ring:?}");
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_voter_does_not_hold_commits() {
    let sb = Sandbox::start(3).await;
    let leader = sb.leader().await;
    let slow = sb.nodes.keys().copied().find(|&id| id != leader).expect("a follower");
    sb.router.delay(slow, Duration::from_secs(3));
    let mut t = Tokens(2);
    let took = sb.write(Command::Join { member: member("a", t.take(4), 1), fresh: true }).await;
    // The leader and the other follower are a majority: nothing waits for
    // the delayed voter (its messages take 3 s each way).
    assert!(took < Duration::from_secs(2), "commit waited for the slow voter: {took:?}");
    sb.shutdown().await;
}

/// 100 members on 5 in-process voters: joins, heartbeats and churn (a
/// tenth of the members leaving, forgotten and replaced, five times over),
/// reporting commit latency, state size and ownership spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_100_members_under_churn() {
    const MEMBERS: usize = 100;
    let sb = Sandbox::start(5).await;
    let mut t = Tokens(3);
    let mut latencies: Vec<Duration> = Vec::new();
    let mut clock = 1_700_000_000_000i64;
    let mut ids: Vec<String> = (0..MEMBERS).map(|i| format!("ingester-{i}")).collect();
    for id in &ids {
        latencies.push(sb.write(Command::Join { member: member(id, t.take(128), clock), fresh: true }).await);
        latencies.push(sb.write(Command::SetState { id: id.clone(), state: MemberState::Active, at_ms: clock }).await);
    }
    let mut next = MEMBERS;
    for round in 0..5 {
        clock += 5_000;
        let beats = ids.iter().map(|id| (id.clone(), clock)).collect();
        latencies.push(sb.write(Command::Heartbeats { beats }).await);
        for k in 0..MEMBERS / 10 {
            let gone = ids.remove((round * 7 + k * 3) % ids.len());
            latencies
                .push(sb.write(Command::SetState { id: gone.clone(), state: MemberState::Left, at_ms: clock }).await);
            latencies.push(sb.write(Command::Forget { id: gone }).await);
            let id = format!("ingester-{next}");
            next += 1;
            latencies.push(sb.write(Command::Join { member: member(&id, t.take(128), clock), fresh: true }).await);
            latencies
                .push(sb.write(Command::SetState { id: id.clone(), state: MemberState::Active, at_ms: clock }).await);
            ids.push(id);
        }
    }
    let leader = sb.leader().await;
    for id in sb.nodes.keys().copied().collect::<Vec<_>>() {
        sb.caught_up(id).await;
    }
    let ring = sb.ring(leader);
    assert_eq!(ring.members.len(), MEMBERS);
    let state_bytes = serde_json::to_vec(&ring).expect("json").len();
    let snap = RingSnapshot::new(ring, 1, None);
    let own = snap.ownership();
    let (lo, hi) = own.iter().fold((f64::MAX, 0f64), |(lo, hi), &o| (lo.min(o), hi.max(o)));
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "ring of {MEMBERS} members, {} commits: commit latency p50 {:?} p99 {:?} max {:?}; state {state_bytes} bytes; \
         ownership share min {:.4} max {:.4} (even: {:.4})",
        latencies.len(),
        p(0.5),
        p(0.99),
        p(1.0),
        lo,
        hi,
        1.0 / MEMBERS as f64
    );
    // What the figures must stay within for a ring this size.
    assert!(state_bytes < 1 << 20, "state of {state_bytes} bytes");
    assert!(hi / lo < 3.0, "ownership spread {lo}..{hi} with 128 tokens each");
    sb.shutdown().await;
}
