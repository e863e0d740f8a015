use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use parking_lot::Mutex;

use super::*;
use crate::state::{Command, RingState};

fn ring(n: usize) -> RingSnapshot {
    let mut s = RingState::default();
    for i in 0..n {
        let id = format!("m{i}");
        let tokens: Vec<u32> = (0..16).map(|k| (k * n as u32 + i as u32) * (u32::MAX / (16 * n as u32 + 1))).collect();
        let m = Member { heartbeat_ms: 1_000, ..crate::state::tests::member(&id, "", &tokens) };
        s.apply(Command::Join { member: m, fresh: false });
        s.apply(Command::SetState { id, state: MemberState::Active, at_ms: 1_000 });
    }
    RingSnapshot::new(s, 1, None)
}

const OK: Health = Health { now_ms: 1_500, timeout_ms: 1_000 };

/// How each member answers in a test.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Down,
    Refuse,
    /// Answers after this many milliseconds.
    Slow(u64),
}

fn answer(a: Answer) -> BoxFuture<'static, Result<(), ServiceError>> {
    async move {
        match a {
            Answer::Ok => Ok(()),
            Answer::Down => Err(ServiceError::new(ErrorCode::Unavailable, "down")),
            Answer::Refuse => Err(ServiceError::bad_data("bad series")),
            Answer::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
        }
    }
    .boxed()
}

fn keys(n: u32) -> Vec<u32> {
    (0..n).map(|i| i.wrapping_mul(2_654_435_761)).collect()
}

#[tokio::test]
async fn a_batch_succeeds_with_a_quorum_of_every_key() {
    let snap = ring(3);
    let plan = BatchPlan::new(&snap, &keys(50), 3, &OK).expect("plan");
    assert_eq!(plan.groups.len(), 3, "three members, each with every key");
    assert!((plan.copies() - 3.0).abs() < 1e-9);
    let tracker = TaskTracker::new();
    let by_id = |g: usize| plan.groups[g].0.id.clone();
    // One member down: every key still has 2 of 3.
    let got = plan.run(&tracker, |g| answer(if by_id(g) == "m1" { Answer::Down } else { Answer::Ok })).await;
    assert_eq!(got.expect("quorum").len(), 2);
    // Two down: no quorum, a 503 naming it.
    let e = plan.run(&tracker, |g| answer(if by_id(g) == "m0" { Answer::Ok } else { Answer::Down })).await;
    let e = e.expect_err("no quorum");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("write quorum not reached (2 of 3"), "{}", e.message);
    // A refusal about the request is answered as it is.
    let e = plan.run(&tracker, |_| answer(Answer::Refuse)).await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::BadData);
}

#[tokio::test]
async fn a_batch_returns_at_quorum_and_the_slowest_replica_is_tracked() {
    let snap = ring(3);
    let plan = BatchPlan::new(&snap, &keys(10), 3, &OK).expect("plan");
    let tracker = TaskTracker::new();
    let done = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let got = plan
        .run(&tracker, |g| {
            let done = done.clone();
            let slow = g == 2;
            async move {
                if slow {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ServiceError>(())
            }
            .boxed()
        })
        .await;
    assert_eq!(got.expect("quorum").len(), 2);
    assert!(started.elapsed() < Duration::from_millis(300), "did not wait for the slow replica");
    assert_eq!(done.load(Ordering::SeqCst), 2);
    tracker.close();
    tracker.wait().await;
    assert_eq!(done.load(Ordering::SeqCst), 3, "the slow replica's call ran to its end");
}

#[test]
fn too_few_members_for_a_quorum_is_refused_before_sending() {
    let snap = ring(1);
    let e = BatchPlan::new(&snap, &keys(3), 3, &OK).expect_err("one member cannot give 2 of 3");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("too few healthy ACTIVE ingesters"), "{}", e.message);
    let late = Health { now_ms: 10_000, timeout_ms: 1_000 };
    assert!(BatchPlan::new(&ring(3), &keys(3), 3, &late).is_err(), "unhealthy members take no writes");
}

#[test]
fn placement_matches_a_walk_of_the_ring() {
    let snap = ring(5);
    for key in keys(200) {
        let got: Vec<&str> = snap.write_replicas(key, 3, &OK).into_iter().map(|m| m.id.as_str()).collect();
        // The walk done by hand: tokens clockwise from the key, distinct members.
        let mut tokens: Vec<(u32, &str)> =
            snap.members().iter().flat_map(|m| m.tokens.iter().map(move |&t| (t, m.id.as_str()))).collect();
        tokens.sort();
        let start = tokens.partition_point(|&(t, _)| t < key);
        let mut want: Vec<&str> = Vec::new();
        for i in 0..tokens.len() {
            let id = tokens[(start + i) % tokens.len()].1;
            if !want.contains(&id) && want.len() < 3 {
                want.push(id);
            }
        }
        assert_eq!(got, want, "key {key}");
    }
}

async fn read(set: &ReadSet<'_>, answers: &HashMap<&str, Answer>) -> (Result<Vec<()>, ServiceError>, Vec<String>) {
    let asked = Mutex::new(Vec::new());
    let res = set
        .run(Duration::from_millis(50), |m| {
            asked.lock().push(m.id.clone());
            answer(answers.get(m.id.as_str()).copied().unwrap_or(Answer::Ok))
        })
        .await;
    (res, asked.into_inner())
}

