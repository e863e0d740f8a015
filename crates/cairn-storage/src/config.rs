//! Object storage configuration (YAML section `storage`, flags
//! `--storage.*`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_common::PromDuration;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A local directory (the default; one machine).
    Filesystem,
    /// S3 or an S3-compatible server such as MinIO.
    S3,
}

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where blocks go: `filesystem` (a local directory) or `s3`.
    #[arg(
        long = "storage.backend",
        id = "storage.backend",
        env = "CAIRN_STORAGE_BACKEND",
        value_name = "BACKEND",
        value_enum,
        default_value = "filesystem"
    )]
    pub backend: Backend,

    /// How long blocks are kept; older ones are deleted. 0s keeps them
    /// forever.
    #[arg(
        long = "storage.retention",
        id = "storage.retention",
        env = "CAIRN_STORAGE_RETENTION",
        value_name = "DURATION",
        default_value = "0s"
    )]
    pub retention: PromDuration,

    /// Time between a block's deletion mark and its deletion: at least
    /// the bucket index refresh interval plus the longest query.
    #[arg(
        long = "storage.deletion-delay",
        id = "storage.deletion_delay",
        env = "CAIRN_STORAGE_DELETION_DELAY",
        value_name = "DURATION",
        default_value = "2h"
    )]
    pub deletion_delay: PromDuration,

    /// Memory for cached block footers and page indexes, in bytes; the
    /// least recently used are dropped beyond it.
    #[arg(
        long = "storage.metadata-cache-bytes",
        id = "storage.metadata_cache_bytes",
        env = "CAIRN_STORAGE_METADATA_CACHE_BYTES",
        value_name = "BYTES",
        default_value_t = 256 << 20
    )]
    pub metadata_cache_bytes: u64,

    /// How often a reader checks for a newer bucket index (blocks uploaded
    /// by other processes). Uploads in the same process are seen at once.
    #[arg(
        long = "storage.bucket-index-refresh-interval",
        id = "storage.bucket_index_refresh_interval",
        env = "CAIRN_STORAGE_BUCKET_INDEX_REFRESH_INTERVAL",
        value_name = "DURATION",
        default_value = "15s"
    )]
    pub bucket_index_refresh_interval: PromDuration,

    /// Threads that read blocks for queries (decoding Parquet pages and
    /// matching label columns), apart from the threads that answer
    /// requests; 0 means one per core.
    #[arg(
        long = "storage.read-threads",
        id = "storage.read_threads",
        env = "CAIRN_STORAGE_READ_THREADS",
        value_name = "N",
        default_value_t = 0
    )]
    pub read_threads: usize,

    /// Block reads in progress at once, over all queries; more wait for
    /// one to finish (each query reads at most 8 blocks at once).
    #[arg(
        long = "storage.max-concurrent-block-reads",
        id = "storage.max_concurrent_block_reads",
        env = "CAIRN_STORAGE_MAX_CONCURRENT_BLOCK_READS",
        value_name = "N",
        default_value_t = 32
    )]
    pub max_concurrent_block_reads: usize,

    #[command(flatten)]
    pub filesystem: FilesystemConfig,

    #[command(flatten)]
    pub s3: S3Config,
}

#[derive(Clone, Debug, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesystemConfig {
    /// Directory of the filesystem backend; empty means `<data.dir>/bucket`.
    /// Keep it apart from the data directory's other contents: losing a
    /// node's local state must not lose uploaded blocks.
    #[arg(
        long = "storage.filesystem.dir",
        id = "storage.filesystem.dir",
        env = "CAIRN_STORAGE_FILESYSTEM_DIR",
        value_name = "DIR",
        default_value = ""
    )]
    pub dir: String,
}

