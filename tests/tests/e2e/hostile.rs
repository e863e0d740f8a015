//! A hostile client against a real `cairn all`: each class of failure
//! (docs/design/limits.md) tried several ways. Nothing it sends may crash
//! the process, exhaust its memory, hold it, or lose what was acknowledged.
#![allow(clippy::disallowed_methods, reason = "slow clients are simulated on plain threads")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn_e2e::{
    Cairn, client, cpu_seconds, now_ms, peers_required, post_form, proc_memory, push, query, series, vector, write_v1,
};

/// The server still answers and still ingests.
async fn alive(cairn: &Cairn, what: &str) {
    let c = client();
    let t = now_ms();
    let body = write_v1(vec![series(&[("__name__", "alive"), ("after", "probe")], &[(t, 1.0)])]);
    let (status, msg) = push(&c, &cairn.url("/api/v1/push"), body, Some("alive"))
        .await
        .unwrap_or_else(|e| panic!("after {what}: the server is gone: {e}\nlog:\n{}", cairn.log_text()));
    assert_eq!(status, 204, "after {what}: {msg}");
    let v = query(&c, &cairn.url(""), "alive", t, Some("alive")).await.expect("query");
    assert_eq!(vector(&v).len(), 1, "after {what}: ingest and query still work");
}

/// Cuts the whole head into blocks and uploads them.
async fn flush_all(cairn: &Cairn) {
    let r = client().post(cairn.url("/ingester/flush?all=true")).send().await.expect("flush");
    assert_eq!(r.status().as_u16(), 204, "flush: {}", r.text().await.unwrap_or_default());
}

fn assert_never_panicked(cairn: &Cairn) {
    let log = cairn.log_text();
    assert!(!log.contains("panicked"), "the log shows a panic:\n{log}");
}

