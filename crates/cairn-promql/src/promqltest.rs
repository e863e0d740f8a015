//! A runner for Prometheus's PromQL test scripts (the `promqltest` format),
//! used by Cairn's conformance tests in process and over HTTP.
//!
//! [`script`] parses a file into commands, [`mem`] is the storage scripts
//! load into, and [`run`] executes the commands against any [`run::Backend`]
//! and compares results the way Prometheus's own runner does.

pub mod mem;
pub mod run;
pub mod script;
