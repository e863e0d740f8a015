#![allow(clippy::disallowed_methods, reason = "process fixtures poll child processes from test threads")]
//! Test harness for end-to-end tests: real `cairn` processes on loopback,
//! real Prometheus, remote write requests built from Cairn's protobufs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_proto::prometheus as pb;
use prost::Message;

/// The `cairn` binary: `$CAIRN_BIN`, or `target/<profile>/cairn` next to
/// this test executable (the test command builds it first).
pub fn cairn_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/cairn
    exe.parent().and_then(Path::parent).map(|d| d.join("cairn")).unwrap_or_else(|| PathBuf::from("cairn"))
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range: a
/// port from that range could be taken by any outgoing connection (and
/// clusters make many) between this check and the server's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Spread processes (test binaries run in parallel) over the range, then
    // walk it.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    let (first, span) = (10_000u32, low.saturating_sub(10_000).max(1));
    let _ = NEXT.compare_exchange(0, std::process::id() * 7919 % span + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let port = first + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Whether tests that need peers (Prometheus) must fail rather than skip
/// when the peer is missing. The test command sets it.
pub fn peers_required() -> bool {
    std::env::var("CAIRN_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Finds a program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// A running `cairn` process.
pub struct Cairn {
    /// `all`, `ingester`, `distributor` or `querier`.
    pub role: String,
    pub http_port: u16,
    pub grpc_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Flags after the data dir and listen addresses.
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl Cairn {
    /// Starts `cairn all` with its data in `data_dir` and waits until ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<Self> {
        let mut c = Cairn::prepare("all", data_dir, extra);
        c.spawn()?;
        Ok(c)
    }

    /// A process of `role` with its ports chosen, not started yet: its
    /// ports can go into other processes' flags (and its own) first.
    pub fn prepare(role: &str, data_dir: &Path, extra: &[&str]) -> Self {
        Cairn {
            role: role.to_owned(),
            http_port: free_port(),
            grpc_port: free_port(),
            data_dir: data_dir.to_owned(),
            log: data_dir.with_extension("log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        }
    }

    /// `127.0.0.1:<grpc port>`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// Starts the process (again) and waits until it is ready.
    pub fn spawn(&mut self) -> Result<()> {
        self.spawn_background()?;
        self.wait_ready(Duration::from_secs(60))
    }

    /// Starts the process without waiting for it (members of a ring that
    /// wait for each other); see [`Cairn::wait_until_ready`].
    pub fn spawn_background(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(cairn_bin())
            .arg(&self.role)
            .arg(format!("--data.dir={}", self.data_dir.display()))
            .arg(format!("--http.listen-address=127.0.0.1:{}", self.http_port))
            .arg(format!("--grpc.listen-address=127.0.0.1:{}", self.grpc_port))
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", cairn_bin().display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn wait_until_ready(&mut self) -> Result<()> {
        self.wait_ready(Duration::from_secs(60))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(ch) = self.child.as_mut()
                && let Some(status) = ch.try_wait()?
            {
                bail!("cairn exited with {status} before becoming ready; log:\n{}", self.log_text());
            }
            if probe::status(&self.url("/ready")).is_ok_and(|s| s == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("cairn not ready after {timeout:?}; log:\n{}", self.log_text())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut ch) = self.child.take() {
            ch.kill()?;
            ch.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut ch = self.child.take().context("not running")?;
        let pid = ch.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = ch.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                ch.kill()?;
                bail!("cairn did not exit within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the process again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Cairn {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// A minimal blocking GET used while waiting for readiness, so that the
/// harness needs no async runtime for it.
pub mod probe {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// Returns the HTTP status code of a GET.
    pub fn status(url: &str) -> std::io::Result<u16> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok(code)
    }
}

/// A series for a remote write 1.0 request.
pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> pb::TimeSeries {
    pb::TimeSeries {
        labels: labels.iter().map(|(n, v)| pb::Label { name: n.to_string(), value: v.to_string() }).collect(),
        samples: samples.iter().map(|&(t, v)| pb::Sample { value: v, timestamp: t }).collect(),
        ..Default::default()
    }
}

/// Encodes and snappy-compresses a remote write 1.0 body.
pub fn write_v1(series: Vec<pb::TimeSeries>) -> Vec<u8> {
    let req = pb::WriteRequest { timeseries: series, metadata: vec![] };
    snappy(&req.encode_to_vec())
}

pub fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).unwrap_or_default()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    cairn_common::time::now_ms()
}

/// An async HTTP client for the tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default()
}

/// POSTs a remote write body with the usual headers; returns status and body.
pub async fn push(c: &reqwest::Client, url: &str, body: Vec<u8>, tenant: Option<&str>) -> Result<(u16, String)> {
    let mut req = c
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// Runs an instant query and returns the parsed JSON.
pub async fn query(
    c: &reqwest::Client,
    base: &str,
    q: &str,
    t_ms: i64,
    tenant: Option<&str>,
) -> Result<serde_json::Value> {
    let mut req =
        c.get(format!("{base}/api/v1/query")).query(&[("query", q), ("time", &format!("{:.3}", t_ms as f64 / 1000.0))]);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let v: serde_json::Value = req.send().await?.json().await?;
    if v["status"] != "success" {
        bail!("query {q} failed: {v}");
    }
    Ok(v)
}

/// The `result` of a vector response as (labels JSON, value) pairs, sorted.
pub fn vector(v: &serde_json::Value) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = v["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let val = s["value"][1].as_str().unwrap_or("NaN");
                    let f = match val {
                        "+Inf" => f64::INFINITY,
                        "-Inf" => f64::NEG_INFINITY,
                        other => other.parse().unwrap_or(f64::NAN),
                    };
                    (s["metric"].to_string(), f)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A real S3-compatible server (s3s-fs) on loopback, keeping its objects
/// in a directory; each subdirectory is a bucket.
pub struct S3Server {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

pub const S3_ACCESS_KEY: &str = "test";
pub const S3_SECRET_KEY: &str = "testtest";

impl S3Server {
    /// Starts s3s-fs with bucket `bucket`, or `None` when it is not installed
    /// (the caller skips, or fails under `CAIRN_REQUIRE_PEERS=1`).
    pub fn start(dir: &Path, bucket: &str) -> Result<Option<Self>> {
        if which("s3s-fs").is_none() {
            return Ok(None);
        }
        std::fs::create_dir_all(dir.join(bucket))?;
        let mut s = S3Server { port: free_port(), dir: dir.to_owned(), child: None };
        s.spawn()?;
        Ok(Some(s))
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.with_extension("log"))?;
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&self.dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning s3s-fs")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("s3s-fs did not listen on {} within 30s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `cairn` flags that store blocks in `bucket` on this server.
    pub fn cairn_flags(&self, bucket: &str) -> Vec<String> {
        vec![
            "--storage.backend=s3".into(),
            format!("--storage.s3.endpoint={}", self.endpoint()),
            format!("--storage.s3.bucket={bucket}"),
            format!("--storage.s3.access-key-id={S3_ACCESS_KEY}"),
            format!("--storage.s3.secret-access-key={S3_SECRET_KEY}"),
            "--storage.s3.insecure=true".into(),
        ]
    }

    /// Stops the server (SIGKILL), as an outage.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut ch) = self.child.take() {
            ch.kill()?;
            ch.wait()?;
        }
        Ok(())
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the
    /// kernel and never answered, as a hung server's are.
    pub fn freeze(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.child.as_ref().context("not running")?.id().to_string();
        let status = Command::new("kill").args([sig, &pid]).status()?;
        if !status.success() {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// Starts it again on the same port and directory.
    pub fn resume(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Runs a range query and returns the parsed JSON.
pub async fn query_range(
    c: &reqwest::Client,
    base: &str,
    q: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<serde_json::Value> {
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    let v: serde_json::Value = c
        .get(format!("{base}/api/v1/query_range"))
        .query(&[("query", q), ("start", &secs(start_ms)), ("end", &secs(end_ms)), ("step", &secs(step_ms))])
        .send()
        .await?
        .json()
        .await?;
    if v["status"] != "success" {
        bail!("query_range {q} failed: {v}");
    }
    Ok(v)
}

/// The sum of every sample of a metric family in a `/metrics` page
/// (0 when absent).
pub async fn metric(c: &reqwest::Client, base: &str, name: &str) -> Result<f64> {
    let text = c.get(format!("{base}/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let family = key.split('{').next()?;
            (family == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum())
}

/// POSTs a form and returns the status and the body as text.
pub async fn post_form(
    c: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
    tenant: Option<&str>,
) -> Result<(u16, String)> {
    let mut req = c.post(url).form(form);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `VmHWM` — the peak).
pub fn proc_memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user and system) a process has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}
