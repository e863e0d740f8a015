//! Cairn's configuration: one YAML document whose every key is also a flag
//! (and an environment variable). Precedence: flag or environment, then
//! the `--config.file` YAML, then the built-in default.
//!
//! Each flag's clap id is the dotted YAML path of its key
//! (`ingester.wal.sync_mode`), which is how the two are merged.

use std::path::{Path, PathBuf};

use cairn_distributor::{DistributorConfig, ValidationConfig};
use cairn_ingester::IngesterConfig;
use cairn_querier::QuerierConfig;
use cairn_ring::RingConfig;
use cairn_storage::StorageConfig;
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

use crate::logging::{LogFormat, LogLevel};

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for local state (write-ahead logs); created if missing.
    #[arg(long = "data.dir", id = "data_dir", env = "CAIRN_DATA_DIR", value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub distributor: DistributorConfig,
    #[command(flatten)]
    pub limits: ValidationConfig,
    #[command(flatten)]
    pub ingester: IngesterConfig,
    #[command(flatten)]
    pub querier: QuerierConfig,
    #[command(flatten)]
    pub storage: StorageConfig,
    /// SQL over blocks; builds without the `sql` feature have no such
    /// section.
    #[cfg(feature = "sql")]
    #[command(flatten)]
    pub sql: cairn_sql::SqlConfig,
    #[command(flatten)]
    pub ring: RingConfig,
}

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP server (remote write, query API, metrics).
    /// `:9009` listens on every interface.
    #[arg(
        long = "http.listen-address",
        id = "server.http_listen_address",
        env = "CAIRN_HTTP_LISTEN_ADDRESS",
        value_name = "ADDR",
        default_value = ":9009"
    )]
    pub http_listen_address: String,

    /// Address of the gRPC server (ingester service, health).
    #[arg(
        long = "grpc.listen-address",
        id = "server.grpc_listen_address",
        env = "CAIRN_GRPC_LISTEN_ADDRESS",
        value_name = "ADDR",
        default_value = ":9095"
    )]
    pub grpc_listen_address: String,

    /// Least severe log level written.
    #[arg(
        long = "log.level",
        id = "server.log_level",
        env = "CAIRN_LOG_LEVEL",
        value_name = "LEVEL",
        value_enum,
        default_value = "info"
    )]
    pub log_level: LogLevel,

    /// Log line format.
    #[arg(
        long = "log.format",
        id = "server.log_format",
        env = "CAIRN_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "logfmt"
    )]
    pub log_format: LogFormat,

    /// How long shutdown waits for in-flight requests before closing them.
    #[arg(
        long = "server.graceful-shutdown-timeout",
        id = "server.graceful_shutdown_timeout",
        env = "CAIRN_SERVER_GRACEFUL_SHUTDOWN_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub graceful_shutdown_timeout: cairn_common::PromDuration,

    /// Time a client has to send a request's headers; for HTTP/1 it also
    /// bounds the wait for the next request on a kept-alive connection
    /// (0s = no limit).
    #[arg(
        long = "server.http-read-header-timeout",
        id = "server.http_read_header_timeout",
        env = "CAIRN_SERVER_HTTP_READ_HEADER_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub http_read_header_timeout: cairn_common::PromDuration,

    /// Time a client has to send a request's body, from its headers on;
    /// a request whose body is late fails (0s = no limit).
    #[arg(
        long = "server.http-read-timeout",
        id = "server.http_read_timeout",
        env = "CAIRN_SERVER_HTTP_READ_TIMEOUT",
        value_name = "DURATION",
        default_value = "2m"
    )]
    pub http_read_timeout: cairn_common::PromDuration,

    /// An HTTP connection with no request in flight for this long is
    /// closed (0s = never).
    #[arg(
        long = "server.http-idle-timeout",
        id = "server.http_idle_timeout",
        env = "CAIRN_SERVER_HTTP_IDLE_TIMEOUT",
        value_name = "DURATION",
        default_value = "2m"
    )]
    pub http_idle_timeout: cairn_common::PromDuration,

    /// HTTP connections open at once; further ones wait in the kernel's
    /// accept queue until one closes.
    #[arg(
        long = "server.http-conn-limit",
        id = "server.http_conn_limit",
        env = "CAIRN_SERVER_HTTP_CONN_LIMIT",
        value_name = "N",
        default_value_t = 1024
    )]
    pub http_conn_limit: usize,

    /// HTTP requests served at once; more are answered 503 with
    /// `Retry-After` at once.
    #[arg(
        long = "server.http-max-inflight-requests",
        id = "server.http_max_inflight_requests",
        env = "CAIRN_SERVER_HTTP_MAX_INFLIGHT_REQUESTS",
        value_name = "N",
        default_value_t = 1024
    )]
    pub http_max_inflight_requests: usize,

    /// gRPC connections open at once; further ones wait in the kernel's
    /// accept queue until one closes.
    #[arg(
        long = "server.grpc-conn-limit",
        id = "server.grpc_conn_limit",
        env = "CAIRN_SERVER_GRPC_CONN_LIMIT",
        value_name = "N",
        default_value_t = 1024
    )]
    pub grpc_conn_limit: usize,

    /// Concurrent gRPC calls on one connection.
    #[arg(
        long = "server.grpc-max-concurrent-streams",
        id = "server.grpc_max_concurrent_streams",
        env = "CAIRN_SERVER_GRPC_MAX_CONCURRENT_STREAMS",
        value_name = "N",
        default_value_t = 100
    )]
    pub grpc_max_concurrent_streams: u32,

    /// A gRPC connection from which nothing arrives for this long is
    /// closed; the server pings clients at half of it, so live ones stay
    /// (0s = never).
    #[arg(
        long = "server.grpc-idle-timeout",
        id = "server.grpc_idle_timeout",
        env = "CAIRN_SERVER_GRPC_IDLE_TIMEOUT",
        value_name = "DURATION",
        default_value = "2m"
    )]
    pub grpc_idle_timeout: cairn_common::PromDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_listen_address: ":9009".into(),
            grpc_listen_address: ":9095".into(),
            log_level: LogLevel::Info,
            log_format: LogFormat::Logfmt,
            graceful_shutdown_timeout: cairn_common::PromDuration::from_secs(30),
            http_read_header_timeout: cairn_common::PromDuration::from_secs(30),
            http_read_timeout: cairn_common::PromDuration::from_secs(120),
            http_idle_timeout: cairn_common::PromDuration::from_secs(120),
            http_conn_limit: 1024,
            http_max_inflight_requests: 1024,
            grpc_conn_limit: 1024,
            grpc_max_concurrent_streams: 100,
            grpc_idle_timeout: cairn_common::PromDuration::from_secs(120),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig::default(),
            distributor: DistributorConfig::default(),
            limits: ValidationConfig::default(),
            ingester: IngesterConfig::default(),
            querier: QuerierConfig::default(),
            storage: StorageConfig::default(),
            #[cfg(feature = "sql")]
            sql: cairn_sql::SqlConfig::default(),
            ring: RingConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Yaml { path: PathBuf, source: serde_yaml::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A listen address: `host:port`, or `:port` for every interface.
pub fn listen_addr(s: &str) -> Result<std::net::SocketAddr, ConfigError> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_owned() };
    std::net::ToSocketAddrs::to_socket_addrs(&full)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError::Invalid(format!("{s:?} is not a listen address (host:port or :port)")))
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        listen_addr(&self.server.http_listen_address)?;
        listen_addr(&self.server.grpc_listen_address)?;
        for (name, n) in [
            ("server.http_conn_limit", self.server.http_conn_limit),
            ("server.http_max_inflight_requests", self.server.http_max_inflight_requests),
            ("server.grpc_conn_limit", self.server.grpc_conn_limit),
            ("server.grpc_max_concurrent_streams", self.server.grpc_max_concurrent_streams as usize),
        ] {
            if n == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        self.ingester.validate().map_err(ConfigError::Invalid)?;
        self.querier.validate().map_err(ConfigError::Invalid)?;
        self.storage.validate().map_err(ConfigError::Invalid)?;
        self.distributor.validate().map_err(ConfigError::Invalid)?;
        self.ring.validate().map_err(ConfigError::Invalid)?;
        #[cfg(feature = "sql")]
        self.sql.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The defaults as YAML, as `cairn config defaults` prints them.
    pub fn defaults_yaml() -> String {
        serde_yaml::to_string(&Config::default()).unwrap_or_default()
    }

    /// Builds the configuration from parsed flags, a YAML file and defaults.
    pub fn load(flags: &Config, matches: &ArgMatches, file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut doc = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
                // Parse strictly first, for errors that name the bad key.
                let parsed: Config = if text.trim().is_empty() {
                    Config::default()
                } else {
                    serde_yaml::from_str(&text).map_err(|source| ConfigError::Yaml { path: path.into(), source })?
                };
                serde_json::to_value(parsed).map_err(|e| ConfigError::Invalid(e.to_string()))?
            }
            None => serde_json::to_value(Config::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?,
        };
        let from_flags = serde_json::to_value(flags).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for id in matches.ids() {
            let id = id.as_str();
            if !matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                continue;
            }
            let path: Vec<&str> = id.split('.').collect();
            let Some(v) = lookup(&from_flags, &path) else { continue };
            set(&mut doc, &path, v.clone());
        }
        let cfg: Config = serde_json::from_value(doc).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

fn lookup<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn set(v: &mut serde_json::Value, path: &[&str], new: serde_json::Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = v;
    for k in parents {
        let Some(next) = cur.get_mut(*k) else { return };
        cur = next;
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert((*last).to_owned(), new);
    }
}

#[cfg(test)]
mod tests;