fn chain(n: usize, op: &str) -> String {
    vec!["1"; n].join(op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_long_queries_are_refused_before_anything_recurses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = Cairn::start(&dir.path().join("data"), &[]).expect("start");
    let c = client();
    let base = cairn.url("");
    // Deeper than the limit, every shape: refused with 400 naming the flag.
    let deep: Vec<(&str, String)> = vec![
        ("chain", chain(5000, "+")),
        ("power chain", chain(5000, "^")),
        ("parentheses", format!("{}1{}", "(".repeat(5000), ")".repeat(5000))),
        ("calls", format!("{}vector(1){}", "abs(".repeat(3000), ")".repeat(3000))),
        ("aggregations", format!("{}vector(1){}", "sum(".repeat(3000), ")".repeat(3000))),
        ("unary", format!("{}vector(1)", "-".repeat(5000))),
        ("subqueries", format!("{}vector(1){}", "max_over_time(".repeat(1000), "[1m:])".repeat(1000))),
        ("and chain", vec!["vector(1)"; 3000].join(" and ")),
        ("unclosed", "(".repeat(100_000)),
    ];
    for (what, q) in &deep {
        for path in ["/api/v1/query", "/api/v1/query_range", "/api/v1/format_query", "/api/v1/parse_query"] {
            let form = [("query", q.as_str()), ("time", "100"), ("start", "0"), ("end", "100"), ("step", "10")];
            let (status, body) = post_form(&c, &format!("{base}{path}"), &form, None).await.expect(what);
            assert_eq!(status, 400, "{what} on {path}: {body}");
            assert!(body.contains("--query.max-expression-"), "{what} on {path}: {body}");
        }
    }
    let selector = format!("up{{a=\"{}\"}}", "x".repeat(300_000));
    let (status, body) =
        post_form(&c, &format!("{base}/api/v1/series"), &[("match[]", &selector)], None).await.expect("series");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--query.max-expression-bytes"), "{body}");
    // At the limit, every shape answers (or fails cleanly) and the process
    // lives: the stack holds the deepest query the limits allow.
    let at_limit: Vec<(&str, String)> = vec![
        ("chain", chain(490, "+")),
        ("parentheses", format!("{}1{}", "(".repeat(490), ")".repeat(490))),
        ("calls", format!("{}vector(1){}", "abs(".repeat(240), ")".repeat(240))),
        ("aggregations", format!("{}vector(1){}", "sum(".repeat(240), ")".repeat(240))),
        (
            "label_replace",
            format!("{}vector(1){}", "label_replace(".repeat(240), ", \"a\", \"b\", \"c\", \"d\")".repeat(240)),
        ),
        ("subqueries", format!("{}vector(1){}", "max_over_time(".repeat(160), "[1m:30s])".repeat(160))),
    ];
    for (what, q) in &at_limit {
        for path in ["/api/v1/query", "/api/v1/query_range", "/api/v1/format_query", "/api/v1/parse_query"] {
            let form = [("query", q.as_str()), ("time", "100"), ("start", "0"), ("end", "100"), ("step", "10")];
            let (status, body) = post_form(&c, &format!("{base}{path}"), &form, None).await.expect(what);
            assert!(status == 200 || status == 422, "{what} at the limit on {path}: {status} {body}");
        }
    }
    alive(&cairn, "deep PromQL").await;

    // SQL: chains, nesting and length.
    let ors: Vec<String> = (0..5000).map(|i| format!("value = {i}")).collect();
    let sql_cases = [
        ("or chain", format!("SELECT count(*) FROM samples WHERE {}", ors.join(" OR "))),
        ("arithmetic chain", format!("SELECT {} FROM samples", chain(5000, " + "))),
        ("nesting", format!("SELECT {}1{}", "(".repeat(3000), ")".repeat(3000))),
        ("length", format!("SELECT '{}'", "x".repeat(300_000))),
    ];
    for (what, q) in &sql_cases {
        let (status, body) = post_form(&c, &format!("{base}/api/v1/sql"), &[("query", q)], None).await.expect(what);
        assert_eq!(status, 400, "SQL {what}: {body}");
        assert!(body.contains("--sql.max-") || body.contains("RecursionLimitExceeded"), "SQL {what}: {body}");
    }
    let ors: Vec<String> = (0..450).map(|i| format!("value = {i}")).collect();
    let q = format!("SELECT count(*) FROM samples WHERE {}", ors.join(" OR "));
    let (status, body) = post_form(&c, &format!("{base}/api/v1/sql"), &[("query", &q)], None).await.expect("sql");
    assert_eq!(status, 200, "450 ORs are within the limit: {body}");
    alive(&cairn, "deep SQL").await;
    assert_never_panicked(&cairn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_timestamps_and_parameters_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cairn = Cairn::start(&dir.path().join("data"), &[]).expect("start");
    let c = client();
    let now = now_ms();
    for (t, bound) in [
        (i64::MIN, "1970-01-01T00:00:00.000Z"),
        (-1, "1970-01-01T00:00:00.000Z"),
        (i64::MAX, "in the future"),
        (now + 3_600_000, "in the future"),
        (253_402_300_800_000, "in the future"),
    ] {
        let body = write_v1(vec![series(&[("__name__", "poison")], &[(t, 1.0)])]);
        let (status, msg) = push(&c, &cairn.url("/api/v1/push"), body, None).await.expect("push");
        assert_eq!(status, 400, "a sample at {t} is refused: {msg}");
        assert!(msg.contains(bound), "the refusal names the bound: {msg}");
    }
    // Good data around them is kept; 1970 is fine.
    let body = write_v1(vec![
        series(&[("__name__", "poison")], &[(i64::MIN, 1.0)]),
        series(&[("__name__", "fine"), ("age", "1970")], &[(0, 1.0), (60_000, 2.0)]),
        series(&[("__name__", "fine"), ("age", "now")], &[(now, 3.0)]),
    ]);
    let (status, _) = push(&c, &cairn.url("/api/v1/push"), body, None).await.expect("push");
    assert_eq!(status, 400);
    // The shipper cuts everything, 1970 included, and lives on.
    flush_all(&cairn).await;
    cairn.kill9().expect("kill");
    cairn.restart().expect("restart after the poison");
    let v = query(&c, &cairn.url(""), "fine", 60_000, None).await.expect("query");
    assert_eq!(vector(&v).len(), 1, "1970 data is acknowledged and queryable: {v}");

    // Query parameters anywhere in (and beyond) i64.
    let api = |p: &str| cairn.url(p);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/v1/query_range", vec![("query", "up"), ("start", "-9.2e15"), ("end", "9.2e15"), ("step", "1e12")]),
        ("/api/v1/query_range", vec![("query", "up"), ("start", "-9.2e18"), ("end", "9.2e18"), ("step", "1e15")]),
        ("/api/v1/query_range", vec![("query", "up"), ("start", "0"), ("end", "1"), ("step", "1e-300")]),
        ("/api/v1/query_range", vec![("query", "up"), ("start", "NaN"), ("end", "Inf"), ("step", "-1")]),
        (
            "/api/v1/query_range",
            vec![("query", "time()"), ("start", "9223372036854775"), ("end", "9223372036854775"), ("step", "1")],
        ),
        ("/api/v1/query", vec![("query", "up"), ("time", "1e300")]),
        ("/api/v1/query", vec![("query", "up"), ("time", "-9223372036854775.808")]),
        ("/api/v1/query", vec![("query", "time()"), ("time", "-292273086-05-16T16:47:06Z")]),
        ("/api/v1/query", vec![("query", "up"), ("timeout", "1e300")]),
        ("/api/v1/query", vec![("query", "up"), ("timeout", "-5s")]),
        ("/api/v1/query", vec![("query", "up offset 1000000000y")]),
        ("/api/v1/query", vec![("query", "up offset -1000000000y @ 1e15")]),
        ("/api/v1/query", vec![("query", "rate(up[100000000y])")]),
        ("/api/v1/query", vec![("query", "up @ 1e30")]),
        ("/api/v1/query", vec![("query", "max_over_time(up[100y:1ms] offset 1000y)"), ("time", "-1e15")]),
        ("/api/v1/query", vec![("query", "timestamp(up offset -1y)"), ("time", "9e15")]),
        ("/api/v1/query", vec![("query", "range() + start() + end()"), ("time", "-9e15")]),
        ("/api/v1/series", vec![("match[]", "up"), ("start", "-1e300"), ("end", "1e300")]),
        ("/api/v1/labels", vec![("start", "9223372036854775807"), ("limit", "-1")]),
        ("/api/v1/label/__name__/values", vec![("start", "1e18"), ("end", "-1e18")]),
    ];
    for (path, form) in &cases {
        let (status, body) = post_form(&c, &api(path), form, None)
            .await
            .unwrap_or_else(|e| panic!("{path} {form:?}: no answer: {e}\nlog:\n{}", cairn.log_text()));
        assert!(status < 500 || status == 503, "{path} {form:?}: {status} {body}");
    }
    alive(&cairn, "poison parameters").await;
    assert_never_panicked(&cairn);
}

/// A hostile request: what it is, its path and its form.
type Hostile = (&'static str, &'static str, Vec<(&'static str, String)>);

/// The memory classes, four at once each, under a small memory limit:
/// every query fails cleanly and the process's peak RSS stays under the
/// documented bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_hostile_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    const LIMIT: u64 = 256 << 20;
    let limit = LIMIT.to_string();
    let cairn = Cairn::start(
        &dir.path().join("data"),
        &[&format!("--query.memory-limit-bytes={limit}"), "--sql.max-memory-bytes=134217728", "--query.timeout=20s"],
    )
    .expect("start");
    let c = client();
    let now = now_ms();
    // 20,000 series with one sample each, then cut to a block for SQL.
    let hour_ago = now - 3_600_000;
    for part in 0..4 {
        let ts: Vec<_> = (0..5000)
            .map(|i| {
                let inst = format!("h{}", part * 5000 + i);
                series(&[("__name__", "wide"), ("instance", &inst)], &[(hour_ago + i as i64 * 7, i as f64)])
            })
            .collect();
        let (status, msg) = push(&c, &cairn.url("/api/v1/push"), write_v1(ts), None).await.expect("push");
        assert_eq!(status, 204, "{msg}");
    }
    flush_all(&cairn).await;
    let pid = cairn.pid().expect("pid");
    let baseline = proc_memory(pid, "VmRSS").expect("rss");
    let (start, end) = ((now - 3_600_000) as f64 / 1000.0, now as f64 / 1000.0);
    let (s, e) = (start.to_string(), end.to_string());
    let classes: Vec<Hostile> = vec![
        (
            "wide range query",
            "/api/v1/query_range",
            vec![
                ("query", "count({__name__=~\".+\"})".into()),
                ("start", s.clone()),
                ("end", e.clone()),
                ("step", "1".into()),
            ],
        ),
        ("subquery over nothing", "/api/v1/query", vec![("query", "count_over_time(vector(1)[10y:1ms])".into())]),
        // One series in, a group per distinct value out: 11,001 groups of
        // 11,001 steps.
        (
            "count_values groups",
            "/api/v1/query_range",
            vec![
                ("query", "count_values(\"v\", vector(time()))".into()),
                ("start", (end - 5500.0).to_string()),
                ("end", e.clone()),
                ("step", "0.5".into()),
            ],
        ),
        (
            "topk",
            "/api/v1/query_range",
            vec![
                ("query", "topk(10000, last_over_time(wide[2h]))".into()),
                ("start", s.clone()),
                ("end", e.clone()),
                ("step", "1".into()),
            ],
        ),
        (
            "sql cross join",
            "/api/v1/sql",
            vec![(
                "query",
                "SELECT max(a.value + b.value + c.value + d.value) FROM samples a, samples b, samples c, samples d"
                    .into(),
            )],
        ),
    ];
    // Each alone: refused with 422 naming a limit flag.
    for (what, path, form) in &classes {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = post_form(&c, &cairn.url(path), &form, None).await.expect(what);
        assert_eq!(status, 422, "{what}: {body}");
        assert!(
            ["--query.max-samples", "--query.memory-limit-bytes", "--sql.max-memory-bytes"]
                .iter()
                .any(|f| body.contains(f)),
            "{what} names the limit's flag: {body}"
        );
    }
    // Four of each at once.
    let mut tasks = Vec::new();
    for (what, path, form) in classes.clone() {
        for _ in 0..4 {
            let (c, url, form) = (c.clone(), cairn.url(path), form.clone());
            tasks.push(tokio::spawn(async move {
                let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let (status, body) = post_form(&c, &url, &form, None).await.expect("answer");
                (what, status, body)
            }));
        }
    }
    for t in tasks {
        let (what, status, body) = t.await.expect("task");
        assert!(status == 422 || status == 503, "{what} among many: {status} {body}");
    }
    let peak = proc_memory(pid, "VmHWM").expect("peak rss");
    // The bound (docs/design/limits.md): what queries hold stays under the
    // limit plus a step and a series per query; the rest is what the
    // process held before, and allocator slack.
    let bound = baseline + LIMIT + 256 * (1 << 20);
    assert!(peak <= bound, "peak RSS {} MiB over the bound {} MiB", peak >> 20, bound >> 20);
    println!("baseline {} MiB, peak {} MiB, bound {} MiB", baseline >> 20, peak >> 20, bound >> 20);
    alive(&cairn, "hostile memory").await;
    assert_never_panicked(&cairn);
}

/// Sends a request on a raw connection and closes it after `after`.
fn fire_and_leave(port: u16, path: &str, form: &str, after: Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .expect("send");
    std::thread::sleep(after);
    drop(s);
}

/// Waits until the process has used less than `busy` CPU seconds over
/// `window`, or fails after `within`.
async fn settles(pid: u32, window: Duration, busy: f64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let before = cpu_seconds(pid).expect("cpu");
        tokio::time::sleep(window).await;
        let used = cpu_seconds(pid).expect("cpu") - before;
        if used < busy {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the process still burns {used:.2} CPU s per {window:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stops_when_the_client_goes_away_or_the_timeout_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = Cairn::start(&dir.path().join("data"), &["--query.timeout=60s"]).expect("start");
    let c = client();
    let now = now_ms();
    // 2,000 series of an hour at 15 s, cut into a block for SQL.
    for part in 0..4 {
        let ts: Vec<_> = (0..500)
            .map(|i| {
                let inst = format!("h{}", part * 500 + i);
                let samples: Vec<(i64, f64)> =
                    (0..240).map(|k| (now - 3_600_000 + k * 15_000, (k * i) as f64)).collect();
                series(&[("__name__", "busy"), ("instance", &inst)], &samples)
            })
            .collect();
        let (status, msg) = push(&c, &cairn.url("/api/v1/push"), write_v1(ts), None).await.expect("push");
        assert_eq!(status, 204, "{msg}");
    }
    flush_all(&cairn).await;
    let pid = cairn.pid().expect("pid");
    let port = cairn.http_port;
    settles(pid, Duration::from_secs(1), 0.3, Duration::from_secs(20), "the process at rest").await;
    // A SQL join of 2,000^3 rows holds 64 MB and would compute for hours;
    // its client leaves after a second.
    let sql = "query=SELECT+count(*)+FROM+(SELECT+value+FROM+samples+LIMIT+2000)+a,\
               (SELECT+value+FROM+samples+LIMIT+2000)+b,(SELECT+value+FROM+samples+LIMIT+2000)+c\
               +WHERE+a.value%2Bb.value%2Bc.value>1e12";
    tokio::task::spawn_blocking(move || fire_and_leave(port, "/api/v1/sql", sql, Duration::from_secs(1)))
        .await
        .expect("client");
    settles(pid, Duration::from_secs(1), 0.3, Duration::from_secs(5), "SQL after its client left").await;
    // A long PromQL range query (2,000 series x 11,000 steps of rate),
    // abandoned the same way.
    let promql =
        format!("query=sum(rate(busy[5m]))&start={}&end={}&step=15", (now - 11_000 * 15_000) / 1000, now / 1000);
    tokio::task::spawn_blocking(move || {
        fire_and_leave(port, "/api/v1/query_range", &promql, Duration::from_millis(500))
    })
    .await
    .expect("client");
    settles(pid, Duration::from_secs(1), 0.3, Duration::from_secs(5), "PromQL after its client left").await;
    // A request's own timeout stops the same query, with the timeout error.
    let started = Instant::now();
    let (status, body) = post_form(
        &c,
        &cairn.url("/api/v1/query_range"),
        &[
            ("query", "sum(rate(busy[5m])) + sum(rate(busy[10m]))"),
            ("start", &((now - 11_000 * 15_000) / 1000).to_string()),
            ("end", &(now / 1000).to_string()),
            ("step", "15"),
            ("timeout", "0.2"),
        ],
        None,
    )
    .await
    .expect("answer");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("timed out"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped at its timeout: {:?}", started.elapsed());
    settles(pid, Duration::from_secs(1), 0.3, Duration::from_secs(5), "PromQL after its timeout").await;
    alive(&cairn, "abandoned queries").await;
    assert_never_panicked(&cairn);
}

/// Reads until the peer closes or `limit` passes; returns what arrived and
/// when the connection ended.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), Some(started.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), Some(started.elapsed())),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_cannot_hold_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = Cairn::start(
        &dir.path().join("data"),
        &[
            "--server.http-read-header-timeout=2s",
            "--server.http-read-timeout=3s",
            "--server.http-idle-timeout=3s",
            "--server.http-conn-limit=6",
            "--server.http-max-inflight-requests=2",
            "--server.grpc-idle-timeout=3s",
            "--server.grpc-conn-limit=4",
        ],
    )
    .expect("start");
    let port = cairn.http_port;
    let grpc_port = cairn.grpc_port;
    let checks = tokio::task::spawn_blocking(move || {
        // Silent connections fill every slot; they are closed when idle,
        // and a real client gets through.
        let mut silent: Vec<TcpStream> =
            (0..6).map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect")).collect();
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
        let (resp, _) = read_until_closed(&mut s, Duration::from_secs(15));
        assert!(resp.starts_with("HTTP/1.1 200"), "a client behind silent ones is served: {resp:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "within the idle timeout: {:?}", started.elapsed());
        for s in &mut silent {
            let (_, closed) = read_until_closed(s, Duration::from_secs(10));
            assert!(closed.is_some(), "silent connections are closed");
        }
        // Headers a byte at a time: cut off at the header timeout.
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let started = Instant::now();
        for b in b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle().take(60) {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (resp, closed) = read_until_closed(&mut s, Duration::from_secs(5));
        assert!(closed.is_some() && !resp.contains("200 OK"), "trickled headers are cut off: {resp:?}");
        assert!(started.elapsed() < Duration::from_secs(8), "at the header timeout: {:?}", started.elapsed());
        // A body a byte at a time: 408 at the read timeout.
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: 100000\r\n\r\n").expect("send");
        let started = Instant::now();
        let mut resp = String::new();
        while started.elapsed() < Duration::from_secs(10) {
            if s.write_all(b"x").is_err() {
                break;
            }
            s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
            let mut buf = [0u8; 512];
            if let Ok(n) = s.read(&mut buf)
                && n > 0
            {
                resp = String::from_utf8_lossy(&buf[..n]).into_owned();
                break;
            }
        }
        assert!(resp.starts_with("HTTP/1.1 408"), "a trickled body gets 408: {resp:?}");
        assert!(resp.contains("--server.http-read-timeout"), "{resp}");
        // Requests beyond the in-flight limit get 503 with Retry-After:
        // two trickling pushes hold both slots.
        let mut holders = Vec::new();
        for _ in 0..2 {
            let mut h = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            h.write_all(b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx").expect("send");
            holders.push(h);
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /api/v1/labels HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
        let (resp, _) = read_until_closed(&mut s, Duration::from_secs(5));
        assert!(resp.starts_with("HTTP/1.1 503"), "over the in-flight limit: {resp:?}");
        assert!(resp.to_ascii_lowercase().contains("retry-after: 1"), "{resp}");
        // Health checks still answer.
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
        let (resp, _) = read_until_closed(&mut s, Duration::from_secs(5));
        assert!(resp.starts_with("HTTP/1.1 200"), "health is answered under load: {resp:?}");
        drop(holders);
        // gRPC: silent connections fill the slots and are closed when idle.
        let mut silent: Vec<TcpStream> =
            (0..4).map(|_| TcpStream::connect(("127.0.0.1", grpc_port)).expect("connect")).collect();
        for s in &mut silent {
            let (_, closed) = read_until_closed(s, Duration::from_secs(10));
            assert!(closed.is_some(), "silent gRPC connections are closed");
        }
    });
    checks.await.expect("raw-socket checks");
    alive(&cairn, "slow clients").await;
    assert_never_panicked(&cairn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small-disk");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(!peers_required(), "mounting a small tmpfs failed but CAIRN_REQUIRE_PEERS=1 (run as root)");
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let bucket = dir.path().join("bucket");
    let storage = format!("--storage.filesystem.dir={}", bucket.display());
    let flags = [storage.as_str(), "--ingester.wal.segment-size-bytes=262144", "--ingester.wal.checkpoint-interval=0s"];
    let mut cairn = Cairn::start(&mnt.join("data"), &flags).expect("start");
    let c = client();
    // Leave a little room, then write until the disk is full and past it.
    let filler = mnt.join("filler");
    let free = nix_free_bytes(&mnt);
    std::fs::write(&filler, vec![0u8; free.saturating_sub(1 << 20) as usize]).expect("filler");
    let t0 = now_ms() - 30 * 60_000;
    let mut acked: Vec<i64> = Vec::new();
    let (mut refused, mut k) = (0, 0i64);
    while refused < 20 && k < 20_000 {
        let batch: Vec<_> = (0..10)
            .map(|i| series(&[("__name__", "disk"), ("i", &i.to_string())], &[(t0 + k * 10, k as f64)]))
            .collect();
        let (status, _) = push(&c, &cairn.url("/api/v1/push"), write_v1(batch), None).await.expect("push");
        if status == 204 {
            acked.push(t0 + k * 10);
        } else {
            assert_eq!(status, 500, "a full disk is a server fault, retryable");
            refused += 1;
        }
        k += 1;
    }
    assert!(refused > 0, "the disk filled up");
    // The disk recovers; later writes are acknowledged again.
    std::fs::remove_file(&filler).expect("free space");
    for _ in 0..50 {
        let batch: Vec<_> = (0..10)
            .map(|i| series(&[("__name__", "disk"), ("i", &i.to_string())], &[(t0 + k * 10, k as f64)]))
            .collect();
        let (status, msg) = push(&c, &cairn.url("/api/v1/push"), write_v1(batch), None).await.expect("push");
        assert_eq!(status, 204, "after space came back: {msg}");
        acked.push(t0 + k * 10);
        k += 1;
    }
    cairn.kill9().expect("kill -9");
    cairn.restart().expect("restart");
    let at = t0 + k * 10;
    let v = query(&c, &cairn.url(""), "count_over_time(disk{i=\"3\"}[1h])", at, None).await.expect("query");
    assert_eq!(vector(&v).first().map(|x| x.1), Some(acked.len() as f64), "every acknowledged sample survived");
    assert_never_panicked(&cairn);
}

fn nix_free_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df").args(["-B1", "--output=avail"]).arg(path).output().expect("df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilled_samples_are_queryable_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = Cairn::start(&dir.path().join("data"), &[]).expect("start");
    let c = client();
    let now = now_ms();
    for (age, name) in
        [(20 * 3_600_000, "backfill_20h"), (5 * 24 * 3_600_000, "backfill_5d"), (now - 1000, "backfill_1970")]
    {
        let t = now - age;
        let (status, msg) =
            push(&c, &cairn.url("/api/v1/push"), write_v1(vec![series(&[("__name__", name)], &[(t, 7.0)])]), None)
                .await
                .expect("push");
        assert_eq!(status, 204, "{name}: {msg}");
        let v = query(&c, &cairn.url(""), name, t, None).await.expect("query");
        assert_eq!(vector(&v).first().map(|x| x.1), Some(7.0), "{name} is queryable as soon as acknowledged: {v}");
    }
}