#[tokio::test]
async fn a_read_asks_only_the_members_completeness_needs() {
    let snap = ring(3);
    let set = ReadSet::new(&snap, 3, &OK, 0, 0);
    assert_eq!((set.needed(), set.tolerated), (2, 1));
    let (res, asked) = read(&set, &HashMap::new()).await;
    assert_eq!(res.expect("read").len(), 2);
    assert_eq!(asked.len(), 2, "the third replica is not asked: {asked:?}");

    // A failure starts the spare: whichever two are asked first, m0 is
    // among them in some of twelve reads (the start rotates).
    let mut answers = HashMap::new();
    answers.insert("m0", Answer::Down);
    let mut spared = 0;
    for _ in 0..12 {
        let (res, asked) = read(&set, &answers).await;
        assert_eq!(res.expect("read").len(), 2);
        if asked.len() == 3 {
            assert!(asked[..2].contains(&"m0".to_owned()), "the spare is asked only after a failure: {asked:?}");
            spared += 1;
        }
    }
    assert!(spared >= 1, "m0 was never asked first");

    // Two failures are more than replication covers.
    let mut answers = HashMap::new();
    answers.insert("m0", Answer::Down);
    answers.insert("m1", Answer::Down);
    let (res, _) = read(&set, &answers).await;
    let e = res.expect_err("two of three down");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("reads tolerate 1"), "{}", e.message);

    // A refusal is the answer.
    let mut answers = HashMap::new();
    answers.insert("m0", Answer::Refuse);
    answers.insert("m1", Answer::Refuse);
    answers.insert("m2", Answer::Refuse);
    assert_eq!(read(&set, &answers).await.0.expect_err("refused").code, ErrorCode::BadData);
}

#[tokio::test]
async fn a_slow_member_is_hedged() {
    let snap = ring(3);
    let set = ReadSet::new(&snap, 3, &OK, 0, 0);
    let mut answers = HashMap::new();
    answers.insert("m0", Answer::Slow(10_000));
    // Successive reads start at different members: in twelve reads m0 is
    // among the first two asked at least once, and a spare answers for it.
    let mut hedged = 0;
    for _ in 0..12 {
        let started = std::time::Instant::now();
        let (res, asked) = read(&set, &answers).await;
        assert_eq!(res.expect("read").len(), 2);
        assert!(started.elapsed() < Duration::from_secs(2), "waited for the slow member");
        if asked.len() == 3 {
            hedged += 1;
        }
    }
    assert!(hedged >= 1, "the slow member was never hedged");
}

#[test]
fn reads_tolerate_nothing_just_after_a_member_left() {
    let mut s = RingState::default();
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let m = Member { heartbeat_ms: 1_000, ..crate::state::tests::member(id, "", &[i as u32 * 1000]) };
        s.apply(Command::Join { member: m, fresh: false });
        let state = if id == "d" { MemberState::Left } else { MemberState::Active };
        s.apply(Command::SetState { id: id.into(), state, at_ms: 1_400 });
    }
    let snap = RingSnapshot::new(s, 1, None);
    let set = ReadSet::new(&snap, 3, &OK, 1_000, 0);
    assert_eq!((set.tolerated, set.needed()), (0, 3));
    let set = ReadSet::new(&snap, 3, &OK, 10, 0);
    assert_eq!((set.tolerated, set.needed()), (1, 2));
}

#[test]
fn a_member_that_lost_its_data_is_not_counted_on_for_older_data() {
    let mut s = RingState::default();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let m = Member { heartbeat_ms: 1_000, registered_ms: 100, ..crate::state::tests::member(id, "", &[i as u32]) };
        s.apply(Command::Join { member: m, fresh: true });
        s.apply(Command::SetState { id: id.into(), state: MemberState::Active, at_ms: 1_000 });
    }
    assert!(s.members.values().all(|m| m.lost_data_ms == 0), "new members lost nothing");
    // "b" comes back with empty storage at 1_200; a plain restart of "c" keeps what it had.
    let b = Member { heartbeat_ms: 1_200, registered_ms: 1_200, ..crate::state::tests::member("b", "", &[7]) };
    s.apply(Command::Join { member: b, fresh: true });
    let c = Member { heartbeat_ms: 1_300, registered_ms: 1_300, ..crate::state::tests::member("c", "", &[2]) };
    s.apply(Command::Join { member: c, fresh: false });
    for id in ["b", "c"] {
        s.apply(Command::SetState { id: id.into(), state: MemberState::Active, at_ms: 1_400 });
    }
    assert_eq!(s.members["b"].lost_data_ms, 1_200);
    assert_eq!(s.members["c"].lost_data_ms, 0);
    let snap = RingSnapshot::new(s, 1, None);
    // Data from before the loss: "b" may have held the only other copy.
    assert_eq!(ReadSet::new(&snap, 3, &OK, 0, 1_000).needed(), 3);
    // Data written since: any two of three.
    assert_eq!(ReadSet::new(&snap, 3, &OK, 0, 1_250).needed(), 2);
    // A read with no lower bound counts only the member that lost data.
    assert_eq!(ReadSet::new(&snap, 3, &OK, 0, i64::MIN).needed(), 3);
    let mut whole = RingState::default();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let m = Member { heartbeat_ms: 1_000, ..crate::state::tests::member(id, "", &[i as u32]) };
        whole.apply(Command::Join { member: m, fresh: true });
        whole.apply(Command::SetState { id: id.into(), state: MemberState::Active, at_ms: 1_000 });
    }
    let whole = RingSnapshot::new(whole, 1, None);
    assert_eq!(ReadSet::new(&whole, 3, &OK, 0, i64::MIN).needed(), 2, "nothing lost, nothing counted");
}
