//! The ingester's own bound on pushes in flight
//! (`--ingester.instance-limits.max-inflight-push-requests`).

use cairn_common::ErrorCode;
use cairn_common::metrics::Registry;
use cairn_common::push::{PushBatch, PushSeries, Pusher};
use cairn_common::{Labels, Sample, TenantId};
use cairn_ingester::{Ingester, IngesterConfig};

fn batch(t: i64) -> PushBatch {
    PushBatch {
        series: vec![PushSeries {
            labels: Labels::from_pairs([("__name__", "m")]),
            samples: vec![Sample::new(t, 1.0)],
        }],
        metadata: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_the_in_flight_limit_are_refused_retryably_and_the_bound_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = IngesterConfig { max_inflight_push_requests: 1, ..Default::default() };
    let ingester = Ingester::new(cfg, dir.path(), &mut Registry::default(), None).expect("ingester");
    ingester.replay_all().expect("replay");
    let tenant = TenantId::new("t").expect("tenant");

    // `join!` polls all three before any is polled a second time, so the
    // first still holds its place (waiting for an append thread) when the
    // other two ask for one.
    let (a, b, c) = tokio::join!(
        ingester.push(&tenant, batch(1)),
        ingester.push(&tenant, batch(2)),
        ingester.push(&tenant, batch(3))
    );
    assert_eq!(a.expect("the first is admitted").samples_appended, 1);
    for refused in [b, c] {
        let e = refused.expect_err("over the limit");
        assert_eq!(e.code, ErrorCode::Unavailable, "retryable: {e:?}");
        assert_eq!(e.retry_after_secs, Some(1));
        assert!(e.message.contains("--ingester.instance-limits.max-inflight-push-requests"), "{}", e.message);
    }
    // Answered pushes hold nothing.
    let again = ingester.push(&tenant, batch(4)).await.expect("admitted again");
    assert_eq!(again.samples_appended, 1);
}
