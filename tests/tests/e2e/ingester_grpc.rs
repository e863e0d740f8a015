//! `cairn ingester` on its own: the gRPC push service a remote distributor
//! calls, with the same durability as in `cairn all`, and the select a
//! querier calls.
#![allow(clippy::disallowed_methods, reason = "waits for a child process from the test thread")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_e2e::{cairn_bin, free_port, now_ms, probe};
use cairn_proto::ingester::ingester_client::IngesterClient;
use cairn_proto::ingester::{Matcher, PushRequest, SelectRequest};
use cairn_proto::prometheus as pb;

struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path, http: u16, grpc: u16) -> Proc {
    let child = Command::new(cairn_bin())
        .args(["ingester", &format!("--data.dir={}", dir.display())])
        .arg(format!("--http.listen-address=127.0.0.1:{http}"))
        .arg(format!("--grpc.listen-address=127.0.0.1:{grpc}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn ingester");
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe::status(&format!("http://127.0.0.1:{http}/ready")).ok() != Some(200) {
        assert!(Instant::now() < deadline, "cairn ingester never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

fn request(tenant: &str, t: i64) -> PushRequest {
    PushRequest {
        tenant: tenant.into(),
        timeseries: vec![pb::TimeSeries {
            labels: vec![
                pb::Label { name: "__name__".into(), value: "grpc_metric".into() },
                pb::Label { name: "job".into(), value: "x".into() },
            ],
            samples: vec![pb::Sample { value: 1.0, timestamp: t }, pb::Sample { value: 2.0, timestamp: t - 1 }],
            ..Default::default()
        }],
        metadata: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_push_is_durable_and_reports_rejections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, grpc) = (free_port(), free_port());
    let mut proc = start(dir.path(), http, grpc);
    let mut client = IngesterClient::connect(format!("http://127.0.0.1:{grpc}")).await.expect("connect");
    let t = now_ms();
    let resp = client.push(request("grpc-tenant", t)).await.expect("push").into_inner();
    assert_eq!(resp.samples_appended, 1);
    assert_eq!(resp.series_created, 1);
    assert_eq!(resp.rejections.len(), 1, "the older sample is out of order");
    assert_eq!(resp.rejections[0].reason, "sample-out-of-order");

    // An invalid tenant is InvalidArgument, not a retryable fault.
    let err = client.push(request("../x", t)).await.expect_err("invalid tenant");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // kill -9 and restart: the pushed sample is replayed from the WAL and a
    // second push of it is recognised as a duplicate.
    drop(client);
    let _ = proc.0.kill();
    let _ = proc.0.wait();
    proc = start(dir.path(), http, grpc);
    let mut client = IngesterClient::connect(format!("http://127.0.0.1:{grpc}")).await.expect("connect");
    let resp = client.push(request("grpc-tenant", t)).await.expect("push").into_inner();
    assert_eq!(resp.samples_appended, 0, "already stored before the crash");
    assert_eq!(resp.series_created, 0);

    // Selects: chunks for a reader that takes them, plain samples for one
    // that predates them; the same sample either way.
    let select = |accept_chunks: bool| SelectRequest {
        tenant: "grpc-tenant".into(),
        matchers: vec![Matcher { r#type: 0, name: "__name__".into(), value: "grpc_metric".into() }],
        start: t - 60_000,
        end: t + 60_000,
        accept_chunks,
        ..Default::default()
    };
    let chunked = client.select(select(true)).await.expect("select").into_inner();
    assert!(chunked.series.is_empty());
    assert_eq!(chunked.chunked.len(), 1);
    let (labels, chunks) = cairn_rpc::convert::chunked_series_from_proto(chunked.chunked[0].clone()).expect("reads");
    assert_eq!(labels.to_string(), r#"grpc_metric{job="x"}"#);
    let mut samples = Vec::new();
    chunks.decode_into(t - 60_000, t + 60_000, &mut samples);
    assert_eq!(samples.iter().map(|s| (s.t, s.v)).collect::<Vec<_>>(), vec![(t, 1.0)]);
    let plain = client.select(select(false)).await.expect("select").into_inner();
    assert!(plain.chunked.is_empty());
    assert_eq!(plain.series.len(), 1);
    assert_eq!(plain.series[0].samples, vec![pb::Sample { value: 1.0, timestamp: t }]);
    let none = client.select(SelectRequest { tenant: "nobody".into(), ..select(true) }).await.expect("select");
    assert!(none.into_inner().chunked.is_empty(), "an unknown tenant has no series");
    drop(proc);
}