#[derive(Clone, Debug, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://minio:9000`; empty means AWS S3.
    #[arg(
        long = "storage.s3.endpoint",
        id = "storage.s3.endpoint",
        env = "CAIRN_STORAGE_S3_ENDPOINT",
        value_name = "URL",
        default_value = ""
    )]
    pub endpoint: String,
    /// Bucket name.
    #[arg(
        long = "storage.s3.bucket",
        id = "storage.s3.bucket",
        env = "CAIRN_STORAGE_S3_BUCKET",
        value_name = "NAME",
        default_value = ""
    )]
    pub bucket: String,
    /// Region; empty takes AWS_REGION, else us-east-1.
    #[arg(
        long = "storage.s3.region",
        id = "storage.s3.region",
        env = "CAIRN_STORAGE_S3_REGION",
        value_name = "REGION",
        default_value = ""
    )]
    pub region: String,
    /// Access key; empty takes AWS_ACCESS_KEY_ID (or other standard AWS credentials).
    #[arg(
        long = "storage.s3.access-key-id",
        id = "storage.s3.access_key_id",
        env = "CAIRN_STORAGE_S3_ACCESS_KEY_ID",
        value_name = "KEY",
        default_value = ""
    )]
    pub access_key_id: String,
    /// Secret key; empty takes AWS_SECRET_ACCESS_KEY.
    #[arg(
        long = "storage.s3.secret-access-key",
        id = "storage.s3.secret_access_key",
        env = "CAIRN_STORAGE_S3_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub secret_access_key: String,
    /// Speak plain HTTP to the endpoint (local MinIO, tests).
    #[arg(
        long = "storage.s3.insecure",
        id = "storage.s3.insecure",
        env = "CAIRN_STORAGE_S3_INSECURE",
        value_name = "BOOL",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub insecure: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Filesystem,
            retention: PromDuration::from_millis(0),
            deletion_delay: PromDuration::from_secs(2 * 3600),
            metadata_cache_bytes: 256 << 20,
            bucket_index_refresh_interval: PromDuration::from_secs(15),
            read_threads: 0,
            max_concurrent_block_reads: 32,
            filesystem: FilesystemConfig::default(),
            s3: S3Config::default(),
        }
    }
}

impl StorageConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.deletion_delay < self.bucket_index_refresh_interval {
            return Err(format!(
                "storage.deletion_delay ({}) must be at least storage.bucket_index_refresh_interval ({}), \
                 or a querier could read a block after its deletion",
                self.deletion_delay, self.bucket_index_refresh_interval
            ));
        }
        if self.max_concurrent_block_reads == 0 {
            return Err("storage.max_concurrent_block_reads must be positive".into());
        }
        if self.bucket_index_refresh_interval.is_zero() {
            return Err("storage.bucket_index_refresh_interval must be positive".into());
        }
        if self.backend == Backend::S3 && self.s3.bucket.is_empty() {
            return Err("storage.s3.bucket must be set with storage.backend s3".into());
        }
        Ok(())
    }

    /// Opens the configured object store. `data_dir` places the default
    /// filesystem bucket.
    pub fn open(&self, data_dir: &Path) -> Result<Arc<dyn ObjectStore>> {
        match self.backend {
            Backend::Filesystem => {
                let dir = if self.filesystem.dir.is_empty() {
                    data_dir.join("bucket")
                } else {
                    self.filesystem.dir.clone().into()
                };
                std::fs::create_dir_all(&dir)?;
                Ok(Arc::new(LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true)))
            }
            Backend::S3 => {
                let s = &self.s3;
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&s.bucket)
                    // Path-style addressing, as MinIO and most S3-compatible servers want.
                    .with_virtual_hosted_style_request(false)
                    .with_conditional_put(S3ConditionalPut::ETagMatch)
                    // A request that hangs is given up after 30 s, and
                    // retried at most three times within a minute: the
                    // shipper retries on its own, and queries must not wait
                    // on a frozen server (the block store bounds them too).
                    // (The options replace the builder's, so they carry
                    // `allow_http` too.)
                    .with_client_options(
                        ClientOptions::new()
                            .with_allow_http(s.insecure)
                            .with_timeout(Duration::from_secs(30))
                            .with_connect_timeout(Duration::from_secs(5)),
                    )
                    .with_retry(RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(60),
                        ..Default::default()
                    });
                if !s.endpoint.is_empty() {
                    b = b.with_endpoint(&s.endpoint);
                }
                if !s.region.is_empty() {
                    b = b.with_region(&s.region);
                } else if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
                    b = b.with_region("us-east-1");
                }
                if !s.access_key_id.is_empty() {
                    b = b.with_access_key_id(&s.access_key_id);
                }
                if !s.secret_access_key.is_empty() {
                    b = b.with_secret_access_key(&s.secret_access_key);
                }
                Ok(Arc::new(b.build().map_err(|e| Error::Config(e.to_string()))?))
            }
        }
    }
}
