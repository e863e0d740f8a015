//! End-to-end tests against real `cairn` processes.

mod bad_input;
mod cluster;
mod crash;
mod fuzz_corpora;
mod hostile;
mod ingester_grpc;
mod long_term;
mod prometheus;
mod promqltest_http;
