//! Distributor configuration (YAML sections `distributor` and `limits`).

use cairn_common::PromDuration;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributorConfig {
    /// Largest remote write body accepted, in bytes, both as received
    /// (compressed) and after snappy decompression. Larger ones get 413.
    #[arg(
        long = "distributor.max-recv-msg-size",
        id = "distributor.max_recv_msg_size",
        env = "CAIRN_DISTRIBUTOR_MAX_RECV_MSG_SIZE",
        value_name = "BYTES",
        default_value_t = 100 << 20
    )]
    pub max_recv_msg_size: usize,

    /// Ingesters each series is written to in a cluster; a write succeeds
    /// once a majority of them has it. Queriers use it to know how many
    /// failed ingesters a read tolerates. (`cairn all` keeps one copy.)
    #[arg(
        long = "distributor.replication-factor",
        id = "distributor.replication_factor",
        env = "CAIRN_DISTRIBUTOR_REPLICATION_FACTOR",
        value_name = "N",
        default_value_t = 3
    )]
    pub replication_factor: usize,

    /// Deadline of each push to an ingester.
    #[arg(
        long = "distributor.remote-timeout",
        id = "distributor.remote_timeout",
        env = "CAIRN_DISTRIBUTOR_REMOTE_TIMEOUT",
        value_name = "DURATION",
        default_value = "5s"
    )]
    pub remote_timeout: PromDuration,

    /// Push requests this distributor handles at once (0 = no limit); more
    /// get 503 with `Retry-After`, and Prometheus retries them.
    #[arg(
        long = "distributor.instance-limits.max-inflight-push-requests",
        id = "distributor.max_inflight_push_requests",
        env = "CAIRN_DISTRIBUTOR_MAX_INFLIGHT_PUSH_REQUESTS",
        value_name = "N",
        default_value_t = 2000
    )]
    pub max_inflight_push_requests: usize,

    /// Bytes of push requests this distributor holds at once, as received
    /// plus decompressed (0 = no limit); a request that would pass it gets
    /// 503 with `Retry-After` before it is decompressed.
    #[arg(
        long = "distributor.instance-limits.max-inflight-push-requests-bytes",
        id = "distributor.max_inflight_push_requests_bytes",
        env = "CAIRN_DISTRIBUTOR_MAX_INFLIGHT_PUSH_REQUESTS_BYTES",
        value_name = "BYTES",
        default_value_t = 512 << 20
    )]
    pub max_inflight_push_requests_bytes: usize,
}

impl Default for DistributorConfig {
    fn default() -> Self {
        Self {
            max_recv_msg_size: 100 << 20,
            replication_factor: 3,
            remote_timeout: PromDuration::from_secs(5),
            max_inflight_push_requests: 2000,
            max_inflight_push_requests_bytes: 512 << 20,
        }
    }
}

impl DistributorConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=9).contains(&self.replication_factor) {
            return Err(format!(
                "distributor.replication_factor must be between 1 and 9, not {}",
                self.replication_factor
            ));
        }
        if self.remote_timeout.is_zero() {
            return Err("distributor.remote_timeout must be more than 0".into());
        }
        let largest = self.max_recv_msg_size.saturating_mul(2);
        if self.max_inflight_push_requests_bytes != 0 && self.max_inflight_push_requests_bytes < largest {
            return Err(format!(
                "distributor.max_inflight_push_requests_bytes ({}) must be 0 or at least twice \
                 distributor.max_recv_msg_size ({largest}): a request of the largest size holds its body \
                 compressed and decompressed",
                self.max_inflight_push_requests_bytes
            ));
        }
        Ok(())
    }
}

/// Which label and metric names are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NameValidation {
    /// Any non-empty UTF-8 string, as Prometheus 3 accepts.
    Utf8,
    /// `[a-zA-Z_][a-zA-Z0-9_]*` for label names, with `:` also allowed in
    /// metric names, as Prometheus 2 required.
    Legacy,
}

/// Limits applied to every received series.
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Most labels a series may have (0 = no limit).
    #[arg(
        long = "validation.max-label-names-per-series",
        id = "limits.max_label_names_per_series",
        env = "CAIRN_VALIDATION_MAX_LABEL_NAMES_PER_SERIES",
        value_name = "N",
        default_value_t = 30
    )]
    pub max_label_names_per_series: usize,

    /// Longest label name in bytes (0 = no limit).
    #[arg(
        long = "validation.max-length-label-name",
        id = "limits.max_label_name_length",
        env = "CAIRN_VALIDATION_MAX_LENGTH_LABEL_NAME",
        value_name = "BYTES",
        default_value_t = 1024
    )]
    pub max_label_name_length: usize,

    /// Longest label value in bytes (0 = no limit).
    #[arg(
        long = "validation.max-length-label-value",
        id = "limits.max_label_value_length",
        env = "CAIRN_VALIDATION_MAX_LENGTH_LABEL_VALUE",
        value_name = "BYTES",
        default_value_t = 2048
    )]
    pub max_label_value_length: usize,

    /// Metadata help and unit texts are cut to this many bytes (0 = no limit).
    #[arg(
        long = "validation.max-metadata-length",
        id = "limits.max_metadata_length",
        env = "CAIRN_VALIDATION_MAX_METADATA_LENGTH",
        value_name = "BYTES",
        default_value_t = 1024
    )]
    pub max_metadata_length: usize,

    /// Samples further than this in the future are dropped (0s = accept any).
    #[arg(
        long = "validation.create-grace-period",
        id = "limits.create_grace_period",
        env = "CAIRN_VALIDATION_CREATE_GRACE_PERIOD",
        value_name = "DURATION",
        default_value = "10m"
    )]
    pub create_grace_period: PromDuration,

    /// `utf8` accepts any UTF-8 metric and label name (Prometheus 3);
    /// `legacy` only Prometheus 2's character set.
    #[arg(
        long = "validation.name-validation-scheme",
        id = "limits.name_validation_scheme",
        env = "CAIRN_VALIDATION_NAME_VALIDATION_SCHEME",
        value_name = "SCHEME",
        value_enum,
        default_value = "utf8"
    )]
    pub name_validation_scheme: NameValidation,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_metadata_length: 1024,
            create_grace_period: PromDuration::from_secs(600),
            name_validation_scheme: NameValidation::Utf8,
        }
    }
}
