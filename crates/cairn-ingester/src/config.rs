//! Ingester configuration (YAML section `ingester`, flags `--ingester.*`).

use cairn_common::PromDuration;
use serde::{Deserialize, Serialize};

use crate::wal::SyncMode;

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngesterConfig {
    /// Accept samples up to this much older than their series' newest
    /// sample. 0s rejects every out-of-order sample, as Prometheus does by
    /// default.
    #[arg(
        long = "ingester.out-of-order-time-window",
        id = "ingester.out_of_order_time_window",
        env = "CAIRN_INGESTER_OUT_OF_ORDER_TIME_WINDOW",
        value_name = "DURATION",
        default_value = "0s"
    )]
    pub out_of_order_time_window: PromDuration,

    /// Most series one tenant may hold in the head; samples of further new
    /// series are rejected. 0 means no limit.
    #[arg(
        long = "ingester.max-series-per-tenant",
        id = "ingester.max_series_per_tenant",
        env = "CAIRN_INGESTER_MAX_SERIES_PER_TENANT",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_series_per_tenant: usize,

    /// Length of the block periods the head is cut into and uploaded as
    /// Parquet blocks.
    #[arg(
        long = "ingester.block-duration",
        id = "ingester.block_duration",
        env = "CAIRN_INGESTER_BLOCK_DURATION",
        value_name = "DURATION",
        default_value = "2h"
    )]
    pub block_duration: PromDuration,

    /// Pushes one ingester admits at once (appending or waiting for an
    /// append thread); more are refused as unavailable, with a retry
    /// hint, so that a burst queues in its clients rather than here. 0
    /// means no limit.
    #[arg(
        long = "ingester.instance-limits.max-inflight-push-requests",
        id = "ingester.max_inflight_push_requests",
        env = "CAIRN_INGESTER_MAX_INFLIGHT_PUSH_REQUESTS",
        value_name = "N",
        default_value_t = 30_000
    )]
    pub max_inflight_push_requests: usize,

    #[command(flatten)]
    pub wal: WalConfig,
}

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// When the write-ahead log is fsynced: `none` (survives a process
    /// crash), `interval` (also loses at most one sync interval on a machine
    /// crash) or `always` (fsync before every acknowledgement).
    #[arg(
        long = "ingester.wal.sync-mode",
        id = "ingester.wal.sync_mode",
        env = "CAIRN_INGESTER_WAL_SYNC_MODE",
        value_name = "MODE",
        value_enum,
        default_value = "interval"
    )]
    pub sync_mode: SyncMode,

    /// fsync period in `interval` mode.
    #[arg(
        long = "ingester.wal.sync-interval",
        id = "ingester.wal.sync_interval",
        env = "CAIRN_INGESTER_WAL_SYNC_INTERVAL",
        value_name = "DURATION",
        default_value = "1s"
    )]
    pub sync_interval: PromDuration,

    /// Size at which a WAL segment is closed and a new one started.
    #[arg(
        long = "ingester.wal.segment-size-bytes",
        id = "ingester.wal.segment_size_bytes",
        env = "CAIRN_INGESTER_WAL_SEGMENT_SIZE_BYTES",
        value_name = "BYTES",
        default_value_t = 128 << 20
    )]
    pub segment_size_bytes: u64,

    /// How often each tenant's head is checkpointed (when it changed), which
    /// bounds WAL replay at start-up. 0s disables periodic checkpoints.
    #[arg(
        long = "ingester.wal.checkpoint-interval",
        id = "ingester.wal.checkpoint_interval",
        env = "CAIRN_INGESTER_WAL_CHECKPOINT_INTERVAL",
        value_name = "DURATION",
        default_value = "15m"
    )]
    pub checkpoint_interval: PromDuration,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        Self {
            out_of_order_time_window: PromDuration::from_millis(0),
            max_series_per_tenant: 0,
            block_duration: PromDuration::from_secs(2 * 3600),
            max_inflight_push_requests: 30_000,
            wal: WalConfig::default(),
        }
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            sync_mode: SyncMode::Interval,
            sync_interval: PromDuration::from_secs(1),
            segment_size_bytes: 128 << 20,
            checkpoint_interval: PromDuration::from_secs(15 * 60),
        }
    }
}

impl IngesterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.block_duration.as_millis() < 10_000 {
            return Err("ingester.block_duration must be at least 10s".into());
        }
        if self.wal.segment_size_bytes < 1 << 16 {
            return Err("ingester.wal.segment_size_bytes must be at least 65536".into());
        }
        if self.wal.sync_mode == SyncMode::Interval && self.wal.sync_interval.is_zero() {
            return Err("ingester.wal.sync_interval must be positive in interval mode".into());
        }
        Ok(())
    }
}
