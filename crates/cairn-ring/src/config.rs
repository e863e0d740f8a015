//! Ring configuration (YAML section `ring`).

use cairn_common::PromDuration;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RingConfig {
    /// gRPC addresses (host:port) of ring members to join through, comma
    /// separated. An ingester whose own address is first in the list, or
    /// that is given no list, starts a new ring when none of the others
    /// answers; distributors and queriers read the ring from these.
    #[arg(long = "ring.join", id = "ring.join", env = "CAIRN_RING_JOIN", value_name = "ADDRS", value_delimiter = ',')]
    pub join: Vec<String>,

    /// The gRPC address other processes reach this ingester at. Default:
    /// the gRPC listen address, with the host name when it listens on all
    /// interfaces.
    #[arg(
        long = "ring.advertise-address",
        id = "ring.advertise_address",
        env = "CAIRN_RING_ADVERTISE_ADDRESS",
        value_name = "HOST:PORT",
        default_value = ""
    )]
    pub advertise_address: String,

    /// This ingester's id in the ring; keep it across restarts. Default:
    /// the host name and the gRPC port (`host-9095`), so that several
    /// ingesters on one host differ; recorded in the data directory, which
    /// keeps it from then on.
    #[arg(
        long = "ring.instance-id",
        id = "ring.instance_id",
        env = "CAIRN_RING_INSTANCE_ID",
        value_name = "ID",
        default_value = ""
    )]
    pub instance_id: String,

    /// Availability zone; replicas of a series are spread over zones.
    #[arg(long = "ring.zone", id = "ring.zone", env = "CAIRN_RING_ZONE", value_name = "ZONE", default_value = "")]
    pub zone: String,

    /// Tokens an ingester takes on the ring (kept across restarts).
    #[arg(
        long = "ring.num-tokens",
        id = "ring.num_tokens",
        env = "CAIRN_RING_NUM_TOKENS",
        value_name = "N",
        default_value_t = 128
    )]
    pub num_tokens: usize,

    /// How often each ingester reports itself alive to the leader, and how
    /// often the leader records the reports in the ring (one Raft entry for
    /// all members).
    #[arg(
        long = "ring.heartbeat-period",
        id = "ring.heartbeat_period",
        env = "CAIRN_RING_HEARTBEAT_PERIOD",
        value_name = "DURATION",
        default_value = "5s"
    )]
    pub heartbeat_period: PromDuration,

    /// A member whose last recorded heartbeat is older than this is
    /// unhealthy: writes pass it over and reads count it as failed.
    #[arg(
        long = "ring.heartbeat-timeout",
        id = "ring.heartbeat_timeout",
        env = "CAIRN_RING_HEARTBEAT_TIMEOUT",
        value_name = "DURATION",
        default_value = "1m"
    )]
    pub heartbeat_timeout: PromDuration,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            join: Vec::new(),
            advertise_address: String::new(),
            instance_id: String::new(),
            zone: String::new(),
            num_tokens: 128,
            heartbeat_period: PromDuration::from_secs(5),
            heartbeat_timeout: PromDuration::from_secs(60),
        }
    }
}

impl RingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.num_tokens == 0 || self.num_tokens > 4096 {
            return Err(format!("ring.num_tokens must be between 1 and 4096, not {}", self.num_tokens));
        }
        if self.heartbeat_period.as_millis() < 100 {
            return Err("ring.heartbeat_period must be at least 100ms".into());
        }
        if self.heartbeat_timeout.as_millis() < 2 * self.heartbeat_period.as_millis() {
            return Err(format!(
                "ring.heartbeat_timeout ({}) must be at least twice ring.heartbeat_period ({})",
                self.heartbeat_timeout, self.heartbeat_period
            ));
        }
        Ok(())
    }
}
