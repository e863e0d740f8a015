//! Starting, measuring and stopping the systems under comparison, each
//! pinned to one CPU.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A system under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum System {
    Cairn,
    Prometheus,
    Victoriametrics,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Cairn => "cairn",
            System::Prometheus => "prometheus",
            System::Victoriametrics => "victoriametrics",
        }
    }
}

/// A running system.
pub struct Running {
    pub system: System,
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Running {
    /// Starts `system` with its data in `dir`, pinned to `cpu`, and waits
    /// until it is ready. `cairn` is the path of the cairn binary.
    pub fn start(system: System, dir: &Path, cpu: usize, cairn: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let log = std::fs::File::create(dir.with_extension("log"))?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string());
        match system {
            System::Cairn => {
                cmd.arg(cairn).args([
                    "all",
                    &format!("--data.dir={}", dir.display()),
                    &format!("--http.listen-address=127.0.0.1:{port}"),
                    &format!("--grpc.listen-address=127.0.0.1:{}", free_port()),
                    "--log.level=warn",
                    // History is written far faster than real time, by
                    // senders that drift apart by minutes of data time: a
                    // day-long window keeps it all in the head while it is
                    // written (as Prometheus's day-long blocks do below);
                    // the flush then cuts it into the default 2-hour blocks.
                    "--ingester.out-of-order-time-window=24h",
                ]);
            }
            System::Prometheus => {
                let cfg = dir.with_extension("yml");
                std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n")?;
                // Day-long blocks keep all written data in the head while it
                // is written (older samples would otherwise fall behind the
                // head's cut and be refused as out of bounds).
                cmd.args([
                    "prometheus",
                    &format!("--config.file={}", cfg.display()),
                    &format!("--storage.tsdb.path={}", dir.display()),
                    "--storage.tsdb.min-block-duration=24h",
                    "--storage.tsdb.max-block-duration=24h",
                    &format!("--web.listen-address=127.0.0.1:{port}"),
                    "--web.enable-remote-write-receiver",
                    "--web.enable-admin-api",
                ]);
            }
            System::Victoriametrics => {
                cmd.args([
                    "victoria-metrics",
                    &format!("-storageDataPath={}", dir.display()),
                    &format!("-httpListenAddr=127.0.0.1:{port}"),
                    "-retentionPeriod=100y",
                    // Neither Cairn nor Prometheus caches query results;
                    // timing repeated queries against a cache would not compare.
                    "-search.disableCache",
                ]);
            }
        }
        let child = cmd
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", system.name()))?;
        let mut r = Running { system, port, dir: dir.to_owned(), child };
        r.wait_ready()?;
        Ok(r)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let path = match self.system {
            System::Cairn => "/ready",
            System::Prometheus => "/-/ready",
            System::Victoriametrics => "/health",
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait()? {
                bail!("{} exited with {s}; see {}", self.system.name(), self.dir.with_extension("log").display());
            }
            if http_status(self.port, path) == Some(200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{} not ready after 60s", self.system.name())
    }

    /// The pid of the server itself (taskset execs it, so it is the child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn write_url(&self) -> String {
        match self.system {
            System::Cairn => format!("{}/api/v1/push", self.base()),
            _ => format!("{}/api/v1/write", self.base()),
        }
    }

    /// Makes written data durable and queryable as the system does for
    /// good: Cairn cuts its whole head into Parquet blocks, Prometheus
    /// snapshots its head into blocks, VictoriaMetrics flushes its
    /// in-memory parts.
    pub async fn flush(&self) -> Result<()> {
        let c = reqwest::Client::new();
        let resp = match self.system {
            System::Cairn => c.post(format!("{}/ingester/flush?all=true", self.base())).send().await?,
            System::Prometheus => {
                c.post(format!("{}/api/v1/admin/tsdb/snapshot?skip_head=false", self.base())).send().await?
            }
            System::Victoriametrics => c.get(format!("{}/internal/force_flush", self.base())).send().await?,
        };
        if !resp.status().is_success() {
            bail!("flushing {} failed: {}", self.system.name(), resp.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Bytes the data takes on disk after [`Running::flush`], and what was
    /// counted.
    pub async fn storage_bytes(&self) -> Result<(u64, &'static str)> {
        match self.system {
            System::Cairn => Ok((
                dir_size(&self.dir.join("bucket"))?,
                "the bucket: Parquet blocks, their meta.json and the bucket index",
            )),
            System::Prometheus => {
                let snaps = self.dir.join("snapshots");
                let newest = std::fs::read_dir(&snaps)?
                    .filter_map(|e| e.ok())
                    .max_by_key(|e| e.file_name())
                    .context("no snapshot")?;
                Ok((dir_size(&newest.path())?, "TSDB blocks of a snapshot including the head"))
            }
            System::Victoriametrics => {
                let text = reqwest::get(format!("{}/metrics", self.base())).await?.text().await?;
                let n: f64 = text
                    .lines()
                    .filter(|l| l.starts_with("vm_data_size_bytes"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                Ok((n as u64, "vm_data_size_bytes after /internal/force_flush"))
            }
        }
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_size(p: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() { dir_size(&e.path())? } else { m.len() };
    }
    Ok(n)
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// The installed version of a Debian package, if any.
pub fn package_version(pkg: &str) -> Option<String> {
    let o = Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]).output().ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    (o.status.success() && !v.is_empty()).then_some(v)
}

/// The version line a binary prints.
pub fn version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_else(|| "unknown".into())
}
