//! The `cairn` binary: command line, configuration, role wiring, servers.
//!
//! ```text
//!  cairn all | cairn ingester
//!     │ cli: flags + --config.file (YAML) → Config (flags win)
//!     ▼
//!  process: builds the roles in order (ingester → distributor → querier),
//!           one HTTP server and one gRPC server for all of them
//!     │ HTTP: ops (/ready, /-/healthy, /metrics) + each role's routes
//!     │ gRPC: each role's services + grpc.health.v1
//!     │ both bounded against slow and idle clients (listener)
//!     ▼
//!  SIGTERM/SIGINT: stop accepting, drain in-flight requests, then let each
//!  role finish (the ingester fsyncs its WAL), exit 0
//! ```
//!
//! A role runs the same code whether it shares the process with the others
//! (`all`) or runs alone: roles only meet through the `Pusher` and
//! `Queryable` traits.

pub mod cli;
pub mod config;
pub mod listener;
pub mod logging;
pub mod process;
pub mod roles;
pub mod server;
